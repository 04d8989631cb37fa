//! Session-mode scenarios (ported from the reqwest-only suite), for every adapter.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokenkit_core::{
    AuthFailure, AuthOverride, EndpointConfig, ErrorKind, LoginOptions, MemorySessionBackend, SessionStore,
};
use tokenkit_tests::{Browser, Fault};

use crate::adapters::Adapter;
use crate::scenarios::{login, user_of, world};

fn creds(user: &str, password: &str) -> Value {
    json!({"username": user, "password": password})
}

pub(crate) async fn form_encoded_auth_and_camel_case_responses<A: Adapter>() {
    let w = world();
    w.server.set_refresh_lifetime(Some(Duration::from_secs(86_400)));
    let endpoints = EndpointConfig::new("/form-auth/login", "/form-auth/refresh")
        .form()
        .refresh_request_field("refresh_token");
    let client = w.session_builder::<A>().endpoints(endpoints).build().unwrap();
    let browser = Browser::new();
    let (result, ctx) = browser
        .visit(client.login(&creds("bob", "builder"), LoginOptions::new()))
        .await;
    let bundle = result.unwrap().data;
    assert_eq!(bundle.payload.as_ref().unwrap()["name"], "bob");
    assert_eq!(bundle.lifetime(), Some(Duration::from_secs(3600)));
    assert!(ctx
        .cookie_delta()
        .iter()
        .all(|c| c.max_age() == Some(tokenkit_core::cookie::time::Duration::days(1))));
    let logged = w
        .server
        .log()
        .into_iter()
        .find(|r| r.path == "/form-auth/login")
        .unwrap();
    assert_eq!(
        logged.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        std::str::from_utf8(&logged.body).unwrap(),
        "password=builder&username=bob"
    );
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(user_of(&client, &browser).await.unwrap(), "bob");
}

pub(crate) async fn login_failures_are_typed<A: Adapter>() {
    let w = world();
    let client = w.session_client::<A>();
    let browser = Browser::new();
    let (result, ctx) = browser
        .visit(client.login(&creds("alice", "wrong"), LoginOptions::new()))
        .await;
    let err = result.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::Rejected));
    assert!(err.to_string().contains("invalid_credentials"));
    assert!(ctx.cookie_delta().is_empty());
    assert_eq!(w.recorder.count("login_failed"), 1);
    w.server.fail_next_login_requests(1, Fault::Garbage);
    let (result, _) = browser
        .visit(client.login(&creds("alice", "wonderland"), LoginOptions::new()))
        .await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidToken);
    assert!(browser.snapshot().is_empty());
}

pub(crate) async fn refresh_propagates_headers_data_and_params<A: Adapter>() {
    let w = world();
    let endpoints = EndpointConfig::new("/auth/login", "/auth/refresh")
        .refresh_data(json!({"client": "web"}))
        .refresh_param("v", "2");
    let client = w.session_builder::<A>().endpoints(endpoints).build().unwrap();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    let old_refresh = browser.cookie("refresh_token");
    w.clock.advance(Duration::from_secs(3600 - 300));
    let (result, _) = browser
        .visit(
            client
                .get("/api/me")
                .header("x-tenant-name", "lynx")
                .auth(AuthOverride::new().data(json!({"tenant": "lynx"})))
                .send::<Value>(),
        )
        .await;
    assert_eq!(result.unwrap().data["user"], "alice");
    let refresh = w
        .server
        .log()
        .into_iter()
        .find(|r| r.path == "/auth/refresh")
        .unwrap();
    let body = refresh.body_fields();
    assert_eq!(body["refreshToken"].as_str(), old_refresh.as_deref());
    assert_eq!(
        (body["client"].as_str(), body["tenant"].as_str()),
        (Some("web"), Some("lynx"))
    );
    assert_eq!(refresh.query.as_deref(), Some("v=2"));
    assert_eq!(refresh.headers["x-tenant-name"], "lynx");
    assert!(refresh.headers.get("cookie").is_none() && refresh.headers.get("authorization").is_none());
    assert_ne!(browser.cookie("refresh_token"), old_refresh);
}

/// The session knows its user on every request: the login's user object is kept with the
/// session, and a refresh whose response has none keeps it.
pub(crate) async fn the_session_payload_outlives_the_login_and_a_refresh_without_one<A: Adapter>() {
    let w = world();
    w.server.omit_user_on_refresh(true);
    let client = w.session_client::<A>();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    let name = |record: Option<Arc<tokenkit_core::TokenRecord>>| {
        record.and_then(|r| r.payload.as_ref()?["name"].as_str().map(str::to_owned))
    };
    let (session, _) = browser.visit(client.session()).await;
    assert_eq!(
        name(session.unwrap()).as_deref(),
        Some("alice"),
        "a later request"
    );
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(user_of(&client, &browser).await.unwrap(), "alice");
    assert_eq!(w.server.count("/auth/refresh"), 1);
    let (session, _) = browser.visit(client.session()).await;
    assert_eq!(
        name(session.unwrap()).as_deref(),
        Some("alice"),
        "after the refresh"
    );
}

