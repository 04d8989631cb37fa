//! Rotation under hostile input and concurrency (issue 10), for every adapter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokenkit_core::{ErrorKind, ProvidedToken, StandardPolicy};
use tokenkit_tests::{Browser, Fault};

use crate::adapters::Adapter;
use crate::scenarios::{get_id, login, user_of, world};

/// An unsigned JWT carrying `claims` (tokenkit only peeks at the claims).
fn jwt(claims: Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2ln",
        b64.encode(r#"{"alg":"none"}"#),
        b64.encode(claims.to_string())
    )
}

/// Token responses whose expiry is a number no clock can hold.
fn hostile_bodies() -> Vec<Value> {
    vec![
        json!({"access_token": "h1", "refresh_token": "hr", "expires_at": 1e300}),
        json!({"access_token": "h1", "refresh_token": "hr", "expires_at": 1.5e22}),
        json!({"access_token": "h1", "refresh_token": "hr", "expires_at": "1e300"}),
        json!({"access_token": "h1", "refresh_token": "hr", "expiresAt": 9.3e21}),
        json!({"access_token": jwt(json!({"exp": 1e25})), "refresh_token": "hr"}),
        json!({"access_token": jwt(json!({"exp": 1e300})), "refresh_token": "hr"}),
        json!({"access_token": jwt(json!({"exp": "9.9e21"})), "refresh_token": "hr"}),
        json!({"access_token": "h1", "refresh_token": "hr", "expires_in": 1e300}),
    ]
}

/// Each hostile refresh response is a typed error; the session survives it, no flight is left
/// over, and the next request against the fixed server refreshes and succeeds.
pub(crate) async fn hostile_expiries_are_typed_errors_and_the_next_request_starts_clean<A: Adapter>() {
    for body in hostile_bodies() {
        let w = world();
        let client = w.session_client::<A>();
        let browser = Browser::new();
        login(&client, &browser, "alice", "wonderland").await;
        w.clock.advance(Duration::from_secs(3600));
        w.server.fail_next_refresh_requests(1, Fault::Json(body.clone()));
        let err = user_of(&client, &browser).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidToken, "{body}: {err}");
        assert_eq!(client.rotation_stats().unwrap().refreshes_in_flight, 0, "{body}");
        assert_eq!(
            user_of(&client, &browser).await.unwrap(),
            "alice",
            "{body}: the next request starts clean"
        );
        assert_eq!(w.server.count("/auth/refresh"), 2, "{body}");
        assert_eq!(client.rotation_stats().unwrap().refreshes_in_flight, 0);
    }
}

/// A provider closure that panics: every waiter gets a typed error, and the next request
/// runs a new, clean refresh.
pub(crate) async fn a_panicking_provider_fails_its_waiters_and_the_next_request_starts_clean<A: Adapter>() {
    let w = world();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let client = A::builder(&w.server.url())
        .clock(w.clock.clone())
        .policy(StandardPolicy::provider().jitter_percent(0))
        .provider(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                futures_timer::Delay::new(Duration::from_millis(20)).await;
                if n == 0 {
                    panic!("provider bug");
                }
                Ok::<_, std::io::Error>(ProvidedToken::new(format!("p{n}"), 3600))
            }
        })
        .build()
        .unwrap();
    let waiters =
        futures_util::future::join_all((0..50).map(|_| client.get("/public/x").send::<Value>())).await;
    for result in waiters {
        let err = result.unwrap_err();
        assert_eq!(
            err.auth_failure(),
            Some(tokenkit_core::AuthFailure::TokenUnavailable),
            "{err}"
        );
        assert!(err.to_string().contains("panicked"), "{err}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one flight for all 50 waiters");
    assert_eq!(client.rotation_stats().unwrap().refreshes_in_flight, 0);
    let ok = client.get("/public/x").send::<Value>().await.unwrap();
    assert_eq!(ok.data["authorization_present"], true);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(client.rotation_stats().unwrap().refreshes_in_flight, 0);
}

