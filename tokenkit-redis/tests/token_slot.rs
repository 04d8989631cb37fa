//! One token for a fleet (provider mode) through Redis: one fetch per expiry for all replicas,
//! and no Redis round trip while the local copy is fresh.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokenkit_core::runtime::ManualClock;
use tokenkit_core::{Client, StandardPolicy};
use tokenkit_redis::{RedisCoordinator, RedisTokenSlot};
use tokenkit_tests::{token_provider, AuthServer};

async fn replica(server: &AuthServer, clock: &ManualClock, redis: &str) -> Client {
    tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .provider(token_provider(server.token_url()))
        .policy(StandardPolicy::provider().jitter(0.0))
        .store(RedisTokenSlot::connect(redis, "billing-api").await.unwrap())
        .coordinator(
            RedisCoordinator::connect(redis)
                .await
                .unwrap()
                .prefix("billing-api"),
        )
        .build()
        .unwrap()
}

async fn commands_processed(redis: &str) -> u64 {
    let mut raw = redis::Client::open(redis)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut raw)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_replicas_fetch_one_token_per_expiry_and_fresh_tokens_cost_no_round_trip() {
    let redis = support::RedisServer::start();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..8 {
        replicas.push(replica(&server, &clock, &redis.url()).await);
    }
    for expiry in 1..=3 {
        // 8 replicas x 60 concurrent requests on a missing or expired token.
        let calls = replicas
            .iter()
            .flat_map(|r| (0..60).map(move |_| r.get("/api/x").send::<Value>()));
        for result in join_all(calls).await {
            assert_eq!(result.unwrap().data["token_id"], expiry, "expiry {expiry}");
        }
        assert_eq!(
            server.token_requests(),
            expiry as usize,
            "one fetch for the fleet"
        );
        // Fresh: 8 x 50 more requests, served from each replica's local copy.
        let before = commands_processed(&redis.url()).await;
        let calls = replicas
            .iter()
            .flat_map(|r| (0..50).map(move |_| r.get("/api/x").send::<Value>()));
        assert!(join_all(calls).await.into_iter().all(|r| r.is_ok()));
        let during = commands_processed(&redis.url()).await - before;
        assert!(
            during <= 2,
            "{during} Redis commands for 400 requests on a fresh token"
        );
        clock.advance(Duration::from_secs(3600));
    }
}
