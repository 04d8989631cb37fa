//! One token for a fleet (provider mode) through Redis: one fetch per expiry for all replicas,
//! and no Redis round trip while the local copy is fresh.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{Client, StandardPolicy};
use tokenkit_redis::{RedisCoordinator, RedisTokenSlot};
use tokenkit_tests::redis::retry_while_reconnecting;
use tokenkit_tests::{token_provider, AuthServer};

async fn replica(server: &AuthServer, clock: &ManualClock, redis: &str) -> Client {
    tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .provider(token_provider(server.token_url()))
        .policy(StandardPolicy::provider().jitter_percent(0))
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
    let redis = tokenkit_tests::redis::RedisServer::start();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_fleet_fails_open_and_coordination_resumes_when_it_is_back() {
    let mut redis = tokenkit_tests::redis::RedisServer::start();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let url = redis.url();
    let mut replicas = Vec::new();
    let mut probes = Vec::new();
    for _ in 0..4 {
        let slot = RedisTokenSlot::connect(&url, "billing-api").await.unwrap();
        let coordinator = RedisCoordinator::connect(&url)
            .await
            .unwrap()
            .prefix("billing-api");
        probes.push((slot.clone(), coordinator.clone()));
        replicas.push(
            tokenkit_reqwest::builder(server.url())
                .clock(clock.clone())
                .provider(token_provider(server.token_url()))
                .policy(StandardPolicy::provider().jitter_percent(0))
                .store(slot)
                .coordinator(coordinator)
                .build()
                .unwrap(),
        );
    }
    let burst = |replicas: &[Client]| {
        let calls = replicas
            .iter()
            .flat_map(|r| (0..50).map(move |_| r.get("/api/x").send::<Value>()));
        join_all(calls)
    };
    assert!(burst(&replicas).await.into_iter().all(|r| r.is_ok()));
    assert_eq!(server.token_requests(), 1);

    // Redis goes away; the tokens expire: every request still succeeds, each replica
    // refreshing on its own at most once.
    redis.stop();
    clock.advance(Duration::from_secs(3600));
    for result in burst(&replicas).await {
        assert!(result.is_ok(), "{result:?}");
    }
    let during = server.token_requests() - 1;
    assert!((1..=4).contains(&during), "{during} fetches during the outage");

    // Redis is back (empty); once every replica reconnected, the fleet shares again.
    redis.restart();
    for (slot, coordinator) in &probes {
        retry_while_reconnecting(|| async {
            (slot.is_reachable().await && coordinator.is_reachable().await)
                .then_some(())
                .ok_or(())
        })
        .await;
    }
    clock.advance(Duration::from_secs(3600));
    let before = server.token_requests();
    assert!(burst(&replicas).await.into_iter().all(|r| r.is_ok()));
    assert_eq!(
        server.token_requests() - before,
        1,
        "one fetch for the fleet again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_gives_a_typed_error_while_redis_is_away() {
    let mut redis = tokenkit_tests::redis::RedisServer::start();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let closed = tokenkit_redis::WhenUnavailable::FailClosed;
    let client = tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .provider(token_provider(server.token_url()))
        .store(
            RedisTokenSlot::connect(&redis.url(), "strict")
                .await
                .unwrap()
                .when_unavailable(closed),
        )
        .coordinator(
            RedisCoordinator::connect(&redis.url())
                .await
                .unwrap()
                .when_unavailable(closed),
        )
        .build()
        .unwrap();
    client.get("/api/x").send::<Value>().await.unwrap();
    redis.stop();
    clock.advance(Duration::from_secs(3600));
    let err = client.get("/api/x").send::<Value>().await.unwrap_err();
    assert_eq!(err.kind(), tokenkit_core::ErrorKind::Store, "{err}");
    assert_eq!(server.token_requests(), 1, "no fetch without coordination");
}
