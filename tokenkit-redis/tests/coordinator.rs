//! The coordination contract (written once in tokenkit-core) against a real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use tokenkit_core::testing::contract::{self, Harness};
use tokenkit_core::BoxFuture;
use tokenkit_core::Coordinator;
use tokenkit_redis::RedisCoordinator;

struct Fleet {
    /// Two replicas: separate connections, one Redis.
    one: RedisCoordinator,
    other: RedisCoordinator,
}

impl Harness for Fleet {
    fn one(&self) -> &dyn Coordinator {
        &self.one
    }
    fn other(&self) -> &dyn Coordinator {
        &self.other
    }
    /// Redis expires keys on its own clock: real time passes.
    fn pass(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_coordinator_keeps_the_contract() {
    let redis = tokenkit_tests::redis::RedisServer::start();
    let fleet = Fleet {
        one: RedisCoordinator::connect(&redis.url())
            .await
            .unwrap()
            .prefix("contract"),
        other: RedisCoordinator::connect(&redis.url())
            .await
            .unwrap()
            .prefix("contract"),
    };
    contract::run_all(&fleet).await;
}

/// A refresh slower than its lease (5 s against a 2 s lease, no fetch timeout): the leader
/// keeps extending it, so another replica asking meanwhile follows instead of fetching too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_slower_than_its_lease_keeps_it_and_the_fleet_fetches_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokenkit_core::ProvidedToken;
    use tokenkit_redis::RedisTokenSlot;

    let redis = tokenkit_tests::redis::RedisServer::start();
    let fetches = Arc::new(AtomicUsize::new(0));
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let fetches = Arc::clone(&fetches);
        replicas.push(
            tokenkit_reqwest::builder("http://127.0.0.1:9")
                .token_fetch_timeout(None)
                .provider(move || {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok::<_, std::io::Error>(ProvidedToken::new("slow-token", 3600))
                    }
                })
                .store(RedisTokenSlot::connect(&redis.url(), "slow").await.unwrap())
                .coordinator(
                    RedisCoordinator::connect(&redis.url())
                        .await
                        .unwrap()
                        .prefix("slow")
                        .max_lease(Duration::from_secs(2)),
                )
                .build()
                .unwrap(),
        );
    }
    let leader = tokio::spawn({
        let client = replicas[0].clone();
        async move { client.ensure().await }
    });
    // 3 s in, past the 2 s the lease was granted for, the other replica needs a token.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let follower = tokio::spawn({
        let client = replicas[1].clone();
        async move { client.ensure().await }
    });
    let (led, followed) = (leader.await.unwrap(), follower.await.unwrap());
    let secret = |r: &tokenkit_core::TokenRecord| r.access_token.as_ref().unwrap().secret().to_owned();
    assert_eq!(secret(&led.unwrap().unwrap()), "slow-token");
    assert_eq!(secret(&followed.unwrap().unwrap()), "slow-token");
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "never two leaders: the lease was extended"
    );
}
