//! OpenID Connect Discovery 1.0 and OAuth 2.0 Authorization Server Metadata (RFC 8414): a
//! provider's endpoints from its issuer URL, fetched once and cached.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::error::{Error, ErrorKind};
use crate::runtime::Runtime;
use crate::transport::{send_with_timeout, Transport};

/// What a provider publishes about itself (the fields tokenkit uses, and the rest in
/// [`other`](Self::other)). Every endpoint is an absolute URL, checked when the document is
/// read: `https`, or `http` only when the issuer itself is `http` (a test provider).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The issuer: exactly the URL the metadata was asked for.
    pub issuer: String,
    /// Where a browser is sent to sign in (authorization code flow).
    pub authorization_endpoint: Option<String>,
    /// The token endpoint.
    pub token_endpoint: Option<String>,
    /// The revocation endpoint (RFC 7009).
    pub revocation_endpoint: Option<String>,
    /// The end-session endpoint (OpenID Connect RP-Initiated Logout).
    pub end_session_endpoint: Option<String>,
    /// The signing keys of ID tokens (JWK Set).
    pub jwks_uri: Option<String>,
    /// The UserInfo endpoint.
    pub userinfo_endpoint: Option<String>,
    /// How clients may authenticate at the token endpoint (`client_secret_basic`, …).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// PKCE methods (`S256`, …).
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// ID token signature algorithms.
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Grant types.
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    /// Every other field of the document.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ProviderMetadata {
    /// Checks the document against the issuer it was asked for.
    fn check(&self, issuer: &str, issuer_url: &Url) -> Result<(), Error> {
        if self.issuer != issuer {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the provider's metadata names issuer {:?}, not {issuer:?}: refused (OpenID Connect Discovery §4.3)",
                    crate::redact::server_text(&self.issuer, &[])
                ),
            ));
        }
        let endpoints = [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("revocation_endpoint", &self.revocation_endpoint),
            ("end_session_endpoint", &self.end_session_endpoint),
            ("jwks_uri", &self.jwks_uri),
            ("userinfo_endpoint", &self.userinfo_endpoint),
        ];
        for (name, endpoint) in endpoints {
            let Some(endpoint) = endpoint else { continue };
            let url = Url::parse(endpoint).map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    format!("the provider's {name} is not an absolute URL"),
                )
            })?;
            let allowed =
                url.scheme() == "https" || (url.scheme() == "http" && issuer_url.scheme() == "http");
            if !allowed || url.cannot_be_a_base() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "the provider's {name} uses {}: only https (or http for an http issuer) is accepted",
                        url.scheme()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The token endpoint, or an error saying the provider has none.
    pub fn require_token_endpoint(&self) -> Result<&str, Error> {
        self.token_endpoint
            .as_deref()
            .ok_or_else(|| Error::config("the provider's metadata has no token_endpoint"))
    }
}

struct Cached {
    metadata: Arc<ProviderMetadata>,
    fetched_at: SystemTime,
}

/// A provider's metadata from its issuer URL (OpenID Connect Discovery, falling back to RFC
/// 8414's well-known path), fetched on first use through a [`Transport`] and cached for
/// [`ttl`](Self::ttl) (default [`DISCOVERY_TTL`](crate::defaults::DISCOVERY_TTL)).
/// Concurrent first uses wait for one fetch. The issuer in the document must be exactly the
/// one asked for. [`invalidate`](Self::invalidate) drops the cached document (tokenkit does
/// when a call to a discovered endpoint fails), so the next use fetches it again.
///
/// A client built from [`OAuth2Config::from_issuer`](crate::OAuth2Config::from_issuer) has
/// one: [`Client::discovery`](crate::Client::discovery).
pub struct Discovery {
    issuer: String,
    issuer_url: Url,
    transport: Arc<dyn Transport>,
    runtime: Runtime,
    ttl: Duration,
    timeout: Duration,
    cache: futures_util::lock::Mutex<Option<Cached>>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery of `issuer` (an `https` URL; `http` for local test providers) through
    /// `transport`, timed with `runtime`'s clock and sleep hook.
    pub fn new(
        issuer: impl Into<String>,
        transport: Arc<dyn Transport>,
        runtime: Runtime,
    ) -> Result<Self, Error> {
        let issuer = issuer.into();
        let issuer_url = Url::parse(&issuer)
            .map_err(|e| Error::new(ErrorKind::Url, format!("invalid issuer URL: {e}")))?;
        if !matches!(issuer_url.scheme(), "https" | "http")
            || issuer_url.query().is_some()
            || issuer_url.fragment().is_some()
        {
            return Err(Error::new(
                ErrorKind::Url,
                "an issuer is an https URL without query or fragment",
            ));
        }
        Ok(Self {
            issuer,
            issuer_url,
            transport,
            runtime,
            ttl: crate::defaults::DISCOVERY_TTL,
            timeout: crate::defaults::AUTH_TIMEOUT,
            cache: futures_util::lock::Mutex::new(None),
        })
    }

