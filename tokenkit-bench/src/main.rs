//! tokenkit's benchmarks against the raw clients, on loopback.
//!
//! ```text
//! cargo run --release -p tokenkit-bench -- overhead   # raw client vs tokenkit, per adapter
//! cargo run --release -p tokenkit-bench -- herd       # 10,000 requests on an expired token
//! cargo run --release -p tokenkit-bench -- storm      # 1,000 requests rejected with one token
//! cargo run --release -p tokenkit-bench -- sessions   # 10,000 cookie sessions due at once
//! ```
//!
//! The server (`server.rs`) runs on its own thread and single-threaded runtime; the client on
//! a single-threaded runtime of the main thread. On a 2-core machine each gets one core, and
//! raw and tokenkit runs alternate so both see the same conditions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary: failing loudly is right

mod server;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::{BodyExt, Full};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    run_with_context, Client, ClientBuilder, Context, CookieConfig, CookieStore, EndpointConfig,
    ProvidedToken, StandardPolicy,
};

use server::Server;

const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 32;
const ROUNDS: usize = 3;

struct Stats {
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: usize,
}

impl Stats {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 - 1.0) * p) as usize]
    }
}

async fn measure<F, Fut>(n: usize, concurrency: usize, request: F) -> Stats
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let results: Vec<(Duration, bool)> = stream::iter(0..n)
        .map(|_| {
            let fut = request();
            async move {
                let t = Instant::now();
                let ok = fut.await;
                (t.elapsed(), ok)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let errors = results.iter().filter(|(_, ok)| !ok).count();
    Stats {
        elapsed,
        latencies: results.into_iter().map(|(d, _)| d).collect(),
        errors,
    }
}

fn merge(all: Vec<Stats>) -> Stats {
    let elapsed = all.iter().map(|s| s.elapsed).sum();
    let errors = all.iter().map(|s| s.errors).sum();
    let latencies = all.into_iter().flat_map(|s| s.latencies).collect();
    Stats {
        elapsed,
        latencies,
        errors,
    }
}

fn provider(
    url: String,
) -> impl Fn() -> futures_util::future::BoxFuture<'static, Result<ProvidedToken, reqwest::Error>> + Send + Sync
{
    let http = reqwest::Client::new();
    move || {
        let (http, url) = (http.clone(), url.clone());
        Box::pin(async move { http.post(url).send().await?.json::<ProvidedToken>().await })
    }
}

fn tokenkit(adapter: &str, url: &str) -> ClientBuilder {
    match adapter {
        "reqwest" => tokenkit_reqwest::builder(url),
        "hyper" => tokenkit_hyper::builder(url),
        _ => tokenkit_isahc::builder(url).unwrap(),
    }
}

async fn overhead(adapter: &str) {
    let server = Server::start(3600).unwrap();
    let url = format!("{}/api/data", server.url());
    let raw_token = format!("Bearer {}", server.state.issue("raw"));
    let client = tokenkit(adapter, &server.url())
        .provider(provider(format!("{}/token", server.url())))
        .build()
        .unwrap();
    let untimed = tokenkit(adapter, &server.url())
        .no_timeout()
        .provider(provider(format!("{}/token", server.url())))
        .build()
        .unwrap();

    let reqwest_raw = reqwest::Client::new();
    let hyper_raw: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let isahc_raw = tokenkit_isahc::isahc::HttpClient::new().unwrap();
    let raw = || {
        let (url, token) = (url.clone(), raw_token.clone());
        let (r, h, i) = (reqwest_raw.clone(), hyper_raw.clone(), isahc_raw.clone());
        let adapter = adapter.to_owned();
        async move {
            match adapter.as_str() {
                "reqwest" => match r.get(&url).header("authorization", &token).send().await {
                    Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                    Err(_) => false,
                },
                "hyper" => {
                    let req = http::Request::get(&url)
                        .header("authorization", &token)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    match h.request(req).await {
                        Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    }
                }
                _ => {
                    use futures_util::AsyncReadExt;
                    let req = http::Request::get(&url)
                        .header("authorization", &token)
                        .body(())
                        .unwrap();
                    match i.send_async(req).await {
                        Ok(mut resp) => {
                            let mut buf = Vec::new();
                            resp.status().is_success() && resp.body_mut().read_to_end(&mut buf).await.is_ok()
                        }
                        Err(_) => false,
                    }
                }
            }
        }
    };
    let with_tokenkit = || {
        let client = client.clone();
        async move { client.get("/api/data").send_bytes().await.is_ok() }
    };
    let without_timeout = || {
        let client = untimed.clone();
        async move { client.get("/api/data").send_bytes().await.is_ok() }
    };
    // Session mode: each request's context built from a browser's cookies, as a web app
    // serving one API call per page does.
    let sessions = tokenkit(adapter, &server.url())
        .endpoints(tokenkit_core::EndpointConfig::new("/login", "/refresh"))
        .store(tokenkit_core::CookieStore::new(
            tokenkit_core::CookieConfig::new().secure(false),
        ))
        .build()
        .unwrap();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3000;
    let cookies = format!(
        "access_token={}; refresh_token=r-1; access_expires_at={expires}; token_type=Bearer",
        server.state.issue("session")
    );
    let with_session = || {
        let (client, cookies) = (sessions.clone(), cookies.clone());
        async move {
            let ctx = tokenkit_core::Context::from_cookie_header(&cookies);
            tokenkit_core::run_with_context(ctx, client.get("/api/data").send_bytes())
                .await
                .is_ok()
        }
    };
    // Warm up all (connections, the token).
    measure(2_000, CONCURRENCY, raw).await;
    measure(2_000, CONCURRENCY, with_tokenkit).await;
    measure(2_000, CONCURRENCY, without_timeout).await;
    measure(2_000, CONCURRENCY, with_session).await;
    let (mut raws, mut tks, mut untimeds, mut session_stats) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        raws.push(measure(REQUESTS, CONCURRENCY, raw).await);
        tks.push(measure(REQUESTS, CONCURRENCY, with_tokenkit).await);
        untimeds.push(measure(REQUESTS, CONCURRENCY, without_timeout).await);
        session_stats.push(measure(REQUESTS, CONCURRENCY, with_session).await);
    }
    let untimed_stats = merge(untimeds);
    let session_stats = merge(session_stats);
    let per_round: Vec<f64> = raws
        .iter()
        .zip(&tks)
        .map(|(r, t)| t.throughput() / r.throughput())
        .collect();
    let (raw, tk) = (merge(raws), merge(tks));
    println!(
        "{adapter:<8} raw      {:>8.0} req/s  p50 {:>7.1?}  p99 {:>7.1?}  errors {}",
        raw.throughput(),
        raw.percentile(0.5),
        raw.percentile(0.99),
        raw.errors
    );
    println!(
        "{adapter:<8} tokenkit {:>8.0} req/s  p50 {:>7.1?}  p99 {:>7.1?}  errors {}",
        tk.throughput(),
        tk.percentile(0.5),
        tk.percentile(0.99),
        tk.errors
    );
    println!(
        "{adapter:<8} tokenkit, no timeout {:>8.0} req/s  p50 {:>7.1?}  p99 {:>7.1?}  ratio {:.3}",
        untimed_stats.throughput(),
        untimed_stats.percentile(0.5),
        untimed_stats.percentile(0.99),
        untimed_stats.throughput() / raw.throughput()
    );
    println!(
        "{adapter:<8} tokenkit, cookie session {:>8.0} req/s  p50 {:>7.1?}  p99 {:>7.1?}  ratio {:.3}  errors {}",
        session_stats.throughput(),
        session_stats.percentile(0.5),
        session_stats.percentile(0.99),
        session_stats.throughput() / raw.throughput(),
        session_stats.errors
    );
    println!(
        "{adapter:<8} ratio tokenkit/raw {:.3} (per round: {})  token fetches: {}",
        tk.throughput() / raw.throughput(),
        per_round
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        server.state.token_calls.load(Ordering::Relaxed)
    );
}

async fn herd(adapter: &str) {
    let server = Server::start(3600).unwrap();
    let clock = ManualClock::default();
    let client = tokenkit(adapter, &server.url())
        .clock(clock.clone())
        .provider(provider(format!("{}/token", server.url())))
        .build()
        .unwrap();
    client.get("/api/warm").send_bytes().await.unwrap();
    clock.advance(Duration::from_secs(7200));
    let before = server.state.token_calls.load(Ordering::Relaxed);
    let start = Instant::now();
    let results =
        futures_util::future::join_all((0..10_000).map(|_| client.get("/api/x").send_bytes())).await;
    let elapsed = start.elapsed();
    let errors = results.iter().filter(|r| r.is_err()).count();
    println!(
        "{adapter:<8} herd: 10,000 concurrent requests on an expired token: token fetches {}, errors {errors}, all done in {elapsed:.2?}",
        server.state.token_calls.load(Ordering::Relaxed) - before
    );
}

async fn storm(adapter: &str) {
    let server = Server::start(3600).unwrap();
    let client = tokenkit(adapter, &server.url())
        .provider(provider(format!("{}/token", server.url())))
        .build()
        .unwrap();
    client.get("/api/warm").send_bytes().await.unwrap();
    server.state.revoke_all();
    let before = server.state.token_calls.load(Ordering::Relaxed);
    let start = Instant::now();
    let results = futures_util::future::join_all((0..1_000).map(|_| client.get("/api/x").send_bytes())).await;
    let elapsed = start.elapsed();
    let errors = results.iter().filter(|r| r.is_err()).count();
    println!(
        "{adapter:<8} storm: 1,000 concurrent requests rejected with one revoked token: token fetches {}, errors {errors}, all done in {elapsed:.2?}",
        server.state.token_calls.load(Ordering::Relaxed) - before
    );
}

fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn sessions(adapter: &str) {
    const SESSIONS: usize = 10_000;
    let server = Server::start(3600).unwrap();
    let clock = ManualClock::default();
    let client: Client = tokenkit(adapter, &server.url())
        .clock(clock.clone())
        .endpoints(EndpointConfig::new("/login", "/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .policy(
            StandardPolicy::default()
                .jitter_percent(0)
                .grace_window(Duration::from_millis(500)),
        )
        .build()
        .unwrap();
    let baseline = memory_kib("VmRSS:");
    // Every session's access token expired a minute ago: each is due for refresh.
    let expired = tokenkit_core::Clock::now(&clock) - Duration::from_secs(60);
    let unix = expired.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let users: Vec<(String, Context)> = (0..SESSIONS)
        .map(|i| {
            let user = format!("user{i}");
            let (access, refresh) = server.state.login(&user);
            let cookie = format!("access_token={access}; refresh_token={refresh}; access_expires_at={unix}");
            (user, Context::from_cookie_header(&cookie))
        })
        .collect();
    let start = Instant::now();
    // All sessions are due at once; requests go out 2,000 at a time (with both ends of every
    // connection in this process, 10,000 at once would need ~40,000 open files), 400 for
    // isahc (its bundled curl fails to connect once socket numbers pass ~1,024: see
    // `isahc-burst` and BENCHMARKS.md).
    let results: Vec<_> = stream::iter(users.iter())
        .map(|(user, ctx)| {
            let client = client.clone();
            async move {
                let response =
                    run_with_context(ctx.clone(), client.get("/api/me").send::<serde_json::Value>()).await;
                response.map(|r| r.data["user"].as_str() == Some(user.as_str()))
            }
        })
        .buffer_unordered(if adapter == "isahc" { 400 } else { 2_000 })
        .collect()
        .await;
    let elapsed = start.elapsed();
    let mismatches = results.iter().filter(|r| matches!(r, Ok(false))).count();
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = errors.first() {
        eprintln!("{adapter}: {} errors, the first: {first}", errors.len());
    }
    let peak = memory_kib("VmHWM:");
    drop(users);
    let during = client.rotation_stats().unwrap().grace_entries;
    // Past the grace window (a 500 ms window here; the clock is injected), the rotation state
    // empties by itself where a Spawn hook exists.
    clock.advance(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = client.rotation_stats().unwrap();
    println!(
        "{adapter:<8} sessions: grace-table entries {during} right after, {} after the window; refreshes in flight {}",
        after.grace_entries, after.refreshes_in_flight
    );
    println!(
        "{adapter:<8} sessions: {SESSIONS} cookie sessions due at once: refreshes {}, cross-session mismatches {mismatches}, errors {}, done in {elapsed:.2?}, RSS baseline {} MiB, peak {} MiB, after {} MiB",
        server.state.refresh_calls.load(Ordering::Relaxed),
        errors.len(),
        baseline / 1024,
        peak / 1024,
        memory_kib("VmRSS:") / 1024
    );
}

/// Raw isahc, no tokenkit: 10,000 GETs, 2,000 at a time (a probe of curl under load).
async fn isahc_burst() {
    let width: usize = std::env::var("BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    use futures_util::AsyncReadExt;
    let server = Server::start(3600).unwrap();
    let token = format!("Bearer {}", server.state.issue("raw"));
    let url = format!("{}/api/data", server.url());
    let http = tokenkit_isahc::isahc::HttpClient::new().unwrap();
    let results: Vec<Result<(), String>> = stream::iter(0..10_000)
        .map(|_| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let req = http::Request::get(&url)
                    .header("authorization", &token)
                    .body(())
                    .unwrap();
                let mut resp = http.send_async(req).await.map_err(|e| e.to_string())?;
                let mut buf = Vec::new();
                resp.body_mut()
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        })
        .buffer_unordered(width)
        .collect()
        .await;
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "raw isahc, 10,000 GETs {width} at a time: errors {} (first: {:?})",
        errors.len(),
        errors.first()
    );
}

/// Instructions per request, raw client vs tokenkit, under callgrind: the `load-client` binary
/// (built beside this one) runs each mode twice, with `n1` and `n2` requests, against the
/// server on this process's own thread (not under callgrind); the difference of the totals
/// divided by `n2 - n1` is the cost of one request, start-up cancelled out.
fn instructions(n1: usize, n2: usize) {
    let server = Server::start(365 * 24 * 3600).unwrap();
    let client = std::env::current_exe().unwrap().with_file_name("load-client");
    assert!(
        client.exists(),
        "{} is missing: build it with `cargo build --release -p tokenkit-bench`",
        client.display()
    );
    let count = |mode: &str, n: usize| -> u64 {
        let out = std::env::temp_dir().join(format!("tokenkit-callgrind-{mode}-{n}-{}", std::process::id()));
        let status = std::process::Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&client)
            .args([mode, &n.to_string(), &server.url()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("valgrind is needed (Debian: apt-get install valgrind)");
        assert!(status.success(), "load-client {mode} {n} failed under valgrind");
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        text.lines()
            .find_map(|line| {
                line.strip_prefix("summary:")
                    .or_else(|| line.strip_prefix("totals:"))
            })
            .and_then(|v| v.trim().parse().ok())
            .expect("a callgrind summary line")
    };
    let per_request =
        |mode: &str| -> f64 { (count(mode, n2) as f64 - count(mode, n1) as f64) / (n2 - n1) as f64 };
    println!("instructions per request under callgrind ({n2} minus {n1} requests)");
    let modes = [
        ("tokenkit", "tokenkit, provider"),
        ("session", "tokenkit, cookie session"),
        ("context", "  same, one context"),
    ];
    for client in ["hyper", "reqwest"] {
        let raw = per_request(&format!("raw-{client}"));
        println!("{client:<8} {:<26} {raw:>9.0}", "raw");
        // reqwest parses a URL given as a string on every request; a careful caller can
        // hand it a parsed `Url` instead: both baselines.
        let parsed = (client == "reqwest").then(|| per_request("raw-reqwest-url"));
        if let Some(parsed) = parsed {
            println!("{client:<8} {:<26} {parsed:>9.0}", "raw, Url parsed once");
        }
        for (mode, label) in modes {
            let with = per_request(&format!("{mode}-{client}"));
            print!(
                "{client:<8} {label:<26} {with:>9.0}  added {:>7.0} (+{:.0} %)",
                with - raw,
                (with - raw) / raw * 100.0
            );
            match parsed {
                Some(parsed) => println!("; over the parsed-Url baseline {:>7.0}", with - parsed),
                None => println!(),
            }
        }
    }
}

/// Pins the calling thread to core `index` when the machine has more than one core (client
/// and server then never take turns on one core); elsewhere a no-op.
pub(crate) fn pin_to_core(index: usize) {
    // The machine's cores as seen before any thread was pinned (a pinned thread, and the
    // threads it spawns, see only their own core).
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    let cores = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    if cores.len() > 1 {
        if let Some(core) = cores.get(index % cores.len()) {
            core_affinity::set_for_current(*core);
        }
    }
}

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "overhead".to_owned());
    if scenario == "serve" {
        // The bench server alone, for profiling `load-client` by hand.
        let server = Server::start(365 * 24 * 3600).unwrap();
        println!("{}", server.url());
        loop {
            std::thread::park();
        }
    }
    if scenario == "instructions" {
        let arg = |i: usize, default: usize| {
            std::env::args()
                .nth(i)
                .and_then(|a| a.parse().ok())
                .unwrap_or(default)
        };
        return instructions(arg(2, 1_000), arg(3, 6_000));
    }
    let cores = core_affinity::get_core_ids().map_or(0, |cores| cores.len());
    pin_to_core(0);
    let adapters: Vec<String> = match std::env::args().nth(2) {
        Some(adapter) => vec![adapter],
        None => vec!["reqwest".into(), "hyper".into(), "isahc".into()],
    };
    // 10,000 concurrent requests hold ~20,000 sockets (both ends are in this process).
    // As root, raise the hard limit too; elsewhere this fails quietly and the soft limit rises
    // as far as the hard one allows.
    let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, 65_536, 65_536);
    match rlimit::increase_nofile_limit(65_536) {
        Ok(limit) if limit < 25_000 => eprintln!("open-file limit is {limit}: the herd and sessions scenarios need ~25,000 (run as root or raise `ulimit -n`)"),
        Ok(_) => {}
        Err(err) => eprintln!("could not raise the open-file limit: {err}"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "scenario {scenario}: {} cores, client and server on 1 thread each, pinned to cores 0 and 1",
        cores
    );
    for adapter in &adapters {
        runtime.block_on(async {
            match scenario.as_str() {
                "overhead" => overhead(adapter).await,
                "herd" => herd(adapter).await,
                "storm" => storm(adapter).await,
                "sessions" => sessions(adapter).await,
                "isahc-burst" => isahc_burst().await,
                other => {
                    eprintln!("unknown scenario {other:?}: overhead | herd | storm | sessions");
                    std::process::exit(2);
                }
            }
        });
    }
}
