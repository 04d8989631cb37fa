//! Stores that declare their scope, and clients sharing one rotation through a coordinator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    async_trait, run_with_context, Context, EndpointConfig, Error, InProcessCoordinator, LoginOptions,
    MemorySessionBackend, SessionStore, StandardPolicy, StoreScope, TokenRecord, TokenStore,
};
use tokenkit_tests::{token_provider, AuthServer, Browser};

/// A process-wide store written by a user with only the trait's required methods.
#[derive(Debug, Default)]
struct Slot(Mutex<Option<Arc<TokenRecord>>>);

#[async_trait]
impl TokenStore for Slot {
    async fn load(&self, _ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        Ok(self.0.lock().unwrap().clone())
    }
    async fn save(
        &self,
        _: Option<&Context>,
        record: Arc<TokenRecord>,
        _: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        *self.0.lock().unwrap() = Some(record);
        Ok(())
    }
    async fn clear(&self, _ctx: Option<&Context>) -> Result<(), Error> {
        *self.0.lock().unwrap() = None;
        Ok(())
    }
    fn scope(&self) -> StoreScope {
        StoreScope::Process
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_process_wide_store_shares_one_fetch_and_refreshes_in_the_background() {
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    server.set_token_lifetime(Duration::from_secs(100));
    let client = tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .provider(token_provider(server.token_url()))
        .policy(StandardPolicy::provider().jitter_percent(0))
        .store(Slot::default())
        .build()
        .unwrap();
    let calls = join_all((0..50).map(|_| client.get("/api/x").send::<Value>())).await;
    assert!(calls.iter().all(Result::is_ok));
    assert_eq!(
        server.token_requests(),
        1,
        "50 concurrent calls, one fetch (as MemoryStore)"
    );
    // Inside the proactive window: the valid token is used and one refresh runs detached.
    clock.advance(Duration::from_secs(91));
    let during = client.get("/api/x").send::<Value>().await.unwrap();
    assert_eq!(during.data["token_id"], 1, "the valid token is used meanwhile");
    for _ in 0..500 {
        if server.token_requests() == 2 && client.rotation_stats().unwrap().refreshes_in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = join_all((0..50).map(|_| client.get("/api/x").send::<Value>())).await;
    assert!(after.into_iter().all(|r| r.unwrap().data["token_id"] == 2));
    assert_eq!(server.token_requests(), 2, "one background refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_an_in_process_coordinator_refresh_a_session_once() {
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    // One session backend shared by every replica (`Arc<B>` is a backend too).
    let backend = Arc::new(MemorySessionBackend::new(Arc::new(clock.clone())));
    let coordinator = InProcessCoordinator::new(tokenkit_core::Runtime::new().with_clock(clock.clone()));
    // Three "replicas": separate clients, one session backend, one coordinator.
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            tokenkit_reqwest::builder(server.url())
                .clock(clock.clone())
                .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
                .store(SessionStore::new(backend.clone()).session_cookie("sid"))
                .coordinator(coordinator.clone())
                .policy(StandardPolicy::default().jitter_percent(0))
                .build()
                .unwrap()
        })
        .collect();
    let browser = Browser::new();
    browser.restore([("sid".to_owned(), "s-1".to_owned())].into());
    let creds = json!({"username": "alice", "password": "wonderland"});
    browser
        .visit(replicas[0].login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    // A browser's parallel requests land on different replicas.
    let pages = (0..60).map(|i| {
        let (client, ctx) = (replicas[i % 3].clone(), browser.context());
        async move { run_with_context(ctx, client.get("/api/me").send::<Value>()).await }
    });
    for page in join_all(pages).await {
        assert_eq!(page.unwrap().data["user"], "alice");
    }
    assert_eq!(
        server.count("/auth/refresh"),
        1,
        "one refresh across the replicas"
    );
    assert_eq!(server.reuse_detected(), 0);
    for replica in &replicas {
        assert_eq!(replica.rotation_stats().unwrap().refreshes_in_flight, 0);
    }
}