    /// How long a fetched document is used before it is fetched again.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The metadata: cached while younger than the TTL, fetched otherwise.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, Error> {
        let mut cache = self.cache.lock().await;
        let now = self.runtime.clock.now();
        if let Some(cached) = cache.as_ref() {
            let age = now.duration_since(cached.fetched_at).unwrap_or(Duration::ZERO);
            if age < self.ttl {
                return Ok(Arc::clone(&cached.metadata));
            }
        }
        let metadata = Arc::new(self.fetch().await?);
        *cache = Some(Cached {
            metadata: Arc::clone(&metadata),
            fetched_at: now,
        });
        Ok(metadata)
    }

    /// Drops the cached document: the next use fetches it again.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// The document's two well-known places: OpenID Connect's (the issuer's path, then
    /// `/.well-known/openid-configuration`), then RFC 8414's (the well-known segment first).
    fn locations(&self) -> [String; 2] {
        let base = self.issuer.trim_end_matches('/');
        let openid = format!("{base}/.well-known/openid-configuration");
        let mut rfc8414 = self.issuer_url.clone();
        let path = self.issuer_url.path().trim_end_matches('/');
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        [openid, rfc8414.to_string()]
    }

    async fn fetch(&self) -> Result<ProviderMetadata, Error> {
        let [openid, rfc8414] = self.locations();
        let (status, body) = self.get(&openid).await?;
        let (status, body) = if status == StatusCode::NOT_FOUND {
            self.get(&rfc8414).await?
        } else {
            (status, body)
        };
        if !status.is_success() {
            return Err(Error::new(
                ErrorKind::Status,
                format!("the provider's metadata could not be fetched: {status}"),
            )
            .with_response(status, body));
        }
        let metadata: ProviderMetadata = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!(
                    "the provider's metadata is not a metadata document: {}",
                    crate::redact::server_text(&e.to_string(), &[])
                ),
            )
        })?;
        metadata.check(&self.issuer, &self.issuer_url)?;
        Ok(metadata)
    }

    async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), Error> {
        let uri = http::Uri::try_from(url)
            .map_err(|e| Error::new(ErrorKind::Url, format!("invalid metadata URL: {e}")))?;
        let mut request = http::Request::new(Bytes::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let response = send_with_timeout(
            &*self.transport,
            self.runtime.sleep.as_deref(),
            request,
            Some(self.timeout),
        )
        .await?;
        let (parts, body) = response.into_parts();
        Ok((parts.status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    /// A discovery whose transport answers every request with `document`.
    fn discovery(issuer: &str, document: &'static str) -> Discovery {
        let transport = crate::transport_fn(move |_req: http::Request<Bytes>| async move {
            Ok(http::Response::new(Bytes::from_static(document.as_bytes())))
        });
        Discovery::new(issuer, Arc::new(transport), Runtime::new()).unwrap()
    }

    #[test]
    fn documents_are_checked_before_use() {
        let ok = r#"{"issuer":"https://id.example","token_endpoint":"https://id.example/token"}"#;
        let metadata = block_on(discovery("https://id.example", ok).metadata()).unwrap();
        assert_eq!(
            metadata.require_token_endpoint().unwrap(),
            "https://id.example/token"
        );
        let refused: [(&str, &'static str, ErrorKind); 6] = [
            // A downgrade to plain http, from an https issuer.
            (
                "https://id.example",
                r#"{"issuer":"https://id.example","token_endpoint":"http://id.example/token"}"#,
                ErrorKind::Config,
            ),
            // Not an absolute URL.
            (
                "https://id.example",
                r#"{"issuer":"https://id.example","jwks_uri":"/keys"}"#,
                ErrorKind::Config,
            ),
            (
                "https://id.example",
                r#"{"issuer":"https://id.example","jwks_uri":"javascript:x"}"#,
                ErrorKind::Config,
            ),
            // Exactly the issuer asked for: not even a trailing slash differs.
            (
                "https://id.example",
                r#"{"issuer":"https://id.example/"}"#,
                ErrorKind::Config,
            ),
            (
                "https://id.example",
                r#"{"issuer":"https://id.example\r\nforged","x":1}"#,
                ErrorKind::Config,
            ),
            ("https://id.example", "not json", ErrorKind::Decode),
        ];
        for (issuer, document, kind) in refused {
            let err = block_on(discovery(issuer, document).metadata()).unwrap_err();
            assert_eq!(err.kind(), kind, "{document}: {err}");
            assert!(!err.to_string().contains('\n'), "no control characters: {err:?}");
        }
        let metadata =
            block_on(discovery("https://id.example", r#"{"issuer":"https://id.example"}"#).metadata())
                .unwrap();
        assert!(metadata.require_token_endpoint().is_err());
    }
}
