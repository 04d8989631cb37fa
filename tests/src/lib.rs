//! Test support for tokenkit: an in-process auth server with fault injection and a request
//! log ([`server`]), a real `redis-server` started on demand ([`redis`]), and helpers shared by
//! the integration tests, the demo and the fleet example; an in-process OpenID provider
//! ([`oidc`]).
//!
//! The server listens on `127.0.0.1:0`, issues bearer tokens from `POST /oauth/token`,
//! protects everything under `/api/`, and leaves `/public/` open.

pub mod oauth;
pub mod oidc;
pub mod redis;
pub mod replica;
pub mod server;

pub use server::{AuthServer, DiscoveryDoc, Fault, LoggedRequest, ResourceMode, USERS};

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

    /// Records every [`tokenkit_core::Event`] of `builder`'s client under the event's name
    /// (`"refreshed"`, `"rejected"`, …) with its text and `Debug`; a threshold event's
    /// message is its failure count, a login's describes the payload and the response.
    pub fn wire(&self, builder: tokenkit_core::ClientBuilder) -> tokenkit_core::ClientBuilder {
        let recorder = self.clone();
        builder.on_event(move |event: &tokenkit_core::Event<'_>| {
            use tokenkit_core::Event;
            let message = match event {
                Event::FailureThreshold {
                    consecutive_failures, ..
                } => consecutive_failures.to_string(),
                Event::LoggedIn {
                    tokens,
                    response,
                    context,
                    ..
                } => format!(
                    "payload={:?} body_has_user={} ctx={}",
                    tokens.payload,
                    response.get("user").is_some(),
                    context.is_some()
                ),
                Event::Refreshed { context, .. } => format!("{event} ctx={} / {event:?}", context.is_some()),
                other => format!("{other} / {other:?}"),
            };
            recorder.record(event.name(), message);
        })
    }
}

/// A browser's cookie jar: each page load gets a [`tokenkit_core::Context`] built from the
/// cookies it holds, and the response's `Set-Cookie` delta is applied afterwards.
#[derive(Debug, Default, Clone)]
pub struct Browser {
    cookies: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

impl Browser {
    /// A browser with no cookies.
    pub fn new() -> Self {
        Self::default()
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
        self.cookies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `Cookie` header the browser would send now.
    pub fn cookie_header(&self) -> String {
        self.jar()
            .iter()
            .map(|(k, v)| {
                tokenkit_core::cookie::Cookie::new(k.clone(), v.clone())
                    .encoded()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A request context carrying the browser's cookies.
    pub fn context(&self) -> tokenkit_core::Context {
        tokenkit_core::Context::from_cookie_header(&self.cookie_header())
    }

    /// Applies a response's `Set-Cookie` delta: set or expire each cookie.
    pub fn absorb(&self, ctx: &tokenkit_core::Context) {
        let mut jar = self.jar();
        for cookie in ctx.cookie_delta() {
            let expired = cookie.max_age() == Some(tokenkit_core::cookie::time::Duration::ZERO);
            if expired {
                jar.remove(cookie.name());
            } else {
                jar.insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
    }

    /// One page load: runs `page` with a context built from the cookies, then applies the
    /// `Set-Cookie` delta. Returns the page's output and the context (to inspect the delta).
    pub async fn visit<F: std::future::Future>(&self, page: F) -> (F::Output, tokenkit_core::Context) {
        let ctx = self.context();
        let out = tokenkit_core::run_with_context(ctx.clone(), page).await;
        self.absorb(&ctx);
        (out, ctx)
    }

    /// The value of a cookie the browser holds.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar().get(name).cloned()
    }

    /// Forgets a cookie (as when it expires in the browser).
    pub fn forget(&self, name: &str) {
        self.jar().remove(name);
    }

    /// Replaces all cookies (to replay an older state).
    pub fn restore(&self, cookies: std::collections::BTreeMap<String, String>) {
        *self.jar() = cookies;
    }

    /// A copy of all cookies.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, String> {
        self.jar().clone()
    }
}

/// A [`tokenkit_core::Sleep`] hook that records every requested delay. It completes at once
/// (or never, for [`RecordingSleep::never`]), so backoff is asserted by value and no test waits.
#[derive(Debug, Clone, Default)]
pub struct RecordingSleep {
    slept: std::sync::Arc<std::sync::Mutex<Vec<std::time::Duration>>>,
    never: bool,
}

impl RecordingSleep {
    /// Records delays and completes at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records delays and never completes (a backoff that outlives its caller).
    pub fn never() -> Self {
        Self {
            never: true,
            ..Self::default()
        }
    }

    /// The delays requested so far.
    pub fn slept(&self) -> Vec<std::time::Duration> {
        self.slept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl tokenkit_core::Sleep for RecordingSleep {
    fn sleep(&self, duration: std::time::Duration) -> tokenkit_core::BoxFuture<'static, ()> {
        self.slept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(duration);
        if self.never {
            Box::pin(std::future::pending())
        } else {
            Box::pin(std::future::ready(()))
        }
    }
}

/// The workspace README's examples, compiled as doctests (here, where every crate they use is
/// a dependency; the published crates carry no file from outside their own directory).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
