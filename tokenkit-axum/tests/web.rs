//! End to end through the layer: the example app, served on 127.0.0.1, driven by reqwest
//! clients that keep cookies like browsers, against the test auth server (shared injected
//! clock: no sleeping for expiry).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../examples/app/routes.rs"]
mod routes;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::join_all;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{CookieConfig, CookieStore, EndpointConfig, StandardPolicy};
use tokenkit_tests::AuthServer;

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        logs
    })
}

struct Site {
    url: String,
    upstream: AuthServer,
    clock: ManualClock,
    _server: tokio::task::JoinHandle<()>,
}

async fn site() -> Site {
    site_with(CookieConfig::new().secure(false)).await
}

/// The example app with its cookie store configured as `cookies`, on a fresh upstream.
async fn site_with(cookies: CookieConfig) -> Site {
    let _ = logs();
    let clock = ManualClock::default();
    let upstream = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    let (url, server) = serve(&upstream, &clock, cookies).await;
    Site {
        url,
        upstream,
        clock,
        _server: server,
    }
}

/// Serves the example app against `upstream`, its cookie store configured as `cookies`.
async fn serve(
    upstream: &AuthServer,
    clock: &ManualClock,
    cookies: CookieConfig,
) -> (String, tokio::task::JoinHandle<()>) {
    let client = tokenkit_reqwest::builder(upstream.url())
        .clock(clock.clone())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"))
        .store(CookieStore::new(cookies))
        .policy(StandardPolicy::default().jitter_percent(0))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, routes::router(client)).await.unwrap();
    });
    (url, server)
}

/// A browser: keeps cookies, follows redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).build().unwrap()
}

async fn page(browser: &reqwest::Client, url: &str) -> (u16, String, Vec<String>) {
    let response = browser.get(url).send().await.unwrap();
    let cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (
        response.status().as_u16(),
        response.text().await.unwrap(),
        cookies,
    )
}

