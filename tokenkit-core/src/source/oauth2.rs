//! OAuth 2.0 token sources (RFC 6749): client credentials (§4.4), resource-owner password
//! (§4.3, as a login), refresh token (§6), RFC error bodies (§5.2), and revocation (RFC 7009).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::parse::{parse_token_response, FieldMapping};
use super::TokenParams;
use super::{FetchRequest, TokenSource};
use crate::error::{AuthFailure, Error, ErrorKind, OAuthError};
use crate::runtime::{Clock, Runtime, Sleep};
use crate::source::discovery::Discovery;
use crate::token::TokenRecord;
use crate::transport::{send_with_timeout, Transport};
use crate::urls;

/// An OAuth client secret: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret value. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

impl fmt::Display for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1, RFC 7523 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret (default).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
    /// `private_key_jwt`: an assertion signed with the client's key
    /// ([`OAuth2Config::private_key_jwt`]) or supplied by an
    /// [`AssertionSource`](crate::AssertionSource) ([`OAuth2Config::client_assertion`]).
    /// Feature `jose`.
    PrivateKeyJwt,
    /// `client_secret_jwt`: an assertion signed (HS256) with the client secret. Feature
    /// `jose`.
    SecretJwt,
}

impl ClientAuth {
    /// The method's name in provider metadata (`token_endpoint_auth_methods_supported`).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Basic => "client_secret_basic",
            ClientAuth::Post => "client_secret_post",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::SecretJwt => "client_secret_jwt",
        }
    }
}

/// Where a `private_key_jwt` assertion comes from.
#[cfg(feature = "jose")]
#[derive(Clone, Debug)]
pub(crate) enum AssertionConfig {
    /// Minted and signed with the client's key for every request.
    Key(super::assertion::SigningKey),
    /// Supplied for every request.
    Source(Arc<dyn super::assertion::AssertionSource>),
}

/// An OAuth 2.0 client and its token endpoint.
#[derive(Clone)]
#[non_exhaustive]
pub struct OAuth2Config {
    /// The token endpoint: an absolute URL, or a path relative to the client's base URL.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret (public clients have none).
    pub client_secret: Option<ClientSecret>,
    /// Client authentication (default Basic).
    pub client_auth: ClientAuth,
    /// Requested scopes (space-joined into `scope`).
    pub scopes: Vec<String>,
    /// `audience` parameter, if the server wants one.
    pub audience: Option<String>,
    /// `resource` parameter (RFC 8707), if any.
    pub resource: Option<String>,
    /// Extra form parameters of every token request.
    pub extra_params: Vec<(String, String)>,
    /// The revocation endpoint (RFC 7009); when set, logout revokes the refresh token.
    pub revocation_url: Option<String>,
    /// Revoke the access token too on logout.
    pub revoke_access_token: bool,
    /// The token type responses must carry (case-insensitive; default `Bearer`); `None`
    /// accepts any. A response without `token_type` is taken as the expected type.
    pub token_type: Option<String>,
    /// Lifetime assumed when a response has no `expires_in` (default 1 h).
    pub default_lifetime: Duration,
    /// Timeout of one token endpoint call (default 30 s).
    pub timeout: Duration,
    /// Attempts at the token endpoint for 5xx and network errors (default 3). A 429 or 503
    /// carrying `Retry-After` is not retried here: the error carries the delay and the
    /// client's [`OutageConfig`](crate::OutageConfig) gate makes every request wait for it.
    pub attempts: u32,
    /// First delay between attempts, doubling (default 1 s).
    pub retry_delay: Duration,
    /// The issuer whose discovered metadata gives the endpoints left unset (see
    /// [`from_issuer`](Self::from_issuer)).
    pub issuer: Option<String>,
    /// Whether [`client_auth`](Self::client_auth) was chosen (else, with an issuer, the
    /// metadata's supported methods choose).
    pub(crate) client_auth_chosen: bool,
    /// The `private_key_jwt` key or assertion source.
    #[cfg(feature = "jose")]
    pub(crate) assertion: Option<AssertionConfig>,
}