/// A refresh that takes 5.3 s (on the injected clock) still leaves the whole grace window: a
/// late request with the old cookies gets the successor, and the refresh token is sent once.
pub(crate) async fn a_slow_refresh_still_leaves_the_full_grace_window<A: Adapter>() {
    let w = world();
    let client = w.session_client::<A>();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    let old = browser.snapshot();
    w.clock.advance(Duration::from_secs(3600));
    w.server
        .fail_next_refresh_requests(1, Fault::Delay(Duration::from_millis(400)));
    let clock = w.clock.clone();
    let (user, ()) = futures_util::future::join(user_of(&client, &browser), async move {
        // The refresh is at the server now; 5.3 s pass before its answer arrives.
        futures_timer::Delay::new(Duration::from_millis(150)).await;
        clock.advance(Duration::from_millis(5300));
    })
    .await;
    assert_eq!(user.unwrap(), "alice");
    assert_eq!(w.server.count("/auth/refresh"), 1);
    // 4 s after the new tokens arrived (9.3 s after the refresh started).
    w.clock.advance(Duration::from_secs(4));
    let late = Browser::new();
    late.restore(old);
    assert_eq!(user_of(&client, &late).await.unwrap(), "alice");
    assert_eq!(
        late.cookie("refresh_token"),
        browser.cookie("refresh_token"),
        "the late request got the successor"
    );
    assert_eq!(w.server.count("/auth/refresh"), 1, "one refresh");
    assert_eq!(w.server.reuse_detected(), 0);
}

/// 1,000 callers dropped while their shared refresh is at the token endpoint: the refresh
/// still completes and is stored (every adapter drives it, isahc on its own thread), and no
/// flight is left over.
pub(crate) async fn a_refresh_whose_callers_were_all_dropped_is_completed_and_stored<A: Adapter>() {
    let w = world();
    let client = w.provider_client::<A>();
    w.server
        .fail_next_token_requests(1, Fault::Delay(Duration::from_millis(300)));
    let callers = futures_util::future::join_all((0..1000).map(|_| client.get("/api/x").send::<Value>()));
    let gave_up = futures_util::future::select(
        Box::pin(callers),
        futures_timer::Delay::new(Duration::from_millis(100)),
    )
    .await;
    assert!(
        matches!(gave_up, futures_util::future::Either::Right(_)),
        "the callers were still waiting"
    );
    drop(gave_up); // every caller is dropped mid-refresh
    let probe = client.clone();
    crate::scenarios::eventually(move || probe.rotation_stats().unwrap().refreshes_in_flight == 0).await;
    assert_eq!(w.server.token_requests(), 1);
    assert_eq!(
        get_id(&client, "/api/x").await,
        1,
        "the dropped callers' refresh was stored"
    );
    assert_eq!(w.server.token_requests(), 1, "and not fetched again");
}

/// Sessions and, per session, browser tabs sending at once after every access token was
/// revoked: each session is refreshed exactly once per round, and no refresh token is ever
/// sent twice (the server counts reuse). Two rounds, so the second runs on rotated cookies.
pub(crate) async fn ten_thousand_cookie_sessions_with_concurrent_401s_never_resend_a_refresh_token<
    A: Adapter,
>() {
    use futures_util::StreamExt;
    const SESSIONS: usize = 10_000;
    const TABS: usize = 2;
    // Bounded so that isahc's bundled curl stays under its socket limit (see `HERDS`).
    const AT_ONCE: usize = 100;
    let w = crate::scenarios::exclusive_world();
    let client = w.session_client::<A>();
    let browsers: Vec<Browser> = (0..SESSIONS).map(|_| Browser::new()).collect();
    futures_util::stream::iter(browsers.iter().enumerate())
        .for_each_concurrent(AT_ONCE, |(i, browser)| {
            let client = client.clone();
            async move {
                let (user, password) = tokenkit_tests::USERS[i % 2];
                login(&client, browser, user, password).await;
            }
        })
        .await;
    for round in 1..=2 {
        w.server.revoke_all();
        let failures = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(browsers.iter().enumerate())
            .for_each_concurrent(AT_ONCE / TABS, |(i, browser)| {
                let (client, failures) = (client.clone(), &failures);
                async move {
                    let tabs = (0..TABS).map(|_| {
                        let (client, ctx) = (client.clone(), browser.context());
                        async move {
                            let page = client.get("/api/me").send::<Value>();
                            (tokenkit_core::run_with_context(ctx.clone(), page).await, ctx)
                        }
                    });
                    for (result, ctx) in futures_util::future::join_all(tabs).await {
                        match result {
                            Ok(page) if page.data["user"] == tokenkit_tests::USERS[i % 2].0 => {
                                browser.absorb(&ctx)
                            }
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
            .await;
        assert_eq!(failures.into_inner(), 0, "round {round}: failed pages");
        assert_eq!(
            w.server.reuse_detected(),
            0,
            "round {round}: a refresh token was sent twice"
        );
        assert_eq!(
            w.server.count("/auth/refresh"),
            SESSIONS * round,
            "round {round}: one refresh per session"
        );
    }
    let stats = client.rotation_stats().unwrap();
    assert_eq!(stats.refreshes_in_flight, 0);
}
