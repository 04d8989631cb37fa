//! A lean loopback API server for the benchmarks: hyper http1 on its own OS thread and its own
//! single-threaded tokio runtime, so the client's runtime never runs server work (the two
//! still share the machine's cores). It checks bearer tokens against the currently issued one,
//! issues tokens, logs nothing per request, and counts token and refresh calls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Shared server state.
#[derive(Default)]
pub(crate) struct State {
    /// Tokens issued: token -> user. Revoked tokens are removed.
    tokens: Mutex<HashMap<String, String>>,
    /// Refresh tokens: refresh -> user.
    refresh: Mutex<HashMap<String, String>>,
    next: AtomicU64,
    /// Calls to `/token` (provider mode).
    pub(crate) token_calls: AtomicU64,
    /// Calls to `/refresh` (session mode).
    pub(crate) refresh_calls: AtomicU64,
    /// Token lifetime reported, seconds.
    pub(crate) lifetime: AtomicU64,
}

impl State {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues an access token for `user`.
    pub(crate) fn issue(&self, user: &str) -> String {
        let token = format!("tok{:08}", self.next.fetch_add(1, Ordering::Relaxed));
        Self::lock(&self.tokens).insert(token.clone(), user.to_owned());
        token
    }

    fn issue_refresh(&self, user: &str) -> String {
        let token = format!("ref{:08}", self.next.fetch_add(1, Ordering::Relaxed));
        Self::lock(&self.refresh).insert(token.clone(), user.to_owned());
        token
    }

    /// Revokes every access token issued so far.
    pub(crate) fn revoke_all(&self) {
        Self::lock(&self.tokens).clear();
    }

    /// Logs a user in directly (the benchmark's setup), returning (access, refresh).
    pub(crate) fn login(&self, user: &str) -> (String, String) {
        (self.issue(user), self.issue_refresh(user))
    }

    fn user_of(&self, token: &str) -> Option<String> {
        Self::lock(&self.tokens).get(token).cloned()
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let auth = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let lifetime = state.lifetime.load(Ordering::Relaxed);
    Ok(match path.as_str() {
        "/token" => {
            state.token_calls.fetch_add(1, Ordering::Relaxed);
            let token = state.issue("service");
            json(
                StatusCode::OK,
                format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{lifetime}}}"#),
            )
        }
        "/refresh" => {
            state.refresh_calls.fetch_add(1, Ordering::Relaxed);
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let presented = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["refreshToken"].as_str().map(str::to_owned));
            let user = presented.and_then(|r| State::lock(&state.refresh).remove(&r));
            match user {
                Some(user) => {
                    let (access, refresh) = state.login(&user);
                    json(
                        StatusCode::OK,
                        format!(
                            r#"{{"access_token":"{access}","refresh_token":"{refresh}","expires_in":{lifetime}}}"#
                        ),
                    )
                }
                None => json(
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"invalid_grant"}"#.to_owned(),
                ),
            }
        }
        _ => match auth.as_deref().and_then(|t| state.user_of(t)) {
            Some(user) => json(StatusCode::OK, format!(r#"{{"user":"{user}"}}"#)),
            None => json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid_token"}"#.to_owned(),
            ),
        },
    })
}

/// A running server; stops (closing every connection) when dropped.
pub(crate) struct Server {
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// Its state.
    pub(crate) state: Arc<State>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Server {
    /// Starts the server on its own thread.
    pub(crate) fn start(lifetime_secs: u64) -> std::io::Result<Self> {
        let state = Arc::new(State::default());
        state.lifetime.store(lifetime_secs, Ordering::Relaxed);
        // A deep accept backlog: bursts of thousands of connects must queue, not be refused.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
        let addr = socket.local_addr()?;
        let served = Arc::clone(&state);
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                // Client and server each on a core of their own (when there are two).
                crate::pin_to_core(1);
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => return eprintln!("server runtime: {err}"),
                };
                runtime.block_on(async move {
                    let Ok(listener) = socket.listen(16_384) else {
                        return;
                    };
                    loop {
                        let accepted = tokio::select! {
                            accepted = listener.accept() => accepted,
                            () = stopped.notified() => return,
                        };
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let state = Arc::clone(&served);
                        tokio::spawn(async move {
                            let service = service_fn(move |req| handle(Arc::clone(&state), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })?;
        Ok(Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://addr`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
