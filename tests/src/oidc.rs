//! An in-process OpenID provider for fast, deterministic sign-in tests: discovery, an
//! authorization endpoint that signs the configured user in at once (no login page) and
//! redirects back with a code, a token endpoint (authorization code with PKCE S256, refresh
//! token with rotation), a JWKS with rotating ES256 keys, revocation and end-session. Faults
//! make it misbehave on purpose (a wrong state, a bad ID token of every kind).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::Digest;
use tokenkit_core::Clock;

/// The client registered with the provider: (id, secret).
pub const OIDC_CLIENT: (&str, &str) = ("web-app", "web-secret");

/// What the provider does wrong on purpose (one fault per sign-in, consumed by the token
/// endpoint or, for [`OidcFault::WrongState`] and [`OidcFault::Denied`], by the authorization endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OidcFault {
    /// Redirects back with another state.
    WrongState,
    /// Redirects back with `error=access_denied`.
    Denied,
    /// An unsigned ID token (`alg: none`).
    AlgNone,
    /// An ID token signed with HMAC, keyed with the public key (the key-confusion attack).
    HmacWithPublicKey,
    /// An ID token for another audience.
    WrongAudience,
    /// An ID token from another issuer.
    WrongIssuer,
    /// An ID token with another nonce.
    WrongNonce,
    /// An ID token that expired an hour ago.
    Expired,
    /// An ID token signed with a key the JWKS does not publish.
    UnpublishedKey,
    /// No ID token in the token response.
    NoIdToken,
    /// Redirects back naming another issuer (`iss`, RFC 9207).
    WrongIssParam,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    used: bool,
}

struct SigningKey {
    kid: String,
    key: EncodingKey,
    jwk: Jwk,
}

/// A fresh ES256 key named `kid`; `None` if the crypto library cannot make one.
fn new_key(kid: &str) -> Option<SigningKey> {
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .ok()?;
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).ok()?;
    jwk.common.key_id = Some(kid.to_owned());
    Some(SigningKey {
        kid: kid.to_owned(),
        key,
        jwk,
    })
}

struct ProviderState {
    issuer: String,
    clock: Arc<dyn Clock>,
    user: Mutex<String>,
    keys: Mutex<Vec<SigningKey>>,
    grants: Mutex<HashMap<String, Grant>>,
    refresh_tokens: Mutex<HashMap<String, (String, bool)>>,
    faults: Mutex<Vec<OidcFault>>,
    counts: Mutex<HashMap<String, usize>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An in-process OpenID provider on 127.0.0.1 (see the module docs).
pub struct OidcProvider {
    state: Arc<ProviderState>,
    _task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.state.issuer)
            .finish()
    }
}

impl OidcProvider {
    /// Starts a provider whose times follow `clock`, signing `alice` in.
    pub async fn start(clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(ProviderState {
            issuer,
            clock,
            user: Mutex::new("alice".to_owned()),
            keys: Mutex::new(vec![
                new_key("key-1").ok_or_else(|| std::io::Error::other("no signing key"))?
            ]),
            grants: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .route("/revoke", post(revoke))
            .route("/end-session", get(end_session))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("OpenID provider stopped: {err}");
            }
        });
        Ok(Self { state, _task: task })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    /// Who the next sign-ins are.
    pub fn sign_in_as(&self, user: &str) {
        *lock(&self.state.user) = user.to_owned();
    }

    /// Adds a fault for the next sign-in.
    pub fn fault(&self, fault: OidcFault) {
        lock(&self.state.faults).push(fault);
    }

    /// Rotates the signing key: a new key (published in the JWKS) signs from now on; the old
    /// one stays published.
    pub fn rotate_key(&self) {
        let n = self.state.next.fetch_add(1, Ordering::SeqCst);
        if let Some(key) = new_key(&format!("key-r{n}")) {
            lock(&self.state.keys).push(key);
        }
    }

