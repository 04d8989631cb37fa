//! A fleet of four replicas sharing sessions and one rotation through Redis.
//!
//! Starts `redis-server` (it must be installed), the embedded auth server (it rotates refresh
//! tokens and logs a user out when a refresh token is presented twice), and four replica
//! processes — this same program, run with `TOKENKIT_MODE` set — behind a round-robin front.
//! Then: a user signs in, a browser sends a burst of parallel requests spread over the four
//! replicas, the access token expires, and the burst comes again.
//!
//! Run with `cargo run -p tokenkit-redis --example fleet`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: a panic explains itself

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_tests::redis::RedisServer;
use tokenkit_tests::AuthServer;

const REPLICAS: usize = 4;
const BURST: usize = 200;

struct Replica(Child, String);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn burst(
    http: &tokenkit_reqwest::reqwest::Client,
    replicas: &[Replica],
    cookie: &str,
) -> (usize, Vec<usize>) {
    let requests = (0..BURST).map(|i| {
        let url = format!("{}/me", replicas[i % REPLICAS].1);
        async move {
            let response = http.get(url).header("cookie", cookie).send().await.ok()?;
            let ok = response.status().is_success();
            let body: Value = response.json().await.ok()?;
            (ok && body["user"] == "alice").then_some(i % REPLICAS)
        }
    });
    let served: Vec<usize> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .flatten()
        .collect();
    let per_replica = (0..REPLICAS)
        .map(|r| served.iter().filter(|s| **s == r).count())
        .collect();
    (served.len(), per_replica)
}

#[tokio::main]
async fn main() {
    if std::env::var_os("TOKENKIT_MODE").is_some() {
        // Started by the orchestrator below: be one replica.
        return tokenkit_tests::replica::run_from_env().await;
    }
    if Command::new("redis-server").arg("--version").output().is_err() {
        eprintln!("This example needs redis-server. Install it: `apt-get install redis-server` (Debian/Ubuntu), `brew install redis` (macOS).");
        std::process::exit(1);
    }
    let redis = RedisServer::start();
    let clock = ManualClock::default();
    let auth = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    println!("redis-server on {}, auth server on {}", redis.url(), auth.url());

    let me = std::env::current_exe().unwrap();
    let replicas: Vec<Replica> = (0..REPLICAS)
        .map(|_| {
            let mut child = Command::new(&me)
                .env("TOKENKIT_MODE", "session")
                .env("TOKENKIT_AUTH_URL", auth.url())
                .env("TOKENKIT_REDIS_URL", redis.url())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let port = line.trim().trim_start_matches("listening ").to_owned();
            Replica(child, format!("http://127.0.0.1:{port}"))
        })
        .collect();
    println!(
        "{REPLICAS} replica processes, sharing only Redis: {}",
        replicas
            .iter()
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let http = tokenkit_reqwest::reqwest::Client::new();
    let login = http
        .post(format!("{}/login", replicas[0].1))
        .json(&json!({"username": "alice", "password": "wonderland"}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    println!(
        "\nalice signed in through replica 1; her browser holds only `{}`",
        cookie.split('=').next().unwrap()
    );

    let (ok, per_replica) = burst(&http, &replicas, &cookie).await;
    println!("burst of {BURST} parallel requests, round-robin: {ok}/{BURST} served (per replica {per_replica:?}); refresh calls so far: {}", auth.count("/auth/refresh"));

    println!("\none hour passes: the access token expires on every replica");
    clock.advance(Duration::from_secs(3600));
    for replica in &replicas {
        http.post(format!("{}/advance/3600", replica.1))
            .send()
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let (ok, per_replica) = burst(&http, &replicas, &cookie).await;
    println!(
        "burst of {BURST} parallel requests on the expired token: {ok}/{BURST} served in {:.0?} (per replica {per_replica:?})",
        started.elapsed()
    );
    println!(
        "refresh calls for the whole fleet: {}; refresh tokens presented twice: {}",
        auth.count("/auth/refresh"),
        auth.reuse_detected()
    );
    println!("\n(one replica led the refresh under a Redis lease; the others waited for the successor it published)");
}
