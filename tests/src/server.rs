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
    /// Answer with this status and a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// Start a 200 response, then break the connection in the middle of its body.
    Reset,
    /// Answer with this status and an OAuth error body `{"error": code}`.
    OAuthError(u16, &'static str),
}

/// How the protected resources under `/api/` behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMode {
    /// Valid, unexpired, unrevoked bearer tokens get 200; anything else 401.
    Normal,
    /// Every request gets 401.
    AlwaysUnauthorized,
    /// Every request gets 401 with `WWW-Authenticate: Bearer error="insufficient_scope",
    /// scope="admin"` (a valid token, not enough rights: a new token cannot help).
    InsufficientScope,
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
    /// The request body.
    pub body: Bytes,
}

impl LoggedRequest {
    /// The body parsed as JSON, or as a form when it is not JSON.
    pub fn body_fields(&self) -> serde_json::Value {
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            return json;
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&self.body).unwrap_or_default();
        serde_json::Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        )
    }
}

pub(crate) struct Issued {
    pub(crate) expires_at: SystemTime,
    pub(crate) revoked: bool,
    pub(crate) id: u64,
    pub(crate) user: String,
    /// What the token was asked for (`scope`, `audience`, `resource` of the token request),
    /// echoed by the resources as `grant`.
    pub(crate) grant: serde_json::Value,
}

/// A refresh token's state: rotation marks it used; presenting a used one is reuse.
pub(crate) struct RefreshState {
    pub(crate) user: String,
    pub(crate) family: u64,
    pub(crate) used: bool,
    pub(crate) revoked: bool,
}

pub(crate) struct State_ {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) token_lifetime: Mutex<Duration>,
    pub(crate) token_faults: Mutex<VecDeque<Fault>>,
    pub(crate) resource_faults: Mutex<VecDeque<Fault>>,
    pub(crate) resource_mode: Mutex<ResourceMode>,
    pub(crate) auth_faults: Mutex<VecDeque<Fault>>,
    pub(crate) login_faults: Mutex<VecDeque<Fault>>,
    pub(crate) logout_faults: Mutex<VecDeque<Fault>>,
    pub(crate) refresh_tokens: Mutex<HashMap<String, RefreshState>>,
    pub(crate) refresh_lifetime: Mutex<Option<Duration>>,
    pub(crate) omit_refresh_token_on_refresh: Mutex<bool>,
    pub(crate) omit_user_on_refresh: Mutex<bool>,
    pub(crate) reuse_detected: AtomicU64,
    pub(crate) oauth_token_type: Mutex<String>,
    pub(crate) oauth_omit_expires_in: Mutex<bool>,
    pub(crate) echo_secrets: Mutex<bool>,
    /// Public keys of clients authenticating with `private_key_jwt`, by client id.
    pub(crate) client_keys: Mutex<HashMap<String, Vec<jsonwebtoken::jwk::Jwk>>>,
    /// Every client assertion's `jti` seen (a repeat is a replay: `invalid_client`), in order.
    pub(crate) assertion_jtis: Mutex<Vec<String>>,
    /// What the discovery documents say (see [`AuthServer::set_discovery`]).
    pub(crate) discovery: Mutex<DiscoveryDoc>,
    pub(crate) issued: Mutex<HashMap<String, Issued>>,
    pub(crate) log: Mutex<Vec<LoggedRequest>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) salt: u64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running auth server; stops when dropped.
