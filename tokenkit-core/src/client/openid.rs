//! Sign-in through an OpenID provider (feature `openid`): the authorization code flow with
//! PKCE (RFC 7636, S256), `state` and `nonce`, the ID token verified against the provider's
//! JWKS, and RP-initiated sign-out. Framework adapters (tokenkit-axum) mount it as routes;
//! the flow itself is here, on [`Client`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use cookie::{Cookie, SameSite};
use http::header::{HeaderValue, ACCEPT};
use http::Method;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::client::Client;
use crate::context::{no_context, Context};
use crate::encryption::Encryption;
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::events::Event;
use crate::token::TokenRecord;
use crate::transport::send_with_timeout;

use crate::defaults::{ID_TOKEN_SKEW, JWKS_REFETCH_PAUSE, SIGN_IN_LIFETIME};

/// The name of the cookie that carries one sign-in in progress, before its id.
const SIGN_IN_COOKIE: &str = "tokenkit-signin-";

/// The signature algorithms an ID token may use: asymmetric only (never `none`, never an
/// HMAC keyed with a public key).
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// How a client signs users in through its OpenID provider (see
/// [`ClientBuilder::openid`](crate::ClientBuilder::openid)).
#[derive(Clone)]
#[non_exhaustive]
pub struct OpenIdConfig {
    /// The absolute URL of the callback route the provider sends the browser back to
    /// (registered with the provider).
    pub redirect_uri: String,
    /// Scopes asked for (default `openid`; add what you need — `profile`, `email`, and
    /// `offline_access` where the provider issues refresh tokens only for it).
    pub scopes: Vec<String>,
    /// Seals the short-lived cookie that carries a sign-in in progress (its `state`, `nonce`
    /// and PKCE verifier) between leaving for the provider and coming back.
    pub keys: Encryption,
    /// Where the provider sends the browser after signing out (RP-initiated logout);
    /// `None`: sign-out stays local (and revokes).
    pub post_logout_redirect_uri: Option<String>,
    /// Clock skew tolerated on the ID token's times (default 60 s).
    pub clock_skew: Duration,
    /// Whether the sign-in cookie is `Secure` (default on; off only for plain-http
    /// development).
    pub secure: bool,
}

impl fmt::Debug for OpenIdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenIdConfig")
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("keys", &self.keys)
            .field("post_logout_redirect_uri", &self.post_logout_redirect_uri)
            .finish_non_exhaustive()
    }
}

impl OpenIdConfig {
    /// Sign-in coming back to `redirect_uri`, the sign-in cookie sealed with `keys`.
    pub fn new(redirect_uri: impl Into<String>, keys: Encryption) -> Self {
        Self {
            redirect_uri: redirect_uri.into(),
            scopes: vec!["openid".to_owned()],
            keys,
            post_logout_redirect_uri: None,
            clock_skew: ID_TOKEN_SKEW,
            secure: true,
        }
    }

    /// Adds a scope (`profile`, `email`, `offline_access`…).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Signs out at the provider too, which then sends the browser to `uri`.
    pub fn post_logout_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.post_logout_redirect_uri = Some(uri.into());
        self
    }

    /// Sets the clock skew tolerated on the ID token's times.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// Sets `Secure` on the sign-in cookie (turn it off only for plain-http development).
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        let url = Url::parse(&self.redirect_uri)
            .map_err(|e| Error::config(format!("openid: the redirect URI is not an absolute URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(Error::config("openid: the redirect URI must be http(s)"));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(Error::config("openid: the scopes must include \"openid\""));
        }
        Ok(())
    }
}

/// A sign-in in progress, sealed in its cookie.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    return_to: Option<String>,
    /// Unix seconds.
    started: u64,
}

/// What a finished sign-in gives: the session's record (its payload is the ID token's claims)
/// and where the browser asked to go back to (a same-origin path, checked).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SignedIn {
    /// The stored record.
    pub record: Arc<TokenRecord>,
    /// The same-origin path to send the browser back to, if the sign-in named one.
    pub return_to: Option<String>,
}

/// The provider's keys, cached, fetched again for an unknown key id.
#[derive(Default)]
pub(crate) struct Keys {
    cached: futures_util::lock::Mutex<Option<(JwkSet, SystemTime)>>,
}