/// The secret prints redacted, and the extra parameters by name only.
impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra: Vec<&str> = self.extra_params.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OAuth2Config")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_auth", &self.client_auth)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field("extra_params", &extra)
            .field("revocation_url", &self.revocation_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OAuth2Config {
    /// A client `client_id` of the token endpoint `token_url`.
    pub fn new(token_url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            client_auth: ClientAuth::Basic,
            scopes: Vec::new(),
            audience: None,
            resource: None,
            extra_params: Vec::new(),
            revocation_url: None,
            revoke_access_token: false,
            token_type: Some("Bearer".to_owned()),
            default_lifetime: crate::defaults::OAUTH_TOKEN_LIFETIME,
            timeout: Duration::from_secs(30),
            attempts: crate::defaults::TOKEN_ENDPOINT_ATTEMPTS,
            retry_delay: crate::defaults::TOKEN_ENDPOINT_RETRY_DELAY,
            issuer: None,
            client_auth_chosen: false,
            #[cfg(feature = "jose")]
            assertion: None,
        }
    }

    /// A client `client_id` of the provider `issuer`: the token and revocation endpoints and
    /// the client authentication method (`client_secret_basic` unless the provider supports
    /// only `client_secret_post`) come from its metadata (OpenID Connect Discovery, or RFC
    /// 8414), fetched on first use through the client's transport, cached for
    /// [`DISCOVERY_TTL`](crate::defaults::DISCOVERY_TTL) and fetched again after a failed call.
    /// What you set explicitly wins. The issuer in the metadata must be exactly `issuer`.
    ///
    /// ```
    /// let config = tokenkit_core::OAuth2Config::from_issuer("https://id.example.com/realms/app", "web")
    ///     .client_secret("s3cr3t")
    ///     .scope("openid");
    /// assert_eq!(config.issuer.as_deref(), Some("https://id.example.com/realms/app"));
    /// ```
    pub fn from_issuer(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        let mut config = Self::new(String::new(), client_id);
        config.issuer = Some(issuer.into());
        config
    }
    /// Sets the client secret.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(ClientSecret::new(secret));
        self
    }
    /// Sets the client authentication method.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self.client_auth_chosen = true;
        self
    }
    /// Authenticates with `private_key_jwt` (RFC 7523): every token request carries an
    /// assertion signed with `key` — `iss` and `sub` the client id, `aud` the token endpoint,
    /// a fresh `jti`, `iat` now and `exp` a minute later (a retried request gets a new one).
    /// Feature `jose`.
    #[cfg(feature = "jose")]
    pub fn private_key_jwt(mut self, key: super::assertion::SigningKey) -> Self {
        self.assertion = Some(AssertionConfig::Key(key));
        self.client_auth(ClientAuth::PrivateKeyJwt)
    }
    /// Authenticates with an assertion from `source` (a workload identity token, say, like
    /// [`AssertionFile`](crate::AssertionFile)), asked for one on every token request. Sent
    /// as `private_key_jwt`. Feature `jose`.
    #[cfg(feature = "jose")]
    pub fn client_assertion(mut self, source: impl super::assertion::AssertionSource + 'static) -> Self {
        self.assertion = Some(AssertionConfig::Source(Arc::new(source)));
        self.client_auth(ClientAuth::PrivateKeyJwt)
    }
    /// Authenticates with `client_secret_jwt` (RFC 7523): an assertion signed (HS256) with
    /// the client secret, minted fresh for every token request. Feature `jose`.
    #[cfg(feature = "jose")]
    pub fn client_secret_jwt(self) -> Self {
        self.client_auth(ClientAuth::SecretJwt)
    }
    /// Adds a scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }
    /// Sets the audience.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }
    /// Sets the resource indicator.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }
    /// Adds an extra form parameter to every token request.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }
    /// Sets the revocation endpoint (RFC 7009).
    pub fn revocation_url(mut self, url: impl Into<String>) -> Self {
        self.revocation_url = Some(url.into());
        self
    }
    /// Revokes the access token as well as the refresh token on logout.
    pub fn revoke_access_token(mut self, revoke: bool) -> Self {
        self.revoke_access_token = revoke;
        self
    }
    /// Sets the expected token type (`None` accepts any).
    pub fn token_type(mut self, token_type: Option<&str>) -> Self {
        self.token_type = token_type.map(str::to_owned);
        self
    }
    /// Sets the lifetime assumed without `expires_in`.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }
    /// Sets the timeout of one call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets the attempts for 5xx and network errors (0 counts as 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }
    /// Sets the first retry delay.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }
}