    /// How many requests a path received.
    pub fn count(&self, path: &str) -> usize {
        lock(&self.state.counts).get(path).copied().unwrap_or(0)
    }
}

fn count(state: &ProviderState, path: &str) {
    *lock(&state.counts).entry(path.to_owned()).or_default() += 1;
}

fn take_fault(state: &ProviderState, wanted: &[OidcFault]) -> Option<OidcFault> {
    let mut faults = lock(&state.faults);
    let at = faults.iter().position(|f| wanted.contains(f))?;
    Some(faults.remove(at))
}

async fn discovery(State(state): State<Arc<ProviderState>>) -> Response {
    count(&state, "/.well-known/openid-configuration");
    let i = &state.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "revocation_endpoint": format!("{i}/revoke"),
        "end_session_endpoint": format!("{i}/end-session"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
    .into_response()
}

async fn authorize(
    State(state): State<Arc<ProviderState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    count(&state, "/authorize");
    let get = |k: &str| query.get(k).cloned().unwrap_or_default();
    if get("client_id") != OIDC_CLIENT.0
        || get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || !get("scope").split(' ').any(|s| s == "openid")
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let redirect = get("redirect_uri");
    let mut state_param = get("state");
    let mut iss = state.issuer.clone();
    if take_fault(&state, &[OidcFault::WrongIssParam]).is_some() {
        iss = "http://evil.example".to_owned();
    }
    if let Some(fault) = take_fault(&state, &[OidcFault::WrongState, OidcFault::Denied]) {
        if fault == OidcFault::Denied {
            let to = format!(
                "{redirect}?error=access_denied&error_description=the+user+said+no&state={state_param}"
            );
            return Redirect::to(&to).into_response();
        }
        state_param = "not-the-state".to_owned();
    }
    let code = format!("code-{}", state.next.fetch_add(1, Ordering::SeqCst));
    lock(&state.grants).insert(
        code.clone(),
        Grant {
            client_id: get("client_id"),
            redirect_uri: redirect.clone(),
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            used: false,
        },
    );
    let state_encoded: String = url::form_urlencoded::byte_serialize(state_param.as_bytes()).collect();
    let iss: String = url::form_urlencoded::byte_serialize(iss.as_bytes()).collect();
    Redirect::to(&format!("{redirect}?code={code}&state={state_encoded}&iss={iss}")).into_response()
}

fn oauth_error(code: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": code}))).into_response()
}

fn client_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let expected = format!("{}:{}", OIDC_CLIENT.0, OIDC_CLIENT.1);
    basic.as_deref() == Some(expected.as_str())
        || (form.get("client_id").map(String::as_str) == Some(OIDC_CLIENT.0)
            && form.get("client_secret").map(String::as_str) == Some(OIDC_CLIENT.1))
}

fn now_secs(state: &ProviderState) -> u64 {
    state
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn id_token(state: &ProviderState, user: &str, nonce: &str) -> Option<String> {
    let fault = take_fault(
        state,
        &[
            OidcFault::AlgNone,
            OidcFault::HmacWithPublicKey,
            OidcFault::WrongAudience,
            OidcFault::WrongIssuer,
            OidcFault::WrongNonce,
            OidcFault::Expired,
            OidcFault::UnpublishedKey,
            OidcFault::NoIdToken,
        ],
    );
    let now = now_secs(state);
    let mut claims = json!({
        "iss": state.issuer,
        "sub": format!("user-{user}"),
        "aud": OIDC_CLIENT.0,
        "exp": now + 300,
        "iat": now,
        "nonce": nonce,
        "name": user,
    });
    match fault {
        Some(OidcFault::NoIdToken) => return None,
        Some(OidcFault::WrongAudience) => claims["aud"] = json!("another-app"),
        Some(OidcFault::WrongIssuer) => claims["iss"] = json!("http://evil.example"),
        Some(OidcFault::WrongNonce) => claims["nonce"] = json!("not-the-nonce"),
        Some(OidcFault::Expired) => {
            claims["exp"] = json!(now.saturating_sub(3600));
            claims["iat"] = json!(now.saturating_sub(3900));
        }
        _ => {}
    }
    let keys = lock(&state.keys);
    let current = keys.last()?;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    match fault {
        Some(OidcFault::AlgNone) => {
            let header = json!({"alg": "none", "typ": "JWT", "kid": current.kid});
            return Some(format!("{}.{}.", b64(&header), b64(&claims)));
        }
        Some(OidcFault::HmacWithPublicKey) => {
            let public = serde_json::to_vec(&current.jwk).unwrap_or_default();
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(current.kid.clone());
            return jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&public)).ok();
        }
        Some(OidcFault::UnpublishedKey) => {
            let rogue = new_key("rogue")?;
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(rogue.kid.clone());
            return jsonwebtoken::encode(&header, &claims, &rogue.key).ok();
        }
        _ => {}
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(current.kid.clone());
    jsonwebtoken::encode(&header, &claims, &current.key).ok()
}

