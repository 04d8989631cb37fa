//! The fault matrix: each fault, through every adapter, asserting the outcome and that no
//! valid session is lost.

use std::time::Duration;

use serde_json::Value;
use tokenkit_core::{AuthFailure, Clock, ErrorKind, RetryConfig};
use tokenkit_tests::{Browser, Fault, ResourceMode};

use crate::adapters::Adapter;
use crate::scenarios::{get_id, login, user_of, world, World};

/// A logged-in browser whose access token has expired (the next request refreshes).
async fn expired_session<A: Adapter>(
    w: &World,
    builder: tokenkit_core::ClientBuilder,
) -> (tokenkit_core::Client, Browser) {
    let client = builder.build().unwrap();
    let browser = Browser::new();
    login(&client, &browser, "alice", "wonderland").await;
    w.clock.advance(Duration::from_secs(3600));
    (client, browser)
}

pub(crate) async fn token_endpoint_500<A: Adapter>() {
    let w = world();
    let client = w.provider_client::<A>();
    assert_eq!(get_id(&client, "/api/a").await, 1);
    w.clock.advance(Duration::from_secs(7200));
    w.server.fail_next_token_requests(1, Fault::Status(500));
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::TokenUnavailable));
    // Within the backoff, the next request fails fast without calling the endpoint…
    let calls = w.server.count("/oauth/token");
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::SourceUnavailable), "{err}");
    assert!(err.retry_at().is_some_and(|at| at > w.clock.now()), "{err:?}");
    assert_eq!(w.server.count("/oauth/token"), calls, "no call while backing off");
    // …and after it, the next call recovers.
    w.clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY);
    assert_eq!(get_id(&client, "/api/a").await, 2, "recovers after the backoff");

    // Session mode: a 500 from the refresh endpoint keeps the session.
    let (client, browser) = expired_session::<A>(&w, w.session_builder::<A>()).await;
    w.server.fail_next_refresh_requests(1, Fault::Status(500));
    assert_eq!(
        user_of(&client, &browser).await.unwrap_err().auth_failure(),
        Some(AuthFailure::TokenUnavailable)
    );
    w.clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY);
    assert_eq!(
        user_of(&client, &browser).await.unwrap(),
        "alice",
        "session not lost"
    );
}

pub(crate) async fn token_endpoint_503_then_success<A: Adapter>() {
    let w = world();
    let (client, browser) = expired_session::<A>(&w, w.session_builder::<A>()).await;
    w.server.fail_next_refresh_requests(1, Fault::Status(503));
    let err = user_of(&client, &browser).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    w.clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY);
    assert_eq!(user_of(&client, &browser).await.unwrap(), "alice");
    assert_eq!(
        w.server.count("/auth/refresh"),
        2,
        "one failed call, one successful; no retry storm"
    );
}

pub(crate) async fn token_endpoint_slower_than_the_timeout<A: Adapter>() {
    let w = world();
    let endpoints = tokenkit_core::EndpointConfig::new("/auth/login", "/auth/refresh")
        .timeout(Duration::from_millis(300));
    let (client, browser) = expired_session::<A>(&w, w.session_builder::<A>().endpoints(endpoints)).await;
    w.server
        .fail_next_refresh_requests(1, Fault::Delay(Duration::from_secs(5)));
    assert!(user_of(&client, &browser).await.unwrap_err().is_timeout());
    assert_eq!(
        browser.snapshot().len(),
        6,
        "cookies untouched (tokens and payload)"
    );
    // The slow call may still complete at the server; a second refresh with the same token would
    // then be a reuse. What must hold: the user was not logged out by the timeout itself.
    assert!(browser.cookie("refresh_token").is_some());
}

pub(crate) async fn token_endpoint_garbage_body<A: Adapter>() {
    let w = world();
    let (client, browser) = expired_session::<A>(&w, w.session_builder::<A>()).await;
    w.server.fail_next_refresh_requests(1, Fault::Garbage);
    assert_eq!(
        user_of(&client, &browser).await.unwrap_err().kind(),
        ErrorKind::InvalidToken
    );
    assert_eq!(user_of(&client, &browser).await.unwrap(), "alice");
    let client = w.provider_client::<A>();
    w.server.fail_next_token_requests(1, Fault::Garbage);
    assert!(client.get("/api/a").send::<Value>().await.is_err());
    assert!(get_id(&client, "/api/a").await > 0);
}

pub(crate) async fn refresh_invalid_grant_400<A: Adapter>() {
    let w = world();
    let (client, browser) = expired_session::<A>(&w, w.session_builder::<A>()).await;
    w.server.fail_next_refresh_requests(1, Fault::Status(400));
    let err = user_of(&client, &browser).await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid));
    assert!(browser.snapshot().is_empty(), "an invalid session is cleared");
    assert_eq!(w.recorder.count("session_invalid"), 1);
}

