//! A cached token per request parameters (scope / audience / resource): one fetch and one
//! single flight per combination, never a token for other parameters; per-login scope sent
//! once. Against the test server's RFC 6749 token endpoint (which refuses repeated
//! parameters, as RFC 6749 §3.2 says) through reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{Client, ErrorKind, LoginOptions, OAuth2Config, StandardPolicy, TokenParams};
use tokenkit_tests::{token_provider, AuthServer};

const TOKEN_PATH: &str = "/oauth2/token";

async fn server(clock: &ManualClock) -> AuthServer {
    AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap()
}

fn credentials_client(server: &AuthServer, clock: &ManualClock, config: OAuth2Config) -> Client {
    tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .oauth2_client_credentials(config)
        .policy(StandardPolicy::provider().jitter_percent(0))
        .build()
        .unwrap()
}

fn config(server: &AuthServer) -> OAuth2Config {
    OAuth2Config::new(server.oauth_token_url(), "client-1")
        .client_secret("secret-1")
        .scope("base")
}

/// The combination `i` of ten: five scopes × two audiences.
fn combination(i: usize) -> (String, String) {
    (
        format!("scope-{}", i % 5),
        format!("https://api-{}.example", i % 2),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_over_ten_combinations_cost_ten_fetches() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let client = credentials_client(&server, &clock, config(&server));
    let results = join_all((0..1000).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let (scope, audience) = combination(i % 10);
            let params = TokenParams::new().scope(&scope).audience(&audience);
            let response = client.get("/api/x").token_params(params).send::<Value>().await;
            (scope, audience, response)
        })
    }))
    .await;
    let mut token_ids = std::collections::HashMap::new();
    for result in results {
        let (scope, audience, response) = result.unwrap();
        let body = response.unwrap().data;
        assert_eq!(
            body["grant"],
            json!({"scope": scope, "audience": audience, "resource": null}),
            "every request got a token with its own parameters"
        );
        let id = body["token_id"].as_u64().unwrap();
        assert_eq!(
            *token_ids.entry((scope, audience)).or_insert(id),
            id,
            "one token per combination"
        );
    }
    assert_eq!(token_ids.len(), 10);
    assert_eq!(server.count(TOKEN_PATH), 10, "exactly 10 token fetches");

    // The client's own token is a separate one, with the configured scope.
    let body = client.get("/api/x").send::<Value>().await.unwrap().data;
    assert_eq!(body["grant"]["scope"], "base");
    assert_eq!(server.count(TOKEN_PATH), 11);
    // Scope order does not matter; an expired combination refreshes alone.
    let params = TokenParams::new().scope("b a");
    let first = client
        .get("/api/x")
        .token_params(params)
        .send::<Value>()
        .await
        .unwrap()
        .data;
    let same = TokenParams::new().scope("a").scope("b");
    let again = client
        .get("/api/x")
        .token_params(same)
        .send::<Value>()
        .await
        .unwrap()
        .data;
    assert_eq!(first["token_id"], again["token_id"]);
    assert_eq!(first["grant"]["scope"], "a b");
    assert_eq!(server.count(TOKEN_PATH), 12);
    clock.advance(Duration::from_secs(7200));
    let (scope, audience) = combination(3);
    let params = TokenParams::new().scope(&scope).audience(&audience);
    let body = client
        .get("/api/x")
        .token_params(params)
        .send::<Value>()
        .await
        .unwrap()
        .data;
    assert_eq!(body["grant"]["scope"], scope.as_str());
    assert_eq!(
        server.count(TOKEN_PATH),
        13,
        "one fetch for the one expired combination used"
    );
}

#[tokio::test]
async fn a_rejected_token_is_recovered_within_its_own_combination() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let client = credentials_client(&server, &clock, config(&server));
    let read = TokenParams::new().scope("read");
    let before = client
        .get("/api/x")
        .token_params(read.clone())
        .send::<Value>()
        .await
        .unwrap()
        .data;
    let plain = client.get("/api/x").send::<Value>().await.unwrap().data;
    server.revoke_all();
    let after = client
        .get("/api/x")
        .token_params(read)
        .send::<Value>()
        .await
        .unwrap()
        .data;
    assert_ne!(before["token_id"], after["token_id"], "a new token for `read`");
    assert_eq!(after["grant"]["scope"], "read");
    assert_eq!(server.count(TOKEN_PATH), 3);
    let plain_after = client.get("/api/x").send::<Value>().await.unwrap().data;
    assert_ne!(plain["token_id"], plain_after["token_id"]);
    assert_eq!(
        plain_after["grant"]["scope"], "base",
        "recovered with its own parameters"
    );
}

