//! The core hot path: a request with a fresh token through a no-op transport (no network,
//! no runtime). Reports time per request (criterion) and allocations per request (a counting
//! global allocator).
//!
//! Run with `cargo bench -p tokenkit-bench --bench hot_path`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::alloc::System;
use std::hint::black_box;

use common::client;
use criterion::{criterion_group, criterion_main, Criterion};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokenkit_core::Client;

mod common;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn send(client: &Client) {
    let response = futures_executor::block_on(client.get("/things").send_bytes()).unwrap();
    black_box(response);
}

fn allocations_per_request(client: &Client) -> f64 {
    const N: usize = 1000;
    send(client); // warm: the token is fetched and stored
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        send(client);
    }
    region.change().allocations as f64 / N as f64
}

fn hot_path(c: &mut Criterion) {
    let authed = client(true);
    let plain = client(false);
    println!(
        "allocations per request: with a token {:.1}, without auth {:.1}, tokenkit's share {:.1}",
        allocations_per_request(&authed),
        allocations_per_request(&plain),
        allocations_per_request(&authed) - allocations_per_request(&plain)
    );
    c.bench_function("request with a fresh token (no-op transport)", |b| {
        b.iter(|| send(&authed))
    });
    c.bench_function("request without auth (no-op transport)", |b| {
        b.iter(|| send(&plain))
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
