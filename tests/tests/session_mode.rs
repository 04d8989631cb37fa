//! Session mode (astro-tokenkit parity) through reqwest against the test auth server: login,
//! refresh, logout, cookie and session-backend stores, the grace window, concurrent users.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokenkit_core::cookie::SameSite;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    run_with_context, AccessToken, AuthFailure, Client, ClientBuilder, CookieConfig, CookieStore,
    EndpointConfig, ErrorKind, LoginOptions, RefreshOptions, RefreshToken, StandardPolicy, TokenRecord,
};
use tokenkit_tests::{AuthServer, Browser, Fault, Recorder};

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

const ALICE: (&str, &str) = ("alice", "wonderland");
const BOB: (&str, &str) = ("bob", "builder");

fn creds((user, pass): (&str, &str)) -> Value {
    json!({"username": user, "password": pass})
}

impl Setup {
    fn endpoints(&self) -> EndpointConfig {
        EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout")
    }

    fn builder_with(&self, endpoints: EndpointConfig) -> ClientBuilder {
        let builder = tokenkit_reqwest::builder(self.server.url())
            .clock(self.clock.clone())
            .endpoints(endpoints)
            // Plain-http test server: Secure cookies would never come back from a browser.
            .store(CookieStore::new(CookieConfig::new().secure(false)))
            .policy(StandardPolicy::default().jitter_percent(0));
        self.recorder.wire(builder)
    }

    fn client(&self) -> Client {
        self.builder_with(self.endpoints()).build().unwrap()
    }

    /// Expires the access tokens on both sides.
    fn expire(&self) {
        self.clock.advance(Duration::from_secs(3600));
    }

    fn refreshes(&self) -> usize {
        self.server.count("/auth/refresh")
    }
}

async fn login(client: &Client, browser: &Browser, who: (&str, &str)) {
    let (result, _) = browser
        .visit(client.login(&creds(who), LoginOptions::new()))
        .await;
    result.unwrap();
}

async fn get_user(client: &Client, browser: &Browser) -> Result<String, tokenkit_core::Error> {
    let (result, _) = browser.visit(client.get("/api/me").send::<Value>()).await;
    result.map(|r| r.data["user"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn login_sets_http_only_cookies_and_returns_the_bundle() {
    let s = setup().await;
    let endpoints = s
        .endpoints()
        // The credentials win over both kinds of data, as the seed merges them.
        .login_data(json!({"client": "web", "username": "from-config"}))
        .login_param("lang", "en")
        .header("x-app", "demo");
    let client = s.builder_with(endpoints).build().unwrap();
    let browser = Browser::new();
    let options = LoginOptions::new()
        .data(json!({"remember": true, "password": "from-options"}))
        .param("via", "form")
        .header("x-trace", "t1");
    let (result, ctx) = browser.visit(client.login(&creds(ALICE), options)).await;
    let response = result.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.data.payload.as_ref().unwrap()["name"], "alice");
    assert!(response.data.refresh_token.is_some());

    let delta = ctx.cookie_delta();
    let mut names: Vec<_> = delta.iter().map(|c| c.name().to_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "access_expires_at",
            "access_token",
            "last_refresh_at",
            "refresh_token",
            "session_payload",
            "token_type"
        ]
    );
    for c in &delta {
        assert_eq!(c.http_only(), Some(true), "{}", c.name());
        assert_eq!(c.same_site(), Some(SameSite::Lax));
        assert_eq!(c.path(), Some("/"));
        assert_eq!(c.secure(), Some(false), "turned off explicitly for plain http");
        assert_eq!(c.max_age(), Some(tokenkit_core::cookie::time::Duration::days(7)));
    }

    let logged = s
        .server
        .log()
        .into_iter()
        .find(|r| r.path == "/auth/login")
        .unwrap();
    assert_eq!(logged.query.as_deref(), Some("lang=en&via=form"));
    assert_eq!(logged.headers.get("x-app").unwrap(), "demo");
    assert_eq!(logged.headers.get("x-trace").unwrap(), "t1");
    assert_eq!(logged.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(
        logged.body_fields(),
        json!({"client": "web", "username": "alice", "password": "wonderland", "remember": true})
    );
    assert_eq!(s.recorder.count("logged_in"), 1);
    assert!(s.recorder.messages("logged_in")[0].contains("body_has_user=true ctx=true"));

    // The session is used by later page loads.
    assert_eq!(get_user(&client, &browser).await.unwrap(), "alice");
}

#[tokio::test]
async fn login_failures_are_typed_and_reported() {
    let s = setup().await;
    let client = s.client();
    let browser = Browser::new();
    let options = LoginOptions::new();
    let (result, ctx) = browser
        .visit(client.login(&creds(("alice", "wrong")), options))
        .await;
    let err = result.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::Rejected));
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert!(err.to_string().contains("invalid_credentials"), "{err}");
    assert!(ctx.cookie_delta().is_empty());
    assert_eq!(s.recorder.count("login_failed"), 1);
    assert!(s.recorder.messages("login_failed")[0].contains("context: Some("));
    // Credentials that are not an object are a configuration error, not a panic.
    let (result, _) = browser
        .visit(client.login(&"just a string", LoginOptions::new()))
        .await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Config);
    // Provider-mode clients have no login.
    let provider = tokenkit_reqwest::builder(s.server.url())
        .provider(tokenkit_tests::token_provider(s.server.token_url()))
        .build()
        .unwrap();
    let err = provider
        .login(&creds(ALICE), LoginOptions::new())
        .await
        .unwrap_err();
    assert!(err.message().contains("endpoint mode"));
}