/// Which grant a source uses when tokenkit needs a new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Provider mode: client credentials.
    ClientCredentials,
    /// Session mode: the refresh-token grant (login uses the password grant).
    RefreshToken,
}

/// Talks to an OAuth 2.0 token endpoint.
pub(crate) struct OAuth2Source {
    pub(crate) config: OAuth2Config,
    grant: Grant,
    transport: Arc<dyn Transport>,
    base: Url,
    sleep: Option<Arc<dyn Sleep>>,
    clock: Arc<dyn Clock>,
    /// The provider's metadata, when the config names an issuer.
    pub(crate) discovery: Option<Arc<Discovery>>,
}

impl fmt::Debug for OAuth2Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Source")
            .field("token_url", &self.config.token_url)
            .field("client_id", &self.config.client_id)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// The RFC 6749 §2.3.1 encoding of a Basic credential: each part form-urlencoded first.
pub(crate) fn basic_credentials(id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// Parses an RFC 6749 §5.2 error body; every text is filtered (`secrets` redacted, control
/// characters removed, length capped) before it can reach an error, a log or an event.
fn parse_oauth_error(body: &Bytes, secrets: &[&str]) -> Option<OAuthError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(|s| crate::redact::server_text(s, secrets))
    };
    Some(OAuthError {
        error: text("error")?,
        description: text("error_description"),
        uri: text("error_uri"),
    })
}

