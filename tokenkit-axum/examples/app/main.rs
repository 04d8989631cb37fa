//! A small site using tokenkit-axum: sign in, see data fetched from an upstream API with the
//! user's token (kept in HttpOnly cookies, rotated silently), sign out. The upstream is the
//! embedded test auth server, issuing 30-second tokens so a rotation is seen quickly.
//!
//! Run with `cargo run -p tokenkit-axum --example app`, then open the printed URL.
//!
//! `cargo run -p tokenkit-axum --example app -- openid` runs the OpenID mode instead: sign-in
//! goes through the tests' in-process OpenID provider (authorization code + PKCE, the ID token
//! verified; it signs `alice` in without a login page) and back.

mod routes;

use std::time::Duration;

use tokenkit_core::{CookieConfig, CookieStore, EndpointConfig, StandardPolicy};
use tokenkit_tests::AuthServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if std::env::args().nth(1).as_deref() == Some("openid") {
        return openid().await;
    }
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

/// The OpenID mode: the tests' provider, and the app signing in through it.
async fn openid() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tokenkit_core::{Encryption, OAuth2Config, OpenIdConfig, SystemClock};
    use tokenkit_tests::oidc::{OidcProvider, OIDC_CLIENT};
    let provider = OidcProvider::start(std::sync::Arc::new(SystemClock)).await?;
    let addr = std::env::var("TOKENKIT_DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let site = format!("http://{}", listener.local_addr()?);
    // A demo key. A real deployment loads 32 random bytes from its secret store (and lists
    // the previous key with `with_old_key` while rotating).
    let key = *b"tokenkit-demo-key-not-a-secret!!";
    let client = tokenkit_reqwest::builder(provider.issuer())
        .openid(
            OAuth2Config::from_issuer(provider.issuer(), OIDC_CLIENT.0).client_secret(OIDC_CLIENT.1),
            OpenIdConfig::new(format!("{site}/auth/callback"), Encryption::new("demo", key)?)
                .scope("profile")
                .post_logout_redirect_uri(format!("{site}/"))
                // Plain http on localhost only; keep Secure anywhere else.
                .secure(false),
        )
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()?;
    println!(
        "tokenkit demo app (OpenID mode) on {site} (provider {})",
        provider.issuer()
    );
    axum::serve(listener, routes::openid_app(client))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
