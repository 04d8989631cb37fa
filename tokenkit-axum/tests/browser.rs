//! The browser checks: headless Chromium (Debian's `chromium` + `chromium-driver`, driven over
//! WebDriver) signs in to the example app, sees a token rotation, and proves the token cookies
//! are HttpOnly (invisible to `document.cookie`), with plain and `__Host-` cookie names; and
//! signs in through a certified OpenID provider (oidc-provider on Node, its own login and
//! consent pages), two browsers at once, then signs out there too. Ignored by default; `.ci/run` installs the
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

/// A headless Chromium session on `driver`, with a fresh profile (removed by the caller).
async fn open_browser(driver: &Driver, tag: &str) -> (fantoccini::Client, std::path::PathBuf) {
    let profile = std::env::temp_dir().join(format!("tokenkit-chromium-{}-{tag}", driver.1));
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
    for _ in 0..50 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
        {
            Ok(browser) => return (browser, profile),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not start");
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
    let (browser, profile) = open_browser(&driver, "main").await;

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

/// oidc-provider (Node) on a free port, killed on drop.
struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tests/oidc-provider/provider.mjs`; returns it and its issuer.
fn oidc_provider(redirect_uri: &str, post_logout: &str) -> (Provider, String) {
    use std::io::BufRead;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc-provider");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed: run `npm ci` in tests/oidc-provider (.ci/run does)"
    );
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .args([redirect_uri, post_logout])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Node.js (node) must be installed for the OpenID provider");
    let stdout = child.stdout.take().unwrap();
    let provider = Provider(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if let Some(issuer) = line.unwrap().strip_prefix("issuer ") {
            // Keep reading what it prints: a closed pipe would end it at its next line.
            std::thread::spawn(move || lines.for_each(drop));
            return (provider, issuer.to_owned());
        }
    }
    panic!("oidc-provider did not start");
}

/// Opens the app's sign-in route: the browser lands on oidc-provider's login page.
async fn start_sign_in(browser: &fantoccini::Client, site: &str) {
    browser.goto(&format!("{site}/auth/sign-in")).await.unwrap();
    browser
        .wait()
        .for_element(Locator::Css("input[name=login]"))
        .await
        .unwrap();
}

/// Completes a started sign-in on oidc-provider's login and consent pages as `user`.
async fn complete_sign_in(browser: &fantoccini::Client, user: &str) {
    let login = browser.find(Locator::Css("input[name=login]")).await.unwrap();
    login.send_keys(user).await.unwrap();
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("any password")
        .await
        .unwrap();
    click(browser, Locator::Css("button[type=submit]")).await;
    // The consent page.
    browser
        .wait()
        .for_element(Locator::XPath(
            "//button[@type='submit' and contains(., 'Continue')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Through a certified provider (oidc-provider) and its own pages: Chromium signs in, lands on
/// the app signed in with the user's name, never sees a token in `document.cookie`, survives a
/// rotation, and signs out at the provider too; two browsers signing in at once stay apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver, and Node with oidc-provider; run by .ci/run"]
async fn chromium_signs_in_through_an_openid_provider() {
    use axum::routing::get;
    use tokenkit_axum::{openid_router, OpenIdRoutes, Session, TokenKitLayer};
    use tokenkit_core::{Encryption, OAuth2Config, OpenIdConfig};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}", listener.local_addr().unwrap());
    let (_provider, issuer) = oidc_provider(&format!("{site}/auth/callback"), &format!("{site}/"));
    // The provider runs on the real clock: the client's starts there (and is moved on to
    // expire tokens without waiting).
    #[allow(clippy::disallowed_methods)] // the real time, to start the injected clock at
    let clock = ManualClock::new(std::time::SystemTime::now());
    let client = tokenkit_reqwest::builder(issuer.clone())
        .clock(clock.clone())
        .openid(
            OAuth2Config::from_issuer(issuer, "web-app").client_secret("web-secret"),
            OpenIdConfig::new(
                format!("{site}/auth/callback"),
                Encryption::new("k", [5; 32]).unwrap(),
            )
            .scope("profile")
            .post_logout_redirect_uri(format!("{site}/"))
            .secure(false),
        )
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap();
    async fn home(session: Session) -> axum::response::Html<String> {
        let body = match session.payload.as_ref().and_then(|p| p["name"].as_str()) {
            Some(name) if session.authenticated => format!(
                "<h1 id=\"hello\">Hello, {name}</h1><p id=\"expires\">{:?}</p>\
                 <form method=\"post\" action=\"/auth/sign-out\"><button id=\"logout\" type=\"submit\">Sign out</button></form>",
                session.expires_at
            ),
            _ => "<h1 id=\"message\">Please sign in.</h1>".to_owned(),
        };
        axum::response::Html(format!(
            "<!doctype html><html><body>{body}<p>Cookies visible to JavaScript: <code id=\"js-cookies\"></code></p>\
             <script>document.getElementById('js-cookies').textContent = document.cookie || '(none)';</script></body></html>"
        ))
    }
    let app = axum::Router::new()
        .route("/", get(home))
        .merge(openid_router(client.clone(), OpenIdRoutes::new()))
        .layer(TokenKitLayer::new(client));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let driver = driver();
    let (browser, profile) = open_browser(&driver, "alice").await;
    let (other, other_profile) = open_browser(&driver, "bob").await;
    // Two browsers signing in at once: both on the provider's login page, then each completes.
    start_sign_in(&browser, &site).await;
    start_sign_in(&other, &site).await;
    complete_sign_in(&browser, "alice").await;
    let hello = text_when_loaded(&browser, Locator::Id("hello")).await;
    assert_eq!(hello, "Hello, alice");
    assert_eq!(text(&browser, Locator::Id("js-cookies")).await, "(none)");
    let document_cookie = browser.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(document_cookie, serde_json::json!(""));
    let first = text(&browser, Locator::Id("expires")).await;

    // The second browser completes its sign-in as bob: each sees its own user.
    complete_sign_in(&other, "bob").await;
    assert_eq!(text_when_loaded(&other, Locator::Id("hello")).await, "Hello, bob");
    browser.refresh().await.unwrap();
    assert_eq!(
        text_when_loaded(&browser, Locator::Id("hello")).await,
        "Hello, alice"
    );

    // A rotation: the client's clock passes the access token's expiry; the next page
    // refreshes at the provider and carries on.
    clock.advance(Duration::from_secs(200));
    browser.refresh().await.unwrap();
    assert_eq!(
        text_when_loaded(&browser, Locator::Id("hello")).await,
        "Hello, alice"
    );
    assert_ne!(text(&browser, Locator::Id("expires")).await, first, "new tokens");

    // Sign-out, at the provider too (RP-initiated): back on the app, signed out, no cookie left.
    click(&browser, Locator::Id("logout")).await;
    // The provider may ask to confirm its own sign-out ("Yes, sign me out").
    for _ in 0..50 {
        if browser.find(Locator::Id("message")).await.is_ok() {
            break;
        }
        if browser.current_url().await.unwrap().as_str().starts_with(&site) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if let Ok(yes) = browser
            .find(Locator::Css("button[type=submit][value=yes], button[autofocus]"))
            .await
        {
            let _ = yes.click().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = browser.wait().for_element(Locator::Id("message")).await.unwrap();
    assert_eq!(message.text().await.unwrap(), "Please sign in.");
    assert!(browser.current_url().await.unwrap().as_str().starts_with(&site));
    let left: Vec<String> = browser
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert!(left.is_empty(), "no cookie left on the app: {left:?}");
    other.close().await.unwrap();
    browser.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
    let _ = std::fs::remove_dir_all(other_profile);
}