#[tokio::test]
async fn without_a_context_session_operations_say_how_to_bind_one() {
    let s = setup().await;
    let client = s.client();
    let err = client.get("/api/me").send::<Value>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoContext);
    assert!(err.message().contains("run_with_context"), "{err}");
    let err = client
        .login(&creds(ALICE), LoginOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoContext);
    // Not logged in: a typed auth error, not a failure count.
    let (result, _) = Browser::new().visit(client.get("/api/me").send::<Value>()).await;
    assert_eq!(result.unwrap_err().auth_failure(), Some(AuthFailure::NoSession));
    assert_eq!(s.recorder.count("refresh_failed"), 0);
    assert_eq!(s.refreshes(), 0);
}

#[tokio::test]
async fn a_rejected_refresh_clears_the_session_and_other_failures_keep_it() {
    let s = setup().await;
    let client = s.client();
    let browser = Browser::new();
    login(&client, &browser, ALICE).await;
    s.expire();

    // 503: the session survives, the request fails with the reason.
    s.server.fail_next_refresh_requests(1, Fault::Status(503));
    let (result, ctx) = browser.visit(client.get("/api/me").send::<Value>()).await;
    let err = result.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::TokenUnavailable));
    assert!(err.to_string().contains("503"), "{err}");
    assert!(ctx.cookie_delta().is_empty(), "cookies untouched");
    assert_eq!(s.recorder.count("refresh_failed"), 1);
    assert_eq!(s.recorder.count("session_invalid"), 0);
    s.clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY); // past the outage backoff

    // 401 (invalid_grant): the session is cleared and every cookie expired.
    s.server.fail_next_refresh_requests(1, Fault::Status(401));
    let (result, ctx) = browser.visit(client.get("/api/me").send::<Value>()).await;
    let err = result.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid));
    assert_eq!(
        ctx.cookie_delta().len(),
        6,
        "the five token cookies and the payload"
    );
    assert!(browser.snapshot().is_empty(), "logged out");
    assert_eq!(s.recorder.count("session_invalid"), 1);
    assert_eq!(s.recorder.count("refresh_failed"), 2);

    // A garbage refresh body keeps the session too.
    let browser = Browser::new();
    login(&client, &browser, BOB).await;
    s.expire();
    s.server.fail_next_refresh_requests(1, Fault::Garbage);
    let (result, _) = browser.visit(client.get("/api/me").send::<Value>()).await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidToken);
    assert_eq!(get_user(&client, &browser).await.unwrap(), "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_with_parallel_requests_and_the_grace_window() {
    let s = setup().await;
    let client = s.client();
    let browser = Browser::new();
    login(&client, &browser, ALICE).await;
    let old_cookies = browser.snapshot();
    s.expire();

    // 20 parallel page loads with the same (old) cookies: one refresh, every page served,
    // and every response carries the new tokens.
    let pages = join_all((0..20).map(|_| {
        let (client, ctx) = (client.clone(), browser.context());
        tokio::spawn(async move {
            let result = run_with_context(ctx.clone(), client.get("/api/me").send::<Value>()).await;
            (result.map(|r| r.data["user"].clone()), ctx)
        })
    }))
    .await;
    let mut new_refresh = None;
    for page in pages {
        let (result, ctx) = page.unwrap();
        assert_eq!(result.unwrap(), "alice");
        let set: Vec<_> = ctx
            .cookie_delta()
            .into_iter()
            .filter(|c| c.name() == "refresh_token")
            .collect();
        assert_eq!(set.len(), 1, "each response sets the rotated refresh token");
        let value = set[0].value().to_owned();
        assert_eq!(new_refresh.get_or_insert(value.clone()), &value);
        browser.absorb(&ctx);
    }
    assert_eq!(s.refreshes(), 1);

    // A late request still carrying the old refresh token, inside the grace window: the new
    // tokens, no second rotation, no reuse detected by the server.
    s.clock.advance(Duration::from_secs(3));
    let late = Browser::new();
    late.restore(old_cookies.clone());
    assert_eq!(get_user(&client, &late).await.unwrap(), "alice");
    assert_eq!(late.cookie("refresh_token"), new_refresh);
    assert_eq!(s.refreshes(), 1);
    assert_eq!(s.server.reuse_detected(), 0);

    // Past the grace window the old token really is reused: the server detects it and the
    // session is invalidated (the server revokes the family).
    s.clock.advance(Duration::from_secs(10));
    let stale = Browser::new();
    stale.restore(old_cookies);
    let err = get_user(&client, &stale).await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid));
    assert_eq!(s.server.reuse_detected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_500_concurrent_requests_each_never_see_each_other() {
    let s = setup().await;
    let client = s.client();
    let (alice, bob) = (Browser::new(), Browser::new());
    login(&client, &alice, ALICE).await;
    login(&client, &bob, BOB).await;
    s.expire();
    let tasks = (0..1000).map(|i| {
        let (who, browser) = if i % 2 == 0 {
            ("alice", &alice)
        } else {
            ("bob", &bob)
        };
        let (client, ctx) = (client.clone(), browser.context());
        tokio::spawn(async move {
            let result = run_with_context(ctx, client.get("/api/me").send::<Value>()).await;
            (who, result.unwrap().data["user"].as_str().unwrap().to_owned())
        })
    });
    for result in join_all(tasks).await {
        let (expected, got) = result.unwrap();
        assert_eq!(expected, got, "a request carried another user's token");
    }
    assert_eq!(
        s.refreshes(),
        2,
        "each user's expired session refreshed exactly once"
    );
    assert_eq!(s.server.reuse_detected(), 0);
}

#[tokio::test]
async fn session_helpers_read_without_mutating_and_refresh_on_demand() {
    let s = setup().await;
    let client = s.client();
    let browser = Browser::new();
    let (authenticated, _) = browser.visit(client.is_authenticated()).await;
    assert!(!authenticated.unwrap());
    let (ensured, _) = browser.visit(client.ensure()).await;
    assert!(ensured.unwrap().is_none(), "no session: nothing to ensure");
    login(&client, &browser, ALICE).await;

    // session(): the payload, no refresh, no cookie written — even when expired.
    s.expire();
    let (session, ctx) = browser.visit(client.session()).await;
    let session = session.unwrap().unwrap();
    assert_eq!(
        session.payload.as_ref().unwrap()["name"],
        "alice",
        "the login's user object is kept with the session"
    );
    assert!(
        ctx.cookie_delta().is_empty(),
        "reading the session never mutates it"
    );
    let (authenticated, ctx) = browser.visit(client.is_authenticated()).await;
    assert!(authenticated.unwrap(), "expired but refreshable");
    assert!(ctx.cookie_delta().is_empty());
    assert_eq!(s.refreshes(), 0);

    // ensure(): refreshes what is due and sets the cookies.
    let (ensured, ctx) = browser.visit(client.ensure()).await;
    assert!(ensured.unwrap().is_some());
    assert_eq!(s.refreshes(), 1);
    assert!(!ctx.cookie_delta().is_empty());
    let (ensured, ctx) = browser.visit(client.ensure()).await;
    ensured.unwrap();
    assert_eq!(s.refreshes(), 1, "fresh: nothing to do");
    assert!(ctx.cookie_delta().is_empty());

    // refresh_session(): forced, with per-call data.
    let (forced, _) = browser
        .visit(client.refresh_session(RefreshOptions::new().data(json!({"reason": "role change"}))))
        .await;
    forced.unwrap();
    assert_eq!(s.refreshes(), 2);
    let last = s
        .server
        .log()
        .into_iter()
        .rfind(|r| r.path == "/auth/refresh")
        .unwrap();
    assert_eq!(last.body_fields()["reason"], "role change");
}

#[tokio::test]
async fn refresh_rejections_400_401_403_all_invalidate_the_session() {
    for status in [400, 401, 403] {
        let s = setup().await;
        let client = s.client();
        let browser = Browser::new();
        login(&client, &browser, ALICE).await;
        s.expire();
        s.server.fail_next_refresh_requests(1, Fault::Status(status));
        let err = get_user(&client, &browser).await.unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid), "{status}");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
        assert!(browser.snapshot().is_empty(), "{status}: cookies expired");
        assert_eq!(s.recorder.count("session_invalid"), 1);
    }
}

