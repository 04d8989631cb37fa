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
use tokenkit_tests::{token_provider, AuthServer, Fault, Recorder, ResourceMode};

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
