//! Sign-in through an OpenID provider (the in-process test provider): the authorization code
//! flow with PKCE, `state` and `nonce`, the ID token verified; every way a callback can be
//! wrong is refused with a typed error and no session.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    AuthFailure, Client, CookieConfig, CookieStore, Encryption, ErrorKind, OAuth2Config, OpenIdConfig,
    SignedIn,
};
use tokenkit_tests::oidc::{OidcFault, OidcProvider, OIDC_CLIENT};
use tokenkit_tests::Browser;

const CALLBACK: &str = "http://app.test/auth/callback";

struct Setup {
    provider: OidcProvider,
    clock: ManualClock,
    client: Client,
}

async fn setup() -> Setup {
    let clock = ManualClock::default();
    let provider = OidcProvider::start(Arc::new(clock.clone())).await.unwrap();
    let keys = Encryption::new("k1", [3; 32]).unwrap();
    let client = tokenkit_reqwest::builder(provider.issuer())
        .clock(clock.clone())
        .openid(
            OAuth2Config::from_issuer(provider.issuer(), OIDC_CLIENT.0).client_secret(OIDC_CLIENT.1),
            OpenIdConfig::new(CALLBACK, keys)
                .scope("profile")
                .post_logout_redirect_uri("http://app.test/")
                .secure(false),
        )
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap();
    Setup {
        provider,
        clock,
        client,
    }
}

/// What the provider's authorization endpoint answers: the callback's query string.
async fn authorize(url: &str) -> String {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let callback = location.strip_prefix(CALLBACK).expect("back to the callback");
    callback.trim_start_matches('?').to_owned()
}

/// A whole sign-in in `browser`.
async fn sign_in(s: &Setup, browser: &Browser) -> Result<SignedIn, tokenkit_core::Error> {
    let (url, _) = browser.visit(s.client.begin_sign_in(Some("/after"))).await;
    let query = authorize(&url.unwrap()).await;
    browser.visit(s.client.finish_sign_in(&query)).await.0
}

fn refused(result: Result<SignedIn, tokenkit_core::Error>) -> tokenkit_core::Error {
    let err = result.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Auth(AuthFailure::SignInRefused), "{err}");
    err
}

async fn has_session(s: &Setup, browser: &Browser) -> bool {
    browser.visit(s.client.session()).await.0.unwrap().is_some()
}

#[tokio::test]
async fn signs_in_with_pkce_state_and_nonce_and_keeps_the_user() {
    let s = setup().await;
    let browser = Browser::new();
    let (url, _) = browser.visit(s.client.begin_sign_in(Some("/after"))).await;
    let url = url::Url::parse(&url.unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["scope"], "openid profile");
    assert_eq!(query["redirect_uri"], CALLBACK);
    assert!(query["state"].len() >= 43 && query["nonce"].len() >= 43);
    let pending: Vec<String> = browser
        .snapshot()
        .into_keys()
        .filter(|name| name.starts_with("tokenkit-signin-"))
        .collect();
    assert_eq!(pending.len(), 1, "one sealed cookie for the attempt");

    let callback = authorize(url.as_str()).await;
    let (signed_in, _) = browser.visit(s.client.finish_sign_in(&callback)).await;
    let signed_in = signed_in.unwrap();
    assert_eq!(signed_in.return_to.as_deref(), Some("/after"));
    assert_eq!(signed_in.record.payload.as_ref().unwrap()["name"], "alice");
    assert!(
        browser.cookie(&pending[0]).is_none(),
        "the attempt's cookie is gone"
    );
    // A later request knows the user.
    let (session, _) = browser.visit(s.client.session()).await;
    assert_eq!(
        session.unwrap().unwrap().payload.as_ref().unwrap()["sub"],
        "user-alice"
    );

    // The tokens rotate with the refresh grant; the user stays known.
    s.clock.advance(Duration::from_secs(300));
    let (record, _) = browser.visit(s.client.ensure()).await;
    let record = record.unwrap().unwrap();
    assert_eq!(record.payload.as_ref().unwrap()["name"], "alice");
    assert_eq!(s.provider.count("/token"), 2, "the code, then one refresh");

    // The same callback again: the attempt is over.
    refused(browser.visit(s.client.finish_sign_in(&callback)).await.0);
}

