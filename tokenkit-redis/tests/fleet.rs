//! Replicas sharing one rotation through Redis, against the test auth server (which rotates
//! refresh tokens and counts reuse). Each replica is its own client with its own connection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    run_with_context, Client, CookieConfig, CookieStore, EndpointConfig, LoginOptions, StandardPolicy,
};
use tokenkit_redis::RedisCoordinator;
use tokenkit_tests::{AuthServer, Browser};

async fn replica(server: &AuthServer, clock: &ManualClock, redis: &str) -> Client {
    tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .policy(StandardPolicy::default().jitter_percent(0))
        .coordinator(RedisCoordinator::connect(redis).await.unwrap().prefix("fleet"))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_burst_over_four_replicas_refreshes_once() {
    let redis = tokenkit_tests::redis::RedisServer::start();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(replica(&server, &clock, &redis.url()).await);
    }
    let browser = Browser::new();
    let creds = json!({"username": "alice", "password": "wonderland"});
    browser
        .visit(replicas[0].login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    let before = browser.cookie("refresh_token");
    clock.advance(Duration::from_secs(3600));
    // 200 parallel requests with the same (expired) cookies, round-robin over the replicas.
    let pages = (0..200).map(|i| {
        let (client, ctx) = (replicas[i % 4].clone(), browser.context());
        async move {
            let page = run_with_context(ctx.clone(), client.get("/api/me").send::<Value>()).await;
            (page, ctx)
        }
    });
    let mut rotated_to = std::collections::BTreeSet::new();
    for (page, ctx) in join_all(pages).await {
        assert_eq!(page.unwrap().data["user"], "alice");
        let delta = ctx.cookie_delta();
        let refresh = delta
            .iter()
            .find(|c| c.name() == "refresh_token")
            .map(|c| c.value().to_owned());
        rotated_to.insert(refresh.expect("every response carries the new tokens"));
    }
    assert_eq!(server.count("/auth/refresh"), 1, "one refresh for the fleet");
    assert_eq!(server.reuse_detected(), 0);
    assert_eq!(rotated_to.len(), 1, "every replica handed out the same successor");
    assert_ne!(rotated_to.into_iter().next(), before);
    for replica in &replicas {
        assert_eq!(replica.rotation_stats().unwrap().refreshes_in_flight, 0);
    }
}
