//! Provider mode (axios-token-manager parity) through reqwest against the test auth server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{AuthFailure, Client, ErrorKind, ProvidedToken, RetryConfig, Runtime, StandardPolicy};
use tokenkit_tests::{token_provider, AuthServer, Fault, Recorder, ResourceMode};

struct Setup {
    server: AuthServer,
    clock: ManualClock,
    recorder: Recorder,
}

async fn setup() -> Setup {
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    Setup {
        server,
        clock,
        recorder: Recorder::new(),
    }
}

impl Setup {
    /// A reqwest-backed provider-mode client sharing the server's clock, jitter off so
    /// boundaries are exact.
    fn builder(&self) -> tokenkit_core::ClientBuilder {
        let builder = tokenkit_reqwest::builder(self.server.url())
            .clock(self.clock.clone())
            .provider(token_provider(self.server.token_url()))
            .policy(StandardPolicy::provider().jitter_percent(0));
        self.recorder.wire(builder)
    }

    fn client(&self) -> Client {
        self.builder().build().unwrap()
    }
}

fn token_id(body: &Value) -> u64 {
    body["token_id"].as_u64().expect("token_id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_share_one_fetch_on_an_expired_token() {
    let s = setup().await;
    let client = s.client();
    // Cold start: no token yet, 1,000 at once.
    let results = join_all((0..1000).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.get("/api/cold").send::<Value>().await })
    }))
    .await;
    assert!(results.into_iter().all(|r| r.unwrap().is_ok()));
    assert_eq!(s.server.token_requests(), 1, "cold start");

    // Expire it on both sides, then 1,000 more at once.
    s.clock.advance(Duration::from_secs(2 * 3600));
    s.server.clear_log();
    let results = join_all((0..1000).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.get("/api/warm").send::<Value>().await })
    }))
    .await;
    let bodies: Vec<Value> = results.into_iter().map(|r| r.unwrap().unwrap().data).collect();
    assert_eq!(
        s.server.token_requests(),
        1,
        "exactly one refetch for the expired token"
    );
    assert!(bodies.iter().all(|b| token_id(b) == 2));
    assert_eq!(
        s.server.count("/api/warm"),
        1000,
        "no request was rejected and replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_requests_rejected_with_one_revoked_token_cause_one_refetch() {
    let s = setup().await;
    let client = s.client();
    client.get("/api/warmup").send::<Value>().await.unwrap();
    s.server.revoke_all();
    s.server.clear_log();
    let results = join_all((0..200).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.get("/api/x").send::<Value>().await })
    }))
    .await;
    for r in results {
        assert_eq!(token_id(&r.unwrap().unwrap().data), 2);
    }
    assert_eq!(s.server.token_requests(), 1);
    assert!(s.recorder.count("rejected") >= 1);
    assert_eq!(s.recorder.count("recovery_aborted"), 0);
}

fn runtime_without_spawn() -> Runtime {
    Runtime::new().with_sleep(tokenkit_tokio::TokioSleep)
}

#[tokio::test]
async fn without_a_spawner_the_proactive_refresh_is_awaited_inline() {
    let s = setup().await;
    s.server.set_token_lifetime(Duration::from_secs(100));
    let client = s
        .builder()
        .runtime(runtime_without_spawn())
        .clock(s.clock.clone())
        .build()
        .unwrap();
    client.get("/api/a").send::<Value>().await.unwrap();
    s.clock.advance(Duration::from_secs(91));
    let resp = client.get("/api/a").send::<Value>().await.unwrap();
    assert_eq!(token_id(&resp.data), 2, "refreshed before the request was sent");
    let paths: Vec<_> = s.server.log().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/oauth/token", "/api/a", "/oauth/token", "/api/a"]);
}