#[tokio::test]
async fn every_bad_callback_is_refused_and_leaves_no_session() {
    let faults = [
        (OidcFault::WrongState, "state"),
        (OidcFault::Denied, "the user said no"),
        (OidcFault::AlgNone, "alg none"),
        (OidcFault::HmacWithPublicKey, "asymmetric"),
        (OidcFault::WrongAudience, "does not verify"),
        (OidcFault::WrongIssuer, "does not verify"),
        (OidcFault::WrongNonce, "nonce"),
        (OidcFault::Expired, "expired"),
        (OidcFault::UnpublishedKey, "does not publish"),
        (OidcFault::NoIdToken, "no id_token"),
        (OidcFault::WrongIssParam, "another issuer"),
    ];
    for (fault, why) in faults {
        let s = setup().await;
        s.provider.fault(fault);
        let browser = Browser::new();
        let err = refused(sign_in(&s, &browser).await);
        assert!(err.to_string().contains(why), "{fault:?}: {err}");
        assert!(!has_session(&s, &browser).await, "{fault:?}: no session");
    }
}

#[tokio::test]
async fn a_replayed_code_or_a_late_callback_is_refused() {
    let s = setup().await;
    let browser = Browser::new();
    let (url, _) = browser.visit(s.client.begin_sign_in(None)).await;
    let first = authorize(&url.unwrap()).await;
    browser.visit(s.client.finish_sign_in(&first)).await.0.unwrap();
    // A new attempt, answered with the old code: the provider refuses it.
    let (url, _) = browser.visit(s.client.begin_sign_in(None)).await;
    let second = authorize(&url.unwrap()).await;
    let new_state = second.split('&').find(|p| p.starts_with("state=")).unwrap();
    let old_code = first.split('&').find(|p| p.starts_with("code=")).unwrap();
    refused(
        browser
            .visit(s.client.finish_sign_in(&format!("{old_code}&{new_state}")))
            .await
            .0,
    );

    // Too slow: the attempt has expired.
    let browser = Browser::new();
    let (url, _) = browser.visit(s.client.begin_sign_in(None)).await;
    let callback = authorize(&url.unwrap()).await;
    s.clock.advance(Duration::from_secs(11 * 60));
    let err = refused(browser.visit(s.client.finish_sign_in(&callback)).await.0);
    assert!(err.to_string().contains("too long"), "{err}");
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_once_when_first_seen() {
    let s = setup().await;
    sign_in(&s, &Browser::new()).await.unwrap();
    assert_eq!(s.provider.count("/jwks"), 1);
    sign_in(&s, &Browser::new()).await.unwrap();
    assert_eq!(s.provider.count("/jwks"), 1, "cached");
    s.provider.rotate_key();
    s.clock.advance(Duration::from_secs(30));
    sign_in(&s, &Browser::new()).await.unwrap();
    assert_eq!(s.provider.count("/jwks"), 2, "fetched again for the new key id");
    // A flood of unknown key ids cannot make it fetch again right away.
    s.provider.fault(OidcFault::UnpublishedKey);
    refused(sign_in(&s, &Browser::new()).await);
    assert_eq!(s.provider.count("/jwks"), 2);
}

#[tokio::test]
async fn tabs_signing_in_at_once_do_not_disturb_each_other() {
    let s = setup().await;
    let browser = Browser::new();
    let (a, _) = browser.visit(s.client.begin_sign_in(Some("/a"))).await;
    let (b, _) = browser.visit(s.client.begin_sign_in(Some("/b"))).await;
    let (a, b) = (authorize(&a.unwrap()).await, authorize(&b.unwrap()).await);
    let (second, _) = browser.visit(s.client.finish_sign_in(&b)).await;
    assert_eq!(second.unwrap().return_to.as_deref(), Some("/b"));
    let (first, _) = browser.visit(s.client.finish_sign_in(&a)).await;
    assert_eq!(first.unwrap().return_to.as_deref(), Some("/a"));
}

#[tokio::test]
async fn open_redirects_are_refused() {
    let s = setup().await;
    let browser = Browser::new();
    for target in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let (result, ctx) = browser.visit(s.client.begin_sign_in(Some(target))).await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Config, "{target}");
        assert!(ctx.cookie_delta().is_empty(), "{target}: no attempt started");
    }
}