pub struct AuthServer {
    addr: SocketAddr,
    state: Arc<State_>,
    task: tokio::task::JoinHandle<()>,
    /// Set when the server runs on its own runtime ([`AuthServer::start_in_thread`]).
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer").field("addr", &self.addr).finish()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl AuthServer {
    /// Starts a server on its own two-thread tokio runtime, so it can serve clients driven by
    /// any executor (or none). Works inside and outside an async context.
    pub fn start_in_thread(clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let start = runtime.spawn(Self::start_with_clock(clock));
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(start.await);
        });
        let mut server = rx
            .recv()
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)??;
        server.runtime = Some(runtime);
        Ok(server)
    }

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
            auth_faults: Mutex::new(VecDeque::new()),
            login_faults: Mutex::new(VecDeque::new()),
            logout_faults: Mutex::new(VecDeque::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            refresh_lifetime: Mutex::new(None),
            omit_refresh_token_on_refresh: Mutex::new(false),
            omit_user_on_refresh: Mutex::new(false),
            reuse_detected: AtomicU64::new(0),
            oauth_token_type: Mutex::new("Bearer".to_owned()),
            oauth_omit_expires_in: Mutex::new(false),
            echo_secrets: Mutex::new(false),
            client_keys: Mutex::new(HashMap::new()),
            assertion_jtis: Mutex::new(Vec::new()),
            discovery: Mutex::new(DiscoveryDoc::default()),
            issued: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            salt: u64::from(addr.port()).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        });
        let task = serve(listener, Arc::clone(&state));
        Ok(Self {
            addr,
            state,
            task,
            runtime: None,
        })
    }

    /// Takes the server off the network: the listener and every open connection close (as
    /// when a process dies). Only for servers started with [`start_in_thread`](Self::start_in_thread).
    pub fn go_away(&mut self) {
        self.task.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Brings a server taken away by [`go_away`](Self::go_away) back on the same port, with
    /// all its state (issued tokens, sessions, faults).
    pub fn come_back(&mut self) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (addr, state) = (self.addr, Arc::clone(&self.state));
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let bound = tokio::net::TcpListener::bind(addr).await.map(|l| serve(l, state));
            let _ = tx.send(bound);
        });
        self.task = rx.recv().map_err(std::io::Error::other)??;
        self.runtime = Some(runtime);
        Ok(())
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

    /// Makes the next `n` refresh requests (JSON or form) fail with `fault`.
    pub fn fail_next_refresh_requests(&self, n: usize, fault: Fault) {
        lock(&self.state.auth_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// Makes the next `n` login requests (JSON or form) fail with `fault`.
    pub fn fail_next_login_requests(&self, n: usize, fault: Fault) {
        lock(&self.state.login_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// Makes the next `n` logout requests fail with `fault`.
    pub fn fail_next_logout_requests(&self, n: usize, fault: Fault) {
        lock(&self.state.logout_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// Sets the refresh-token lifetime reported as `refresh_expires_in` (none by default).
    pub fn set_refresh_lifetime(&self, lifetime: Option<Duration>) {
        *lock(&self.state.refresh_lifetime) = lifetime;
    }

    /// Makes refresh responses omit the refresh token (the client must keep its old one).
    pub fn omit_refresh_token_on_refresh(&self, omit: bool) {
        *lock(&self.state.omit_refresh_token_on_refresh) = omit;
    }

    /// Makes refresh responses omit the user object (the session keeps the one it has).
    pub fn omit_user_on_refresh(&self, omit: bool) {
        *lock(&self.state.omit_user_on_refresh) = omit;
    }

    /// Changes what the discovery documents say.
    pub fn set_discovery(&self, doc: DiscoveryDoc) {
        *lock(&self.state.discovery) = doc;
    }

    /// The `token_type` the OAuth endpoint reports (default `Bearer`).
    pub fn set_oauth_token_type(&self, token_type: &str) {
        *lock(&self.state.oauth_token_type) = token_type.to_owned();
    }

    /// Makes the OAuth endpoint omit `expires_in` (it is optional in RFC 6749).
    pub fn omit_oauth_expires_in(&self, omit: bool) {
        *lock(&self.state.oauth_omit_expires_in) = omit;
    }

    /// The OAuth token endpoint's URL.
    pub fn oauth_token_url(&self) -> String {
        format!("{}/oauth2/token", self.url())
    }

    /// The OAuth revocation endpoint's URL.
    pub fn oauth_revocation_url(&self) -> String {
        format!("{}/oauth2/revoke", self.url())
    }

    /// How many times a used refresh token was presented again.
    pub fn reuse_detected(&self) -> u64 {
        self.state.reuse_detected.load(Ordering::SeqCst)
    }

    /// Removes pending faults.
    pub fn clear_faults(&self) {
        lock(&self.state.token_faults).clear();
        lock(&self.state.resource_faults).clear();
        lock(&self.state.auth_faults).clear();
        lock(&self.state.login_faults).clear();
        lock(&self.state.logout_faults).clear();
    }

    /// Sets how protected resources answer.
    pub fn set_resource_mode(&self, mode: ResourceMode) {
        *lock(&self.state.resource_mode) = mode;
    }

    /// Makes the OAuth token endpoint a hostile one: its error descriptions echo the secrets
    /// the request carried (the refresh token, the client secret, as Spring Security's did),
    /// with a CR/LF log-injection attempt, control characters and 10 kB of padding.
    pub fn echo_secrets_in_errors(&self, echo: bool) {
        *lock(&self.state.echo_secrets) = echo;
    }

    /// Revokes every refresh token issued so far (refreshes get `invalid_grant`).
    pub fn revoke_refresh_tokens(&self) {
        for token in lock(&self.state.refresh_tokens).values_mut() {
            token.revoked = true;
        }
    }

    /// Registers a public key (a JWK, with its `alg`) of `client_id` for `private_key_jwt`
    /// (RFC 7523): its assertions are verified with it. `client_secret_jwt` needs no
    /// registration (the client's secret from [`crate::oauth::CLIENTS`] verifies it).
    pub fn register_client_key(&self, client_id: &str, public_jwk: &str) {
        let jwk: jsonwebtoken::jwk::Jwk = match serde_json::from_str(public_jwk) {
            Ok(jwk) => jwk,
            Err(e) => panic!("not a JWK: {e}"),
        };
        lock(&self.state.client_keys)
            .entry(client_id.to_owned())
            .or_default()
            .push(jwk);
    }

    /// The `jti` of every client assertion the token endpoint received, in order (replays
    /// included).
    pub fn assertion_jtis(&self) -> Vec<String> {
        lock(&self.state.assertion_jtis).clone()
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

/// Serves the routes on `listener` in a task of the current runtime.
fn serve(listener: tokio::net::TcpListener, state: Arc<State_>) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/auth/login", post(login_json))
        .route("/auth/refresh", post(refresh_json))
        .route("/auth/logout", post(logout))
        .route("/form-auth/login", post(login_form))
        .route("/form-auth/refresh", post(refresh_form))
        .route("/form-auth/logout", post(logout))
        .route("/oauth2/token", post(crate::oauth::token_endpoint))
        .route("/oauth2/revoke", post(crate::oauth::revocation_endpoint))
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server/{*issuer_path}",
            axum::routing::get(authorization_server_metadata),
        )
        .route("/api/{*rest}", any(resource))
        .route("/public/{*rest}", any(public))
        .route("/redirect/{status}", any(redirect))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), log_request))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("auth server stopped: {err}");
        }
    })
}

