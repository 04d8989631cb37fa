//! A standards-conformant OAuth 2.0 token endpoint (RFC 6749) and revocation endpoint
//! (RFC 7009) for the test server: form-encoded requests, client authentication by HTTP Basic
//! (with the RFC's form-encoding of id and secret) or in the body, the client-credentials,
//! password and refresh-token grants with rotation and reuse detection, RFC error bodies.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::json;

use crate::server::{apply, fields, lock, oauth_error, State_, USERS};

/// The registered clients: (id, secret).
pub const CLIENTS: &[(&str, &str)] = &[
    ("client-1", "secret-1"),
    ("id:with%special+chars and spaces", "sec:ret%+ value"),
];

/// The scope the server refuses (to test `invalid_scope`).
pub const FORBIDDEN_SCOPE: &str = "forbidden";

fn form_decode(part: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("v={part}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

/// The 401 `invalid_client` answer.
fn invalid_client() -> Response {
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    response.headers_mut().insert(
        "www-authenticate",
        axum::http::HeaderValue::from_static("Basic realm=\"token\""),
    );
    response
}

/// The `client_assertion_type` of RFC 7523.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client authenticating by assertion (RFC 7523 §3): a JWT signed with a registered key
/// (`private_key_jwt`) or with the client's secret (`client_secret_jwt`, HS256); `iss` and
/// `sub` the client id, `aud` this token endpoint, unexpired (no leeway), a `jti` never seen
/// before.
fn authenticate_assertion(
    state: &State_,
    headers: &HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> Option<String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER)
        || form.contains_key("client_secret")
    {
        return None;
    }
    let assertion = form.get("client_assertion")?;
    let header = jsonwebtoken::decode_header(assertion).ok()?;
    let unverified = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(assertion).ok()?;
    let client = unverified.claims.get("iss")?.as_str()?.to_owned();
    if form.get("client_id").is_some_and(|id| *id != client) {
        return None;
    }
    let keys: Vec<DecodingKey> = match header.alg {
        Algorithm::HS256 => {
            let secret = CLIENTS.iter().find(|(id, _)| *id == client)?.1;
            vec![DecodingKey::from_secret(secret.as_bytes())]
        }
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => {
            lock(&state.client_keys)
                .get(&client)?
                .iter()
                .filter(|jwk| header.kid.is_none() || jwk.common.key_id == header.kid)
                .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
                .collect()
        }
        _ => return None,
    };
    let host = headers.get("host")?.to_str().ok()?;
    let audience = format!("http://{host}/oauth2/token");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[client.as_str()]);
    validation.sub = Some(client.clone());
    validation.leeway = 0;
    validation.validate_exp = false; // checked below against the injected clock
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = keys
        .iter()
        .find_map(|key| jsonwebtoken::decode::<serde_json::Value>(assertion, key, &validation).ok())?
        .claims;
    let now = state
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    if claims.get("exp")?.as_u64()? <= now {
        return None;
    }
    let jti = claims.get("jti")?.as_str()?.to_owned();
    let mut seen = lock(&state.assertion_jtis);
    let replay = seen.contains(&jti);
    seen.push(jti);
    (!replay).then_some(client)
}

/// The client that authenticated (Basic, with form-encoded parts, in the body, or by
/// assertion).
fn authenticate(
    state: &State_,
    headers: &HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> Option<String> {
    if form.contains_key("client_assertion") {
        return authenticate_assertion(state, headers, form);
    }
    let (id, secret) = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(value) => {
            let encoded = value.strip_prefix("Basic ")?;
            let raw = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            let raw = String::from_utf8(raw).ok()?;
            let (id, secret) = raw.split_once(':')?;
            (form_decode(id)?, form_decode(secret)?)
        }
        None => (
            form.get("client_id").cloned()?,
            form.get("client_secret").cloned()?,
        ),
    };
    CLIENTS
        .iter()
        .any(|(i, s)| *i == id && *s == secret)
        .then_some(id)
}

