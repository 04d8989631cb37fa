//! No token value reaches Debug/Display output, error messages, callback messages or
//! captured `tracing` output — unless `add_token_to_logs` is set.
//!
//! This file is its own test binary so it can install a global subscriber that captures
//! every event, on every thread, at every level.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::StandardPolicy;
use tokenkit_tests::{token_provider, AuthServer, Browser, Fault, Recorder, ResourceMode};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        capture
    })
}

fn captured() -> String {
    String::from_utf8_lossy(&capture().0.lock().unwrap()).into_owned()
}

/// Runs a flow touching every event (refresh, proactive refresh, failure, rejection,
/// recovery, abort) and returns everything that was printed plus the tokens issued.
async fn exercise(add_token_to_logs: bool) -> (String, Vec<String>) {
    let _ = capture();
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    server.set_token_lifetime(Duration::from_secs(100));
    let recorder = Recorder::new();
    let client = recorder
        .wire(tokenkit_reqwest::builder(server.url()))
        .clock(clock.clone())
        .provider(token_provider(server.token_url()))
        .policy(StandardPolicy::provider().jitter_percent(0))
        .add_token_to_logs(add_token_to_logs)
        .header("x-api-key", "static-key-s3cr3t")
        .build()
        .unwrap();
    let mut printed = Vec::new();

    let ok = client.get("/api/a").send::<Value>().await.unwrap();
    printed.push(format!("{ok:?}"));
    clock.advance(Duration::from_secs(95));
    client.get("/api/a").send::<Value>().await.unwrap();
    recorder.wait_for("refreshed", 2).await;
    server.revoke_all();
    client.get("/api/a").send::<Value>().await.unwrap();
    clock.advance(Duration::from_secs(500));
    server.fail_next_token_requests(1, Fault::Status(500));
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    printed.push(format!("{err} {err:?} {:?}", std::error::Error::source(&err)));
    clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY); // past the outage backoff
    server.set_resource_mode(ResourceMode::AlwaysUnauthorized);
    let err = client.get("/api/a").send::<Value>().await.unwrap_err();
    printed.push(format!("{err} {err:?}"));
    server.set_resource_mode(ResourceMode::Normal);
    let record = client.token().await.unwrap();
    printed.push(format!("{record:?} {client:?}"));
    printed.push(recorder.all_text());

    let mut tokens: Vec<String> = server
        .log()
        .into_iter()
        .filter_map(|r| r.authorization)
        .filter_map(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        .collect();
    tokens.sort();
    tokens.dedup();
    tokens.push("static-key-s3cr3t".to_owned());
    (printed.join("\n"), tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_output_and_add_token_to_logs_reveals_them() {
    let (printed, tokens) = exercise(false).await;
    assert!(
        tokens.len() >= 4,
        "the flow issued several tokens: {}",
        tokens.len()
    );
    let logs = captured();
    assert!(
        logs.contains("access token obtained"),
        "tracing events were captured"
    );
    assert!(logs.contains("recovery aborted after 5 attempts"));
    for token in &tokens {
        assert!(
            !printed.contains(token.as_str()),
            "token leaked into Debug/Display/callbacks"
        );
        assert!(!logs.contains(token.as_str()), "token leaked into tracing output");
    }

    // Positive control: the same check does find tokens when they are allowed in log
    // messages. Events never carry them in text (a handler reaches them only by asking a
    // TokenRecord for its secret).
    let (printed, tokens) = exercise(true).await;
    let logs = captured();
    assert!(
        tokens.iter().all(|t| !printed.contains(t.as_str())),
        "event text never carries tokens"
    );
    assert!(
        tokens.iter().any(|t| logs.contains(t.as_str())),
        "log messages carry tokens"
    );
    assert!(!printed.contains("static-key-s3cr3t") && !logs.contains("static-key-s3cr3t"));
}

const SECRETS: [&str; 8] = [
    "access-SECRET-1",
    "refresh-SECRET-2",
    "client-SECRET-3",
    "header-SECRET-4",
    "data-SECRET-5",
    "param-SECRET-6",
    "session-SECRET-7",
    "cookie-SECRET-8",
];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} printed {secret}: {text}");
    }
}