fn tokens(state: &ProviderState, user: &str, nonce: Option<&str>) -> Response {
    let n = state.next.fetch_add(1, Ordering::SeqCst);
    let refresh = format!("oidc-refresh-{n}");
    lock(&state.refresh_tokens).insert(refresh.clone(), (user.to_owned(), false));
    let mut body = json!({
        "access_token": format!("oidc-access-{n}-{user}"),
        "token_type": "Bearer",
        "expires_in": 300,
        "refresh_token": refresh,
    });
    if let Some(nonce) = nonce {
        if let Some(token) = id_token(state, user, nonce) {
            body["id_token"] = json!(token);
        }
    }
    Json(body).into_response()
}

async fn token(State(state): State<Arc<ProviderState>>, headers: HeaderMap, body: Bytes) -> Response {
    count(&state, "/token");
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !client_ok(&headers, &form) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let mut grants = lock(&state.grants);
            let Some(grant) = grants.get_mut(&code) else {
                return oauth_error("invalid_grant");
            };
            if grant.used {
                return oauth_error("invalid_grant");
            }
            grant.used = true;
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            if challenge != grant.challenge
                || form.get("redirect_uri") != Some(&grant.redirect_uri)
                || grant.client_id != OIDC_CLIENT.0
            {
                return oauth_error("invalid_grant");
            }
            let nonce = grant.nonce.clone();
            drop(grants);
            let user = lock(&state.user).clone();
            tokens(&state, &user, Some(&nonce))
        }
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let user = {
                let mut refresh = lock(&state.refresh_tokens);
                match refresh.get_mut(&presented) {
                    Some((user, used)) if !*used => {
                        *used = true;
                        user.clone()
                    }
                    _ => return oauth_error("invalid_grant"),
                }
            };
            tokens(&state, &user, None)
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}

async fn jwks(State(state): State<Arc<ProviderState>>) -> Response {
    count(&state, "/jwks");
    let keys = lock(&state.keys).iter().map(|k| k.jwk.clone()).collect();
    Json(JwkSet { keys }).into_response()
}

async fn revoke(State(state): State<Arc<ProviderState>>, body: Bytes) -> Response {
    count(&state, "/revoke");
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if let Some(token) = form.get("token") {
        if let Some((_, used)) = lock(&state.refresh_tokens).get_mut(token) {
            *used = true;
        }
    }
    StatusCode::OK.into_response()
}

async fn end_session(
    State(state): State<Arc<ProviderState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    count(&state, "/end-session");
    match query.get("post_logout_redirect_uri") {
        Some(to) if query.get("client_id").map(String::as_str) == Some(OIDC_CLIENT.0) => {
            Redirect::to(to).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "bad end-session request").into_response(),
    }
}

/// The ID token lifetime the provider issues (for tests that wait it out).
pub const ID_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
