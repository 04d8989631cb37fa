//! The coordination contract (written once in tokenkit-core) against a real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use tokenkit_core::rotation::contract::{self, Harness};
use tokenkit_core::runtime::BoxFuture;
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