pub(crate) async fn refresh_connection_reset_mid_response<A: Adapter>() {
    let w = world();
    let (client, browser) = expired_session::<A>(&w, w.session_builder::<A>()).await;
    w.server.fail_next_refresh_requests(1, Fault::Reset);
    let err = user_of(&client, &browser).await.unwrap_err();
    assert!(
        err.is_transport() || err.kind() == ErrorKind::InvalidToken,
        "{err:?}"
    );
    assert_eq!(browser.snapshot().len(), 6, "session kept");
    // The reset response never completed, so the presented refresh token was consumed at the
    // server (rotation happened there); the session is kept locally and the failure is typed.
    let client = w.provider_client::<A>();
    w.server.fail_next_token_requests(1, Fault::Reset);
    assert!(client.get("/api/a").send::<Value>().await.is_err());
    w.clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY); // past the outage backoff
    assert!(get_id(&client, "/api/a").await > 0, "the next fetch works");
}

pub(crate) async fn resource_401_for_a_revoked_token<A: Adapter>() {
    let w = world();
    let client = w.provider_client::<A>();
    assert_eq!(get_id(&client, "/api/a").await, 1);
    w.server.revoke_all();
    assert_eq!(get_id(&client, "/api/a").await, 2);
    assert_eq!(w.recorder.count("recovery_try"), 1);
}

pub(crate) async fn resource_401_forever<A: Adapter>() {
    let w = world();
    let (client, browser) = expired_session::<A>(&w, w.session_builder::<A>()).await;
    user_of(&client, &browser).await.unwrap();
    w.server.set_resource_mode(ResourceMode::AlwaysUnauthorized);
    let err = user_of(&client, &browser).await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    assert_eq!(w.recorder.count("recovery_aborted"), 1);
    w.server.set_resource_mode(ResourceMode::Normal);
    assert_eq!(
        user_of(&client, &browser).await.unwrap(),
        "alice",
        "the session survived"
    );
}

pub(crate) async fn resource_429_with_retry_after<A: Adapter>() {
    let w = world();
    let client = w
        .provider_builder::<A>()
        .retry(RetryConfig::new().max_delay(Duration::from_millis(50)))
        .build()
        .unwrap();
    w.server
        .fail_next_resource_requests(1, Fault::RetryAfter(429, "1".into()));
    assert_eq!(get_id(&client, "/api/a").await, 1);
    assert_eq!(w.server.count("/api/a"), 2);
}

pub(crate) async fn resource_slower_than_the_timeout<A: Adapter>() {
    let w = world();
    let client = w
        .provider_builder::<A>()
        .timeout(Duration::from_millis(300))
        .retry(RetryConfig::none())
        .build()
        .unwrap();
    get_id(&client, "/api/a").await;
    w.server
        .fail_next_resource_requests(1, Fault::Delay(Duration::from_secs(5)));
    assert!(client
        .get("/api/a")
        .send::<Value>()
        .await
        .unwrap_err()
        .is_timeout());
    assert_eq!(get_id(&client, "/api/a").await, 1, "the token survived");
}

pub(crate) async fn the_server_goes_away_and_comes_back<A: Adapter>() {
    let mut w = world();
    let client = w
        .provider_builder::<A>()
        .retry(RetryConfig::none())
        .build()
        .unwrap();
    let sessions = w
        .session_builder::<A>()
        .retry(RetryConfig::none())
        .build()
        .unwrap();
    let browser = Browser::new();
    login(&sessions, &browser, "alice", "wonderland").await;
    let token = get_id(&client, "/api/a").await;
    let fetched = w.server.token_requests();

    w.server.go_away();
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(user_of(&sessions, &browser).await.unwrap_err().is_transport());
    assert_eq!(browser.snapshot().len(), 6, "the session survives the outage");

    w.server.come_back().unwrap();
    // A pooled connection may be dead after the outage; a retry absorbs that.
    let retry = RetryConfig::new().delay(Duration::from_millis(5));
    let back = client
        .get("/api/a")
        .retry(retry.clone())
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(
        crate::scenarios::token_id(&back.data),
        token,
        "the same token, still valid"
    );
    assert_eq!(w.server.token_requests(), fetched, "no refetch");
    let (result, _) = browser
        .visit(sessions.get("/api/me").retry(retry).send::<Value>())
        .await;
    assert_eq!(result.unwrap().data["user"], "alice", "same session, no re-login");
}
