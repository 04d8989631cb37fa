//! OAuth 2.0 client credentials: tokenkit fetches a token from the embedded server's
//! standards-conformant token endpoint (HTTP Basic client authentication) and calls a protected
//! resource with it. No hand-written provider.
//!
//! Run with `cargo run -p tokenkit-tests --example oauth_client_credentials`.

use serde_json::Value;
use tokenkit_core::OAuth2Config;
use tokenkit_tests::AuthServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = AuthServer::start().await?;
    let client = tokenkit_reqwest::builder(server.url())
        .oauth2_client_credentials(
            OAuth2Config::new(server.oauth_token_url(), "client-1")
                .client_secret("secret-1")
                .scope("read")
                .audience("api://demo"),
        )
        .build()?;
    let me = client.get("/api/me").send::<Value>().await?;
    println!("GET /api/me -> {} as {}", me.status, me.data["user"]);
    let token = client.token().await?;
    println!(
        "token: type {:?}, scope {:?}, expires in {}s (value never printed: {})",
        token.token_type,
        token.scope,
        token.lifetime().map(|d| d.as_secs()).unwrap_or(0),
        token
            .access_token
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default()
    );
    println!("token endpoint calls: {}", server.count("/oauth2/token"));
    Ok(())
}