#[tokio::test]
async fn an_always_failing_provider_fires_the_threshold_at_10_and_20() {
    let s = setup().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let client = s
        .recorder
        .wire(tokenkit_reqwest::builder(s.server.url()))
        .provider(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<ProvidedToken, _>(std::io::Error::other("identity provider down")) }
        })
        // Every request calls the provider (the threshold counts calls, not requests).
        .outage(tokenkit_core::OutageConfig::disabled())
        .build()
        .unwrap();
    for _ in 0..25 {
        let err = client.get("/api/a").send::<Value>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth(AuthFailure::TokenUnavailable));
        assert!(err.to_string().contains("token provider failed"), "{err}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 25);
    assert_eq!(s.recorder.count("refresh_failed"), 25);
    assert_eq!(s.recorder.messages("failure_threshold"), ["10", "20"]);
    assert_eq!(s.server.count("/api/a"), 0);
}

#[tokio::test]
async fn a_success_resets_the_failure_count() {
    let s = setup().await;
    let client = s
        .builder()
        .outage(tokenkit_core::OutageConfig::disabled())
        .build()
        .unwrap();
    s.server.fail_next_token_requests(9, Fault::Status(500));
    for _ in 0..9 {
        assert!(client.get("/api/a").send::<Value>().await.is_err());
    }
    client.get("/api/a").send::<Value>().await.unwrap();
    s.clock.advance(Duration::from_secs(7200));
    s.server.fail_next_token_requests(10, Fault::Status(500));
    for _ in 0..10 {
        assert!(client.get("/api/a").send::<Value>().await.is_err());
    }
    assert_eq!(
        s.recorder.messages("failure_threshold"),
        ["10"],
        "9 failures, success, 10 failures"
    );
}

#[tokio::test]
async fn a_server_that_always_answers_401_aborts_after_5_recoveries() {
    let s = setup().await;
    let client = s.client();
    client.get("/api/a").send::<Value>().await.unwrap();
    s.server.set_resource_mode(ResourceMode::AlwaysUnauthorized);
    s.server.clear_log();
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert!(err.body().is_some_and(|b| !b.is_empty()));
    assert_eq!(s.server.count("/api/a"), 6, "the first try and 5 recoveries");
    assert_eq!(s.server.token_requests(), 5, "a new token for each recovery");
    assert_eq!(s.recorder.count("recovery_try"), 5);
    assert!(s.recorder.messages("recovery_try")[4].starts_with("recovery attempt 5 of 5"));
    assert_eq!(s.recorder.count("rejected"), 6);
    assert_eq!(s.recorder.count("recovery_aborted"), 1);

    // A later success, then the same failure: the full 5 recoveries again.
    s.server.set_resource_mode(ResourceMode::Normal);
    client.get("/api/a").send::<Value>().await.unwrap();
    s.server.set_resource_mode(ResourceMode::AlwaysUnauthorized);
    s.server.clear_log();
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    assert_eq!(s.server.count("/api/a"), 6);
    assert_eq!(s.recorder.count("recovery_aborted"), 2);
}

