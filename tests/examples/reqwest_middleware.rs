//! tokenkit in an existing reqwest-middleware chain (feature `middleware` of
//! tokenkit-reqwest).
//!
//! Run with `cargo run -p tokenkit-tests --example reqwest_middleware`.

use serde_json::Value;
use tokenkit_reqwest::middleware::TokenMiddleware;
use tokenkit_tests::{token_provider, AuthServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = AuthServer::start().await?;
    let tokens = tokenkit_reqwest::builder(server.url())
        .provider(token_provider(server.token_url()))
        .build()?;
    // The chain's client follows no redirect: credentials must never follow one.
    let http = tokenkit_reqwest::client_builder().build()?;
    let chain = reqwest_middleware::ClientBuilder::new(http)
        .with(TokenMiddleware::new(tokens))
        .build();

    let first: Value = chain
        .get(format!("{}/api/a", server.url()))
        .send()
        .await?
        .json()
        .await?;
    println!("first call         -> token #{}", first["token_id"]);
    server.revoke_all();
    let second: Value = chain
        .get(format!("{}/api/b", server.url()))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "after revocation   -> token #{} (recovered inside the chain)",
        second["token_id"]
    );
    println!("token requests: {}", server.token_requests());
    Ok(())
}
