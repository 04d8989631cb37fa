//! tokenkit in an existing hyper stack: `AuthLayer` wraps a hyper-util client (any
//! `tower::Service` of `http::Request`s), adding token injection, refresh and recovery.
//!
//! Run with `cargo run -p tokenkit-tests --example tower_layer`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokenkit_tests::{token_provider, AuthServer};
use tokenkit_tower::AuthLayer;
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = AuthServer::start().await?;
    // The token layer: its client fetches tokens; the wrapped hyper stack sends API calls.
    let tokens = tokenkit_reqwest::builder(server.url())
        .provider(token_provider(server.token_url()))
        .build()?;
    let hyper: HyperClient<_, Full<Bytes>> = HyperClient::builder(TokioExecutor::new()).build_http();
    let service = AuthLayer::new(tokens).layer(hyper);

    for (step, path) in [("first call", "/api/a"), ("after revocation", "/api/b")] {
        if step == "after revocation" {
            server.revoke_all();
        }
        let request = http::Request::get(format!("{}{path}", server.url())).body(Full::new(Bytes::new()))?;
        let response = service.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{step:<18} GET {path} -> {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    println!("token requests: {}", server.token_requests());
    Ok(())
}
