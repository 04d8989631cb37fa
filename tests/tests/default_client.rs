//! The process-wide default client (`api()` / `set_config()`); its own binary because it
//! changes global state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use futures_util::future::join_all;
use serde_json::Value;
use tokenkit_core::{api, set_config, ErrorKind};
use tokenkit_tests::{token_provider, AuthServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_client_follows_set_config_at_once_and_shares_one_rotation_state() {
    // Before any configuration: a typed error, not a panic.
    let err = api().get("/api/x").send::<Value>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("set_config"));

    let first = AuthServer::start().await.unwrap();
    set_config(tokenkit_reqwest::builder(first.url()).provider(token_provider(first.token_url()))).unwrap();
    let results =
        join_all((0..50).map(|_| tokio::spawn(async { api().get("/api/x").send::<Value>().await }))).await;
    assert!(results.into_iter().all(|r| r.unwrap().is_ok()));
    assert_eq!(
        first.token_requests(),
        1,
        "every user of api() shares one token and one refresh"
    );

    // A new configuration is visible to the very next request.
    let second = AuthServer::start().await.unwrap();
    set_config(tokenkit_reqwest::builder(second.url()).provider(token_provider(second.token_url()))).unwrap();
    api().get("/api/y").send::<Value>().await.unwrap();
    assert_eq!(second.count("/api/y"), 1);
    assert_eq!(first.count("/api/y"), 0);

    // A failed build keeps the previous client.
    assert!(set_config(tokenkit_reqwest::builder("not a url")).is_err());
    api().get("/api/z").send::<Value>().await.unwrap();
    assert_eq!(second.count("/api/z"), 1);
}
