//! Core and session scenarios, generic over the adapter and over the executor.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    run_with_context, AuthFailure, Client, ClientBuilder, CookieConfig, CookieStore, EndpointConfig,
    LoginOptions, ProvidedToken, StandardPolicy,
};
use tokenkit_tests::{AuthServer, Browser, Recorder, ResourceMode};

use crate::adapters::Adapter;

pub(crate) struct World {
    pub(crate) server: AuthServer,
    pub(crate) clock: ManualClock,
    pub(crate) recorder: Recorder,
    _turn: Turn,
}

/// Scenarios that open a thousand connections at once run alone: beside them, curl (isahc)
/// in other tests of this process fails to connect (code 7) — its bundled build cannot use
/// socket numbers above ~1,024 (see BENCHMARKS.md, `isahc-burst`).
static HERDS: RwLock<()> = RwLock::new(());

enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

fn world_with(turn: Turn) -> World {
    let clock = ManualClock::default();
    let server = AuthServer::start_in_thread(Arc::new(clock.clone())).unwrap();
    World {
        server,
        clock,
        recorder: Recorder::new(),
        _turn: turn,
    }
}

pub(crate) fn world() -> World {
    world_with(Turn::Shared(HERDS.read().unwrap_or_else(PoisonError::into_inner)))
}

/// A world for a scenario that must not share the machine with others.
pub(crate) fn exclusive_world() -> World {
    world_with(Turn::Exclusive(
        HERDS.write().unwrap_or_else(PoisonError::into_inner),
    ))
}

/// A provider that fetches from the token endpoint through the adapter under test itself
/// (no auth on that call), so it runs on whatever executor drives the scenario.
pub(crate) fn provider<A: Adapter>(
    url: &str,
) -> impl Fn() -> tokenkit_core::BoxFuture<'static, Result<ProvidedToken, tokenkit_core::Error>> + Send + Sync
{
    let plain = A::builder(url)
        .retry(tokenkit_core::RetryConfig::none())
        .build()
        .unwrap();
    move || {
        let plain = plain.clone();
        Box::pin(async move {
            let response = plain
                .post("/oauth/token")
                .skip_auth()
                .form(&[("grant_type", "client_credentials")])
                .send::<ProvidedToken>()
                .await?;
            Ok(response.data)
        })
    }
}

impl World {
    pub(crate) fn provider_builder<A: Adapter>(&self) -> ClientBuilder {
        let builder = A::builder(&self.server.url())
            .clock(self.clock.clone())
            .provider(provider::<A>(&self.server.url()))
            .policy(StandardPolicy::provider().jitter_percent(0));
        self.recorder.wire(builder)
    }

    pub(crate) fn provider_client<A: Adapter>(&self) -> Client {
        self.provider_builder::<A>().build().unwrap()
    }

    pub(crate) fn session_builder<A: Adapter>(&self) -> ClientBuilder {
        let builder = A::builder(&self.server.url())
            .clock(self.clock.clone())
            .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"))
            .store(CookieStore::new(CookieConfig::new().secure(false)))
            .policy(StandardPolicy::default().jitter_percent(0));
        self.recorder.wire(builder)
    }

    pub(crate) fn session_client<A: Adapter>(&self) -> Client {
        self.session_builder::<A>().build().unwrap()
    }
}

pub(crate) fn token_id(body: &Value) -> u64 {
    body["token_id"].as_u64().expect("token_id")
}

pub(crate) async fn get_id(client: &Client, path: &str) -> u64 {
    token_id(&client.get(path).send::<Value>().await.unwrap().data)
}

