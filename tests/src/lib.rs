//! Test support for tokenkit: an in-process auth server with fault injection and a request
//! log ([`server`]), and helpers shared by the integration tests and the demo.
//!
//! The server listens on `127.0.0.1:0`, issues bearer tokens from `POST /oauth/token`,
//! protects everything under `/api/`, and leaves `/public/` open.

pub mod server;

pub use server::{AuthServer, Fault, LoggedRequest, ResourceMode};

use std::future::Future;
use std::pin::Pin;

use tokenkit_core::ProvidedToken;

/// The error of [`token_provider`]'s closure.
pub type ProviderError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed provider future.
pub type ProviderFuture = Pin<Box<dyn Future<Output = Result<ProvidedToken, ProviderError>> + Send>>;

/// A provider-mode closure that fetches a token from `token_url` with a plain reqwest client,
/// as an application would: POST, check the status, parse the JSON.
pub fn token_provider(token_url: String) -> impl Fn() -> ProviderFuture + Send + Sync + 'static {
    let http = reqwest::Client::new();
    move || {
        let http = http.clone();
        let url = token_url.clone();
        Box::pin(async move {
            let response = http
                .post(&url)
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("token endpoint answered {status}").into());
            }
            let body = response.bytes().await?;
            Ok(serde_json::from_slice::<ProvidedToken>(&body)?)
        })
    }
}

/// Records lifecycle callbacks so tests can assert on them.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` under `name`.
    pub fn record(&self, name: &str, message: impl Into<String>) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_owned(), message.into()));
        self.notify.notify_waiters();
    }

    /// The messages recorded under `name`, in order.
    pub fn messages(&self, name: &str) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// How many events were recorded under `name`.
    pub fn count(&self, name: &str) -> usize {
        self.messages(name).len()
    }

    /// Every recorded message, for leak checks.
    pub fn all_text(&self) -> String {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(n, m)| format!("{n}: {m}\n"))
            .collect()
    }

    /// Waits (at most 10 s, then panics the test) until `name` has been recorded `n` times.
    /// Used to await background work, never to wait for time to pass.
    pub async fn wait_for(&self, name: &str, n: usize) {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                if self.count(name) >= n {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            panic!(
                "timed out waiting for {n} {name:?} events; got {}",
                self.count(name)
            );
        }
    }

    /// Wires every provider-mode callback of `builder` to this recorder.
    pub fn wire(&self, builder: tokenkit_core::ClientBuilder) -> tokenkit_core::ClientBuilder {
        let (a, b, c, d, e, f) = (
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
        );
        builder
            .on_token_refresh(move |m| a.record("token_refresh", m))
            .on_auth_fail(move |m| b.record("auth_fail", m))
            .on_token_request_fail(move |err| c.record("token_request_fail", format!("{err} / {err:?}")))
            .on_recovery_try(move |m| d.record("recovery_try", m))
            .on_token_try_threshold(move |n| e.record("threshold", n.to_string()))
            .on_recovery_abort(move |m| f.record("recovery_abort", m))
    }
}
