//! The tokenkit demo: starts the embedded auth server, then shows a token being fetched,
//! reused, refreshed before expiry, shared by a burst of concurrent requests, and recovered
//! after the server revokes it.
//!
//! Run with `cargo run -p tokenkit-tests --example demo`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokenkit_core::Event;
use tokenkit_tests::{token_provider, AuthServer};

type Demo = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Demo {
    let server = Arc::new(AuthServer::start().await?);
    // Short-lived tokens so the demo shows a whole lifecycle in a few seconds.
    server.set_token_lifetime(Duration::from_secs(3));
    println!("auth server listening on {}\n", server.url());

    let client = tokenkit_reqwest::builder(server.url())
        .provider(token_provider(server.token_url()))
        .on_event(|event: &Event<'_>| println!("    [tokenkit] {event}"))
        .build()?;

    let call = |label: &'static str| {
        let client = client.clone();
        let server = Arc::clone(&server);
        async move {
            let resp = client.get("/api/profile").send::<Value>().await?;
            println!(
                "{label:<50} -> HTTP {} with token #{} (token requests so far: {})",
                resp.status.as_u16(),
                resp.data["token_id"],
                server.token_requests()
            );
            Ok::<_, tokenkit_core::Error>(())
        }
    };

    println!("1. First call: no token yet, so one is fetched");
    call("   GET /api/profile").await?;
    println!("2. Second call: the cached token is reused");
    call("   GET /api/profile").await?;

    println!("3. 1.6 s later the token is inside its refresh window (3 s tokens: the");
    println!("   window is capped at half the lifetime)");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    call("   GET /api/profile (served with the valid token)").await?;
    tokio::time::sleep(Duration::from_millis(200)).await; // let the background refresh land
    call("   GET /api/profile (after the background refresh)").await?;

    println!("4. 3.5 s later the token has expired; 100 concurrent calls share one refresh");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let before = server.token_requests();
    let results = join_all((0..100).map(|_| client.get("/api/profile").send::<Value>())).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "   {ok}/100 calls succeeded; token requests during the burst: {}",
        server.token_requests() - before
    );

    println!("5. The server revokes every token early; the next call recovers by itself");
    server.revoke_all();
    call("   GET /api/profile").await?;

    println!(
        "\nDone: {} token requests for {} API calls.",
        server.token_requests(),
        server.count("/api/profile")
    );
    Ok(())
}