/// The `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Fields a grant sets itself: login or per-request data cannot replace them.
const GRANT_FIELDS: [&str; 11] = [
    "grant_type",
    "username",
    "password",
    "refresh_token",
    "code",
    "code_verifier",
    "redirect_uri",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

/// Appends `overrides`, each name replacing the fields of that name already there (a scope
/// given at login is sent once, not twice); names of [`GRANT_FIELDS`] are dropped.
fn merge_overrides(fields: &mut Vec<(String, String)>, overrides: Vec<(String, String)>) {
    let (kept, dropped): (Vec<_>, Vec<_>) = overrides
        .into_iter()
        .partition(|(name, _)| !GRANT_FIELDS.contains(&name.as_str()));
    for (name, _) in &dropped {
        tracing::warn!(field = %name, "a token request field cannot be overridden; ignored");
    }
    fields.retain(|(name, _)| !kept.iter().any(|(k, _)| k == name));
    fields.extend(kept);
}

/// Form fields whose values are secrets.
const SECRET_FIELDS: [&str; 8] = [
    "code",
    "refresh_token",
    "password",
    "client_secret",
    "client_assertion",
    "code_verifier",
    "subject_token",
    "token",
];

/// The typed error of a non-2xx token endpoint answer. `secrets` are the values the request
/// carried (refresh token, password, client secret…): a server echoing one back in its
/// description does not get it into the error.
fn failure(what: &str, status: StatusCode, body: Bytes, secrets: &[&str]) -> Error {
    let oauth = parse_oauth_error(&body, secrets);
    let code = oauth.as_ref().map(|o| o.error.as_str()).unwrap_or("");
    let kind = match code {
        // The client's own credentials are refused: never retried, never a user's fault.
        "invalid_client" | "unauthorized_client" => ErrorKind::Auth(AuthFailure::InvalidClient),
        // The grant (refresh token, password) is no longer valid: log in again.
        "invalid_grant" => ErrorKind::Auth(AuthFailure::SessionInvalid),
        _ => ErrorKind::Auth(AuthFailure::TokenUnavailable),
    };
    // The status is printed by the error itself; the message says who answered and what.
    let message = match &oauth {
        Some(OAuthError {
            error,
            description: Some(description),
            ..
        }) => format!("{what}: {error} ({description})"),
        Some(OAuthError { error, .. }) => format!("{what}: {error}"),
        None => format!("{what}: no OAuth error body"),
    };
    let mut err = Error::new(kind, message).with_response(status, body);
    if let Some(oauth) = oauth {
        err = err.with_oauth(oauth);
    }
    err
}

impl OAuth2Source {
    pub(crate) fn new(
        config: OAuth2Config,
        grant: Grant,
        transport: Arc<dyn Transport>,
        base: Url,
        runtime: &Runtime,
        discovery: Option<Arc<Discovery>>,
    ) -> Self {
        Self {
            config,
            grant,
            transport,
            base,
            sleep: runtime.sleep.clone(),
            clock: Arc::clone(&runtime.clock),
            discovery,
        }
    }

    fn clock_now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The token endpoint: configured, or discovered.
    async fn token_endpoint(&self) -> Result<String, Error> {
        match &self.discovery {
            Some(discovery) if self.config.token_url.is_empty() => {
                Ok(discovery.metadata().await?.require_token_endpoint()?.to_owned())
            }
            _ => Ok(self.config.token_url.clone()),
        }
    }

    /// The client authentication: as configured, or as the provider supports — with a
    /// secret, Basic unless it lists only `client_secret_post` (then that) or only
    /// `client_secret_jwt` (then that, feature `jose`).
    async fn client_auth(&self) -> Result<ClientAuth, Error> {
        match &self.discovery {
            Some(discovery) if !self.config.client_auth_chosen => {
                let methods = &discovery.metadata().await?.token_endpoint_auth_methods_supported;
                let has = |m: ClientAuth| methods.iter().any(|x| x == m.as_str());
                let no_basic = !methods.is_empty() && !has(ClientAuth::Basic);
                Ok(if no_basic && has(ClientAuth::Post) {
                    ClientAuth::Post
                } else if no_basic && has(ClientAuth::SecretJwt) && cfg!(feature = "jose") {
                    ClientAuth::SecretJwt
                } else {
                    self.config.client_auth
                })
            }
            _ => Ok(self.config.client_auth),
        }
    }

    /// How this attempt authenticates the client: an `Authorization` header, or form fields.
    /// Assertions are minted (or asked for) per attempt: never sent twice.
    async fn authenticate(
        &self,
        method: ClientAuth,
        audience: &str,
        fields: &mut Vec<(String, String)>,
    ) -> Result<Option<HeaderValue>, Error> {
        let config = &self.config;
        let id = || ("client_id".to_owned(), config.client_id.clone());
        match (method, &config.client_secret) {
            (ClientAuth::PrivateKeyJwt, _) | (ClientAuth::SecretJwt, Some(_)) => {
                let assertion = self.assertion(method, audience).await?;
                fields.push(id());
                fields.push(("client_assertion_type".to_owned(), JWT_BEARER.to_owned()));
                fields.push(("client_assertion".to_owned(), assertion));
                Ok(None)
            }
            (ClientAuth::Basic, Some(secret)) => {
                let mut value = HeaderValue::try_from(basic_credentials(&config.client_id, secret.secret()))
                    .map_err(|_| Error::config("the client credentials cannot form a header"))?;
                value.set_sensitive(true);
                Ok(Some(value))
            }
            (ClientAuth::Post, Some(secret)) => {
                fields.push(id());
                fields.push(("client_secret".to_owned(), secret.secret().to_owned()));
                Ok(None)
            }
            // A public client identifies itself in the body.
            (_, None) => {
                fields.push(id());
                Ok(None)
            }
        }
    }

    /// A client assertion for `audience` (the token endpoint).
    #[cfg(feature = "jose")]
    async fn assertion(&self, method: ClientAuth, audience: &str) -> Result<String, Error> {
        use super::assertion::{mint, Signer};
        let config = &self.config;
        let now = self.clock_now();
        match (method, &config.assertion, &config.client_secret) {
            (ClientAuth::PrivateKeyJwt, Some(AssertionConfig::Key(key)), _) => {
                mint(Signer::Key(key), &config.client_id, audience, now)
            }
            (ClientAuth::PrivateKeyJwt, Some(AssertionConfig::Source(source)), _) => {
                source.assertion(audience).await
            }
            (ClientAuth::SecretJwt, _, Some(secret)) => {
                mint(Signer::Secret(secret.secret()), &config.client_id, audience, now)
            }
            _ => Err(Error::config(
                "private_key_jwt needs a key (OAuth2Config::private_key_jwt) or an assertion \
                 source (OAuth2Config::client_assertion)",
            )),
        }
    }

    #[cfg(not(feature = "jose"))]
    async fn assertion(&self, _method: ClientAuth, _audience: &str) -> Result<String, Error> {
        Err(Error::config(
            "client authentication by assertion needs tokenkit-core's `jose` feature",
        ))
    }

    /// A call to a discovered endpoint failed in a way a moved endpoint would explain (no
    /// answer, 404, 405, 410): the metadata is fetched again next time.
    async fn after_failure(&self, url_was_discovered: bool, failed: &Result<http::Response<Bytes>, Error>) {
        let moved = match failed {
            Err(err) => err.is_transport(),
            Ok(response) => matches!(response.status().as_u16(), 404 | 405 | 410),
        };
        if let (true, true, Some(discovery)) = (url_was_discovered, moved, &self.discovery) {
            tracing::info!("a discovered endpoint failed; the provider's metadata will be fetched again");
            discovery.invalidate().await;
        }
    }

    /// Scope, audience, resource and the extra parameters.
    /// Then the request's token parameters replace the configured scope, audience or
    /// resource they set, and `overrides` (login or per-request data) replace any field of
    /// the same name — each name is sent once. Fields the grant itself carries (credentials,
    /// the refresh token, the code) cannot be overridden.
    fn common_params(
        &self,
        fields: &mut Vec<(String, String)>,
        params: Option<&TokenParams>,
        overrides: Vec<(String, String)>,
    ) {
        let params = params.filter(|p| !p.is_empty());
        let scopes = match params.map(TokenParams::scopes) {
            Some(scopes) if !scopes.is_empty() => scopes.join(" "),
            _ => self.config.scopes.join(" "),
        };
        if !scopes.is_empty() {
            fields.push(("scope".to_owned(), scopes));
        }
        if let Some(audience) = params
            .and_then(TokenParams::audience_value)
            .or(self.config.audience.as_deref())
        {
            fields.push(("audience".to_owned(), audience.to_owned()));
        }
        match params.map(TokenParams::resources) {
            Some(resources) if !resources.is_empty() => {
                fields.extend(resources.iter().map(|r| ("resource".to_owned(), r.clone())));
            }
            _ => {
                if let Some(resource) = &self.config.resource {
                    fields.push(("resource".to_owned(), resource.clone()));
                }
            }
        }
        fields.extend(self.config.extra_params.iter().cloned());
        merge_overrides(fields, overrides);
    }

    /// POSTs a form with client authentication to `url` (`discovered`: from the provider's
    /// metadata), retrying 5xx and network errors.
    async fn post_form(
        &self,
        what: &str,
        url: &str,
        discovered: bool,
        fields: Vec<(String, String)>,
    ) -> Result<Bytes, Error> {
        let url = urls::resolve(&self.base, url, "")?;
        let method = self.client_auth().await?;
        let uri = http::Uri::try_from(url.as_str())
            .map_err(|e| Error::new(ErrorKind::Url, format!("invalid token endpoint URL: {e}")))?;
        let mut attempt = 1;
        loop {
            let mut sent = fields.clone();
            let authorization = self.authenticate(method, url.as_str(), &mut sent).await?;
            let body = Bytes::from(
                serde_urlencoded::to_string(&sent)
                    .map_err(|e| Error::config(format!("the token request could not be encoded: {e}")))?,
            );
            let mut request = http::Request::new(body);
            *request.method_mut() = Method::POST;
            *request.uri_mut() = uri.clone();
            let headers = request.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            if let Some(value) = &authorization {
                headers.insert(AUTHORIZATION, value.clone());
            }
            let result = send_with_timeout(
                &*self.transport,
                self.sleep.as_deref(),
                request,
                Some(self.config.timeout),
            )
            .await;
            // A server that says when to come back (`Retry-After` on a 429 or 503) is not
            // retried here: the error carries the delay and the client's outage gate (shared
            // by every request) honours it.
            let retry_after = result
                .as_ref()
                .ok()
                .and_then(|response| crate::header::retry_after(response.headers(), self.clock_now()));
            let retryable = match &result {
                Err(err) => err.is_transport(),
                Ok(response) => response.status().is_server_error() && retry_after.is_none(),
            };
            if !matches!(&result, Ok(response) if response.status().is_success()) {
                self.after_failure(discovered, &result).await;
            }
            if retryable && attempt < self.config.attempts {
                let delay = self
                    .config
                    .retry_delay
                    .saturating_mul(1u32 << (attempt - 1).min(16));
                tracing::info!(
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "retrying the {what}"
                );
                if let Some(sleep) = &self.sleep {
                    sleep.sleep(delay).await;
                }
                attempt += 1;
                continue;
            }
            let (parts, bytes) = result?.into_parts();
            if parts.status.is_success() {
                return Ok(bytes);
            }
            let secrets: Vec<&str> = sent
                .iter()
                .filter(|(name, _)| SECRET_FIELDS.contains(&name.as_str()))
                .map(|(_, value)| value.as_str())
                .chain(self.config.client_secret.as_ref().map(|s| s.secret()))
                .collect();
            let err = failure(what, parts.status, bytes, &secrets);
            return Err(match retry_after {
                Some(after) => err.with_retry_after(after),
                None => err,
            });
        }
    }

    /// Requests a token with `fields` and validates the response.
    async fn token(
        &self,
        fields: Vec<(String, String)>,
        now: SystemTime,
    ) -> Result<(TokenRecord, Value), Error> {
        let discovered = self.discovery.is_some() && self.config.token_url.is_empty();
        let url = self.token_endpoint().await?;
        let bytes = self.post_form("token endpoint", &url, discovered, fields).await?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|_| {
            Error::invalid_token("the token response is not JSON")
                .with_response(StatusCode::OK, bytes.clone())
        })?;
        let mut record = parse_token_response(&json, &FieldMapping::default(), now)?;
        if let (Some(expected), Some(actual)) = (&self.config.token_type, &record.token_type) {
            if !expected.eq_ignore_ascii_case(actual) {
                return Err(Error::invalid_token(format!(
                    "the token type is {actual:?}, expected {expected:?}"
                )));
            }
        }
        if record.token_type.is_none() {
            record.token_type = self.config.token_type.clone();
        }
        if record.expires_at.is_none() {
            record = record.with_expires_in(self.config.default_lifetime)?;
        }
        record.scope = json.get("scope").and_then(Value::as_str).map(str::to_owned);
        Ok((record, json))
    }

    /// The resource-owner password grant (a login).
    pub(crate) async fn password(
        &self,
        username: &str,
        password: &str,
        extra: Vec<(String, String)>,
        now: SystemTime,
    ) -> Result<(TokenRecord, Value), Error> {
        let mut fields = vec![
            ("grant_type".to_owned(), "password".to_owned()),
            ("username".to_owned(), username.to_owned()),
            ("password".to_owned(), password.to_owned()),
        ];
        self.common_params(&mut fields, None, extra);
        self.token(fields, now)
            .await
            .map_err(|err| match err.auth_failure() {
                // Wrong credentials at login are a rejection, not an invalid session.
                Some(AuthFailure::SessionInvalid) => err.with_kind(ErrorKind::Auth(AuthFailure::Rejected)),
                _ => err,
            })
    }

    /// The authorization code grant (RFC 6749 §4.1.3) with the PKCE verifier (RFC 7636): the
    /// end of a browser sign-in.
    #[cfg(feature = "openid")]
    pub(crate) async fn authorization_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        now: SystemTime,
    ) -> Result<(TokenRecord, Value), Error> {
        let fields = vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.to_owned()),
            ("redirect_uri".to_owned(), redirect_uri.to_owned()),
            ("code_verifier".to_owned(), code_verifier.to_owned()),
        ];
        self.token(fields, now).await
    }

    /// Revokes the record's refresh token (and access token when configured). `Ok` when no
    /// revocation endpoint is configured.
    pub(crate) async fn revoke(&self, record: &TokenRecord) -> Result<(), Error> {
        let (url, discovered) = match (&self.config.revocation_url, &self.discovery) {
            (Some(url), _) => (url.clone(), false),
            (None, Some(discovery)) => match &discovery.metadata().await?.revocation_endpoint {
                Some(url) => (url.clone(), true),
                None => return Ok(()),
            },
            (None, None) => return Ok(()),
        };
        let mut tokens: Vec<(&str, String)> = Vec::new();
        if let Some(refresh) = &record.refresh_token {
            tokens.push(("refresh_token", refresh.secret().to_owned()));
        }
        if self.config.revoke_access_token || record.refresh_token.is_none() {
            if let Some(access) = &record.access_token {
                tokens.push(("access_token", access.secret().to_owned()));
            }
        }
        let mut first_error = None;
        for (hint, token) in tokens {
            let fields = vec![
                ("token".to_owned(), token),
                ("token_type_hint".to_owned(), hint.to_owned()),
            ];
            if let Err(err) = self
                .post_form("revocation endpoint", &url, discovered, fields)
                .await
            {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl TokenSource for OAuth2Source {
    async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
        let mut fields = Vec::new();
        match self.grant {
            Grant::ClientCredentials => {
                fields.push(("grant_type".to_owned(), "client_credentials".to_owned()));
            }
            Grant::RefreshToken => {
                let refresh = super::refresh_token_of(&request)?;
                fields.push(("grant_type".to_owned(), "refresh_token".to_owned()));
                fields.push(("refresh_token".to_owned(), refresh.secret().to_owned()));
            }
        }
        let overrides = match &request.data {
            Some(Value::Object(data)) => data
                .iter()
                .map(|(k, v)| {
                    let value = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                    (k.clone(), value)
                })
                .collect(),
            _ => Vec::new(),
        };
        self.common_params(&mut fields, request.params.as_ref(), overrides);
        self.token(fields, request.now).await.map(|(record, _)| record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_form_encode_id_and_secret_first() {
        // RFC 6749 §2.3.1: application/x-www-form-urlencoded, then Basic.
        let header = basic_credentials("my client:1", "p%ss+wo rd");
        let encoded = header.strip_prefix("Basic ").unwrap();
        let raw =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(raw, "my+client%3A1:p%25ss%2Bwo+rd");
    }

    #[test]
    fn error_bodies_are_parsed_and_classified() {
        let body = Bytes::from_static(
            br#"{"error":"invalid_grant","error_description":"expired","error_uri":"https://e/x"}"#,
        );
        let err = failure("token endpoint", StatusCode::BAD_REQUEST, body, &[]);
        assert_eq!(err.auth_failure(), Some(AuthFailure::SessionInvalid));
        let oauth = err.oauth().unwrap();
        assert_eq!(
            (
                oauth.error.as_str(),
                oauth.description.as_deref(),
                oauth.uri.as_deref()
            ),
            ("invalid_grant", Some("expired"), Some("https://e/x"))
        );
        assert!(err.to_string().contains("invalid_grant (expired)"), "{err}");
        let err = failure(
            "token endpoint",
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(br#"{"error":"invalid_client","error_description":"bad secret"}"#),
            &[],
        );
        assert!(err.is_invalid_client() && err.is_auth());
        assert_eq!(
            err.to_string(),
            "authentication failed: the client's own credentials were refused (HTTP 401): \
             token endpoint: invalid_client (bad secret)",
            "the status once, no repetition"
        );
        for (code, kind) in [
            ("unauthorized_client", ErrorKind::Auth(AuthFailure::InvalidClient)),
            (
                "unsupported_grant_type",
                ErrorKind::Auth(AuthFailure::TokenUnavailable),
            ),
        ] {
            let body = Bytes::from(format!(r#"{{"error":"{code}"}}"#));
            assert_eq!(
                failure("token endpoint", StatusCode::BAD_REQUEST, body, &[]).kind(),
                kind,
                "{code}"
            );
        }
        let err = failure(
            "token endpoint",
            StatusCode::BAD_GATEWAY,
            Bytes::from_static(b"<html>"),
            &[],
        );
        assert_eq!(err.auth_failure(), Some(AuthFailure::TokenUnavailable));
        assert!(err.oauth().is_none());
    }

    #[test]
    fn a_hostile_error_description_is_filtered() {
        let body = Bytes::from(
            "{\"error\":\"invalid_grant\\r\\nforged\",\"error_description\":\"Invalid refresh token: rt-0123456789\\r\\nlevel=ERROR injected\",\"error_uri\":\"https://e/\\u0000x\"}",
        );
        let err = failure(
            "token endpoint",
            StatusCode::BAD_REQUEST,
            body,
            &["rt-0123456789"],
        );
        let printed = format!("{err} {err:?}");
        assert!(!printed.contains("rt-0123456789"), "{printed}");
        assert!(
            !printed.contains('\r') && !printed.contains('\n') && !printed.contains('\0'),
            "{printed}"
        );
        assert!(printed.contains("[redacted]"), "{printed}");
        let huge = format!(
            r#"{{"error":"invalid_grant","error_description":"{}"}}"#,
            "y".repeat(100_000)
        );
        let err = failure("token endpoint", StatusCode::BAD_REQUEST, Bytes::from(huge), &[]);
        assert!(err.to_string().len() < 400, "capped");
    }

    #[test]
    fn the_secret_never_prints() {
        let config = OAuth2Config::new("/token", "id").client_secret("s3cr3t-value");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert_eq!(config.client_secret.unwrap().to_string(), "[redacted]");
    }
}
