//! Discovery (OpenID Connect Discovery, RFC 8414) against the test auth server: an OAuth
//! client configured from its issuer alone, the metadata cached and fetched again after its
//! TTL or a failure, the issuer checked, the auth method chosen from the metadata.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{ClientAuth, Discovery, ErrorKind, OAuth2Config};
use tokenkit_tests::{AuthServer, DiscoveryDoc};

async fn server() -> (AuthServer, ManualClock) {
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    (server, clock)
}

fn config(issuer: &str) -> OAuth2Config {
    OAuth2Config::from_issuer(issuer, "client-1")
        .client_secret("secret-1")
        .retry_delay(Duration::from_millis(1))
}

const OPENID: &str = "/.well-known/openid-configuration";

#[tokio::test]
async fn a_client_configured_from_its_issuer_finds_its_endpoints_once() {
    let (server, clock) = server().await;
    server.set_token_lifetime(Duration::from_secs(600));
    let issuer = server.url();
    let api = tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .oauth2_client_credentials(config(&issuer))
        .build()
        .unwrap();
    let me = api.get("/api/me").send::<Value>().await.unwrap();
    assert_eq!(me.data["user"], "client:client-1");
    assert_eq!(server.count(OPENID), 1);
    assert_eq!(server.count("/oauth2/token"), 1);
    // Basic by default (the document lists no methods).
    let call = server
        .log()
        .into_iter()
        .find(|r| r.path == "/oauth2/token")
        .unwrap();
    assert!(call.authorization.unwrap().starts_with("Basic "));

    // The metadata is cached: a new token (the first expired), no new fetch of the
    // document...
    clock.advance(Duration::from_secs(600));
    api.get("/api/me").send::<Value>().await.unwrap();
    assert_eq!(server.count("/oauth2/token"), 2);
    assert_eq!(server.count(OPENID), 1);
    // ...until its TTL (an hour) has passed.
    clock.advance(Duration::from_secs(3000));
    api.get("/api/me").send::<Value>().await.unwrap();
    assert_eq!(server.count(OPENID), 2);

    // The client shares it: what a sign-in flow needs.
    let metadata = api.discovery().unwrap().metadata().await.unwrap();
    assert_eq!(metadata.issuer, issuer);
    assert_eq!(
        metadata.authorization_endpoint.as_deref(),
        Some(&*format!("{issuer}/authorize"))
    );
    assert_eq!(metadata.other["x-extension"]["anything"], true);
    assert_eq!(server.count(OPENID), 2);
}

#[tokio::test]
async fn an_issuer_with_a_path_is_found_at_the_rfc_8414_location() {
    let (server, clock) = server().await;
    let issuer = format!("{}/tenants/acme", server.url());
    let api = tokenkit_reqwest::builder(server.url())
        .clock(clock)
        .oauth2_client_credentials(config(&issuer))
        .build()
        .unwrap();
    api.get("/api/me").send::<Value>().await.unwrap();
    assert_eq!(
        server.count("/tenants/acme/.well-known/openid-configuration"),
        1,
        "tried first"
    );
    assert_eq!(
        server.count("/.well-known/oauth-authorization-server/tenants/acme"),
        1
    );
    assert_eq!(api.discovery().unwrap().metadata().await.unwrap().issuer, issuer);
}

#[tokio::test]
async fn a_document_naming_another_issuer_is_refused() {
    let (server, clock) = server().await;
    server.set_discovery(DiscoveryDoc {
        wrong_issuer: Some("https://evil.example".to_owned()),
        ..DiscoveryDoc::new()
    });
    let api = tokenkit_reqwest::builder(server.url())
        .clock(clock)
        .oauth2_client_credentials(config(&server.url()))
        .build()
        .unwrap();
    let err = api.get("/api/me").send::<Value>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("evil.example"), "{err}");
    assert_eq!(server.count("/oauth2/token"), 0, "no credentials sent anywhere");
}