/// Every public type that can hold a secret, built holding one: its `Debug` (and `Display`
/// where it has one) prints none.
#[tokio::test]
async fn every_public_type_prints_no_secret() {
    use tokenkit_core::*;
    let _ = capture();
    let [access, refresh, client_secret, header, data, param, session, cookie] = SECRETS;
    let record = TokenRecord::new(AccessToken::new(access), std::time::UNIX_EPOCH)
        .with_refresh_token(RefreshToken::new(refresh))
        .with_token_type("Bearer");
    let mut printed: Vec<(String, String)> = Vec::new();
    let mut show = |what: &str, text: String| printed.push((what.to_owned(), text));

    show("TokenRecord", format!("{record:?}"));
    show("AccessToken", format!("{:?}", AccessToken::new(access)));
    show("RefreshToken", format!("{:?}", RefreshToken::new(refresh)));
    show("ProvidedToken", format!("{:?}", ProvidedToken::new(access, 60)));
    show(
        "SessionKey",
        format!("{:?}", SessionKey::refresh_token(RefreshToken::new(refresh))),
    );
    show("SessionId", format!("{:?}", SessionId(session.to_owned())));
    let context = Context::from_cookie_header(&format!("access_token={cookie}; sid={session}"));
    show("Context", format!("{context:?}"));
    let store = MemoryStore::new();
    store.save(None, Arc::new(record.clone()), None).await.unwrap();
    show("MemoryStore", format!("{store:?}"));
    let clock = ManualClock::default();
    let backend = Arc::new(MemorySessionBackend::new(Arc::new(clock.clone())));
    let sessions = SessionStore::new(Arc::clone(&backend)).session_cookie("sid");
    let ctx = Context::from_cookie_header(&format!("sid={session}"));
    sessions
        .save(Some(&ctx), Arc::new(record.clone()), None)
        .await
        .unwrap();
    show("MemorySessionBackend", format!("{backend:?}"));
    show("SessionStore", format!("{sessions:?}"));
    show(
        "CookieStore",
        format!("{:?}", CookieStore::new(CookieConfig::new())),
    );
    let oauth = OAuth2Config::new("https://auth/token", "id")
        .client_secret(client_secret)
        .param("assertion_hint", param);
    show("OAuth2Config", format!("{oauth:?}"));
    let endpoints = EndpointConfig::new("/login", "/refresh")
        .header("x-api-key", header)
        .login_data(serde_json::json!({"client_secret": data}));
    show("EndpointConfig", format!("{endpoints:?}"));
    show(
        "LoginOptions",
        format!(
            "{:?}",
            LoginOptions::new()
                .header("authorization", format!("Basic {header}"))
                .data(serde_json::json!({ "otp": data }))
                .param("token", param)
        ),
    );
    show(
        "RefreshOptions",
        format!(
            "{:?}",
            RefreshOptions::new()
                .header("authorization", format!("Bearer {header}"))
                .data(serde_json::json!({ "secret": data }))
        ),
    );
    show(
        "AuthOverride",
        format!(
            "{:?}",
            AuthOverride::new().data(serde_json::json!({ "tenant_key": data }))
        ),
    );
    let body = serde_json::json!({"access_token": access, "refresh_token": refresh});
    for event in [
        Event::LoggedIn {
            tokens: &record,
            response: &body,
            context: Some(&context),
        },
        Event::Refreshed {
            tokens: &record,
            reason: FetchReason::Needed,
            expires_in: None,
            context: Some(&context),
        },
    ] {
        show("Event", format!("{event:?} {event}"));
    }
    let error = Error::new(ErrorKind::Status, "GET /x").with_response(
        http::StatusCode::BAD_REQUEST,
        bytes::Bytes::from(body.to_string()),
    );
    show("Error", format!("{error:?} {error}"));

    // Clients and the embedded forms over a session store full of tokens.
    let server = AuthServer::start().await.unwrap();
    let client = tokenkit_reqwest::builder(server.url())
        .header("x-api-key", header)
        .oauth2_password(OAuth2Config::new(server.oauth_token_url(), "client-1").client_secret(client_secret))
        .store(SessionStore::new(Arc::clone(&backend)).session_cookie("sid"))
        .build()
        .unwrap();
    show("Client", format!("{client:?}"));
    show(
        "AuthLayer",
        format!("{:?}", tokenkit_tower::AuthLayer::new(client.clone())),
    );
    show(
        "TokenMiddleware",
        format!(
            "{:?}",
            tokenkit_reqwest::middleware::TokenMiddleware::new(client.clone())
        ),
    );
    show(
        "TokenKitLayer",
        format!("{:?}", tokenkit_axum::TokenKitLayer::new(client.clone())),
    );
    show(
        "Encryption",
        format!("{:?}", tokenkit_redis::Encryption::new("k1", [7u8; 32]).unwrap()),
    );
    show(
        "RedisConnection",
        format!(
            "{:?}",
            tokenkit_redis::RedisConnection::open(&format!("redis://:{client_secret}@127.0.0.1:1/")).unwrap()
        ),
    );

    for (what, text) in &printed {
        assert_clean(what, text);
    }
    assert!(printed.len() >= 25, "every type was printed");
    // The session store held the tokens: Debug printed the count only.
    assert!(printed
        .iter()
        .any(|(what, text)| what == "MemorySessionBackend" && text.contains("values: 1")));
}

