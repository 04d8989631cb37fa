//! # tokenkit-isahc
//!
//! [isahc] (libcurl) as the transport of a tokenkit [`Client`]. It needs no async runtime:
//! curl runs its own agent thread, timeouts use `futures-timer`, and it works on any
//! executor (`futures::executor`, smol, async-std, tokio).
//!
//! ```no_run
//! use tokenkit_core::ProvidedToken;
//!
//! # fn run() -> Result<(), tokenkit_core::Error> {
//! let client = tokenkit_isahc::builder("http://127.0.0.1:8080")?
//!     .provider(|| async { Ok::<_, std::io::Error>(ProvidedToken::new("token", 3600)) })
//!     .build()?;
//! let me = futures_executor::block_on(client.get("/me").send::<serde_json::Value>())?;
//! # Ok(()) }
//! ```
//!
//! ## How curl is built
//! libcurl is compiled from source and linked statically (isahc's `static-curl`, through
//! `curl-sys`): no system curl package is needed, only a C compiler. HTTPS is enabled by the
//! `rustls` feature (curl's rustls backend).
//!
//! ## How refreshes run without a runtime
//! A refresh runs on the executor of the requests waiting for it. But a refresh once sent must
//! complete and be stored even if every request waiting for it is dropped, and refreshes in
//! the proactive window run in the background: both need something to poll the refresh when
//! no caller does. That is [`ThreadSpawn`], one executor thread named `tokenkit-isahc`, shared
//! by every client of the process and started on first use. It only ever runs those two kinds
//! of refresh, so the adapter still works on any executor, or none. A token source that needs
//! a particular runtime's context (a provider closure calling reqwest needs tokio's) fails
//! there with a typed error, never a crash: the next request refreshes on its own executor.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::AsyncReadExt;
use isahc::config::Configurable;
use isahc::error::ErrorKind as IsahcErrorKind;
use isahc::{AsyncBody, HttpClient};
use std::sync::OnceLock;

use futures_executor::ThreadPool;
use tokenkit_core::{BoxFuture, Runtime, Sleep, Spawn, SpawnError};
use tokenkit_core::{Client, ClientBuilder, Error, ErrorKind, Transport, TransportError, TransportErrorKind};

pub use isahc;

/// The default cap on a buffered response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A [`Transport`] over an `isahc::HttpClient`.
#[derive(Debug, Clone)]
pub struct IsahcTransport {
    client: HttpClient,
    max_response_bytes: usize,
}