async fn log_request(State(state): State<Arc<State_>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let request = Request::from_parts(parts, axum::body::Body::from(body.clone()));
    let entry = LoggedRequest {
        body,
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
pub(crate) async fn apply(fault: Option<Fault>) -> Option<Response> {
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
        Fault::Reset => {
            // The first chunk is flushed, then the body fails: hyper aborts the connection with
            // the response half sent.
            let chunks = futures_util::stream::unfold(0u8, |step| async move {
                match step {
                    0 => Some((Ok(Bytes::from_static(b"{\"access_token\":\"partial")), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((
                            Err(std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "injected reset",
                            )),
                            2,
                        ))
                    }
                    _ => None,
                }
            });
            let body = axum::body::Body::from_stream(chunks);
            Some((StatusCode::OK, [("content-type", "application/json")], body).into_response())
        }
        Fault::OAuthError(code, error) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            Some(
                (
                    status,
                    Json(json!({"error": error, "error_description": "injected"})),
                )
                    .into_response(),
            )
        }
        Fault::RetryAfter(code, after) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Some(
                (
                    status,
                    [("retry-after", after)],
                    Json(json!({"error": "slow_down"})),
                )
                    .into_response(),
            )
        }
    }
}

impl State_ {
    fn secret(&self, kind: &str, id: u64) -> String {
        format!(
            "{kind}{id:06}x{:016x}",
            self.salt ^ id.wrapping_mul(0xff51_afd7_ed55_8ccd)
        )
    }

    /// Issues an access token for `user`; returns (token, id, lifetime).
    pub(crate) fn issue_access(&self, user: &str) -> (String, u64, Duration) {
        self.issue_access_for(user, serde_json::Value::Null)
    }

    /// An access token for `user`, asked for with `grant` (scope, audience, resource).
    pub(crate) fn issue_access_for(&self, user: &str, grant: serde_json::Value) -> (String, u64, Duration) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let value = self.secret("tk", id);
        let lifetime = *lock(&self.token_lifetime);
        let issued = Issued {
            expires_at: self.clock.now() + lifetime,
            revoked: false,
            id,
            user: user.to_owned(),
            grant,
        };
        lock(&self.issued).insert(value.clone(), issued);
        (value, id, lifetime)
    }

    pub(crate) fn issue_refresh(&self, user: &str, family: Option<u64>) -> String {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let value = self.secret("rf", id);
        let state = RefreshState {
            user: user.to_owned(),
            family: family.unwrap_or(id),
            used: false,
            revoked: false,
        };
        lock(&self.refresh_tokens).insert(value.clone(), state);
        value
    }
}