fn token_number(body: &str) -> u64 {
    let rest = body.split("token #").nth(1).expect("a token number");
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

async fn sign_in(site: &Site, browser: &reqwest::Client, user: &str, password: &str) -> String {
    let response = browser
        .post(format!("{}/login", site.url))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "redirected to the home page");
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_browse_expire_rotate_logout() {
    let s = site().await;
    let b = browser();
    let (status, body, _) = page(&b, &s.url).await;
    assert_eq!(status, 200);
    assert!(body.contains("Sign in"), "anonymous: the login form");

    // Login: the layer writes the token cookies onto the response (attributes per SPEC).
    let response = b
        .post(format!("{}/login", s.url))
        .form(&[("username", "alice"), ("password", "wonderland")])
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains("Hello, alice"));
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/login", s.url))
        .form(&[("username", "alice"), ("password", "wonderland")])
        .send()
        .await
        .unwrap();
    let set_cookies: Vec<String> = raw
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    // The five token cookies and the session payload (the login's user object).
    assert_eq!(set_cookies.len(), 6, "{set_cookies:?}");
    assert!(set_cookies.iter().any(|c| c.starts_with("session_payload=")));
    for c in &set_cookies {
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"),
            "{c}"
        );
        assert!(!c.contains("Secure"), "turned off explicitly for plain http: {c}");
    }

    // Browse: the same token.
    let (_, body, cookies) = page(&b, &s.url).await;
    assert!(body.contains("Hello, alice"), "{body}");
    let before = token_number(&body);
    assert_eq!(
        token_number(&page(&b, &s.url).await.1),
        before,
        "the same token while fresh"
    );
    assert!(cookies.is_empty(), "nothing to change");

    // Expiry: the next page load rotates the tokens and sets the new cookies.
    s.clock.advance(Duration::from_secs(3600));
    let (_, body, cookies) = page(&b, &s.url).await;
    assert!(body.contains("Hello, alice"), "{body}");
    assert!(cookies.iter().any(|c| c.starts_with("access_token=")));
    assert!(cookies.iter().any(|c| c.starts_with("refresh_token=")));
    assert_eq!(s.upstream.count("/auth/refresh"), 1);
    let (_, body, _) = page(&b, &s.url).await;
    assert!(body.contains("Hello, alice"), "the browser kept the new cookies");
    assert!(body.contains("The session says you are alice."), "{body}");
    assert_ne!(token_number(&body), before, "a new access token");
    assert_eq!(s.upstream.count("/auth/refresh"), 1);

    // Logout clears them.
    let response = b.post(format!("{}/logout", s.url)).send().await.unwrap();
    assert!(response.text().await.unwrap().contains("Sign in"));
    assert_eq!(s.upstream.count("/auth/logout"), 1);
    let (_, body, _) = page(&b, &s.url).await;
    assert!(body.contains("Sign in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_page_loads_during_a_rotation() {
    let s = site().await;
    let b = browser();
    sign_in(&s, &b, "alice", "wonderland").await;
    s.clock.advance(Duration::from_secs(3600));
    let pages = join_all((0..20).map(|_| page(&b, &s.url))).await;
    for (status, body, _) in &pages {
        assert_eq!(*status, 200);
        assert!(
            body.contains("Hello, alice"),
            "every page served, no logout: {body}"
        );
    }
    assert_eq!(s.upstream.count("/auth/refresh"), 1, "one refresh");
    assert_eq!(s.upstream.reuse_detected(), 0);
    let (_, body, _) = page(&b, &s.url).await;
    assert!(body.contains("Hello, alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_never_see_each_other() {
    let s = site().await;
    let (alice, bob) = (browser(), browser());
    sign_in(&s, &alice, "alice", "wonderland").await;
    sign_in(&s, &bob, "bob", "builder").await;
    s.clock.advance(Duration::from_secs(3600));
    let loads = (0..40).map(|i| {
        let (who, b) = if i % 2 == 0 {
            ("alice", &alice)
        } else {
            ("bob", &bob)
        };
        let url = s.url.clone();
        async move { (who, page(b, &url).await.1) }
    });
    for (who, body) in join_all(loads).await {
        assert!(body.contains(&format!("Hello, {who}")), "{who} saw: {body}");
    }
    assert_eq!(s.upstream.count("/auth/refresh"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_truncated_cookies_mean_logged_out_never_a_500() {
    let s = site().await;
    for cookie in [
        "access_token=%0D%0Agarbage; access_expires_at=9999999999",
        "access_token=abc; access_expires_at=not-a-number",
        "refresh_token=forged-refresh-token",
        "access_token=tk000001; refresh_token=",
    ] {
        let response = reqwest::Client::new()
            .get(&s.url)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{cookie}");
        let set: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = response.text().await.unwrap();
        assert!(
            body.contains("Sign in"),
            "{cookie}: treated as logged out: {body}"
        );
        if cookie.starts_with("refresh_token=forged") || cookie.starts_with("access_token=tk") {
            assert!(
                set.iter()
                    .any(|c| c.starts_with("refresh_token=;") || c.starts_with("access_token=;")),
                "{cookie}: the invalid session is cleared: {set:?}"
            );
        }
    }
    let logs = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("malformed"),
        "a clear log line about the bad cookie: {logs}"
    );
    assert!(logs.contains("could not ensure the session"), "{logs}");
    assert!(!logs.contains("forged-refresh-token"), "no token in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_401_page() {
    let s = site().await;
    let response = browser()
        .post(format!("{}/login", s.url))
        .form(&[("username", "alice"), ("password", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Wrong username or password"));
}

/// `Session` on a route the layer does not cover is a 500 that says why, not "signed out".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_extractor_outside_the_layer_is_a_clear_500() {
    use axum::routing::get;
    use tokenkit_axum::{Session, TokenKitLayer};
    let s = site().await;
    let client = tokenkit_reqwest::builder(s.upstream.url())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap();
    async fn who(session: Session) -> String {
        format!("authenticated: {}", session.authenticated)
    }
    let inside = axum::Router::new()
        .route("/inside", get(who))
        .layer(TokenKitLayer::new(client));
    let app = axum::Router::new().route("/outside", get(who)).merge(inside);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (status, body, _) = page(&browser(), &format!("{url}/inside")).await;
    assert_eq!((status, body.as_str()), (200, "authenticated: false"));
    let (status, body, _) = page(&browser(), &format!("{url}/outside")).await;
    assert_eq!(status, 500);
    assert!(body.contains("needs tokenkit_axum::TokenKitLayer"), "{body}");
}

/// Encrypted cookies through the app: one sealed cookie the browser cannot read, still read
/// after a key rotation, and a logged-out page (never an error page) without the key or once
/// tampered with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_cookies_are_unreadable_rotate_and_refuse_tampering() {
    use tokenkit_core::Encryption;
    let k1 = || Encryption::new("k1", [1; 32]).unwrap();
    let s = site_with(CookieConfig::new().secure(false).encrypted(k1())).await;
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = raw
        .post(format!("{}/login", s.url))
        .form(&[("username", "alice"), ("password", "wonderland")])
        .send()
        .await
        .unwrap();
    let set: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(set.len(), 1, "one sealed cookie: {set:?}");
    let pair = set[0].split(';').next().unwrap().to_owned();
    assert!(pair.starts_with("session=tk1.k1."), "{pair}");
    for secret in ["tk0", "alice", "Bearer", "refresh"] {
        assert!(!pair.contains(secret), "{secret} is sealed: {pair}");
    }
    let visit = |url: String, cookie: String| {
        let raw = raw.clone();
        async move {
            let response = raw.get(url).header("cookie", cookie).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, body) = visit(s.url.clone(), pair.clone()).await;
    assert_eq!(status, 200);
    assert!(body.contains("The session says you are alice."), "{body}");

    // A new key, the old one still listed: the browser's cookie still opens.
    let rotated = Encryption::new("k2", [2; 32])
        .unwrap()
        .with_old_key("k1", [1; 32])
        .unwrap();
    let (url, _rotated_site) = serve(
        &s.upstream,
        &s.clock,
        CookieConfig::new().secure(false).encrypted(rotated),
    )
    .await;
    let (status, body) = visit(url, pair.clone()).await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello, alice"), "read after the rotation: {body}");

    // Without the old key, or tampered with: signed out, not an error page.
    let (url, _new_only) = serve(
        &s.upstream,
        &s.clock,
        CookieConfig::new()
            .secure(false)
            .encrypted(Encryption::new("k2", [2; 32]).unwrap()),
    )
    .await;
    let (status, body) = visit(url, pair.clone()).await;
    assert_eq!((status, body.contains("Sign in")), (200, true), "{body}");
    let mut tampered = pair.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let (status, body) = visit(s.url.clone(), String::from_utf8(tampered).unwrap()).await;
    assert_eq!((status, body.contains("Sign in")), (200, true), "{body}");
}

/// The example app's OpenID mode, end to end over HTTP through the tests' provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_signs_in_through_an_openid_provider() {
    use tokenkit_core::{Encryption, OAuth2Config, OpenIdConfig};
    use tokenkit_tests::oidc::{OidcProvider, OIDC_CLIENT};
    let clock = ManualClock::default();
    let provider = OidcProvider::start(Arc::new(clock.clone())).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}", listener.local_addr().unwrap());
    let client = tokenkit_reqwest::builder(provider.issuer())
        .clock(clock)
        .openid(
            OAuth2Config::from_issuer(provider.issuer(), OIDC_CLIENT.0).client_secret(OIDC_CLIENT.1),
            OpenIdConfig::new(
                format!("{site}/auth/callback"),
                Encryption::new("k", [4; 32]).unwrap(),
            )
            .post_logout_redirect_uri(format!("{site}/"))
            .secure(false),
        )
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, routes::openid_app(client)).await.unwrap() });
    let b = browser();
    let (_, body, _) = page(&b, &site).await;
    assert!(body.contains("Sign in with your identity provider"), "{body}");
    let (status, body, _) = page(&b, &format!("{site}/auth/sign-in")).await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello, alice"), "{body}");
    let response = b.post(format!("{site}/auth/sign-out")).send().await.unwrap();
    assert!(response.text().await.unwrap().contains("Please sign in."));
    assert_eq!(provider.count("/end-session"), 1);
}
