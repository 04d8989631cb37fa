//! OAuth 2.0 scenarios (issue 6), for every adapter.

use std::time::Duration;

use serde_json::{json, Value};
use tokenkit_core::{AuthFailure, ClientAuth, ErrorKind, LoginOptions, OAuth2Config};
use tokenkit_tests::oauth::CLIENTS;
use tokenkit_tests::{Browser, Fault};

use crate::adapters::Adapter;
use crate::scenarios::{get_id, user_of, world, World};

fn config(w: &World, (id, secret): (&str, &str), auth: ClientAuth) -> OAuth2Config {
    OAuth2Config::new(w.server.oauth_token_url(), id)
        .client_secret(secret)
        .client_auth(auth)
        .retry_delay(Duration::from_millis(5))
}

pub(crate) async fn oauth_client_credentials_with_basic_and_post_auth<A: Adapter>() {
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        for client in CLIENTS {
            let w = world();
            let config = config(&w, *client, auth)
                .scope("read")
                .scope("write")
                .audience("api://demo");
            let api = A::builder(&w.server.url())
                .clock(w.clock.clone())
                .oauth2_client_credentials(config)
                .build()
                .unwrap();
            let me = api.get("/api/me").send::<Value>().await.unwrap();
            assert_eq!(
                me.data["user"],
                format!("client:{}", client.0),
                "{auth:?} {client:?}"
            );
            let call = w
                .server
                .log()
                .into_iter()
                .find(|r| r.path == "/oauth2/token")
                .unwrap();
            let form = call.body_fields();
            assert_eq!(form["grant_type"], "client_credentials");
            assert_eq!(
                (form["scope"].as_str(), form["audience"].as_str()),
                (Some("read write"), Some("api://demo"))
            );
            match auth {
                ClientAuth::Basic => {
                    assert!(call.authorization.as_deref().unwrap().starts_with("Basic "));
                    assert!(
                        form.get("client_secret").is_none(),
                        "the secret is not in the body"
                    );
                }
                ClientAuth::Post => {
                    assert!(call.authorization.is_none());
                    assert_eq!(
                        (form["client_id"].as_str(), form["client_secret"].as_str()),
                        (Some(client.0), Some(client.1))
                    );
                }
                other => unreachable!("{other:?} is not in this test's list"),
            }
            let record = api.token().await.unwrap();
            assert_eq!(record.scope.as_deref(), Some("read write"));
        }
    }
}

pub(crate) async fn oauth_error_paths_and_the_retry_rule<A: Adapter>() {
    let w = world();
    let build = |config: OAuth2Config| {
        A::builder(&w.server.url())
            .clock(w.clock.clone())
            .retry(tokenkit_core::RetryConfig::none())
            .oauth2_client_credentials(config)
            .build()
            .unwrap()
    };
    // invalid_client: the client's own credentials, recognisable, never retried; the message
    // prints the status once.
    let api = build(config(&w, ("client-1", "wrong"), ClientAuth::Basic));
    let err = api.get("/api/a").send::<Value>().await.unwrap_err();
    assert!(err.is_invalid_client(), "{err}");
    assert_eq!(err.auth_failure(), Some(AuthFailure::InvalidClient));
    assert_eq!(err.oauth().unwrap().error, "invalid_client");
    assert_eq!(err.to_string().matches("HTTP 401").count(), 1, "{err}");
    assert_eq!(w.server.count("/oauth2/token"), 1);
    // Another 4xx (invalid_scope): typed, with the RFC fields, never retried.
    let api = build(config(&w, CLIENTS[0], ClientAuth::Basic).scope("forbidden"));
    let err = api.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::TokenUnavailable));
    let oauth = err.oauth().unwrap();
    assert_eq!(
        (oauth.error.as_str(), oauth.description.as_deref()),
        ("invalid_scope", Some("that scope is not available"))
    );
    assert!(err.to_string().contains("invalid_scope"));
    assert_eq!(w.server.count("/oauth2/token"), 2);
    // 5xx: retried with backoff.
    let api = build(config(&w, CLIENTS[0], ClientAuth::Basic));
    w.server.fail_next_token_requests(2, Fault::Status(503));
    assert!(get_id(&api, "/api/a").await > 0);
    assert_eq!(w.server.count("/oauth2/token"), 5, "2 failures + 1 success");
    // ...but not forever.
    let api = build(config(&w, CLIENTS[0], ClientAuth::Basic).attempts(2));
    w.server.fail_next_token_requests(5, Fault::Status(500));
    assert!(api.get("/api/a").send::<Value>().await.is_err());
    assert_eq!(w.server.count("/oauth2/token"), 7);
    w.server.clear_faults();
    // token_type must be Bearer unless configured otherwise.
    w.server.set_oauth_token_type("mac");
    let api = build(config(&w, CLIENTS[0], ClientAuth::Basic));
    assert_eq!(
        api.get("/api/a").send::<Value>().await.unwrap_err().kind(),
        ErrorKind::InvalidToken
    );
    let api = build(config(&w, CLIENTS[0], ClientAuth::Basic).token_type(Some("MAC")));
    assert_eq!(api.token().await.unwrap().token_type.as_deref(), Some("mac"));
    w.server.set_oauth_token_type("bearer");
    // expires_in missing: the documented default lifetime.
    w.server.omit_oauth_expires_in(true);
    let api = build(config(&w, CLIENTS[0], ClientAuth::Basic).default_lifetime(Duration::from_secs(600)));
    assert_eq!(
        api.token().await.unwrap().lifetime(),
        Some(Duration::from_secs(600))
    );
}