#[tokio::test]
async fn the_auth_method_follows_the_metadata_unless_chosen() {
    let (server, clock) = server().await;
    server.set_discovery(DiscoveryDoc {
        auth_methods: vec!["client_secret_post".to_owned()],
        ..DiscoveryDoc::new()
    });
    let api = tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .oauth2_client_credentials(config(&server.url()))
        .build()
        .unwrap();
    api.get("/api/me").send::<Value>().await.unwrap();
    let call = server
        .log()
        .into_iter()
        .find(|r| r.path == "/oauth2/token")
        .unwrap();
    assert!(call.authorization.is_none());
    assert_eq!(call.body_fields()["client_secret"], "secret-1");

    // Chosen explicitly: that wins.
    let api = tokenkit_reqwest::builder(server.url())
        .clock(clock)
        .oauth2_client_credentials(config(&server.url()).client_auth(ClientAuth::Basic))
        .build()
        .unwrap();
    api.get("/api/me").send::<Value>().await.unwrap();
    let call = server
        .log()
        .into_iter()
        .filter(|r| r.path == "/oauth2/token")
        .last()
        .unwrap();
    assert!(call.authorization.unwrap().starts_with("Basic "));
}

#[tokio::test]
async fn a_failing_discovered_endpoint_makes_the_metadata_fetched_again() {
    let (server, clock) = server().await;
    // The document points at an endpoint that is not there (404).
    server.set_discovery(DiscoveryDoc {
        token_endpoint: Some(format!("{}/gone/token", server.url())),
        ..DiscoveryDoc::new()
    });
    let api = tokenkit_reqwest::builder(server.url())
        .clock(clock)
        .oauth2_client_credentials(config(&server.url()))
        .build()
        .unwrap();
    assert!(api.get("/api/me").send::<Value>().await.is_err());
    assert_eq!(server.count(OPENID), 1);
    // The provider fixes its document: the next call reads it again and succeeds.
    server.set_discovery(DiscoveryDoc::new());
    api.get("/api/me").send::<Value>().await.unwrap();
    assert_eq!(server.count(OPENID), 2);
    assert_eq!(server.count("/oauth2/token"), 1);
}

#[tokio::test]
async fn logout_revokes_at_the_discovered_revocation_endpoint() {
    let (server, clock) = server().await;
    let api = tokenkit_reqwest::builder(server.url())
        .clock(clock)
        .store(tokenkit_core::CookieStore::new(
            tokenkit_core::CookieConfig::new().secure(false),
        ))
        .oauth2_password(config(&server.url()))
        .build()
        .unwrap();
    let browser = tokenkit_tests::Browser::new();
    let credentials = serde_json::json!({"username": "alice", "password": "wonderland"});
    let (login, _) = browser
        .visit(api.login(&credentials, tokenkit_core::LoginOptions::new()))
        .await;
    login.unwrap();
    browser.visit(api.logout()).await.0.unwrap();
    assert_eq!(server.count("/oauth2/revoke"), 1);

    // A provider without revocation: logout clears locally and calls nothing.
    server.set_discovery(DiscoveryDoc {
        no_revocation: true,
        ..DiscoveryDoc::new()
    });
    api.discovery().unwrap().invalidate().await;
    let (login, _) = browser
        .visit(api.login(&credentials, tokenkit_core::LoginOptions::new()))
        .await;
    login.unwrap();
    browser.visit(api.logout()).await.0.unwrap();
    assert_eq!(server.count("/oauth2/revoke"), 1);
    assert!(browser.snapshot().is_empty());
}

#[tokio::test]
async fn discovery_on_its_own_refuses_bad_issuers_and_bad_documents() {
    let (server, _clock) = server().await;
    let transport: Arc<dyn tokenkit_core::Transport> =
        Arc::new(tokenkit_reqwest::ReqwestTransport::new(reqwest::Client::new()));
    for bad in [
        "not a url",
        "ftp://example.com",
        "https://example.com/?q=1",
        "https://example.com/#f",
    ] {
        let err = Discovery::new(bad, Arc::clone(&transport), tokenkit_tokio::runtime()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Url, "{bad}");
    }
    // No document at either place: a typed error carrying the status.
    let discovery = Discovery::new(
        format!("{}/nowhere", server.url()),
        transport,
        tokenkit_tokio::runtime(),
    )
    .unwrap();
    let err = discovery.metadata().await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND), "{err}");
}