fn token_response(
    state: &State_,
    user: &str,
    refresh: Option<String>,
    form: &std::collections::HashMap<String, String>,
) -> Response {
    let scope = form.get("scope").map(String::as_str);
    let grant = json!({
        "scope": scope,
        "audience": form.get("audience"),
        "resource": form.get("resource"),
    });
    let (access, _, lifetime) = state.issue_access_for(user, grant);
    let mut body = json!({
        "access_token": access,
        "token_type": *lock(&state.oauth_token_type),
    });
    if !*lock(&state.oauth_omit_expires_in) {
        body["expires_in"] = json!(lifetime.as_secs());
    }
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    (StatusCode::OK, [("cache-control", "no-store")], Json(body)).into_response()
}

/// `POST /oauth2/token`.
pub(crate) async fn token_endpoint(
    State(state): State<Arc<State_>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = lock(&state.token_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    // RFC 6749 §3.1/§3.2: parameters must not be sent more than once (RFC 8707's `resource`
    // may repeat).
    let mut seen = std::collections::HashSet::new();
    for (name, _) in url::form_urlencoded::parse(&body) {
        if name != "resource" && !seen.insert(name.clone()) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("parameter {name} included more than once"),
            );
        }
    }
    let form = fields(&body);
    let echo = *lock(&state.echo_secrets);
    let hostile = |code: &str, secret: Option<&String>| {
        let secret = secret.map(String::as_str).unwrap_or_default();
        oauth_error(
            StatusCode::BAD_REQUEST,
            code,
            &format!(
                "Invalid credential {secret}\r\n2026-11-24 ERROR forged log line\u{1b}[31m\u{0}{}",
                "x".repeat(10_000)
            ),
        )
    };
    let Some(client) = authenticate(&state, &headers, &form) else {
        if echo {
            return hostile("invalid_client", form.get("client_secret"));
        }
        return invalid_client();
    };
    let scope = form.get("scope").map(String::as_str);
    if scope.is_some_and(|s| s.split(' ').any(|s| s == FORBIDDEN_SCOPE)) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "that scope is not available",
        );
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => token_response(&state, &format!("client:{client}"), None, &form),
        Some("password") => {
            let user = form.get("username").map(String::as_str).unwrap_or_default();
            let password = form.get("password").map(String::as_str).unwrap_or_default();
            if !USERS.iter().any(|(u, p)| *u == user && *p == password) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "wrong username or password",
                );
            }
            let refresh = state.issue_refresh(user, None);
            token_response(&state, user, Some(refresh), &form)
        }
        Some("refresh_token") => {
            let Some(presented) = form.get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "missing refresh_token",
                );
            };
            let (user, family) = {
                let mut tokens = lock(&state.refresh_tokens);
                let Some(current) = tokens.get_mut(presented) else {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
                };
                if current.revoked {
                    if echo {
                        return hostile("invalid_grant", Some(presented));
                    }
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "revoked refresh token");
                }
                if current.used {
                    let family = current.family;
                    for token in tokens.values_mut().filter(|t| t.family == family) {
                        token.revoked = true;
                    }
                    state
                        .reuse_detected
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "refresh token reuse detected",
                    );
                }
                current.used = true;
                (current.user.clone(), current.family)
            };
            let refresh = state.issue_refresh(&user, Some(family));
            token_response(&state, &user, Some(refresh), &form)
        }
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "unsupported grant type",
        ),
        None => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing grant_type"),
    }
}

/// `POST /oauth2/revoke` (RFC 7009): revokes a refresh or access token of an authenticated
/// client; answers 200 even for unknown tokens, as the RFC says.
pub(crate) async fn revocation_endpoint(
    State(state): State<Arc<State_>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = lock(&state.logout_faults).pop_front();
    if let Some(response) = apply(fault).await {
        return response;
    }
    let form = fields(&body);
    if authenticate(&state, &headers, &form).is_none() {
        return invalid_client();
    }
    if let Some(token) = form.get("token") {
        if let Some(refresh) = lock(&state.refresh_tokens).get_mut(token) {
            refresh.revoked = true;
        }
        if let Some(access) = lock(&state.issued).get_mut(token) {
            access.revoked = true;
        }
    }
    StatusCode::OK.into_response()
}
