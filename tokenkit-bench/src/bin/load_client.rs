//! The load client the instruction-count benchmark runs under callgrind: `N` sequential GETs of
//! one endpoint of a server in another process, raw or through tokenkit, after one warm-up
//! request (connection and token in place). Nothing else runs in this process, so the
//! difference of two runs with different `N`, divided by the difference of `N`, is the cost of
//! one request; the difference between modes is what tokenkit adds.
//!
//! `load-client <mode> <n> <server-url>`; modes: `raw-hyper`, `tokenkit-hyper`,
//! `session-hyper`, `context-hyper`, `raw-reqwest`, `raw-reqwest-url`, `tokenkit-reqwest`,
//! `session-reqwest`, `context-reqwest`. `session-*` builds a context from the request's
//! headers for every request, as tokenkit-axum's layer does (a web app making one API call
//! per page); `context-*` makes every call in one context (one page making many calls). Driven by
//! `cargo run --release -p tokenkit-bench -- instructions`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::hint::black_box;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokenkit_core::{
    Client, ClientBuilder, CookieConfig, CookieStore, EndpointConfig, ProvidedToken, RetryConfig,
};

/// A token from the server's `/token` endpoint (provider mode's source).
async fn fetch_token(server: &str) -> ProvidedToken {
    let http = reqwest::Client::new();
    let body = http
        .post(format!("{server}/token"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn provider(
    server: &str,
) -> impl Fn() -> tokenkit_core::BoxFuture<'static, Result<ProvidedToken, std::io::Error>> + Send + Sync {
    let server = server.to_owned();
    move || {
        let server = server.clone();
        Box::pin(async move { Ok(fetch_token(&server).await) })
    }
}

fn tokenkit(builder: ClientBuilder, server: &str) -> Client {
    let builder = if std::env::var_os("NO_TIMEOUT").is_some() {
        builder.no_timeout()
    } else {
        builder
    };
    builder
        .retry(RetryConfig::none())
        .provider(provider(server))
        .build()
        .unwrap()
}

/// Session mode over the cookie store: each request is served the way a web app serves a
/// browser's request, with a context built from its `Cookie` header.
fn session(builder: ClientBuilder) -> Client {
    builder
        .retry(RetryConfig::none())
        .endpoints(EndpointConfig::new("/login", "/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap()
}

/// The `Cookie` header a browser holding a fresh session sends.
async fn session_cookies(server: &str) -> String {
    let token = fetch_token(server).await;
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    format!(
        "access_token={}; refresh_token=r-1; access_expires_at={expires}; token_type=Bearer",
        token.access_token.secret()
    )
}

/// The adapter's builder a `*-hyper` or `*-reqwest` mode names.
fn adapter(mode: &str, server: &str) -> ClientBuilder {
    if mode.ends_with("-hyper") {
        tokenkit_hyper::builder(server)
    } else {
        tokenkit_reqwest::builder(server)
    }
}

async fn run(mode: &str, n: usize, server: &str) {
    let url = format!("{server}/api/things");
    match mode {
        "raw-hyper" => {
            let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let bearer = format!("Bearer {}", fetch_token(server).await.access_token.secret());
            for _ in 0..=n {
                let request = http::Request::get(&url)
                    .header("authorization", &bearer)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                assert!(response.status().is_success());
                black_box(response.into_body().collect().await.unwrap().to_bytes());
            }
        }
        "raw-reqwest" => {
            let client = reqwest::Client::new();
            let bearer = format!("Bearer {}", fetch_token(server).await.access_token.secret());
            for _ in 0..=n {
                let response = client
                    .get(&url)
                    .header("authorization", &bearer)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                black_box(response.bytes().await.unwrap());
            }
        }
        "raw-reqwest-url" => {
            let client = reqwest::Client::new();
            let bearer = format!("Bearer {}", fetch_token(server).await.access_token.secret());
            let parsed = reqwest::Url::parse(&url).unwrap();
            for _ in 0..=n {
                let response = client
                    .get(parsed.clone())
                    .header("authorization", &bearer)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                black_box(response.bytes().await.unwrap());
            }
        }
        "tokenkit-hyper" | "tokenkit-reqwest" => {
            let builder = adapter(mode, server);
            let client = tokenkit(builder, server);
            for _ in 0..=n {
                black_box(client.get("/api/things").send_bytes().await.unwrap());
            }
        }
        "session-hyper" | "session-reqwest" => {
            let builder = adapter(mode, server);
            let client = session(builder);
            let cookies = session_cookies(server).await;
            // The request's headers, as the server parsed them; the context is made from
            // them as tokenkit-axum's layer makes it.
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::COOKIE, cookies.parse().unwrap());
            for _ in 0..=n {
                let ctx = tokenkit_core::Context::from_headers(&headers);
                let response =
                    tokenkit_core::run_with_context(ctx, client.get("/api/things").send_bytes()).await;
                black_box(response.unwrap());
            }
        }
        "context-hyper" | "context-reqwest" => {
            let builder = adapter(mode, server);
            let client = session(builder);
            let cookies = session_cookies(server).await;
            let ctx = tokenkit_core::Context::from_cookie_header(&cookies);
            let calls = async {
                for _ in 0..=n {
                    black_box(client.get("/api/things").send_bytes().await.unwrap());
                }
            };
            tokenkit_core::run_with_context(ctx, calls).await;
        }
        other => panic!("unknown mode {other:?}"),
    }
}

fn main() {
    // Every mode runs with one idle thread besides the runtime's, as any real application has
    // (a multi-threaded runtime, a blocking pool, a timer thread): libc's syscall wrappers then
    // take the same multi-threaded path in every mode.
    std::thread::spawn(|| loop {
        std::thread::park();
    });
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "raw-hyper".to_owned());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let server = args.next().expect("usage: load-client <mode> <n> <server-url>");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&mode, n, &server));
}