pub(crate) async fn refresh_without_a_new_refresh_token_and_refresh_token_only_sessions<A: Adapter>() {
    let w = world();
    w.server.omit_refresh_token_on_refresh(true);
    let client = w.session_client::<A>();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    let refresh = browser.cookie("refresh_token").unwrap();
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(user_of(&client, &browser).await.unwrap(), "alice");
    assert_eq!(
        browser.cookie("refresh_token").unwrap(),
        refresh,
        "the old one is kept"
    );
    // Past the grace window (within it, the first refresh's result would be served again).
    w.clock.advance(Duration::from_secs(10));
    browser.forget("access_token");
    browser.forget("access_expires_at");
    assert_eq!(
        user_of(&client, &browser).await.unwrap(),
        "alice",
        "refreshed, not dropped"
    );
    assert_eq!(w.server.count("/auth/refresh"), 2);
}

pub(crate) async fn logout_always_clears_and_clear_calls_nothing<A: Adapter>() {
    let w = world();
    let client = w.session_client::<A>();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    browser.visit(client.logout()).await.0.unwrap();
    assert!(browser.snapshot().is_empty());
    let call = w
        .server
        .log()
        .into_iter()
        .find(|r| r.path == "/auth/logout")
        .unwrap();
    // As the seed sends it: the access token in the auth header, no body, no content type.
    assert!(call.authorization.as_deref().unwrap().starts_with("Bearer tk"));
    assert!(call.body.is_empty(), "no body by default");
    assert!(
        call.headers.get(http::header::CONTENT_TYPE).is_none(),
        "{:?}",
        call.headers
    );

    // The refresh token in a body is an option.
    let with_body = w
        .session_builder::<A>()
        .endpoints(
            EndpointConfig::new("/auth/login", "/auth/refresh")
                .logout("/auth/logout")
                .logout_with_refresh_token(),
        )
        .build()
        .unwrap();
    login(&with_body, &browser, "alice", "wonderland").await;
    let refresh = browser.cookie("refresh_token").unwrap();
    browser.visit(with_body.logout()).await.0.unwrap();
    let call = w
        .server
        .log()
        .into_iter()
        .filter(|r| r.path == "/auth/logout")
        .last()
        .unwrap();
    assert!(call.authorization.as_deref().unwrap().starts_with("Bearer tk"));
    assert_eq!(
        call.body_fields()["refreshToken"].as_str(),
        Some(refresh.as_str())
    );
    assert_eq!(
        call.headers.get(http::header::CONTENT_TYPE).unwrap(),
        "application/json"
    );

    login(&client, &browser, "alice", "wonderland").await;
    w.server.fail_next_logout_requests(1, Fault::Status(500));
    let (result, _) = browser.visit(client.logout()).await;
    assert_eq!(
        result.unwrap_err().status(),
        Some(http::StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert!(browser.snapshot().is_empty(), "cleared anyway");

    login(&client, &browser, "alice", "wonderland").await;
    let calls = w.server.count("/auth/logout");
    browser.visit(client.clear()).await.0.unwrap();
    assert!(browser.snapshot().is_empty());
    assert_eq!(w.server.count("/auth/logout"), calls);
}

pub(crate) async fn sessions_in_a_session_backend<A: Adapter>() {
    let w = world();
    let backend_clock: Arc<dyn tokenkit_core::Clock> = Arc::new(w.clock.clone());
    let client = w
        .session_builder::<A>()
        .store(SessionStore::new(MemorySessionBackend::new(backend_clock)).session_cookie("sid"))
        .build()
        .unwrap();
    let browser = Browser::new();
    browser.restore([("sid".to_owned(), "s-1".to_owned())].into());
    let (result, ctx) = browser
        .visit(client.login(&creds("bob", "builder"), LoginOptions::new()))
        .await;
    result.unwrap();
    assert!(ctx.cookie_delta().is_empty(), "tokens stay server-side");
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(user_of(&client, &browser).await.unwrap(), "bob");
    assert_eq!(w.server.count("/auth/refresh"), 1);
    let other = Browser::new();
    other.restore([("sid".to_owned(), "s-2".to_owned())].into());
    assert_eq!(
        user_of(&client, &other).await.unwrap_err().auth_failure(),
        Some(AuthFailure::NoSession)
    );
}

pub(crate) async fn login_and_logout_timeouts<A: Adapter>() {
    let w = world();
    let endpoints = EndpointConfig::new("/auth/login", "/auth/refresh")
        .logout("/auth/logout")
        .timeout(Duration::from_millis(300))
        .logout_timeout(Duration::from_millis(300));
    let client = w.session_builder::<A>().endpoints(endpoints).build().unwrap();
    let browser = Browser::new();
    w.server
        .fail_next_login_requests(1, Fault::Delay(Duration::from_secs(5)));
    let (result, _) = browser
        .visit(client.login(&creds("alice", "wonderland"), LoginOptions::new()))
        .await;
    assert!(result.unwrap_err().is_timeout());
    login(&client, &browser, "alice", "wonderland").await;
    w.server
        .fail_next_logout_requests(1, Fault::Delay(Duration::from_secs(5)));
    let (result, _) = browser.visit(client.logout()).await;
    assert!(result.unwrap_err().is_timeout());
    assert!(browser.snapshot().is_empty(), "cleared anyway");
}
