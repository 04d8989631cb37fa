//! A fleet of replica processes (`src/bin/replica.rs`), each its own OS process with its own
//! tokenkit client, sharing only Redis; the test is the round-robin front. The auth server
//! rotates refresh tokens and revokes the whole session when one is presented twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_tests::redis::RedisServer;
use tokenkit_tests::{AuthServer, USERS};

/// Replica processes, killed when dropped.
struct Fleet {
    replicas: Vec<(Child, String)>,
    http: reqwest::Client,
}

impl Fleet {
    fn start(n: usize, mode: &str, auth: &AuthServer, redis: &RedisServer) -> Self {
        Self::start_with(n, mode, auth, redis, &[])
    }

    fn start_with(
        n: usize,
        mode: &str,
        auth: &AuthServer,
        redis: &RedisServer,
        env: &[(&str, &str)],
    ) -> Self {
        let replicas = (0..n)
            .map(|_| {
                let mut child = Command::new(env!("CARGO_BIN_EXE_replica"))
                    .envs(env.iter().copied())
                    .env("TOKENKIT_AUTH_URL", auth.url())
                    .env("TOKENKIT_REDIS_URL", redis.url())
                    .env("TOKENKIT_MODE", mode)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("the replica binary starts");
                let mut line = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let port = line.trim().strip_prefix("listening ").expect("a port").to_owned();
                (child, format!("http://127.0.0.1:{port}"))
            })
            .collect();
        Self {
            replicas,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.replicas[i % self.replicas.len()].1)
    }

    /// Moves every replica's clock (and the auth server's, through `clock`).
    async fn advance(&self, clock: &ManualClock, by: Duration) {
        clock.advance(by);
        for i in 0..self.replicas.len() {
            let url = self.url(i, &format!("/advance/{}", by.as_secs()));
            assert!(self.http.post(url).send().await.unwrap().status().is_success());
        }
    }

    /// Signs a user in through replica `i`; returns the browser's `Cookie` header.
    async fn login(&self, i: usize, (user, password): (&str, &str)) -> String {
        let response = self
            .http
            .post(self.url(i, "/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "login: {}", response.status());
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    async fn get(&self, i: usize, path: &str, cookie: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(i, path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (child, _) in &mut self.replicas {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn world() -> (ManualClock, AuthServer, RedisServer) {
    let clock = ManualClock::default();
    let auth = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    (clock, auth, RedisServer::start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_burst_over_four_replica_processes_refreshes_once() {
    let (clock, auth, redis) = world().await;
    let fleet = Fleet::start(4, "session", &auth, &redis);
    let cookie = fleet.login(0, USERS[0]).await;
    fleet.advance(&clock, Duration::from_secs(3600)).await;
    let pages = futures_util::future::join_all((0..200).map(|i| fleet.get(i, "/me", &cookie))).await;
    let ok = pages
        .iter()
        .filter(|(status, body)| *status == 200 && body["user"] == "alice")
        .count();
    assert_eq!(ok, 200, "200/200 succeed");
    assert_eq!(
        auth.count("/auth/refresh"),
        1,
        "exactly one refresh for the fleet"
    );
    assert_eq!(auth.reuse_detected(), 0);
    let mut digests = Vec::new();
    for i in 0..4 {
        digests.push(fleet.get(i, "/session", &cookie).await.1["digest"].clone());
    }
    assert!(digests[0].is_string());
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "every replica ends with the same record: {digests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_service_replica_processes_fetch_one_token_per_expiry() {
    let (clock, auth, redis) = world().await;
    let fleet = Fleet::start(8, "service", &auth, &redis);
    // 500 requests per replica over 3 expiries (167 per replica and expiry).
    for expiry in 1..=3u64 {
        let calls = futures_util::stream::iter(0..8 * 167)
            .map(|i| fleet.get(i, "/call", ""))
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        assert!(calls
            .iter()
            .all(|(status, body)| *status == 200 && body["token_id"] == expiry));
        assert_eq!(
            auth.token_requests() as u64,
            expiry,
            "one fetch per expiry for 8 processes"
        );
        fleet.advance(&clock, Duration::from_secs(3600)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_rotating_at_once_across_four_replica_processes() {
    let (clock, auth, redis) = world().await;
    let fleet = &Fleet::start(4, "session", &auth, &redis);
    let sessions: Vec<(String, &str)> = futures_util::stream::iter(0..1000)
        .map(|i| async move { (fleet.login(i, USERS[i % 2]).await, USERS[i % 2].0) })
        .buffer_unordered(50)
        .collect()
        .await;
    fleet.advance(&clock, Duration::from_secs(3600)).await;
    let pages = futures_util::stream::iter(sessions.iter().enumerate())
        .map(|(i, (cookie, user))| async move { (fleet.get(i + 1, "/me", cookie).await, *user) })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await;
    let wrong_user = pages
        .iter()
        .filter(|((_, body), user)| body["user"] != *user)
        .count();
    let failed = pages.iter().filter(|((status, _), _)| *status != 200).count();
    assert_eq!((failed, wrong_user), (0, 0), "failures, cross-session tokens");
    assert_eq!(auth.count("/auth/refresh"), 1000);
    assert_eq!(auth.reuse_detected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_refresh_is_taken_over_when_its_lease_lapses() {
    let (clock, auth, redis) = world().await;
    // Token fetches time out after 1 s, so leases last 1 s + the 5 s margin.
    let mut fleet = Fleet::start_with(
        2,
        "session",
        &auth,
        &redis,
        &[("TOKENKIT_FETCH_TIMEOUT_MS", "1000")],
    );
    let cookie = fleet.login(0, USERS[0]).await;
    fleet.advance(&clock, Duration::from_secs(3600)).await;
    // Replica 0's refresh hangs at the auth server (never answered while the test runs)...
    auth.fail_next_refresh_requests(1, tokenkit_tests::Fault::Delay(Duration::from_secs(600)));
    let hanging = tokio::spawn({
        let (http, url, cookie) = (fleet.http.clone(), fleet.url(0, "/me"), cookie.clone());
        async move { http.get(url).header("cookie", cookie).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and replica 0 dies holding the lease.
    fleet.replicas[0].0.kill().unwrap();
    let _ = fleet.replicas[0].0.wait();
    assert!(
        hanging.await.unwrap().is_err(),
        "the killed replica answered nothing"
    );
    let started = std::time::Instant::now();
    let (status, body) = fleet.get(1, "/me", &cookie).await;
    let waited = started.elapsed();
    assert_eq!((status, body["user"].as_str()), (200, Some("alice")), "{body}");
    assert!(
        waited < Duration::from_secs(6 + 1 + 2),
        "waited {waited:?}: at most the lease (6 s) and a refresh timeout (1 s), with slack"
    );
    assert_eq!(auth.reuse_detected(), 0);
}