#[tokio::test]
async fn login_refresh_and_logout_timeouts_are_typed() {
    let s = setup().await;
    let endpoints = s
        .endpoints()
        .timeout(Duration::from_millis(200))
        .logout_timeout(Duration::from_millis(200));
    let client = s.builder_with(endpoints).build().unwrap();
    let browser = Browser::new();

    s.server
        .fail_next_login_requests(1, Fault::Delay(Duration::from_secs(5)));
    let (result, _) = browser
        .visit(client.login(&creds(ALICE), LoginOptions::new()))
        .await;
    assert!(result.unwrap_err().is_timeout());
    // A per-call login timeout overrides the configured one.
    s.server
        .fail_next_login_requests(1, Fault::Delay(Duration::from_millis(400)));
    let options = LoginOptions::new().timeout(Duration::from_secs(5));
    browser
        .visit(client.login(&creds(ALICE), options))
        .await
        .0
        .unwrap();

    s.expire();
    s.server
        .fail_next_refresh_requests(1, Fault::Delay(Duration::from_secs(5)));
    let err = get_user(&client, &browser).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        !browser.snapshot().is_empty(),
        "a timed-out refresh keeps the session"
    );

    s.server
        .fail_next_logout_requests(1, Fault::Delay(Duration::from_secs(5)));
    let (result, _) = browser.visit(client.logout()).await;
    assert!(result.unwrap_err().is_timeout());
    assert!(browser.snapshot().is_empty(), "cleared anyway");
}

