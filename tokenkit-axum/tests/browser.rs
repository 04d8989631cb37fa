//! The browser check: headless Chromium (Debian's `chromium` + `chromium-driver`, driven over
//! WebDriver) signs in to the example app, sees a token rotation, and proves the token cookies
//! are HttpOnly (invisible to `document.cookie`). Ignored by default; `.ci/run` installs the
//! browser and runs it with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../examples/app/routes.rs"]
mod routes;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{CookieConfig, CookieStore, EndpointConfig, StandardPolicy};
use tokenkit_tests::AuthServer;

/// chromedriver on a free port; killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver) must be installed");
    Driver(child, port)
}

/// The text of an element on the current page.
async fn text(browser: &fantoccini::Client, locator: Locator<'_>) -> String {
    browser.find(locator).await.unwrap().text().await.unwrap()
}

/// The text of an element, waiting for it to appear (after a navigation).
async fn text_when_loaded(browser: &fantoccini::Client, locator: Locator<'_>) -> String {
    browser
        .wait()
        .for_element(locator)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Clicks an element.
async fn click(browser: &fantoccini::Client, locator: Locator<'_>) {
    browser.find(locator).await.unwrap().click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver; run by .ci/run"]
async fn chromium_signs_in_rotates_and_cannot_read_the_token_cookies() {
    sign_in_rotate_sign_out(CookieConfig::new().secure(false), "").await;
}

/// With the `__Host-` prefix (Secure, Path=/, no Domain; Chromium accepts Secure cookies
/// from a loopback origin over plain HTTP), sign-in and sign-out leave no cookie behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver; run by .ci/run"]
async fn chromium_host_prefixed_cookies_are_set_and_removed() {
    sign_in_rotate_sign_out(CookieConfig::new().prefix("__Host-"), "__Host-").await;
}

/// Signs in, checks the cookies are HttpOnly, rotates once, signs out and checks the browser
/// holds no cookie any more. `prefix` is what the cookie names start with.
async fn sign_in_rotate_sign_out(cookies: CookieConfig, prefix: &str) {
    let access_name = format!("{prefix}access_token");
    let refresh_name = format!("{prefix}refresh_token");
    let clock = ManualClock::default();
    let upstream = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let client = tokenkit_reqwest::builder(upstream.url())
        .clock(clock.clone())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"))
        .store(CookieStore::new(cookies))
        .policy(StandardPolicy::default().jitter_percent(0))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, routes::router(client)).await.unwrap() });

    let driver = driver();
    let profile = std::env::temp_dir().join(format!("tokenkit-chromium-{}", driver.1));
    // The flags the environment notes require: no sandbox as root, no background networking
    // (the machine's network is closed), a fresh profile.
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let mut browser = None;
    for _ in 0..50 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
        {
            Ok(b) => {
                browser = Some(b);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let browser = browser.expect("chromedriver did not start");

    browser.goto(&site).await.unwrap();
    assert!(text(&browser, Locator::Css("h1")).await.contains("Sign in"));
    click(&browser, Locator::Id("login")).await;
    let hello = text_when_loaded(&browser, Locator::Id("hello")).await;
    assert_eq!(hello, "Hello, alice");
    let first = text(&browser, Locator::Id("token")).await;

    // HttpOnly: the page's own script saw no token cookie, and neither does injected script.
    let js_cookies = text(&browser, Locator::Id("js-cookies")).await;
    assert_eq!(js_cookies, "(none)");
    let document_cookie = browser.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(document_cookie, serde_json::json!(""));
    // ...while the browser does hold them (WebDriver sees HttpOnly cookies).
    let cookies = browser.get_all_cookies().await.unwrap();
    let access = cookies
        .iter()
        .find(|c| c.name() == access_name)
        .expect("the access token cookie");
    assert_eq!(access.http_only(), Some(true));
    let old_refresh = cookies
        .iter()
        .find(|c| c.name() == refresh_name)
        .unwrap()
        .value()
        .to_owned();

    // One rotation: time passes (injected clock), the next page load refreshes silently.
    clock.advance(Duration::from_secs(3600));
    browser.refresh().await.unwrap();
    assert_eq!(text(&browser, Locator::Id("hello")).await, "Hello, alice");
    let second = text(&browser, Locator::Id("token")).await;
    assert_ne!(first, second, "served with a new access token");
    let cookies = browser.get_all_cookies().await.unwrap();
    let new_refresh = cookies
        .iter()
        .find(|c| c.name() == refresh_name)
        .unwrap()
        .value()
        .to_owned();
    assert_ne!(
        new_refresh, old_refresh,
        "the browser holds the rotated refresh token"
    );
    assert_eq!(upstream.count("/auth/refresh"), 1);

    click(&browser, Locator::Id("logout")).await;
    let heading = browser.wait().for_element(Locator::Id("message")).await.unwrap();
    assert_eq!(heading.text().await.unwrap(), "Please sign in.");
    let left: Vec<String> = browser
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert!(left.is_empty(), "signing out leaves no cookie behind: {left:?}");
    browser.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}
