//! The Redis stores on the request path, against their in-process counterparts, in one run:
//! - provider mode: `RedisTokenSlot` (two-level cache) vs `MemoryStore`: a fresh token must
//!   cost no Redis round trip, so the two should be within noise;
//! - session mode: `RedisSessionStore` (one Redis read per request) vs `CookieStore`.
//!
//! The transport is a no-op closure: what is measured is tokenkit (and Redis on loopback),
//! not an HTTP stack. Needs `redis-server` (it is started on a free port).
//!
//! Run with `cargo bench -p tokenkit-bench --bench redis_stores`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use tokenkit_core::{
    run_with_context, transport_fn, AccessToken, Client, ClientBuilder, Context, CookieConfig, CookieStore,
    EndpointConfig, ProvidedToken, RefreshToken, RetryConfig, SessionId, TokenRecord, TokenStore,
};
use tokenkit_redis::{RedisSessionStore, RedisTokenSlot};
use tokenkit_tests::redis::RedisServer;

fn base() -> ClientBuilder {
    let transport = transport_fn(|_req: http::Request<Bytes>| async {
        Ok(http::Response::new(Bytes::from_static(b"{}")))
    });
    Client::builder("http://api.example")
        .transport(transport)
        .runtime(tokenkit_tokio::runtime())
        .no_timeout()
        .retry(RetryConfig::none())
}

fn provider(builder: ClientBuilder) -> Client {
    builder
        .provider(|| async {
            Ok::<_, std::io::Error>(ProvidedToken::new("a-realistic-token-value-0123456789", 3600))
        })
        .build()
        .unwrap()
}

fn session(store: impl TokenStore + 'static) -> Client {
    base()
        .endpoints(EndpointConfig::new("/login", "/refresh"))
        .store(store)
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |client: &Client, ctx: &Context| {
        rt.block_on(run_with_context(ctx.clone(), client.get("/things").send_bytes()))
            .unwrap()
    };
    let none = Context::new();

    // Provider mode.
    let memory = provider(base());
    let slot = rt.block_on(async {
        provider(base().store(RedisTokenSlot::connect(&redis.url(), "bench").await.unwrap()))
    });
    send(&memory, &none);
    send(&slot, &none);
    c.bench_function("provider mode, MemoryStore", |b| b.iter(|| send(&memory, &none)));
    c.bench_function("provider mode, RedisTokenSlot (two-level)", |b| {
        b.iter(|| send(&slot, &none))
    });

    // Session mode: the same fresh record in cookies, or in Redis behind a session id.
    let record = TokenRecord::new(
        AccessToken::new("a-session-token-0123456789"),
        UNIX_EPOCH + Duration::from_secs(4_000_000_000),
    )
    .with_refresh_token(RefreshToken::new("r-0123456789"));
    let cookie_client = session(CookieStore::new(CookieConfig::new().secure(false)));
    let cookie_ctx = {
        let ctx = Context::new();
        rt.block_on(CookieStore::new(CookieConfig::new().secure(false)).save(
            Some(&ctx),
            Arc::new(record.clone()),
            None,
        ))
        .unwrap();
        let header: Vec<String> = ctx
            .cookie_delta()
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        Context::from_cookie_header(&header.join("; "))
    };
    let redis_store = rt
        .block_on(RedisSessionStore::connect(&redis.url()))
        .unwrap()
        .insecure_cookie_for_development();
    let redis_ctx = Context::new();
    redis_ctx.insert(SessionId("bench-session".into()));
    rt.block_on(redis_store.save(Some(&redis_ctx), Arc::new(record), None))
        .unwrap();
    let redis_client = session(redis_store);
    send(&cookie_client, &cookie_ctx);
    send(&redis_client, &redis_ctx);
    c.bench_function("session mode, CookieStore", |b| {
        b.iter(|| send(&cookie_client, &cookie_ctx))
    });
    c.bench_function("session mode, RedisSessionStore (one HGET)", |b| {
        b.iter(|| send(&redis_client, &redis_ctx))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