pub(crate) async fn login(client: &Client, browser: &Browser, user: &str, password: &str) {
    let creds = json!({"username": user, "password": password});
    browser
        .visit(client.login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
}

pub(crate) async fn user_of(client: &Client, browser: &Browser) -> Result<String, tokenkit_core::Error> {
    let (result, _) = browser.visit(client.get("/api/me").send::<Value>()).await;
    result.map(|r| r.data["user"].as_str().unwrap_or_default().to_owned())
}

/// Waits (executor-agnostic, at most 5 s) until `done` holds; for background work only.
pub(crate) async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        futures_timer::Delay::new(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

pub(crate) async fn reuses_one_token<A: Adapter>() {
    let w = world();
    let client = w.provider_client::<A>();
    for _ in 0..3 {
        assert_eq!(get_id(&client, "/api/a").await, 1);
    }
    assert_eq!(w.server.token_requests(), 1);
}

pub(crate) async fn a_thousand_requests_on_an_expired_token_share_one_fetch<A: Adapter>() {
    let w = exclusive_world();
    let client = w.provider_client::<A>();
    let cold = join_all((0..1000).map(|_| client.get("/api/cold").send::<Value>())).await;
    assert!(cold.iter().all(Result::is_ok));
    assert_eq!(w.server.token_requests(), 1, "cold start");
    w.clock.advance(Duration::from_secs(7200));
    let warm = join_all((0..1000).map(|_| client.get("/api/warm").send::<Value>())).await;
    assert!(warm.into_iter().all(|r| token_id(&r.unwrap().data) == 2));
    assert_eq!(w.server.token_requests(), 2, "exactly one refetch");
}

pub(crate) async fn a_401_storm_on_a_revoked_token_causes_one_refetch<A: Adapter>() {
    let w = world();
    let client = w.provider_client::<A>();
    get_id(&client, "/api/warmup").await;
    w.server.revoke_all();
    let storm = join_all((0..200).map(|_| client.get("/api/x").send::<Value>())).await;
    assert!(storm.into_iter().all(|r| token_id(&r.unwrap().data) == 2));
    assert_eq!(w.server.token_requests(), 2);
}

pub(crate) async fn proactive_refresh_before_expiry<A: Adapter>() {
    let w = world();
    w.server.set_token_lifetime(Duration::from_secs(100));
    let client = w.provider_client::<A>();
    assert_eq!(get_id(&client, "/api/a").await, 1);
    w.clock.advance(Duration::from_secs(91));
    let during = get_id(&client, "/api/a").await;
    if A::SPAWNS {
        assert_eq!(during, 1, "background refresh: the valid token is used meanwhile");
    } else {
        assert_eq!(during, 2, "no spawner: refreshed inline before sending");
    }
    let recorder = w.recorder.clone();
    eventually(move || recorder.count("refreshed") == 2).await;
    assert_eq!(get_id(&client, "/api/a").await, 2);
    assert_eq!(w.server.token_requests(), 2);
}

pub(crate) async fn a_server_that_always_rejects_aborts_after_five_recoveries<A: Adapter>() {
    let w = world();
    let client = w.provider_client::<A>();
    get_id(&client, "/api/a").await;
    w.server.set_resource_mode(ResourceMode::AlwaysUnauthorized);
    w.server.clear_log();
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    assert_eq!(w.server.count("/api/a"), 6);
    assert_eq!(w.server.token_requests(), 5);
    assert_eq!(w.recorder.count("recovery_aborted"), 1);
}

pub(crate) async fn the_token_goes_only_to_the_base_origin<A: Adapter>() {
    let w = world();
    let other = AuthServer::start_in_thread(Arc::new(w.clock.clone())).unwrap();
    let client = w.provider_client::<A>();
    let resp = client
        .get(format!("{}/public/x", other.url()))
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(resp.data["authorization_present"], false);
    assert_eq!(w.server.token_requests(), 0);
    let resp = client.get("/public/x").send::<Value>().await.unwrap();
    assert_eq!(resp.data["authorization_present"], true);
}

pub(crate) async fn session_login_refresh_logout<A: Adapter>() {
    let w = world();
    let client = w.session_client::<A>();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    assert_eq!(
        browser.snapshot().len(),
        6,
        "the five token cookies and the session payload"
    );
    assert_eq!(user_of(&client, &browser).await.unwrap(), "alice");
    let before = browser.cookie("refresh_token");
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(user_of(&client, &browser).await.unwrap(), "alice");
    assert_ne!(browser.cookie("refresh_token"), before, "rotated");
    assert_eq!(w.server.count("/auth/refresh"), 1);
    browser.visit(client.logout()).await.0.unwrap();
    assert!(browser.snapshot().is_empty());
    assert_eq!(w.server.count("/auth/logout"), 1);
}

pub(crate) async fn two_users_concurrently_never_share_a_token<A: Adapter>() {
    let w = world();
    let client = w.session_client::<A>();
    let (alice, bob) = (Browser::new(), Browser::new());
    login(&client, &alice, "alice", "wonderland").await;
    login(&client, &bob, "bob", "builder").await;
    w.clock.advance(Duration::from_secs(3600));
    let requests = (0..400).map(|i| {
        let (who, browser) = if i % 2 == 0 {
            ("alice", &alice)
        } else {
            ("bob", &bob)
        };
        let (client, ctx) = (client.clone(), browser.context());
        async move {
            let resp = run_with_context(ctx, client.get("/api/me").send::<Value>())
                .await
                .unwrap();
            (who, resp.data["user"].as_str().unwrap().to_owned())
        }
    });
    for (expected, got) in join_all(requests).await {
        assert_eq!(expected, got);
    }
    assert_eq!(w.server.count("/auth/refresh"), 2);
    assert_eq!(w.server.reuse_detected(), 0);
}

pub(crate) async fn rotation_with_parallel_requests_and_the_grace_window<A: Adapter>() {
    let w = world();
    let client = w.session_client::<A>();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    let old = browser.snapshot();
    w.clock.advance(Duration::from_secs(3600));
    let pages = (0..20).map(|_| {
        let (client, ctx) = (client.clone(), browser.context());
        async move {
            let user = run_with_context(ctx.clone(), client.get("/api/me").send::<Value>())
                .await
                .unwrap();
            (user.data["user"].clone(), ctx)
        }
    });
    for (user, ctx) in join_all(pages).await {
        assert_eq!(user, "alice");
        assert!(ctx.cookie_delta().iter().any(|c| c.name() == "refresh_token"));
        browser.absorb(&ctx);
    }
    assert_eq!(w.server.count("/auth/refresh"), 1);
    w.clock.advance(Duration::from_secs(2));
    let late = Browser::new();
    late.restore(old);
    assert_eq!(user_of(&client, &late).await.unwrap(), "alice");
    assert_eq!(late.cookie("refresh_token"), browser.cookie("refresh_token"));
    assert_eq!(w.server.count("/auth/refresh"), 1);
    assert_eq!(w.server.reuse_detected(), 0);
}

pub(crate) async fn request_builder_features<A: Adapter>() {
    let w = world();
    let client = A::builder(&format!("{}/api/", w.server.url()))
        .clock(w.clock.clone())
        .provider(provider::<A>(&w.server.url()))
        .build()
        .unwrap();
    let resp = client
        .get("/items?page=2")
        .query(&[("q", "a b")])
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(resp.data["query"], "page=2&q=a+b");
    let resp = client
        .post("items")
        .json(&json!({"n": 1}))
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(
        (resp.data["method"].as_str(), resp.data["body"].as_str()),
        (Some("POST"), Some(r#"{"n":1}"#))
    );
    let resp = client
        .put("items/1")
        .form(&[("a", "1")])
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(resp.data["content_type"], "application/x-www-form-urlencoded");
    let resp = client.delete("items/1").send_text().await.unwrap();
    assert!(resp.data.contains("DELETE"));
}

/// No credential follows a redirect, on any adapter: not the token (here in a custom header,
/// which HTTP clients do not strip), not a client secret or a refresh token in a token
/// request's body, not a password in a login body. tokenkit's adapters follow no redirect: the
/// 3xx comes back as the answer.
pub(crate) async fn redirects_never_carry_credentials_to_another_origin<A: Adapter>() {
    let w = world();
    let other = AuthServer::start_in_thread(Arc::new(w.clock.clone())).unwrap();
    let to = |path: &str| {
        let target = format!("{}{path}", other.url());
        serde_urlencoded::to_string([("to", target)]).unwrap()
    };
    let statuses = [301u16, 302, 303, 307, 308];

    // API requests: the token in x-api-key.
    let client = A::builder(&w.server.url())
        .clock(w.clock.clone())
        .retry(tokenkit_core::RetryConfig::none())
        .provider(provider::<A>(&w.server.url()))
        .header_name("x-api-key")
        .format_token(|token, _| token.to_owned())
        .build()
        .unwrap();
    for status in statuses {
        let err = client
            .get(format!("/redirect/{status}?{}", to("/public/x")))
            .send::<Value>()
            .await
            .unwrap_err();
        assert_eq!(
            err.status().map(|s| s.as_u16()),
            Some(status),
            "the 3xx is the answer"
        );
        let response = client
            .post(format!("/redirect/{status}?{}", to("/public/y")))
            .body("payload", "text/plain")
            .send_bytes()
            .await;
        assert!(response.is_err());
    }
    // The requests really carried the token to the redirecting origin.
    assert!(w
        .server
        .log()
        .iter()
        .any(|r| r.path.starts_with("/redirect") && r.headers.contains_key("x-api-key")));

    // Token requests: client_secret_post, then a refresh-token grant.
    let oauth = A::builder(&w.server.url())
        .clock(w.clock.clone())
        .retry(tokenkit_core::RetryConfig::none())
        .oauth2_client_credentials(
            tokenkit_core::OAuth2Config::new(format!("/redirect/307?{}", to("/oauth2/token")), "client-1")
                .client_secret("redirected-secret")
                .client_auth(tokenkit_core::ClientAuth::Post)
                .attempts(1),
        )
        .build()
        .unwrap();
    assert!(oauth.get("/api/a").send::<Value>().await.is_err());

    // Login and refresh calls of endpoint mode.
    let endpoints = EndpointConfig::new(
        format!("/redirect/307?{}", to("/auth/login")),
        format!("/redirect/308?{}", to("/auth/refresh")),
    );
    let session = A::builder(&w.server.url())
        .clock(w.clock.clone())
        .endpoints(endpoints)
        .store(tokenkit_core::CookieStore::new(
            tokenkit_core::CookieConfig::new().secure(false),
        ))
        .build()
        .unwrap();
    let browser = Browser::new();
    let credentials = serde_json::json!({"username": "alice", "password": "redirected-password"});
    let (login, _) = browser
        .visit(session.login(&credentials, tokenkit_core::LoginOptions::new()))
        .await;
    assert!(login.is_err());
    browser.restore([("refresh_token".to_owned(), "redirected-refresh".to_owned())].into());
    let (refreshed, _) = browser
        .visit(session.refresh_session(tokenkit_core::RefreshOptions::new()))
        .await;
    assert!(refreshed.is_err());

    let seen = other.log();
    assert!(seen.is_empty(), "nothing reached the other origin: {seen:?}");
}
