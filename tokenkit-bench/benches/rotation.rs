//! Rotation cost as the grace table fills: 25,000 cookie-session rotations timed against an
//! empty table, then against a table already holding the successors of earlier rotations
//! (all inside the grace window). In-process (a transport closure answers the refresh
//! endpoint), one thread, manual clock: what is measured is tokenkit's own bookkeeping.
//!
//! Run with `cargo bench -p tokenkit-bench --bench rotation [-- <prefill>]` (default 25,000).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    run_with_context, transport_fn, Client, Context, CookieConfig, CookieStore, EndpointConfig, RetryConfig,
    StandardPolicy,
};

const TIMED: u64 = 25_000;

fn client() -> Client {
    let issued = Arc::new(AtomicU64::new(0));
    let transport = transport_fn(move |req: http::Request<Bytes>| {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        let body = if req.uri().path() == "/refresh" {
            format!(r#"{{"access_token":"a{n}","refresh_token":"n{n}","expires_in":3600}}"#)
        } else {
            "{}".to_owned()
        };
        async move { Ok(http::Response::new(Bytes::from(body))) }
    });
    Client::builder("http://api.example")
        .transport(transport)
        .no_timeout()
        .retry(RetryConfig::none())
        .clock(ManualClock::default())
        .endpoints(EndpointConfig::new("/login", "/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .policy(StandardPolicy::default().jitter_percent(0))
        .build()
        .unwrap()
}

/// Rotates sessions `from..to`: each holds only a refresh token, so its first request
/// refreshes (one rotation, one successor kept for the grace window).
fn rotate(client: &Client, from: u64, to: u64) -> Duration {
    let start = Instant::now();
    for i in from..to {
        let ctx = Context::from_cookie_header(&format!("refresh_token=r{i}"));
        let page = run_with_context(ctx, client.get("/page").send_bytes());
        futures_executor::block_on(page).unwrap();
    }
    start.elapsed()
}

fn main() {
    let prefill: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(25_000);
    let empty = client();
    rotate(&empty, 0, 1_000); // warm-up, then a fresh client
    let empty = client();
    let alone = rotate(&empty, 0, TIMED);
    let full = client();
    rotate(&full, 0, prefill);
    let entries = full.rotation_stats().unwrap().grace_entries;
    let crowded = rotate(&full, prefill, prefill + TIMED);
    println!(
        "{TIMED} rotations: empty table {:.0} ms ({:.2} µs each); after {prefill} rotations ({entries} grace entries) {:.0} ms ({:.2} µs each); ratio {:.2}",
        alone.as_secs_f64() * 1e3,
        alone.as_secs_f64() * 1e6 / TIMED as f64,
        crowded.as_secs_f64() * 1e3,
        crowded.as_secs_f64() * 1e6 / TIMED as f64,
        crowded.as_secs_f64() / alone.as_secs_f64()
    );
}