pub(crate) async fn oauth_password_login_refresh_rotation_and_revocation<A: Adapter>() {
    let w = world();
    let config = config(&w, CLIENTS[1], ClientAuth::Basic).revocation_url(w.server.oauth_revocation_url());
    let api = w.session_builder::<A>().oauth2_password(config).build().unwrap();
    let browser = Browser::new();
    // Wrong password: a rejection at login (invalid_grant), nothing stored.
    let bad = json!({"username": "alice", "password": "nope"});
    let (result, _) = browser.visit(api.login(&bad, LoginOptions::new())).await;
    let err = result.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::Rejected));
    assert_eq!(err.oauth().unwrap().error, "invalid_grant");
    assert!(browser.snapshot().is_empty());

    let good = json!({"username": "alice", "password": "wonderland"});
    browser
        .visit(api.login(&good, LoginOptions::new()))
        .await
        .0
        .unwrap();
    let login = w
        .server
        .log()
        .into_iter()
        .rfind(|r| r.path == "/oauth2/token")
        .unwrap();
    assert_eq!(login.body_fields()["grant_type"], "password");
    assert_eq!(user_of(&api, &browser).await.unwrap(), "alice");

    // Expiry: the refresh-token grant, with rotation.
    let first_refresh = browser.cookie("refresh_token").unwrap();
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(user_of(&api, &browser).await.unwrap(), "alice");
    let refresh = w
        .server
        .log()
        .into_iter()
        .rfind(|r| r.path == "/oauth2/token")
        .unwrap();
    assert_eq!(refresh.body_fields()["grant_type"], "refresh_token");
    assert_eq!(
        refresh.body_fields()["refresh_token"].as_str(),
        Some(first_refresh.as_str())
    );
    let second_refresh = browser.cookie("refresh_token").unwrap();
    assert_ne!(second_refresh, first_refresh, "rotated");

    // Logout revokes the refresh token (RFC 7009) and clears the session.
    browser.visit(api.logout()).await.0.unwrap();
    assert!(browser.snapshot().is_empty());
    let revoke = w
        .server
        .log()
        .into_iter()
        .rfind(|r| r.path == "/oauth2/revoke")
        .unwrap();
    let form = revoke.body_fields();
    assert_eq!(
        (form["token"].as_str(), form["token_type_hint"].as_str()),
        (Some(second_refresh.as_str()), Some("refresh_token"))
    );
    assert!(revoke.authorization.as_deref().unwrap().starts_with("Basic "));
    // The revoked token is dead at the server.
    let stale = Browser::new();
    stale.restore([("refresh_token".to_owned(), second_refresh)].into());
    let err = user_of(&api, &stale).await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid));
    assert!(
        stale.snapshot().is_empty(),
        "invalid_grant on refresh clears the session"
    );

    // A failing revocation still clears the local session.
    browser
        .visit(api.login(&good, LoginOptions::new()))
        .await
        .0
        .unwrap();
    // (5xx is retried like any token-endpoint call: fail every attempt.)
    w.server.fail_next_logout_requests(3, Fault::Status(500));
    let (result, _) = browser.visit(api.logout()).await;
    assert_eq!(
        result.unwrap_err().status(),
        Some(http::StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert!(browser.snapshot().is_empty());

    // invalid_grant on refresh (e.g. an expired grant): session cleared, re-login needed.
    browser
        .visit(api.login(&good, LoginOptions::new()))
        .await
        .0
        .unwrap();
    w.clock.advance(Duration::from_secs(3600));
    w.server
        .fail_next_token_requests(1, Fault::OAuthError(400, "invalid_grant"));
    let err = user_of(&api, &browser).await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid));
    assert!(browser.snapshot().is_empty());
}
