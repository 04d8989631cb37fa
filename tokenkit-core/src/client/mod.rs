//! The API client: a builder, request builders, and the request flow (token, send with
//! timeout, compare-and-refresh recovery, typed errors).

mod builder;
mod classify;
mod global;
mod interceptors;
#[cfg(feature = "openid")]
pub(crate) mod openid;
mod request;
mod retry;
mod session;

pub use builder::ClientBuilder;
pub use global::{api, set_config, set_default_client, Api};
pub use interceptors::{ErrorInterceptor, RequestInterceptor, ResponseInterceptor};
pub use request::{ApiResponse, AuthOverride, RequestBuilder};
pub use retry::{Backoff, RetryConfig};
pub use session::{LoginOptions, RefreshOptions};

use interceptors::Interceptors;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::context::{Context, ContextProvider, HeaderResolver};
use crate::error::Error;
use crate::redact::RedactedHeaders;
use crate::rotation::manager::Manager;
use crate::runtime::Runtime;
use crate::source::endpoint::EndpointSource;
use crate::source::oauth2::OAuth2Source;
use crate::source::RefreshHints;
use crate::token::{AccessToken, TokenRecord};
use crate::transport::Transport;

/// Formats the header value from the access token and its type.
type Formatter = Arc<dyn Fn(&AccessToken, Option<&str>) -> String + Send + Sync>;

/// The default header value: `Bearer <token>`, or `<type> <token>` when the source reported a
/// type other than bearer.
fn default_format(token: &AccessToken, token_type: Option<&str>) -> String {
    let scheme = match token_type {
        Some(kind) if !kind.eq_ignore_ascii_case("bearer") && !kind.is_empty() => kind,
        _ => "Bearer",
    };
    let mut value = String::with_capacity(scheme.len() + 1 + token.secret().len());
    value.push_str(scheme);
    value.push(' ');
    value.push_str(token.secret());
    value
}

/// An HTTP client that authenticates its requests. Cheap to clone (clones share the token
/// state); `Send + Sync`.
///
/// Build one with [`Client::builder`] (or an adapter's `builder()` preset, which supplies the
/// transport and runtime hooks).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    base: ::url::Url,
    /// The base's parts, for joining plain targets without a URL parse.
    base_parts: Option<crate::urls::BaseParts>,
    default_headers: HeaderMap,
    timeout: Option<Duration>,
    transport: Arc<dyn Transport>,
    runtime: Runtime,
    context_provider: Arc<dyn ContextProvider>,
    auth: Option<Auth>,
    interceptors: Interceptors,
    retry: RetryConfig,
    resolver: Option<HeaderResolver>,
    /// The OAuth provider's metadata, when the client was configured from an issuer.
    discovery: Option<Arc<crate::Discovery>>,
    /// Sign-in through the OpenID provider, when configured.
    #[cfg(feature = "openid")]
    pub(crate) openid: Option<Arc<crate::client::openid::OpenIdConfig>>,
    /// The provider's signing keys, cached.
    #[cfg(feature = "openid")]
    pub(crate) openid_keys: crate::client::openid::Keys,
}

struct Auth {
    manager: Manager,
    /// The per-parameter token caches.
    by_params: std::sync::Mutex<ParamsCache>,
    header_name: HeaderName,
    formatter: Formatter,
    /// Set in endpoint mode: serves login and logout.
    endpoint: Option<Arc<EndpointSource>>,
    /// Set in OAuth password mode: serves login (password grant) and logout (revocation).
    oauth: Option<Arc<OAuth2Source>>,
}

/// The managers of the parameter combinations a client was asked for, each with when it was
/// last used (a counter), so the least recently used is dropped past
/// [`TOKEN_PARAMS_CACHE`](crate::defaults::TOKEN_PARAMS_CACHE).
#[derive(Default)]
pub(crate) struct ParamsCache {
    map: std::collections::HashMap<crate::TokenParams, (Manager, u64)>,
    tick: u64,
}