async fn token(State(state): State<Arc<State_>>) -> Response {
    let fault = lock(&state.token_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    let (value, _, lifetime) = state.issue_access("service");
    Json(json!({
        "access_token": value,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
    }))
    .into_response()
}

/// The users the login endpoints accept.
pub const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

pub(crate) fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

/// Reads a JSON or form body into a map of strings.
pub(crate) fn fields(body: &Bytes) -> HashMap<String, String> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        return map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
            .collect();
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A token response in one of two styles: snake_case with `expires_in` (JSON endpoints) or
/// camelCase with an absolute `expiresAt` (form endpoints).
fn token_response(state: &State_, user: &str, refresh: Option<String>, camel: bool) -> Response {
    let (access, id, lifetime) = state.issue_access(user);
    let profile = json!({"name": user, "token_id": id});
    let refresh_lifetime = lock(&state.refresh_lifetime).map(|d| d.as_secs());
    let body = if camel {
        let expires_at = state.clock.now() + lifetime;
        let unix = expires_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({"accessToken": access, "refreshToken": refresh, "expiresAt": unix, "tokenType": "Bearer",
               "profile": profile, "refreshExpiresIn": refresh_lifetime})
    } else {
        json!({"access_token": access, "refresh_token": refresh, "expires_in": lifetime.as_secs(),
               "token_type": "Bearer", "user": profile, "refresh_expires_in": refresh_lifetime})
    };
    Json(body).into_response()
}

async fn do_login(state: &State_, body: &Bytes, camel: bool) -> Response {
    let fault = lock(&state.login_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    let fields = fields(body);
    let user = fields.get("username").map(String::as_str).unwrap_or_default();
    let password = fields.get("password").map(String::as_str).unwrap_or_default();
    if !USERS.iter().any(|(u, p)| *u == user && *p == password) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "unknown user or wrong password",
        );
    }
    let refresh = state.issue_refresh(user, None);
    token_response(state, user, Some(refresh), camel)
}

async fn do_refresh(state: &State_, body: &Bytes, field: &str, camel: bool) -> Response {
    let fault = lock(&state.auth_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    let fields = fields(body);
    let Some(presented) = fields.get(field) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing refresh token",
        );
    };
    let omit = *lock(&state.omit_refresh_token_on_refresh);
    let (user, family) = {
        let mut tokens = lock(&state.refresh_tokens);
        let Some(current) = tokens.get_mut(presented) else {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", "unknown refresh token");
        };
        if current.revoked {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", "revoked refresh token");
        }
        if current.used {
            // Reuse of a rotated token: revoke the whole family, as real servers do.
            let family = current.family;
            for token in tokens.values_mut().filter(|t| t.family == family) {
                token.revoked = true;
            }
            state.reuse_detected.fetch_add(1, Ordering::SeqCst);
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "refresh token reuse detected",
            );
        }
        // Without rotation the presented token stays valid: the client presents it again.
        current.used = !omit;
        (current.user.clone(), current.family)
    };
    let refresh = (!omit).then(|| state.issue_refresh(&user, Some(family)));
    let mut response = token_response(state, &user, refresh, camel);
    if *lock(&state.omit_user_on_refresh) {
        let body = axum::body::to_bytes(std::mem::take(response.body_mut()), 64 * 1024)
            .await
            .unwrap_or_default();
        let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(fields) = json.as_object_mut() {
            fields.remove("user");
            fields.remove("profile");
        }
        return Json(json).into_response();
    }
    response
}

async fn login_json(State(state): State<Arc<State_>>, body: Bytes) -> Response {
    do_login(&state, &body, false).await
}

async fn login_form(State(state): State<Arc<State_>>, body: Bytes) -> Response {
    do_login(&state, &body, true).await
}

async fn refresh_json(State(state): State<Arc<State_>>, body: Bytes) -> Response {
    do_refresh(&state, &body, "refreshToken", false).await
}

