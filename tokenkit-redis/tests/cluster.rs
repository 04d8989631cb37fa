//! Everything on a real local Redis Cluster (3 masters): every script touches one slot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokenkit_core::testing::contract::{self, Harness};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::BoxFuture;
use tokenkit_core::{
    run_with_context, AccessToken, Context, Coordinator, EndpointConfig, ErrorKind, LoginOptions,
    RefreshToken, SessionId, StandardPolicy, TokenRecord, TokenStore,
};
use tokenkit_redis::{RedisConnection, RedisCoordinator, RedisSessionStore, RedisTokenSlot};
use tokenkit_tests::redis::RedisCluster;
use tokenkit_tests::{token_provider, AuthServer, Browser};

async fn connection(cluster: &RedisCluster) -> RedisConnection {
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    RedisConnection::open_cluster(&nodes).await.unwrap()
}

struct Fleet {
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
    fn pass(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// One cluster for the whole file (forming it takes a few seconds); the checks run in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3);

    // The coordination contract.
    let fleet = Fleet {
        one: RedisCoordinator::new(connection(&cluster).await).prefix("contract"),
        other: RedisCoordinator::new(connection(&cluster).await).prefix("contract"),
    };
    contract::run_all(&fleet).await;

    // Compare-and-swap sessions.
    let store = RedisSessionStore::new(connection(&cluster).await).insecure_cookie_for_development();
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let rec = |a: &str| {
        Arc::new(TokenRecord::new(AccessToken::new(a), at).with_refresh_token(RefreshToken::new(a)))
    };
    let ctx = Context::new();
    ctx.insert(SessionId("cluster-1".into()));
    let first = rec("a1");
    store.save(Some(&ctx), Arc::clone(&first), None).await.unwrap();
    store.save(Some(&ctx), rec("a2"), Some(&first)).await.unwrap();
    let err = store.save(Some(&ctx), rec("a3"), Some(&first)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreConflict);

    // A browser burst over four replicas, sessions and coordination on the cluster.
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(
            tokenkit_reqwest::builder(server.url())
                .clock(clock.clone())
                .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
                .store(RedisSessionStore::new(connection(&cluster).await).insecure_cookie_for_development())
                .coordinator(RedisCoordinator::new(connection(&cluster).await))
                .policy(StandardPolicy::default().jitter_percent(0))
                .build()
                .unwrap(),
        );
    }
    let browser = Browser::new();
    let creds = json!({"username": "alice", "password": "wonderland"});
    browser
        .visit(replicas[0].login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    let pages = (0..100).map(|i| {
        let (client, ctx) = (replicas[i % 4].clone(), browser.context());
        async move { run_with_context(ctx, client.get("/api/me").send::<Value>()).await }
    });
    assert!(join_all(pages)
        .await
        .into_iter()
        .all(|p| p.unwrap().data["user"] == "alice"));
    assert_eq!(server.count("/auth/refresh"), 1);
    assert_eq!(server.reuse_detected(), 0);

    // One service token for the fleet.
    let mut services = Vec::new();
    for _ in 0..4 {
        services.push(
            tokenkit_reqwest::builder(server.url())
                .clock(clock.clone())
                .provider(token_provider(server.token_url()))
                .store(RedisTokenSlot::new(connection(&cluster).await, "cluster-service"))
                .coordinator(RedisCoordinator::new(connection(&cluster).await).prefix("cluster-service"))
                .build()
                .unwrap(),
        );
    }
    let calls = services
        .iter()
        .flat_map(|s| (0..25).map(move |_| s.get("/api/x").send::<Value>()));
    assert!(join_all(calls).await.into_iter().all(|r| r.is_ok()));
    assert_eq!(server.token_requests(), 1, "one fetch for the fleet");
}