/// A hostile token endpoint echoes the secrets it received in `error_description`, with a
/// CR/LF log-injection attempt, escape codes and 10 kB of padding: none of it reaches an
/// error, an event or a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_error_descriptions_reach_no_error_event_or_log() {
    use tokenkit_core::*;
    let _ = capture();
    let server = AuthServer::start().await.unwrap();
    server.echo_secrets_in_errors(true);
    let recorder = Recorder::new();
    let client = recorder
        .wire(tokenkit_reqwest::builder(server.url()))
        .oauth2_password(OAuth2Config::new(server.oauth_token_url(), "client-1").client_secret("secret-1"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap();
    let browser = Browser::new();
    let (login, _) = browser
        .visit(client.login(
            &serde_json::json!({"username": "alice", "password": "wonderland"}),
            LoginOptions::new(),
        ))
        .await;
    let refresh_token = login
        .unwrap()
        .data
        .refresh_token
        .clone()
        .unwrap()
        .secret()
        .to_owned();
    server.revoke_refresh_tokens();
    let (refreshed, _) = browser.visit(client.refresh_session(RefreshOptions::new())).await;
    let err = refreshed.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid));
    let description = err.oauth().unwrap().description.clone().unwrap();
    assert!(description.contains("[redacted]"), "{description}");

    // A client whose secret is refused, with client_secret_post: the echo carries the secret.
    let wrong = tokenkit_reqwest::builder(server.url())
        .oauth2_client_credentials(
            OAuth2Config::new(server.oauth_token_url(), "client-1")
                .client_secret("wrong-SECRET-9")
                .client_auth(ClientAuth::Post),
        )
        .retry(RetryConfig::none())
        .build()
        .unwrap();
    let refused = wrong.get("/api/a").send::<Value>().await.unwrap_err();
    assert!(refused.is_invalid_client(), "{refused}");

    let logs = captured();
    for (what, text) in [
        ("error", format!("{err} {err:?}")),
        ("invalid_client error", format!("{refused} {refused:?}")),
        ("events", recorder.all_text()),
        ("logs", logs.clone()),
    ] {
        for secret in [refresh_token.as_str(), "secret-1", "wrong-SECRET-9"] {
            assert!(!text.contains(secret), "{what} carries {secret}");
        }
        assert!(
            !text.contains('\u{1b}') && !text.contains('\0'),
            "{what} carries control characters"
        );
        assert!(
            !text
                .lines()
                .any(|line| line.starts_with("2026-11-24 ERROR forged")),
            "{what}: a forged line"
        );
        assert!(
            !text.contains(&"x".repeat(300)),
            "{what}: the padding was not capped"
        );
    }
    for err in [&err, &refused] {
        let text = err.to_string();
        assert_eq!(text.matches("HTTP ").count(), 1, "the status once: {text}");
    }
}