#[tokio::test]
async fn resource_indicators_and_a_token_source_error_are_kept_apart() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let client = credentials_client(&server, &clock, config(&server));
    let params = TokenParams::new().resource("https://orders.example");
    let body = client
        .get("/api/x")
        .token_params(params)
        .send::<Value>()
        .await
        .unwrap()
        .data;
    assert_eq!(body["grant"]["resource"], "https://orders.example");
    assert_eq!(
        body["grant"]["scope"], "base",
        "unset fields inherit the configuration"
    );

    // A scope the server refuses fails that combination only.
    let refused = TokenParams::new().scope(tokenkit_tests::oauth::FORBIDDEN_SCOPE);
    let err = client
        .get("/api/x")
        .token_params(refused)
        .send::<Value>()
        .await
        .unwrap_err();
    assert_eq!(
        err.oauth().map(|o| o.error.as_str()),
        Some("invalid_scope"),
        "{err}"
    );
    client.get("/api/x").send::<Value>().await.unwrap();
}

#[tokio::test]
async fn clients_that_cannot_honour_parameters_say_so() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    // A provider closure cannot be told what the token is for.
    let provider = tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .provider(token_provider(server.token_url()))
        .build()
        .unwrap();
    let err = provider
        .get("/api/x")
        .token_params(TokenParams::new().scope("read"))
        .send::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(server.count("/oauth/token"), 0);
    // Without parameters it works as always.
    provider.get("/api/x").send::<Value>().await.unwrap();

    // A session-mode client: a user's session has one set of tokens.
    let sessions = tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .oauth2_password(config(&server))
        .store(tokenkit_core::MemoryStore::new())
        .build()
        .unwrap();
    let err = sessions
        .get("/api/x")
        .token_params(TokenParams::new().audience("x"))
        .send::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

/// `LoginOptions::data({"scope": …})` replaces the configured scope: sent once (the server
/// refuses a repeated parameter with 400), and the token has it.
#[tokio::test]
async fn a_per_login_scope_is_sent_once() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let client = tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .oauth2_password(config(&server))
        .store(tokenkit_core::MemoryStore::new())
        .build()
        .unwrap();
    let credentials = json!({"username": "alice", "password": "wonderland"});
    client
        .login(
            &credentials,
            LoginOptions::new().data(json!({"scope": "profile email", "username": "mallory"})),
        )
        .await
        .unwrap();
    let body = client.get("/api/me").send::<Value>().await.unwrap().data;
    assert_eq!(body["grant"]["scope"], "profile email");
    assert_eq!(
        body["user"], "alice",
        "the grant's own fields cannot be overridden"
    );

    // A per-request refresh with data: the data's scope replaces the configured one, once.
    clock.advance(Duration::from_secs(7200));
    let overrides = tokenkit_core::AuthOverride::new().data(json!({"scope": "profile"}));
    let body = client
        .get("/api/me")
        .auth(overrides)
        .send::<Value>()
        .await
        .unwrap()
        .data;
    assert_eq!(body["grant"]["scope"], "profile");
}

#[tokio::test]
async fn the_test_server_refuses_repeated_parameters() {
    // The check the per-login test relies on could fail: prove it.
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let plain = tokenkit_reqwest::builder(server.url()).build().unwrap();
    let err = plain
        .post(TOKEN_PATH)
        .skip_auth()
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "client-1"),
            ("client_secret", "secret-1"),
            ("scope", "a"),
            ("scope", "b"),
        ])
        .send::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
}

/// Past `TOKEN_PARAMS_CACHE` combinations, the least recently used one's token is dropped
/// (the cache cannot grow without bound on parameters taken from user input).
#[tokio::test]
async fn the_least_recently_used_combination_is_dropped_past_the_cap() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let client = credentials_client(&server, &clock, config(&server));
    let cap = tokenkit_core::defaults::TOKEN_PARAMS_CACHE;
    let get = |i: usize| {
        let client = client.clone();
        async move {
            let params = TokenParams::new().scope(format!("s{i}"));
            client
                .get("/api/x")
                .token_params(params)
                .send::<Value>()
                .await
                .unwrap();
        }
    };
    for i in 0..cap {
        get(i).await;
    }
    get(0).await; // 0 is now the most recently used; 1 the least
    assert_eq!(server.count(TOKEN_PATH), cap);
    get(cap).await; // one more combination: 1 is dropped
    assert_eq!(server.count(TOKEN_PATH), cap + 1);
    get(0).await;
    get(2).await;
    assert_eq!(server.count(TOKEN_PATH), cap + 1, "kept: no fetch");
    get(1).await;
    assert_eq!(server.count(TOKEN_PATH), cap + 2, "dropped: fetched again");
}