#[tokio::test]
async fn format_token_formats_the_header_from_token_and_type() {
    let s = setup().await;
    let client = s
        .builder_with(s.endpoints())
        .format_token(|token, kind| format!("{}-scheme {token}", kind.unwrap_or("none")))
        .build()
        .unwrap();
    let browser = Browser::new();
    login(&client, &browser, ALICE).await;
    browser
        .visit(client.get("/public/x").send::<Value>())
        .await
        .0
        .unwrap();
    let sent = s
        .server
        .log()
        .into_iter()
        .find(|r| r.path == "/public/x")
        .unwrap();
    assert!(sent.authorization.unwrap().starts_with("Bearer-scheme tk"));
}

#[tokio::test]
async fn custom_parsers_and_field_mapping() {
    let s = setup().await;
    // parse_login / parse_refresh replace detection entirely.
    let endpoints = s
        .endpoints()
        .parse_login(|body, now| {
            let token = body["access_token"].as_str().unwrap_or_default();
            let refresh = body["refresh_token"].as_str().unwrap_or_default();
            Ok(
                tokenkit_core::TokenRecord::new(tokenkit_core::AccessToken::new(token), now)
                    .with_refresh_token(tokenkit_core::RefreshToken::new(refresh))
                    .with_expires_at(now + Duration::from_secs(60))
                    .with_payload(json!({"parsed_by": "parse_login"})),
            )
        })
        .parse_refresh(|body, now| {
            let token = body["access_token"].as_str().unwrap_or_default();
            Ok(
                tokenkit_core::TokenRecord::new(tokenkit_core::AccessToken::new(token), now)
                    .with_payload(json!({"parsed_by": "parse_refresh"})),
            )
        });
    let client = s.builder_with(endpoints).build().unwrap();
    let browser = Browser::new();
    let (result, _) = browser
        .visit(client.login(&creds(ALICE), LoginOptions::new()))
        .await;
    let bundle = result.unwrap().data;
    assert_eq!(bundle.payload, Some(json!({"parsed_by": "parse_login"})));
    assert_eq!(
        bundle.lifetime(),
        Some(Duration::from_secs(60)),
        "the parser's expiry, not the server's"
    );
    let old_refresh = browser.cookie("refresh_token");
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(get_user(&client, &browser).await.unwrap(), "alice");
    assert_eq!(s.refreshes(), 1);
    assert_eq!(
        browser.cookie("refresh_token"),
        old_refresh,
        "parse_refresh gave none: the old one is kept"
    );
    assert!(
        browser.cookie("access_expires_at").is_none(),
        "no expiry from parse_refresh"
    );

    // FieldMapping: the payload from a nested field.
    let mapped = s
        .builder_with(
            s.endpoints()
                .fields(tokenkit_core::FieldMapping::new().session_payload("user.name")),
        )
        .build()
        .unwrap();
    let (result, _) = Browser::new()
        .visit(mapped.login(&creds(BOB), LoginOptions::new()))
        .await;
    assert_eq!(result.unwrap().data.payload, Some(json!("bob")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_table_empties_by_itself_after_the_window() {
    let s = setup().await;
    let client = s
        .builder_with(s.endpoints())
        .policy(
            StandardPolicy::default()
                .jitter_percent(0)
                .grace_window(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let browsers: Vec<Browser> = (0..3).map(|_| Browser::new()).collect();
    for b in &browsers {
        login(&client, b, ALICE).await;
    }
    s.expire();
    for b in &browsers {
        get_user(&client, b).await.unwrap();
    }
    let stats = client.rotation_stats().unwrap();
    assert_eq!(
        (stats.grace_entries, stats.refreshes_in_flight),
        (3, 0),
        "one entry per rotated session"
    );
    // Past the window (injected clock), the background pruner empties the table; the wait is
    // only for that task to run.
    s.clock.advance(Duration::from_secs(1));
    for _ in 0..250 {
        if client.rotation_stats().unwrap().grace_entries == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.rotation_stats().unwrap().grace_entries, 0);
}

/// Tokens obtained elsewhere (here: straight from the auth server, outside tokenkit) are put
/// into the session, then injected and rotated like a login's; a record a header cannot carry
/// is refused and changes nothing.
#[tokio::test]
async fn tokens_obtained_elsewhere_join_the_session() {
    let s = setup().await;
    let client = s.client();
    let body: Value = reqwest::Client::new()
        .post(format!("{}/auth/login", s.server.url()))
        .json(&creds(ALICE))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = tokenkit_core::Clock::now(&s.clock);
    let record = TokenRecord::new(AccessToken::new(body["access_token"].as_str().unwrap()), now)
        .with_refresh_token(RefreshToken::new(body["refresh_token"].as_str().unwrap()))
        .with_expires_in(Duration::from_secs(body["expires_in"].as_u64().unwrap()))
        .unwrap()
        .with_payload(json!({"name": "alice"}));
    let browser = Browser::new();
    let (stored, _) = browser.visit(client.set_session(record)).await;
    assert!(stored.unwrap().payload.is_some());
    assert_eq!(get_user(&client, &browser).await.unwrap(), "alice");
    assert_eq!(s.server.count("/auth/login"), 1, "no login through tokenkit");

    // Rotated like any session.
    s.expire();
    assert_eq!(get_user(&client, &browser).await.unwrap(), "alice");
    assert_eq!(s.refreshes(), 1);

    // A record a header cannot carry is refused; the session is unchanged.
    let bad = TokenRecord::new(AccessToken::new("bad\r\ntoken"), now);
    let (result, ctx) = browser.visit(client.set_session(bad)).await;
    assert_eq!(result.unwrap_err().kind(), tokenkit_core::ErrorKind::InvalidToken);
    assert!(ctx.cookie_delta().is_empty());
    assert_eq!(get_user(&client, &browser).await.unwrap(), "alice");
}
