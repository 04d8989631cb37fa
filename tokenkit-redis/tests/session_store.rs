//! The Redis session store against a real redis-server and the test auth server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    run_with_context, AccessToken, Client, Context, EndpointConfig, ErrorKind, LoginOptions, RefreshToken,
    SessionId, StandardPolicy, TokenRecord, TokenStore,
};
use tokenkit_redis::{RedisCoordinator, RedisSessionStore};
use tokenkit_tests::redis::retry_while_reconnecting;
use tokenkit_tests::{AuthServer, Browser};

async fn store(redis: &str, prefix: &str) -> RedisSessionStore {
    RedisSessionStore::connect(redis)
        .await
        .unwrap()
        .prefix(prefix)
        .insecure_cookie_for_development()
}

async fn replica(server: &AuthServer, clock: &ManualClock, redis: &str) -> Client {
    tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"))
        .store(store(redis, "app").await)
        .coordinator(RedisCoordinator::connect(redis).await.unwrap().prefix("app"))
        .policy(StandardPolicy::default().jitter_percent(0))
        .build()
        .unwrap()
}

fn record(access: &str, refresh: &str) -> Arc<TokenRecord> {
    Arc::new(
        TokenRecord::new(
            AccessToken::new(access),
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .with_refresh_token(RefreshToken::new(refresh)),
    )
}

fn secret(record: &TokenRecord) -> &str {
    record.access_token.as_ref().unwrap().secret()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_holds_only_a_session_id_and_every_replica_sees_the_rotation() {
    let redis = tokenkit_tests::redis::RedisServer::start();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let (a, b) = (
        replica(&server, &clock, &redis.url()).await,
        replica(&server, &clock, &redis.url()).await,
    );
    let browser = Browser::new();
    let creds = json!({"username": "alice", "password": "wonderland"});
    let (login, ctx) = browser.visit(a.login(&creds, LoginOptions::new())).await;
    login.unwrap();
    let cookies = browser.snapshot();
    assert_eq!(
        cookies.keys().collect::<Vec<_>>(),
        ["tokenkit_sid"],
        "no token in a cookie"
    );
    let header = ctx.set_cookie_headers()[0].to_str().unwrap().to_owned();
    assert!(header.contains("HttpOnly"), "{header}");
    assert_eq!(cookies["tokenkit_sid"].len(), 64, "32 random bytes");
    // Replica b serves the session a created.
    let (me, _) = browser.visit(b.get("/api/me").send::<Value>()).await;
    assert_eq!(me.unwrap().data["user"], "alice");
    // Expired: rotated once, and the other replica reads the rotated record.
    clock.advance(Duration::from_secs(3600));
    let (me, _) = browser.visit(b.get("/api/me").send::<Value>()).await;
    assert_eq!(me.unwrap().data["user"], "alice");
    assert_eq!(server.count("/auth/refresh"), 1);
    let seen_by_a = run_with_context(browser.context(), a.session())
        .await
        .unwrap()
        .unwrap();
    let seen_by_b = run_with_context(browser.context(), b.session())
        .await
        .unwrap()
        .unwrap();
    assert!(seen_by_a.same_tokens(&seen_by_b));
    // Logout removes the record and expires the cookie.
    browser.visit(a.logout()).await.0.unwrap();
    assert!(browser.snapshot().is_empty());
    let ctx = Context::from_cookie_header(&format!("tokenkit_sid={}", cookies["tokenkit_sid"]));
    assert!(
        run_with_context(ctx, b.session()).await.unwrap().is_none(),
        "the record is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_write_is_refused_and_the_winner_kept() {
    let redis = tokenkit_tests::redis::RedisServer::start();
    let (one, stale) = (store(&redis.url(), "cas").await, store(&redis.url(), "cas").await);
    let ctx = Context::new();
    ctx.insert(SessionId("s-1".into()));
    let first = record("a1", "r1");
    one.save(Some(&ctx), Arc::clone(&first), None).await.unwrap();
    one.save(Some(&ctx), record("a2", "r2"), Some(&first))
        .await
        .unwrap();
    let err = stale
        .save(Some(&ctx), record("a3", "r3"), Some(&first))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreConflict);
    assert_eq!(
        secret(&stale.load(Some(&ctx)).await.unwrap().unwrap()),
        "a2",
        "the winner is kept"
    );
    // Expecting a record where there is none is a conflict too.
    let fresh = Context::new();
    fresh.insert(SessionId("s-2".into()));
    let err = one
        .save(Some(&fresh), record("a4", "r4"), Some(&first))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreConflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_no_session_and_no_panic() {
    let redis = tokenkit_tests::redis::RedisServer::start();
    let store = store(&redis.url(), "damaged").await;
    let ctx = Context::new();
    ctx.insert(SessionId("s-1".into()));
    store.save(Some(&ctx), record("a1", "r1"), None).await.unwrap();
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("damaged:*")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].contains("s-1"), "the key is a digest of the session id");
    for garbage in ["", "{", "{\"obtained_at\": 1e300}", "\u{0}\u{1}binary"] {
        let _: () = redis::cmd("HSET")
            .arg(&keys[0])
            .arg("record")
            .arg(garbage)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(store.load(Some(&ctx)).await.unwrap().is_none(), "{garbage:?}");
    }
    // Without a context there is no session to name: a typed error.
    assert_eq!(store.load(None).await.unwrap_err().kind(), ErrorKind::NoContext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_four_replicas_with_sessions_in_redis_refreshes_once() {
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
    let creds = json!({"username": "bob", "password": "builder"});
    browser
        .visit(replicas[0].login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    let pages = (0..200).map(|i| {
        let (client, ctx) = (replicas[i % 4].clone(), browser.context());
        async move { run_with_context(ctx, client.get("/api/me").send::<Value>()).await }
    });
    for page in join_all(pages).await {
        assert_eq!(page.unwrap().data["user"], "bob");
    }
    assert_eq!(server.count("/auth/refresh"), 1, "one refresh for the fleet");
    assert_eq!(server.reuse_detected(), 0);
    let mut seen = Vec::new();
    for replica in &replicas {
        seen.push(
            run_with_context(browser.context(), replica.session())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0].same_tokens(&w[1])),
        "one record for the fleet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_records_rotate_keys_and_refuse_tampering() {
    use tokenkit_redis::Encryption;
    let redis = tokenkit_tests::redis::RedisServer::start();
    let url = redis.url();
    let k1 = || Encryption::new("k1", [7; 32]).unwrap();
    let sealed_k1 = store(&url, "enc").await.encryption(k1());
    let ctx = Context::new();
    ctx.insert(SessionId("s-1".into()));
    sealed_k1
        .save(Some(&ctx), record("a-secret", "r-secret"), None)
        .await
        .unwrap();
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("enc:*")
        .query_async(&mut raw)
        .await
        .unwrap();
    let value: String = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("record")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(value.starts_with("tk1.k1."), "sealed with k1");
    assert!(!value.contains("secret"), "no token readable at rest");
    assert_eq!(
        secret(&sealed_k1.load(Some(&ctx)).await.unwrap().unwrap()),
        "a-secret"
    );
    // Without the key: no session (and no panic).
    assert!(store(&url, "enc").await.load(Some(&ctx)).await.unwrap().is_none());
    // Rotation: k2 is current, k1 still opens old values; new writes use k2.
    let rotated = store(&url, "enc").await.encryption(
        Encryption::new("k2", [9; 32])
            .unwrap()
            .with_old_key("k1", [7; 32])
            .unwrap(),
    );
    let before = rotated.load(Some(&ctx)).await.unwrap().unwrap();
    assert_eq!(secret(&before), "a-secret");
    rotated
        .save(Some(&ctx), record("a2", "r2"), Some(&before))
        .await
        .unwrap();
    let value: String = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("record")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(value.starts_with("tk1.k2."));
    assert!(
        sealed_k1.load(Some(&ctx)).await.unwrap().is_none(),
        "k1 alone cannot read k2"
    );
    // Tampered: one character changed.
    let mut tampered = value.into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let _: () = redis::cmd("HSET")
        .arg(&keys[0])
        .arg("record")
        .arg(String::from_utf8(tampered).unwrap())
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        rotated.load(Some(&ctx)).await.unwrap().is_none(),
        "tampered: no session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_a_replica_without_a_local_copy_gives_a_typed_error_and_loses_no_session() {
    let mut redis = tokenkit_tests::redis::RedisServer::start_persistent();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let (a, b) = (
        replica(&server, &clock, &redis.url()).await,
        replica(&server, &clock, &redis.url()).await,
    );
    let browser = Browser::new();
    let creds = json!({"username": "alice", "password": "wonderland"});
    browser
        .visit(a.login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    let cookies = browser.snapshot();
    redis.stop();
    // Replica b never saw this session: a typed error, and the browser keeps its cookie.
    let (page, ctx) = browser.visit(b.get("/api/me").send::<Value>()).await;
    assert_eq!(page.unwrap_err().kind(), ErrorKind::Store);
    assert!(ctx.cookie_delta().is_empty(), "nothing removed or rewritten");
    assert_eq!(browser.snapshot(), cookies);
    // Redis is back with its data: the same session works, nobody signs in again.
    redis.restart();
    let served =
        retry_while_reconnecting(|| async { browser.visit(b.get("/api/me").send::<Value>()).await.0 }).await;
    assert_eq!(served.data["user"], "alice");
    assert_eq!(server.count("/auth/login"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_and_rotates_a_session_during_an_outage_and_writes_it_back() {
    let mut redis = tokenkit_tests::redis::RedisServer::start_persistent();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let (a, b) = (
        replica(&server, &clock, &redis.url()).await,
        replica(&server, &clock, &redis.url()).await,
    );
    let browser = Browser::new();
    let creds = json!({"username": "alice", "password": "wonderland"});
    browser
        .visit(a.login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    redis.stop();
    clock.advance(Duration::from_secs(3600));
    // Replica a has a local copy: it serves the session and rotates it while Redis is away.
    for _ in 0..3 {
        let (page, _) = browser.visit(a.get("/api/me").send::<Value>()).await;
        assert_eq!(page.unwrap().data["user"], "alice");
    }
    assert_eq!(
        server.count("/auth/refresh"),
        1,
        "rotated once, during the outage"
    );
    // Past the grace window (nothing but Redis can carry the rotation now), Redis is back:
    // a's next request writes the rotation back...
    clock.advance(Duration::from_secs(10));
    redis.restart();
    retry_while_reconnecting(|| async { browser.visit(a.get("/api/me").send::<Value>()).await.0 }).await;
    // ...so replica b, which never saw the session, reads the rotated record from Redis.
    let (page, _) = browser.visit(b.get("/api/me").send::<Value>()).await;
    assert_eq!(page.unwrap().data["user"], "alice");
    assert_eq!(server.count("/auth/refresh"), 1, "no second rotation");
    assert_eq!(server.reuse_detected(), 0);
    assert_eq!(server.count("/auth/login"), 1);
}
