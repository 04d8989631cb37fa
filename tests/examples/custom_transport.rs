//! A hand-written `Transport`: here one that logs each exchange and delegates to reqwest.
//! Anything that can send an `http::Request<Bytes>` can carry tokenkit.
//!
//! Run with `cargo run -p tokenkit-tests --example custom_transport`.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use serde_json::Value;
use tokenkit_core::{async_trait, Client, Transport, TransportError};
use tokenkit_reqwest::ReqwestTransport;
use tokenkit_tests::{token_provider, AuthServer};

/// Logs method, path and status of every exchange (never headers: they carry the token).
#[derive(Debug, Default)]
struct Logging {
    inner: ReqwestTransport,
    count: AtomicUsize,
}

#[async_trait]
impl Transport for Logging {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let line = format!("#{n} {} {}", request.method(), request.uri().path());
        let response = self.inner.send(request).await;
        match &response {
            Ok(r) => println!("  {line} -> {}", r.status().as_u16()),
            Err(e) => println!("  {line} -> {e}"),
        }
        response
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = AuthServer::start().await?;
    let client = Client::builder(server.url())
        .transport(Logging::default())
        .runtime(tokenkit_tokio::runtime())
        .provider(token_provider(server.token_url()))
        .build()?;
    println!("two calls, then the server revokes the token, then one more call:");
    client.get("/api/a").send::<Value>().await?;
    client.get("/api/b").send::<Value>().await?;
    server.revoke_all();
    let last = client.get("/api/c").send::<Value>().await?;
    println!("last call served with token #{}", last.data["token_id"]);
    Ok(())
}
