//! A small site using tokenkit-axum: sign in, see data fetched from an upstream API with the
//! user's token (kept in HttpOnly cookies, rotated silently), sign out. The upstream is the
//! embedded test auth server, issuing 30-second tokens so a rotation is seen quickly.
//!
//! Run with `cargo run -p tokenkit-axum --example app`, then open the printed URL.

mod routes;

use std::time::Duration;

use tokenkit_core::{CookieConfig, CookieStore, EndpointConfig, StandardPolicy};
use tokenkit_tests::AuthServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream = AuthServer::start().await?;
    upstream.set_token_lifetime(Duration::from_secs(30));
    let client = tokenkit_reqwest::builder(upstream.url())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"))
        // `Secure` is off only because this demo serves plain http on localhost, where a browser
        // would never send Secure cookies back. Keep the default (on) anywhere else.
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .policy(
            StandardPolicy::default()
                .refresh_before(Duration::from_secs(10))
                .clock_skew(Duration::ZERO),
        )
        .build()?;
    let addr = std::env::var("TOKENKIT_DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "tokenkit demo app on http://{} (upstream API on {})",
        listener.local_addr()?,
        upstream.url()
    );
    println!("sign in as alice / wonderland or bob / builder; Ctrl-C to stop");
    axum::serve(listener, routes::router(client))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