impl Auth {
    /// The manager of tokens fetched with `params`: each combination its own cached token
    /// and single flight.
    fn manager_for(&self, params: &crate::TokenParams) -> Result<Manager, Error> {
        if self.endpoint.is_some() || self.oauth.is_some() {
            return Err(Error::config(
                "per-request token parameters need a client-wide token (provider or client \
                 credentials mode); a user's session has one set of tokens (token exchange \
                 gets a token for another audience)",
            ));
        }
        let mut cache = self
            .by_params
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.tick = cache.tick.wrapping_add(1);
        let tick = cache.tick;
        let map = &mut cache.map;
        if let Some((manager, used)) = map.get_mut(params) {
            *used = tick;
            return Ok(manager.clone());
        }
        let manager = self.manager.for_params(params.clone())?;
        if map.len() >= crate::defaults::TOKEN_PARAMS_CACHE {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(params, _)| params.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(params.clone(), (manager.clone(), tick));
        Ok(manager)
    }

    /// The header value carrying `record`'s access token.
    fn header_value(&self, record: &TokenRecord) -> Result<HeaderValue, Error> {
        let access = record.access_token.as_ref().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Auth(crate::AuthFailure::TokenUnavailable),
                "the session holds no access token",
            )
        })?;
        let formatter = Arc::as_ptr(&self.formatter) as *const () as usize;
        if let Some(value) = record.cache.get(formatter, access) {
            return Ok(value);
        }
        let formatted = (self.formatter)(access, record.token_type.as_deref());
        let mut value = HeaderValue::try_from(formatted)
            .map_err(|_| Error::invalid_token("the formatted token is not a valid header value"))?;
        value.set_sensitive(true);
        if record.cache.worth_keeping() {
            record.cache.set(formatter, access, &value);
        }
        Ok(value)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Client")
            .field("base_url", &inner.base.as_str())
            .field("default_headers", &RedactedHeaders(&inner.default_headers))
            .field("timeout", &inner.timeout)
            .field("transport", &inner.transport)
            .field("auth", &inner.auth.as_ref().map(|a| (&a.header_name, &a.manager)))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder for a client whose requests resolve against `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// The provider's metadata (cached), when the client's OAuth configuration came from an
    /// issuer ([`OAuth2Config::from_issuer`](crate::OAuth2Config::from_issuer)): what a
    /// sign-in flow needs besides the token endpoint (authorization, JWKS, end-session).
    pub fn discovery(&self) -> Option<&crate::Discovery> {
        self.inner.discovery.as_deref()
    }

    /// The base URL.
    pub fn base_url(&self) -> &::url::Url {
        &self.inner.base
    }

    /// Runs `future` with `ctx` bound as the current context, through this client's context
    /// provider (the task-scoped one by default). Framework adapters call this per request.
    pub async fn scope<F>(&self, ctx: Context, future: F) -> Result<F::Output, Error>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let mut output = None;
        let slot = &mut output;
        self.inner
            .context_provider
            .scope(ctx, Box::pin(async move { *slot = Some(future.await) }))
            .await;
        output.ok_or_else(|| Error::config("the context provider's run function did not run the future"))
    }

    /// A request with any method.
    pub fn request(&self, method: Method, target: impl Into<String>) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, target.into())
    }

    /// A GET request.
    pub fn get(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::GET, target)
    }

    /// A POST request (not retried unless opted in).
    pub fn post(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::POST, target)
    }

    /// A PUT request.
    pub fn put(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::PUT, target)
    }

    /// A PATCH request (not retried unless opted in).
    pub fn patch(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::PATCH, target)
    }

    /// A DELETE request.
    pub fn delete(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::DELETE, target)
    }

    /// The size of this client's rotation state (refreshes in flight, grace-window entries):
    /// for monitoring, and to check that it returns to zero after a rotation wave.
    pub fn rotation_stats(&self) -> Result<crate::rotation::RotationStats, Error> {
        Ok(self.auth()?.manager.stats())
    }

    /// The current token record of the ambient session, refreshed first if it is missing,
    /// expired or due. Fails when the client has no token source.
    pub async fn token(&self) -> Result<Arc<TokenRecord>, Error> {
        let auth = self.auth()?;
        let ctx = self.inner.context_provider.current();
        auth.manager.token(ctx.as_ref(), &RefreshHints::default()).await
    }

    fn auth(&self) -> Result<&Auth, Error> {
        self.inner
            .auth
            .as_ref()
            .ok_or_else(|| Error::config("this client has no token source"))
    }

    /// The OAuth source of a session client (refresh-token grant).
    #[cfg(feature = "openid")]
    pub(crate) fn oauth_source(&self) -> Result<&OAuth2Source, Error> {
        self.auth()?.oauth.as_deref().ok_or_else(|| {
            Error::config("OpenID sign-in needs an OAuth session client (ClientBuilder::openid)")
        })
    }

    /// Waits `pause` before retry attempt `attempt + 1` (no wait without a Sleep hook).
    pub(crate) async fn pause(&self, attempt: u32, pause: Duration, why: &str) {
        tracing::debug!(
            attempt,
            delay_ms = pause.as_millis() as u64,
            reason = why,
            "retrying"
        );
        if let Some(sleep) = &self.inner.runtime.sleep {
            sleep.sleep(pause).await;
        }
    }

    /// Sends a prepared request through the full flow — token injection (base origin only),
    /// interceptors, the client's retry, recovery after a rejected token — and returns the
    /// final response as is, whatever its status.
    ///
    /// A [`RetryConfig`] in the request's extensions replaces the client's for this request.
    pub async fn send_http(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, Error> {
        let retry = request.extensions().get::<RetryConfig>().cloned();
        let mut builder = RequestBuilder::from_http(self.clone(), request);
        if let Some(retry) = retry {
            builder = builder.retry(retry);
        }
        builder.send_raw(&*self.inner.transport).await
    }

    /// Sends `request` through `transport` — an existing middleware chain or tower service —
    /// with token injection (base origin only), interceptors and recovery after a rejected
    /// token; token endpoints keep using the client's own transport, and all rotation state is
    /// the client's. This is the embedded form `tokenkit_tower::AuthLayer` and
    /// `tokenkit_reqwest::middleware::TokenMiddleware` use.
    ///
    /// **No retries** by default, whatever the client's [`RetryConfig`]: a stack that embeds
    /// tokenkit has its own retry layer, and retrying in both multiplies the attempts (a
    /// persistent 503 behind reqwest-retry(2) would cost 3 × 3 calls). Place tokenkit *inside*
    /// the retry layer (closer to the wire), so each of the retry layer's attempts carries a
    /// current token. To have tokenkit retry too, put a [`RetryConfig`] in the request's
    /// extensions.
    pub async fn send_http_via(
        &self,
        transport: &(dyn Transport + '_),
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, Error> {
        let retry = request
            .extensions()
            .get::<RetryConfig>()
            .cloned()
            .unwrap_or_else(RetryConfig::none);
        RequestBuilder::from_http(self.clone(), request)
            .retry(retry)
            .send_raw(transport)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn client_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    }

    #[test]
    fn default_format_uses_bearer_unless_typed() {
        let t = AccessToken::new("abc");
        assert_eq!(default_format(&t, None), "Bearer abc");
        assert_eq!(default_format(&t, Some("bearer")), "Bearer abc");
        assert_eq!(default_format(&t, Some("MAC")), "MAC abc");
    }

    #[test]
    fn build_reports_configuration_errors() {
        let transport = crate::transport_fn(|_req: http::Request<bytes::Bytes>| async {
            Ok(http::Response::new(bytes::Bytes::new()))
        });
        let err = Client::builder("http://h").build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "no transport");
        let err = Client::builder("nope").transport(transport).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Url);
        let transport = crate::transport_fn(|_req: http::Request<bytes::Bytes>| async {
            Ok(http::Response::new(bytes::Bytes::new()))
        });
        let err = Client::builder("http://h")
            .transport(transport)
            .build()
            .unwrap_err();
        assert!(err.message().contains("Sleep hook"), "{err}");
        let err = Client::builder("http://h")
            .header("bad header", "x")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = Client::builder("http://h")
            .header("x-ok", "bad\nvalue")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = Client::builder("http://h")
            .header_name("no spaces")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        // A store that can tell it is misconfigured stops the build.
        let transport = crate::transport_fn(|_req: http::Request<bytes::Bytes>| async {
            Ok(http::Response::new(bytes::Bytes::new()))
        });
        let err = Client::builder("http://h")
            .transport(transport)
            .no_timeout()
            .endpoints(crate::EndpointConfig::new("/login", "/refresh"))
            .store(crate::CookieStore::new(
                crate::CookieConfig::new().prefix("__Host-").secure(false),
            ))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("__Host-"), "{err}");
    }

    #[test]
    fn debug_redacts_default_credentials() {
        let transport = crate::transport_fn(|_req: http::Request<bytes::Bytes>| async {
            Ok(http::Response::new(bytes::Bytes::new()))
        });
        let client = Client::builder("http://h")
            .transport(transport)
            .no_timeout()
            .header("x-api-key", "s3cr3t")
            .build()
            .unwrap();
        assert!(!format!("{client:?}").contains("s3cr3t"));
    }
}
