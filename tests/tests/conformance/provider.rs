//! Provider-mode scenarios (ported from the reqwest-only suite), for every adapter.

use std::time::Duration;

use serde_json::Value;
use tokenkit_core::{AuthFailure, ErrorKind, RetryConfig, Runtime, StandardPolicy};
use tokenkit_tests::{AuthServer, Fault};

use crate::adapters::Adapter;
use crate::scenarios::{eventually, get_id, token_id, world};

pub(crate) async fn a_failed_proactive_refresh_keeps_the_token_and_pauses<A: Adapter>() {
    let w = world();
    w.server.set_token_lifetime(Duration::from_secs(100));
    let client = w.provider_client::<A>();
    assert_eq!(get_id(&client, "/api/a").await, 1);
    w.clock.advance(Duration::from_secs(91));
    w.server.fail_next_token_requests(1, Fault::Status(503));
    assert_eq!(get_id(&client, "/api/a").await, 1, "the valid token is used");
    let recorder = w.recorder.clone();
    eventually(move || recorder.count("refresh_failed") == 1).await;
    for _ in 0..5 {
        assert_eq!(get_id(&client, "/api/a").await, 1);
    }
    assert_eq!(
        w.server.token_requests(),
        2,
        "no hammering within the retry delay"
    );
    w.clock.advance(Duration::from_secs(5));
    get_id(&client, "/api/a").await;
    let recorder = w.recorder.clone();
    eventually(move || recorder.count("refreshed") == 2).await;
    assert_eq!(
        get_id(&client, "/api/a").await,
        2,
        "the refresh succeeded after the pause"
    );
}

pub(crate) async fn short_lived_tokens_cause_no_refetch_loop<A: Adapter>() {
    let w = world();
    w.server.set_token_lifetime(Duration::from_secs(4));
    let client = w.provider_client::<A>();
    for _ in 0..10 {
        assert_eq!(get_id(&client, "/api/a").await, 1);
    }
    w.clock.advance(Duration::from_millis(1500));
    for _ in 0..10 {
        get_id(&client, "/api/a").await;
    }
    assert_eq!(w.server.token_requests(), 1);
}

pub(crate) async fn zero_recoveries_and_configurable_rejection_statuses<A: Adapter>() {
    let w = world();
    // The world's builder sets a policy, so the settings go on the policy (a builder override
    // together with .policy(..) is a build error).
    let client = w
        .provider_builder::<A>()
        .policy(StandardPolicy::provider().jitter_percent(0).max_recovery_tries(0))
        .build()
        .unwrap();
    get_id(&client, "/api/a").await;
    w.server.revoke_all();
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    assert_eq!(w.server.token_requests(), 1, "0 means no recovery");

    let client = w
        .provider_builder::<A>()
        .policy(
            StandardPolicy::provider()
                .jitter_percent(0)
                .refresh_on_status([http::StatusCode::UNAUTHORIZED, http::StatusCode::FORBIDDEN]),
        )
        .build()
        .unwrap();
    get_id(&client, "/api/a").await;
    w.server.fail_next_resource_requests(1, Fault::Status(403));
    let before = w.server.token_requests();
    get_id(&client, "/api/a").await;
    assert_eq!(w.server.token_requests(), before + 1, "403 triggered a recovery");
}

pub(crate) async fn header_name_and_formatter<A: Adapter>() {
    let w = world();
    let client = w
        .provider_builder::<A>()
        .header_name("x-auth")
        .format_token(|token, _| format!("Token {token}"))
        .build()
        .unwrap();
    client.get("/public/x").send::<Value>().await.unwrap();
    let entry = w
        .server
        .log()
        .into_iter()
        .find(|r| r.path == "/public/x")
        .unwrap();
    assert!(entry.authorization.is_none());
    assert!(entry.headers["x-auth"].to_str().unwrap().starts_with("Token tk"));
}

pub(crate) async fn typed_errors_for_statuses_bodies_and_connections<A: Adapter>() {
    let w = world();
    let client = w
        .provider_builder::<A>()
        .retry(RetryConfig::none())
        .build()
        .unwrap();
    w.server.fail_next_resource_requests(1, Fault::Status(500));
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (ErrorKind::Status, Some(http::StatusCode::INTERNAL_SERVER_ERROR))
    );
    let body: Value = serde_json::from_slice(err.body().unwrap()).unwrap();
    assert_eq!(body["error"], "injected_fault");
    w.server.fail_next_resource_requests(1, Fault::Garbage);
    assert_eq!(
        client.get("/api/a").send::<Value>().await.unwrap_err().kind(),
        ErrorKind::Decode
    );
    w.server.fail_next_resource_requests(1, Fault::Status(403));
    assert_eq!(
        client
            .get("/api/a")
            .send::<Value>()
            .await
            .unwrap_err()
            .auth_failure(),
        Some(AuthFailure::Rejected)
    );
    let dead = A::builder("http://127.0.0.1:9")
        .retry(RetryConfig::none())
        .build()
        .unwrap();
    assert!(dead.get("/x").send_bytes().await.unwrap_err().is_connect());
}

pub(crate) async fn malformed_token_responses<A: Adapter>() {
    for body in [
        serde_json::json!({"token_type": "Bearer", "expires_in": 60}),
        serde_json::json!({"access_token": "ok", "expires_in": -5}),
        serde_json::json!({"access_token": "a\r\nX-Evil: 1", "expires_in": 60}),
    ] {
        let w = world();
        let client = w.provider_client::<A>();
        w.server.fail_next_token_requests(1, Fault::Json(body.clone()));
        let err = client.get("/api/a").send::<Value>().await.unwrap_err();
        assert!(!err.to_string().contains("X-Evil"));
        assert_eq!(
            w.server.count("/api/a"),
            0,
            "{body}: nothing sent with a bad token"
        );
        assert!(
            get_id(&client, "/api/a").await > 0,
            "{body}: nothing bad was stored"
        );
    }
}

pub(crate) async fn a_late_rejection_uses_the_newer_token<A: Adapter>() {
    let w = world();
    let client = w.provider_client::<A>();
    get_id(&client, "/api/warmup").await;
    w.server.revoke_all();
    w.server
        .fail_next_resource_requests(1, Fault::Delay(Duration::from_millis(500)));
    let slow = client.get("/api/slow").send::<Value>();
    let fast = async {
        let server = &w.server;
        eventually(|| server.count("/api/slow") == 1).await;
        get_id(&client, "/api/fast").await
    };
    let (slow, fast) = futures_util::future::join(slow, fast).await;
    assert_eq!(fast, 2);
    assert_eq!(token_id(&slow.unwrap().data), 2);
    assert_eq!(w.server.token_requests(), 2, "warm-up + one refresh");
}

pub(crate) async fn independent_clients_and_custom_runtime_hooks<A: Adapter>() {
    let w = world();
    let a = w.provider_client::<A>();
    let b = w.provider_client::<A>();
    assert_eq!(get_id(&a, "/api/a").await, 1);
    assert_eq!(get_id(&b, "/api/a").await, 2);
    assert_eq!(get_id(&a.clone(), "/api/a").await, 1, "clones share state");
    // The same adapter without any runtime hooks: no timeouts, refreshes inline.
    let bare = w
        .provider_builder::<A>()
        .runtime(Runtime::new())
        .no_timeout()
        .build()
        .unwrap();
    assert!(get_id(&bare, "/api/a").await > 0);
    let _ = AuthServer::start_in_thread; // the suite's servers run on their own threads
}