async fn refresh_form(State(state): State<Arc<State_>>, body: Bytes) -> Response {
    do_refresh(&state, &body, "refresh_token", true).await
}

async fn logout(State(state): State<Arc<State_>>, body: Bytes) -> Response {
    let fault = lock(&state.logout_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    for token in fields(&body).values() {
        if let Some(t) = lock(&state.refresh_tokens).get_mut(token) {
            t.revoked = true;
        }
    }
    Json(json!({"ok": true})).into_response()
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
    if *lock(&state.resource_mode) == ResourceMode::InsufficientScope {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                "Bearer realm=\"api\", error=\"insufficient_scope\", error_description=\"needs admin\", scope=\"admin\"",
            )],
            Json(json!({"error": "insufficient_scope"})),
        )
            .into_response();
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized("missing bearer token");
    };
    let (token_id, user, grant) = {
        let issued = lock(&state.issued);
        match issued.get(token) {
            None => return unauthorized("unknown token"),
            Some(t) if t.revoked => return unauthorized("revoked token"),
            Some(t) if state.clock.now() >= t.expires_at => return unauthorized("expired token"),
            Some(t) => (t.id, t.user.clone(), t.grant.clone()),
        }
    };
    Json(json!({
        "ok": true,
        "user": user,
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "token_id": token_id,
        "grant": grant,
        "content_type": headers.get("content-type").and_then(|v| v.to_str().ok()),
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// `ANY /redirect/{status}?to=<url>`: answers `status` (301, 302, 303, 307, 308) with
/// `Location: <url>`, to test that no credential follows a redirect.
async fn redirect(axum::extract::Path(status): axum::extract::Path<u16>, uri: Uri) -> Response {
    let to = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<HashMap<String, String>>(q).ok())
        .and_then(|mut q| q.remove("to"))
        .unwrap_or_default();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    (status, [("location", to)]).into_response()
}

async fn public(headers: HeaderMap) -> Response {
    Json(json!({"authorization_present": headers.contains_key("authorization")})).into_response()
}

/// What the test server's discovery documents say: OpenID Connect's at
/// `/.well-known/openid-configuration` (issuer: the server's URL) and RFC 8414's at
/// `/.well-known/oauth-authorization-server/tenants/<name>` (issuer: the server's URL and
/// `/tenants/<name>`).
/// Endpoints are the server's `/oauth2/token` and `/oauth2/revoke`.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryDoc {
    /// The issuer the document names instead of the right one.
    pub wrong_issuer: Option<String>,
    /// `token_endpoint_auth_methods_supported` (absent when empty).
    pub auth_methods: Vec<String>,
    /// Leaves `revocation_endpoint` out.
    pub no_revocation: bool,
    /// The token endpoint the document names instead of the server's.
    pub token_endpoint: Option<String>,
}

impl DiscoveryDoc {
    /// The defaults: the right issuer, both endpoints, no auth methods listed.
    pub fn new() -> Self {
        Self::default()
    }
}

fn discovery_document(state: &State_, headers: &HeaderMap, issuer_path: &str) -> Response {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let origin = format!("http://{host}");
    let doc = lock(&state.discovery).clone();
    let issuer = doc
        .wrong_issuer
        .clone()
        .unwrap_or_else(|| format!("{origin}{issuer_path}"));
    let mut body = json!({
        "issuer": issuer,
        "token_endpoint": doc.token_endpoint.clone().unwrap_or_else(|| format!("{origin}/oauth2/token")),
        "authorization_endpoint": format!("{origin}/authorize"),
        "jwks_uri": format!("{origin}/jwks"),
        "response_types_supported": ["code"],
        "x-extension": {"anything": true},
    });
    if !doc.no_revocation {
        body["revocation_endpoint"] = json!(format!("{origin}/oauth2/revoke"));
    }
    if !doc.auth_methods.is_empty() {
        body["token_endpoint_auth_methods_supported"] = json!(doc.auth_methods);
    }
    Json(body).into_response()
}

async fn openid_configuration(State(state): State<Arc<State_>>, headers: HeaderMap) -> Response {
    discovery_document(&state, &headers, "")
}

async fn authorization_server_metadata(
    State(state): State<Arc<State_>>,
    axum::extract::Path(issuer_path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    // Issuers with a path live under /tenants/ (anything else has no document).
    if !issuer_path.starts_with("tenants/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    discovery_document(&state, &headers, &format!("/{issuer_path}"))
}