#[tokio::test]
async fn request_timeouts_and_token_fetch_timeouts_are_typed() {
    let s = setup().await;
    let client = s
        .builder()
        .retry(RetryConfig::none())
        .timeout(Duration::from_millis(200))
        .token_fetch_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    s.server
        .fail_next_token_requests(1, Fault::Delay(Duration::from_secs(5)));
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    s.clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY); // past the outage backoff
    client.get("/api/a").send::<Value>().await.unwrap();
    s.server
        .fail_next_resource_requests(1, Fault::Delay(Duration::from_secs(5)));
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // Per-request override.
    s.server
        .fail_next_resource_requests(1, Fault::Delay(Duration::from_millis(400)));
    let ok = client
        .get("/api/a")
        .timeout(Duration::from_secs(5))
        .send::<Value>()
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn malformed_token_responses_are_typed_errors() {
    let cases = [
        (Fault::Garbage, None),
        (
            Fault::Json(serde_json::json!({"token_type": "Bearer", "expires_in": 60})),
            None,
        ),
        (
            Fault::Json(serde_json::json!({"access_token": "ok", "expires_in": -5})),
            Some(ErrorKind::InvalidToken),
        ),
        (
            Fault::Json(serde_json::json!({"access_token": "ok", "expires_in": 0})),
            Some(ErrorKind::InvalidToken),
        ),
        (
            Fault::Json(serde_json::json!({"access_token": "a\r\nX-Evil: 1", "expires_in": 60})),
            Some(ErrorKind::InvalidToken),
        ),
        (
            Fault::Json(serde_json::json!({"access_token": "", "expires_in": 60})),
            Some(ErrorKind::InvalidToken),
        ),
        (
            Fault::Json(serde_json::json!({"access_token": "ok", "expires_in": 1e300})),
            None,
        ),
    ];
    for (fault, kind) in cases {
        let s = setup().await;
        let client = s.client();
        s.server.fail_next_token_requests(1, fault.clone());
        let err = client.get("/api/a").send::<Value>().await.unwrap_err();
        match kind {
            Some(kind) => assert_eq!(err.kind(), kind, "{fault:?}"),
            None => assert_eq!(
                err.auth_failure(),
                Some(AuthFailure::TokenUnavailable),
                "{fault:?}"
            ),
        }
        assert!(!err.to_string().contains("X-Evil"));
        s.clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY); // past any outage backoff
        assert_eq!(
            s.server.count("/api/a"),
            0,
            "{fault:?}: nothing sent with a bad token"
        );
        // Nothing was stored: the next call fetches a good token.
        assert_eq!(
            token_id(&client.get("/api/a").send::<Value>().await.unwrap().data),
            1
        );
    }
}

#[tokio::test]
async fn a_refresh_completes_and_is_stored_when_its_caller_is_dropped() {
    let s = setup().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let provider = token_provider(s.server.token_url());
    let (g, st) = (Arc::clone(&gate), Arc::clone(&started));
    let client = s
        .recorder
        .wire(tokenkit_reqwest::builder(s.server.url()).clock(s.clock.clone()))
        .provider(move || {
            st.notify_one();
            let g = Arc::clone(&g);
            let fetch = provider();
            async move {
                let _permit = g.acquire().await;
                fetch.await
            }
        })
        .build()
        .unwrap();
    let caller = tokio::spawn({
        let c = client.clone();
        async move { c.get("/api/a").send::<Value>().await }
    });
    // Once the refresh has started on the caller's behalf, cancel the caller.
    started.notified().await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    assert_eq!(s.server.count("/api/a"), 0);
    gate.add_permits(1);
    s.recorder.wait_for("refreshed", 1).await;
    // The stored token is used without another fetch.
    assert_eq!(
        token_id(&client.get("/api/a").send::<Value>().await.unwrap().data),
        1
    );
    assert_eq!(s.server.token_requests(), 1);
}

/// `insufficient_scope` (even on a 401) means the token is fine but lacks rights: no new token
/// is fetched, and the error names the scope; `invalid_token` is recovered with one refresh.
#[tokio::test]
async fn an_insufficient_scope_challenge_costs_no_refresh() {
    let s = setup().await;
    let client = s.client();
    client.get("/api/a").send::<Value>().await.unwrap();
    assert_eq!(s.server.token_requests(), 1);
    s.server.set_resource_mode(ResourceMode::InsufficientScope);
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::InsufficientScope), "{err}");
    assert!(err.to_string().contains("\"admin\""), "{err}");
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(s.server.token_requests(), 1, "0 refreshes");
    // An invalid token: exactly one refresh, then success.
    s.server.set_resource_mode(ResourceMode::Normal);
    s.server.revoke_all();
    client.get("/api/a").send::<Value>().await.unwrap();
    assert_eq!(s.server.token_requests(), 2, "1 refresh");
}