impl From<HttpClient> for IsahcTransport {
    fn from(client: HttpClient) -> Self {
        Self {
            client,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl IsahcTransport {
    /// A client with isahc's defaults. Fails only if curl cannot be initialised.
    pub fn new() -> Result<Self, Error> {
        HttpClient::new().map(Self::from).map_err(|e| {
            Error::new(ErrorKind::Config, "could not initialise the isahc client").with_source(e)
        })
    }

    /// Caps the size of a buffered response body (default 16 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }
}

#[async_trait]
impl Transport for IsahcTransport {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        let (parts, body) = request.into_parts();
        // Whatever the client's own policy: credentials never follow a redirect (the 3xx is
        // the answer). A request-level setting overrides the client's.
        let mut builder = http::Request::builder()
            .method(parts.method)
            .uri(parts.uri)
            .version(parts.version)
            .redirect_policy(isahc::config::RedirectPolicy::None);
        if let Some(headers) = builder.headers_mut() {
            *headers = parts.headers;
        }
        // An empty body is no body: curl would otherwise label the POST as a form.
        let body = if body.is_empty() {
            AsyncBody::empty()
        } else {
            AsyncBody::from(body.to_vec())
        };
        let request = builder.body(body).map_err(TransportError::other)?;
        let response = self.client.send_async(request).await.map_err(map_error)?;
        let (parts, mut body) = response.into_parts();
        let limit = self.max_response_bytes;
        let mut buf = Vec::new();
        (&mut body)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(TransportError::other)?;
        if buf.len() > limit {
            return Err(TransportError::new(
                TransportErrorKind::Other,
                format!("response body exceeds the limit of {limit} bytes"),
            ));
        }
        Ok(http::Response::from_parts(parts, Bytes::from(buf)))
    }
}

/// Maps every isahc error to a transport error kind.
fn map_error(err: isahc::Error) -> TransportError {
    match err.kind() {
        IsahcErrorKind::ConnectionFailed
        | IsahcErrorKind::NameResolution
        | IsahcErrorKind::BadServerCertificate => TransportError::connect(err),
        IsahcErrorKind::Timeout => TransportError::timeout(err),
        _ => TransportError::other(err),
    }
}

/// A runtime-agnostic [`Sleep`] on `futures-timer`'s timer thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimerSleep;

/// The longest sleep `futures-timer` is asked for: its deadline is `Instant::now() + d`, which
/// panics past what an `Instant` holds, and a timeout of `Duration::MAX` means "never".
const LONGEST_SLEEP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Sleep for TimerSleep {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(futures_timer::Delay::new(duration.min(LONGEST_SLEEP)))
    }

    /// Request timeouts are [`Deadline`](tokenkit_core::Deadline)s: cheaper to create and
    /// drop than a `futures-timer` delay, which wakes its thread on every creation.
    fn timeout(&self, duration: Duration) -> tokenkit_core::Timeout {
        match tokenkit_core::Deadline::after(duration) {
            Ok(deadline) => tokenkit_core::Timeout::Deadline(deadline),
            Err(_) => tokenkit_core::Timeout::Other(self.sleep(duration)),
        }
    }
}

/// A runtime-agnostic [`Spawn`]: one process-wide executor thread (`tokenkit-isahc`), started
/// on first use, that drives refreshes nobody else polls (background refreshes, and refreshes
/// whose callers all went away).
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadSpawn;

fn pool() -> Result<&'static ThreadPool, SpawnError> {
    static POOL: OnceLock<Result<ThreadPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        ThreadPool::builder()
            .pool_size(1)
            .name_prefix("tokenkit-isahc")
            .create()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| SpawnError(e.clone()))
}

impl Spawn for ThreadSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), SpawnError> {
        pool()?.spawn_ok(task);
        Ok(())
    }
}

/// The system clock, [`TimerSleep`] and [`ThreadSpawn`].
pub fn runtime() -> Runtime {
    Runtime::new().with_sleep(TimerSleep).with_spawn(ThreadSpawn)
}

/// A [`ClientBuilder`] with a default [`IsahcTransport`] and the runtime-agnostic hooks.
pub fn builder(base_url: impl Into<String>) -> Result<ClientBuilder, Error> {
    Ok(with_transport(base_url, IsahcTransport::new()?))
}

/// A [`ClientBuilder`] over your own [`IsahcTransport`].
pub fn with_transport(base_url: impl Into<String>, transport: IsahcTransport) -> ClientBuilder {
    Client::builder(base_url).transport(transport).runtime(runtime())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_refused_is_a_connect_error_without_any_runtime() {
        let t = IsahcTransport::new().unwrap();
        let req = http::Request::get("http://127.0.0.1:9/")
            .body(Bytes::new())
            .unwrap();
        let err = futures_executor::block_on(t.send(req)).unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Connect);
    }

    #[test]
    fn thread_spawn_runs_tasks_without_any_runtime() {
        let (tx, rx) = std::sync::mpsc::channel();
        ThreadSpawn
            .spawn(Box::pin(async move {
                TimerSleep.sleep(Duration::from_millis(1)).await;
                tx.send(std::thread::current().name().map(str::to_owned)).unwrap();
            }))
            .unwrap();
        let name = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert!(name.starts_with("tokenkit-isahc"), "{name}");
    }

    #[test]
    fn an_endless_sleep_is_pending_not_a_panic() {
        let mut sleep = TimerSleep.sleep(Duration::MAX);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
    }

    #[test]
    fn timer_sleep_needs_no_runtime() {
        futures_executor::block_on(TimerSleep.sleep(Duration::from_millis(5)));
    }
}
