//! The full request path over loopback: raw hyper and reqwest against tokenkit over the same
//! clients, one GET at a time on a current-thread tokio runtime, against the bench server in
//! another process (`tokenkit-bench serve`, started here unless `TOKENKIT_BENCH_SERVER` names
//! a running one). Reports time per request (criterion) and allocations per request (a
//! counting global allocator; the server's allocations are in the other process).
//!
//! Run with `cargo bench -p tokenkit-bench --bench full_path`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::alloc::System;
use std::future::Future;
use std::hint::black_box;
use std::io::BufRead;
use std::pin::Pin;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokenkit_core::{
    Client, ClientBuilder, CookieConfig, CookieStore, EndpointConfig, ProvidedToken, RetryConfig,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The bench server's URL, and the child process when this bench started it.
fn server() -> (String, Option<std::process::Child>) {
    if let Ok(url) = std::env::var("TOKENKIT_BENCH_SERVER") {
        return (url, None);
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenkit-bench"))
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the bench server starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (line.trim().to_owned(), Some(child))
}

async fn token(server: &str) -> String {
    let body = reqwest::Client::new()
        .post(format!("{server}/token"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice::<ProvidedToken>(&body)
        .unwrap()
        .access_token
        .secret()
        .to_owned()
}

type Send<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One way of making the request: raw or through tokenkit.
trait Mode {
    fn send(&self) -> Send<'_>;
}

struct RawHyper {
    client:
        hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
    bearer: String,
}

impl Mode for RawHyper {
    fn send(&self) -> Send<'_> {
        Box::pin(async {
            let request = http::Request::get(&self.url)
                .header("authorization", &self.bearer)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = self.client.request(request).await.unwrap();
            assert!(response.status().is_success());
            black_box(response.into_body().collect().await.unwrap().to_bytes());
        })
    }
}

struct RawReqwest {
    client: reqwest::Client,
    url: String,
    bearer: String,
}

impl Mode for RawReqwest {
    fn send(&self) -> Send<'_> {
        Box::pin(async {
            let response = self
                .client
                .get(&self.url)
                .header("authorization", &self.bearer)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
            black_box(response.bytes().await.unwrap());
        })
    }
}

struct Tokenkit(Client);

impl Mode for Tokenkit {
    fn send(&self) -> Send<'_> {
        Box::pin(async {
            black_box(self.0.get("/api/things").send_bytes().await.unwrap());
        })
    }
}

/// Session mode: a context from the request's headers (the browser's cookies) for every
/// request, as tokenkit-axum's layer makes it.
struct Session(Client, http::HeaderMap);

impl Mode for Session {
    fn send(&self) -> Send<'_> {
        Box::pin(async {
            let ctx = tokenkit_core::Context::from_headers(&self.1);
            let response = tokenkit_core::run_with_context(ctx, self.0.get("/api/things").send_bytes()).await;
            black_box(response.unwrap());
        })
    }
}

fn provider(builder: ClientBuilder, server: &str) -> Client {
    let server = server.to_owned();
    builder
        .retry(RetryConfig::none())
        .provider(move || {
            let server = server.clone();
            async move { Ok::<_, std::io::Error>(ProvidedToken::new(token(&server).await, 365 * 24 * 3600)) }
        })
        .build()
        .unwrap()
}

fn session(builder: ClientBuilder) -> Client {
    builder
        .retry(RetryConfig::none())
        .endpoints(EndpointConfig::new("/login", "/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap()
}

fn allocations_per_request(runtime: &tokio::runtime::Runtime, mode: &dyn Mode) -> f64 {
    const N: usize = 1000;
    runtime.block_on(mode.send()); // warm: connection and token in place
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        runtime.block_on(mode.send());
    }
    region.change().allocations as f64 / N as f64
}

fn full_path(c: &mut Criterion) {
    let (server, child) = server();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("{server}/api/things");
    let bearer = format!("Bearer {}", runtime.block_on(token(&server)));
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    let cookies = format!(
        "access_token={}; refresh_token=r-1; access_expires_at={expires}; token_type=Bearer",
        runtime.block_on(token(&server))
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::COOKIE, cookies.parse().unwrap());
    let modes: Vec<(&str, Box<dyn Mode>)> = runtime.block_on(async {
        vec![
            (
                "raw hyper",
                Box::new(RawHyper {
                    client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                        .build_http(),
                    url: url.clone(),
                    bearer: bearer.clone(),
                }) as Box<dyn Mode>,
            ),
            (
                "tokenkit-hyper, provider",
                Box::new(Tokenkit(provider(tokenkit_hyper::builder(&server), &server))),
            ),
            (
                "tokenkit-hyper, cookie session",
                Box::new(Session(
                    session(tokenkit_hyper::builder(&server)),
                    headers.clone(),
                )),
            ),
            (
                "raw reqwest",
                Box::new(RawReqwest {
                    client: reqwest::Client::new(),
                    url: url.clone(),
                    bearer: bearer.clone(),
                }),
            ),
            (
                "tokenkit-reqwest, provider",
                Box::new(Tokenkit(provider(tokenkit_reqwest::builder(&server), &server))),
            ),
            (
                "tokenkit-reqwest, cookie session",
                Box::new(Session(
                    session(tokenkit_reqwest::builder(&server)),
                    headers.clone(),
                )),
            ),
        ]
    });
    for (name, mode) in &modes {
        println!(
            "allocations per request, {name}: {:.1}",
            allocations_per_request(&runtime, mode.as_ref())
        );
    }
    for (name, mode) in &modes {
        c.bench_function(name, |b| b.iter(|| runtime.block_on(mode.send())));
    }
    drop(child.map(|mut child| child.kill()));
}

criterion_group!(benches, full_path);
criterion_main!(benches);
