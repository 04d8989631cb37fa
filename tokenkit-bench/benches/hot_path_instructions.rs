//! The core hot path for an instruction counter: `N` requests with a fresh token (or without
//! auth) through a no-op transport, nothing else. Run it under callgrind twice with different
//! `N` and divide the difference of the totals by the difference of `N`: setup cancels out.
//!
//! `cargo bench -p tokenkit-bench --bench hot_path_instructions --no-run`, then
//! `valgrind --tool=callgrind <binary> auth 10000` (or `plain`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::hint::black_box;

mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let with_auth = args.next().as_deref() != Some("plain");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let client = common::client(with_auth);
    for _ in 0..n {
        let response = futures_executor::block_on(client.get("/things").send_bytes()).unwrap();
        black_box(response);
    }
}
