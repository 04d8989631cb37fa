//! The test auth server.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::json;
use tokenkit_core::{Clock, SystemClock};

/// A fault the token endpoint (or a resource) produces instead of its normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and an OAuth-style error body.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer 200 with this JSON body (missing fields, bad lifetimes, CR/LF in tokens…).
    Json(serde_json::Value),
}

/// How the protected resources under `/api/` behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMode {
    /// Valid, unexpired, unrevoked bearer tokens get 200; anything else 401.
    Normal,
    /// Every request gets 401.
    AlwaysUnauthorized,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// All request headers.
    pub headers: HeaderMap,
}

struct Issued {
    expires_at: SystemTime,
    revoked: bool,
    id: u64,
}

struct State_ {
    clock: Arc<dyn Clock>,
    token_lifetime: Mutex<Duration>,
    token_faults: Mutex<VecDeque<Fault>>,
    resource_faults: Mutex<VecDeque<Fault>>,
    resource_mode: Mutex<ResourceMode>,
    issued: Mutex<HashMap<String, Issued>>,
    log: Mutex<Vec<LoggedRequest>>,
    next_id: AtomicU64,
    salt: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running auth server; stops when dropped.
pub struct AuthServer {
    addr: SocketAddr,
    state: Arc<State_>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer").field("addr", &self.addr).finish()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthServer {
    /// Starts a server on the system clock.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Starts a server whose notion of expiry follows `clock` (share a `ManualClock` with the
    /// client under test).
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State_ {
            clock,
            token_lifetime: Mutex::new(Duration::from_secs(3600)),
            token_faults: Mutex::new(VecDeque::new()),
            resource_faults: Mutex::new(VecDeque::new()),
            resource_mode: Mutex::new(ResourceMode::Normal),
            issued: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            salt: u64::from(addr.port()).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/{*rest}", any(resource))
            .route("/public/{*rest}", any(public))
            .layer(middleware::from_fn_with_state(Arc::clone(&state), log_request))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("auth server stopped: {err}");
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.url())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the lifetime (`expires_in`) of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.token_lifetime) = lifetime;
    }

    /// Makes the next `n` token requests fail with `fault`.
    pub fn fail_next_token_requests(&self, n: usize, fault: Fault) {
        let mut faults = lock(&self.state.token_faults);
        faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Makes the next `n` protected-resource requests fail with `fault`.
    pub fn fail_next_resource_requests(&self, n: usize, fault: Fault) {
        let mut faults = lock(&self.state.resource_faults);
        faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Removes pending faults.
    pub fn clear_faults(&self) {
        lock(&self.state.token_faults).clear();
        lock(&self.state.resource_faults).clear();
    }

    /// Sets how protected resources answer.
    pub fn set_resource_mode(&self, mode: ResourceMode) {
        *lock(&self.state.resource_mode) = mode;
    }

    /// Revokes every token issued so far (they get 401 before their expiry).
    pub fn revoke_all(&self) {
        for issued in lock(&self.state.issued).values_mut() {
            issued.revoked = true;
        }
    }

    /// Every request received so far.
    pub fn log(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        lock(&self.state.log).clear();
    }

    /// How many requests hit `path`.
    pub fn count(&self, path: &str) -> usize {
        lock(&self.state.log).iter().filter(|r| r.path == path).count()
    }

    /// How many token requests were received (including failed ones).
    pub fn token_requests(&self) -> usize {
        self.count("/oauth/token")
    }

    /// How many tokens were issued.
    pub fn tokens_issued(&self) -> u64 {
        self.state.next_id.load(Ordering::SeqCst) - 1
    }
}

async fn log_request(State(state): State<Arc<State_>>, request: Request, next: Next) -> Response {
    let entry = LoggedRequest {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        authorization: request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers: request.headers().clone(),
    };
    lock(&state.log).push(entry);
    next.run(request).await
}

/// Applies a fault. `Some(response)` replaces the normal answer.
async fn apply(fault: Option<Fault>) -> Option<Response> {
    match fault? {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(
                (
                    status,
                    Json(json!({"error": "injected_fault", "error_description": format!("injected {code}")})),
                )
                    .into_response(),
            )
        }
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Fault::Garbage => Some((StatusCode::OK, "<html>definitely not json").into_response()),
        Fault::Json(body) => Some((StatusCode::OK, Json(body)).into_response()),
    }
}

async fn token(State(state): State<Arc<State_>>) -> Response {
    let fault = lock(&state.token_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    let value = format!(
        "tk{id:06}x{:016x}",
        state.salt ^ id.wrapping_mul(0xff51_afd7_ed55_8ccd)
    );
    let lifetime = *lock(&state.token_lifetime);
    let issued = Issued {
        expires_at: state.clock.now() + lifetime,
        revoked: false,
        id,
    };
    lock(&state.issued).insert(value.clone(), issued);
    Json(json!({
        "access_token": value,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
    }))
    .into_response()
}

async fn resource(
    State(state): State<Arc<State_>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = lock(&state.resource_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    let unauthorized = |why: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer error=\"invalid_token\"")],
            Json(json!({"error": "invalid_token", "error_description": why})),
        )
            .into_response()
    };
    if *lock(&state.resource_mode) == ResourceMode::AlwaysUnauthorized {
        return unauthorized("this server rejects everything");
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized("missing bearer token");
    };
    let token_id = {
        let issued = lock(&state.issued);
        match issued.get(token) {
            None => return unauthorized("unknown token"),
            Some(t) if t.revoked => return unauthorized("revoked token"),
            Some(t) if state.clock.now() >= t.expires_at => return unauthorized("expired token"),
            Some(t) => t.id,
        }
    };
    Json(json!({
        "ok": true,
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "token_id": token_id,
        "content_type": headers.get("content-type").and_then(|v| v.to_str().ok()),
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

async fn public(headers: HeaderMap) -> Response {
    Json(json!({"authorization_present": headers.contains_key("authorization")})).into_response()
}