#[tokio::test]
async fn sign_out_revokes_clears_and_ends_the_provider_session() {
    let s = setup().await;
    let browser = Browser::new();
    sign_in(&s, &browser).await.unwrap();
    let (end, _) = browser.visit(s.client.sign_out()).await;
    let end = url::Url::parse(&end.unwrap().unwrap()).unwrap();
    assert_eq!(end.path(), "/end-session");
    let query: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], OIDC_CLIENT.0);
    assert_eq!(query["post_logout_redirect_uri"], "http://app.test/");
    assert_eq!(s.provider.count("/revoke"), 1);
    assert!(!has_session(&s, &browser).await);
    assert!(browser.snapshot().is_empty(), "no cookie left");
}

/// The axum routes end to end over HTTP, a cookie-keeping client following every redirect:
/// sign-in through the provider and back, the user known on later pages, a refused sign-in
/// lands signed out, an open redirect is a 400, sign-out ends the provider's session too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_routes_sign_in_and_out_through_the_provider() {
    use axum::routing::get;
    use tokenkit_axum::{openid_router, OpenIdRoutes, Session, TokenKitLayer};
    let clock = ManualClock::default();
    let provider = OidcProvider::start(Arc::new(clock.clone())).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", listener.local_addr().unwrap());
    let client = tokenkit_reqwest::builder(provider.issuer())
        .clock(clock.clone())
        .openid(
            OAuth2Config::from_issuer(provider.issuer(), OIDC_CLIENT.0).client_secret(OIDC_CLIENT.1),
            OpenIdConfig::new(
                format!("{app_url}/auth/callback"),
                Encryption::new("k", [9; 32]).unwrap(),
            )
            .post_logout_redirect_uri(format!("{app_url}/"))
            .secure(false),
        )
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap();
    async fn home(session: Session) -> String {
        match session.payload.as_ref().and_then(|p| p["name"].as_str()) {
            Some(name) if session.authenticated => format!("signed in as {name}"),
            _ => "signed out".to_owned(),
        }
    }
    let app = axum::Router::new()
        .route("/", get(home))
        .merge(openid_router(client.clone(), OpenIdRoutes::new()))
        .layer(TokenKitLayer::new(client));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let browser = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let text = |response: reqwest::Response| async move { response.text().await.unwrap() };

    let page = browser
        .get(format!("{app_url}/auth/sign-in?return_to=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(text(page).await, "signed in as alice");
    assert_eq!(provider.count("/authorize"), 1);
    let page = browser.get(&app_url).send().await.unwrap();
    assert_eq!(text(page).await, "signed in as alice", "a later page");

    let page = browser
        .post(format!("{app_url}/auth/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(text(page).await, "signed out");
    assert_eq!(
        (provider.count("/revoke"), provider.count("/end-session")),
        (1, 1)
    );

    let evil = browser
        .get(format!("{app_url}/auth/sign-in?return_to=//evil.example/"))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 400);

    provider.fault(OidcFault::WrongNonce);
    let page = browser
        .get(format!("{app_url}/auth/sign-in"))
        .send()
        .await
        .unwrap();
    assert!(
        page.url().as_str().ends_with("/?sign_in=failed"),
        "{}",
        page.url()
    );
    assert_eq!(text(page).await, "signed out");
}
