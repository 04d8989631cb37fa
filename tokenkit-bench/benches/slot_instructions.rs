//! Provider mode's request path with `RedisTokenSlot` or `MemoryStore`, for an instruction
//! counter (the Redis-backed slot must cost the same as memory while the token is fresh).
//! `valgrind --tool=callgrind <binary> slot|memory N <redis url>`; two `N`s, differenced.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::hint::black_box;

use bytes::Bytes;
use tokenkit_core::{transport_fn, Client, ProvidedToken, RetryConfig};
use tokenkit_redis::RedisTokenSlot;

fn main() {
    let mut args = std::env::args().skip(1);
    let slot = args.next().as_deref() == Some("slot");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transport = transport_fn(|_req: http::Request<Bytes>| async {
        Ok(http::Response::new(Bytes::from_static(b"{}")))
    });
    let builder = Client::builder("http://api.example")
        .transport(transport)
        .runtime(tokenkit_tokio::runtime())
        .no_timeout()
        .retry(RetryConfig::none())
        .provider(|| async {
            Ok::<_, std::io::Error>(ProvidedToken::new("a-realistic-token-value-0123456789", 3600))
        });
    let builder = if slot {
        builder.store(
            rt.block_on(RedisTokenSlot::connect(&url, "instructions"))
                .unwrap(),
        )
    } else {
        builder
    };
    let client = builder.build().unwrap();
    for _ in 0..n {
        black_box(rt.block_on(client.get("/things").send_bytes()).unwrap());
    }
}