/// Random bytes as base64url text.
fn random_text(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::config(format!("no randomness available: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A same-origin path a sign-in may return to: starts with one `/`, no scheme-relative `//`
/// or `/\`, no control characters, no backslash (browsers read it as `/`).
pub fn is_safe_return_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control())
        && path.len() <= 2048
}

fn refused(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Auth(AuthFailure::SignInRefused), message)
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Client {
    fn openid(&self) -> Result<&OpenIdConfig, Error> {
        self.inner.openid.as_deref().ok_or_else(|| {
            Error::config("this client has no OpenID sign-in: build it with ClientBuilder::openid(..)")
        })
    }

    fn discovery_required(&self) -> Result<&crate::Discovery, Error> {
        self.discovery()
            .ok_or_else(|| Error::config("OpenID sign-in needs an issuer: OAuth2Config::from_issuer(..)"))
    }

    /// Starts a sign-in for the current context: returns the provider's authorization URL to
    /// redirect the browser to, and sets a short-lived sealed cookie carrying this attempt's
    /// `state`, `nonce` and PKCE verifier (one cookie per attempt: several tabs signing in at
    /// once do not disturb each other). `return_to` is where to go after signing in: only a
    /// same-origin path is accepted (anything else is an error, never an open redirect).
    pub async fn begin_sign_in(&self, return_to: Option<&str>) -> Result<String, Error> {
        let openid = self.openid()?;
        let ctx = self.inner.context_provider.current().ok_or_else(no_context)?;
        if let Some(path) = return_to {
            if !is_safe_return_path(path) {
                return Err(Error::config("the return-to target must be a same-origin path"));
            }
        }
        let metadata = self.discovery_required()?.metadata().await?;
        let endpoint = metadata
            .authorization_endpoint
            .as_deref()
            .ok_or_else(|| Error::config("the provider's metadata has no authorization_endpoint"))?;
        let pending = Pending {
            state: random_text(32)?,
            nonce: random_text(32)?,
            verifier: random_text(48)?,
            return_to: return_to.map(str::to_owned),
            started: unix_secs(self.inner.runtime.clock.now()),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
        let oauth = self.oauth_source()?;
        let mut url = Url::parse(endpoint)
            .map_err(|e| Error::new(ErrorKind::Url, format!("invalid authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &oauth.config.client_id)
            .append_pair("redirect_uri", &openid.redirect_uri)
            .append_pair("scope", &openid.scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let name = sign_in_cookie_name(&pending.state);
        let plain = serde_json::to_string(&pending)
            .map_err(|e| Error::config(format!("the sign-in could not be encoded: {e}")))?;
        let sealed = openid.keys.seal(&name, &plain)?;
        ctx.set_cookie(self.sign_in_cookie(openid, name, sealed, SIGN_IN_LIFETIME));
        Ok(url.into())
    }

    /// Finishes a sign-in on the callback route: `query` is the callback's query string. The
    /// attempt's cookie must hold the same `state` (and is removed, used or not); the code is
    /// exchanged with the PKCE verifier; the ID token must verify against the provider's keys
    /// (a key id not seen before fetches them again) and carry the right issuer, audience,
    /// expiry and nonce. Then the tokens are the session (its payload: the ID token's
    /// claims) and [`Event::LoggedIn`] fires. Any failure is an
    /// [`AuthFailure::SignInRefused`] error (or the provider's own `error`), and no session.
    pub async fn finish_sign_in(&self, query: &str) -> Result<SignedIn, Error> {
        let ctx = self.inner.context_provider.current().ok_or_else(no_context)?;
        let result = self.finish_sign_in_inner(&ctx, query).await;
        if let Some(auth) = self.inner.auth.as_ref() {
            let context = Some(&ctx);
            match &result {
                Ok((signed_in, body)) => auth.manager.events().emit(Event::LoggedIn {
                    tokens: &signed_in.record,
                    response: body,
                    context,
                }),
                Err(error) => auth.manager.events().emit(Event::LoginFailed { error, context }),
            }
        }
        result.map(|(signed_in, _)| signed_in)
    }

    async fn finish_sign_in_inner(&self, ctx: &Context, query: &str) -> Result<(SignedIn, Value), Error> {
        let openid = self.openid()?;
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let state = param("state").ok_or_else(|| refused("the callback carries no state"))?;
        let name = sign_in_cookie_name(state);
        let sealed = ctx.cookie(&name);
        // Single use: the attempt's cookie goes, whatever happens next.
        if sealed.is_some() {
            ctx.remove_cookie(self.sign_in_cookie(openid, name.clone(), String::new(), Duration::ZERO));
        }
        let pending: Pending = sealed
            .and_then(|sealed| openid.keys.open(&name, &sealed))
            .and_then(|plain| serde_json::from_str(&plain).ok())
            .ok_or_else(|| {
                refused("no sign-in is in progress for this state (unknown, used or tampered with)")
            })?;
        if pending.state != state {
            return Err(refused("the callback's state is not this sign-in's"));
        }
        let now = self.inner.runtime.clock.now();
        if unix_secs(now) > pending.started.saturating_add(SIGN_IN_LIFETIME.as_secs()) {
            return Err(refused("the sign-in took too long; start again"));
        }
        if let Some(error) = param("error") {
            let description = param("error_description").unwrap_or_default();
            return Err(refused(format!(
                "the provider refused the sign-in: {} ({})",
                crate::redact::server_text(error, &[]),
                crate::redact::server_text(description, &[])
            )));
        }
        let code = param("code").ok_or_else(|| refused("the callback carries no code"))?;
        // RFC 9207: a provider that names itself in the callback must be ours (mix-up defense).
        if let Some(iss) = param("iss") {
            if iss != self.discovery_required()?.issuer() {
                return Err(refused("the callback comes from another issuer"));
            }
        }
        let oauth = self.oauth_source()?;
        let (mut record, body) = oauth
            .authorization_code(code, &openid.redirect_uri, &pending.verifier, now)
            .await
            .map_err(|err| match err.kind() {
                ErrorKind::Auth(_) | ErrorKind::Status => {
                    err.with_kind(ErrorKind::Auth(AuthFailure::SignInRefused))
                }
                _ => err,
            })?;
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| refused("the token response carries no id_token"))?;
        let claims = self
            .verify_id_token(id_token, &pending.nonce, &oauth.config.client_id, openid, now)
            .await?;
        record.payload = Some(claims);
        record.validate()?;
        let auth = self
            .inner
            .auth
            .as_ref()
            .ok_or_else(|| Error::config("this client has no token configuration"))?;
        let store = auth.manager.store();
        let current = store.load(Some(ctx)).await?;
        let record = Arc::new(record);
        store
            .save(Some(ctx), Arc::clone(&record), current.as_deref())
            .await?;
        Ok((
            SignedIn {
                record,
                return_to: pending.return_to.filter(|path| is_safe_return_path(path)),
            },
            body,
        ))
    }

    /// Verifies an ID token and returns its claims.
    async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
        client_id: &str,
        openid: &OpenIdConfig,
        now: SystemTime,
    ) -> Result<Value, Error> {
        // The provider installed by the feature; another installed first is kept.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            refused("the ID token is not a signed JWT this client accepts (alg none or unknown)")
        })?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(refused(format!(
                "the ID token is signed with {:?}: only asymmetric signatures are accepted",
                header.alg
            )));
        }
        let discovery = self.discovery_required()?;
        let metadata = discovery.metadata().await?;
        let key = self.signing_key(header.kid.as_deref(), header.alg, now).await?;
        let mut validation = Validation::new(header.alg);
        // Times are checked below against the client's clock.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[client_id]);
        validation.set_issuer(&[metadata.issuer.as_str()]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| refused(format!("the ID token does not verify: {e}")))?;
        let claims = data.claims;
        let secs = |name: &str| claims.get(name).and_then(Value::as_u64);
        let now_secs = unix_secs(now);
        let skew = openid.clock_skew.as_secs();
        let exp = secs("exp").ok_or_else(|| refused("the ID token has no exp"))?;
        if now_secs > exp.saturating_add(skew) {
            return Err(refused("the ID token has expired"));
        }
        if secs("iat").is_some_and(|iat| iat > now_secs.saturating_add(skew)) {
            return Err(refused("the ID token was issued in the future"));
        }
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(refused("the ID token's nonce is not this sign-in's"));
        }
        if let Some(audiences) = claims.get("aud").and_then(Value::as_array) {
            if audiences.len() > 1 && claims.get("azp").and_then(Value::as_str) != Some(client_id) {
                return Err(refused(
                    "the ID token has several audiences and is not authorized for this client",
                ));
            }
        }
        Ok(claims)
    }

    /// The provider's key `kid` for `alg`: from the cached JWKS, fetched again (at most every
    /// [`JWKS_REFETCH_PAUSE`]) when the key is not there.
    async fn signing_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: SystemTime,
    ) -> Result<DecodingKey, Error> {
        let keys = &self.inner.openid_keys;
        let mut cached = keys.cached.lock().await;
        for attempt in 0..2 {
            let stale = match cached.as_ref() {
                None => true,
                Some((_, fetched)) => {
                    attempt == 1
                        && now.duration_since(*fetched).unwrap_or(Duration::ZERO) >= JWKS_REFETCH_PAUSE
                }
            };
            if stale {
                let set = self.fetch_jwks().await?;
                *cached = Some((set, now));
            }
            if let Some((set, _)) = cached.as_ref() {
                let found = match kid {
                    Some(kid) => set.find(kid),
                    // Without a key id, the only key of the set (several: ambiguous).
                    None if set.keys.len() == 1 => set.keys.first(),
                    None => None,
                };
                if let Some(jwk) = found {
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| refused(format!("the provider's key cannot verify: {e}")))?;
                    // A key published for one algorithm verifies no other.
                    if let Some(declared) = jwk.common.key_algorithm {
                        if declared.to_string().parse::<Algorithm>().ok() != Some(alg) {
                            return Err(refused("the ID token's algorithm is not its key's"));
                        }
                    }
                    return Ok(key);
                }
            }
        }
        Err(refused(
            "the ID token is signed with a key the provider does not publish",
        ))
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, Error> {
        let metadata = self.discovery_required()?.metadata().await?;
        let uri = metadata
            .jwks_uri
            .as_deref()
            .ok_or_else(|| Error::config("the provider's metadata has no jwks_uri"))?;
        let mut request = http::Request::new(Bytes::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = http::Uri::try_from(uri)
            .map_err(|e| Error::new(ErrorKind::Url, format!("invalid jwks_uri: {e}")))?;
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let response = send_with_timeout(
            &*self.inner.transport,
            self.inner.runtime.sleep.as_deref(),
            request,
            Some(crate::defaults::AUTH_TIMEOUT),
        )
        .await?;
        if !response.status().is_success() {
            return Err(Error::new(
                ErrorKind::Status,
                format!("the provider's keys could not be fetched: {}", response.status()),
            ));
        }
        serde_json::from_slice(response.body())
            .map_err(|_| Error::new(ErrorKind::Decode, "the provider's keys are not a JWK Set"))
    }

    /// Signs the current session out: the session is cleared (its refresh token revoked where
    /// the provider supports it) and, when a post-logout redirect is configured and the
    /// provider has an end-session endpoint, returns the URL to send the browser to
    /// (RP-initiated logout). A failed revocation is logged; the session is cleared anyway.
    pub async fn sign_out(&self) -> Result<Option<String>, Error> {
        let openid = self.openid()?;
        if let Err(err) = self.logout().await {
            tracing::warn!(error = %err, "revocation at sign-out failed; the session is cleared");
        }
        let Some(after) = &openid.post_logout_redirect_uri else {
            return Ok(None);
        };
        let metadata = self.discovery_required()?.metadata().await?;
        let Some(endpoint) = metadata.end_session_endpoint.as_deref() else {
            return Ok(None);
        };
        let oauth = self.oauth_source()?;
        let mut url = Url::parse(endpoint)
            .map_err(|e| Error::new(ErrorKind::Url, format!("invalid end-session endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", &oauth.config.client_id)
            .append_pair("post_logout_redirect_uri", after);
        Ok(Some(url.into()))
    }

    fn sign_in_cookie(
        &self,
        openid: &OpenIdConfig,
        name: String,
        value: String,
        max_age: Duration,
    ) -> Cookie<'static> {
        Cookie::build((name, value))
            .http_only(true)
            .secure(openid.secure)
            // Lax: the provider's redirect back is a top-level GET navigation.
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .build()
    }
}

/// The cookie of the sign-in whose state is `state`: named after a digest of it (a state is
/// not a cookie name, and each attempt gets its own cookie).
fn sign_in_cookie_name(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    let id = URL_SAFE_NO_PAD.encode(digest.get(..12).unwrap_or_default());
    format!("{SIGN_IN_COOKIE}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_paths_are_return_targets() {
        for ok in ["/", "/account", "/a/b?c=d#e", "/caf%C3%A9"] {
            assert!(is_safe_return_path(ok), "{ok}");
        }
        for bad in [
            "",
            "account",
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/a\\b",
            "/a\r\nSet-Cookie: x=1",
            "\t/",
        ] {
            assert!(!is_safe_return_path(bad), "{bad:?}");
        }
        assert!(!is_safe_return_path(&format!("/{}", "a".repeat(3000))));
    }

    #[test]
    fn sign_in_cookies_are_named_per_attempt() {
        let a = sign_in_cookie_name("state-a");
        assert_eq!(a, sign_in_cookie_name("state-a"));
        assert_ne!(a, sign_in_cookie_name("state-b"));
        assert!(a.starts_with(SIGN_IN_COOKIE));
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
