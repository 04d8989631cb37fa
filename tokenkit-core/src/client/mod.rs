//! The API client: a builder, request builders, and the request flow (token, send with
//! timeout, compare-and-refresh recovery, typed errors).

pub mod global;
pub mod interceptors;
mod request;
pub mod retry;
mod session;

pub use global::{api, set_config, set_default_client, Api};
pub use request::{ApiResponse, AuthOverride, RequestBuilder};
pub use retry::{Backoff, RetryConfig};
pub use session::{LoginOptions, RefreshOptions};

use interceptors::{ErrorInterceptor, Interceptors, RequestInterceptor, ResponseInterceptor};

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use http::Method;

use crate::context::{Context, ContextProvider, HeaderResolver, Operation, TaskContextProvider};
use crate::error::Error;
use crate::events::Events;
use crate::policy::{RefreshPolicy, StandardPolicy};
use crate::redact::{is_sensitive_header, RedactedHeaders};
use crate::rotation::manager::{Manager, Parts};
use crate::rotation::Coordinator;
use crate::runtime::{Clock, Runtime};
use crate::source::endpoint::EndpointSource;
use crate::source::oauth2::{Grant, OAuth2Config, OAuth2Source};
use crate::source::{EndpointConfig, ProvidedToken, ProviderSource, RefreshHints, TokenSource};
use crate::store::{CookieStore, MemoryStore, TokenStore};
use crate::token::{AccessToken, TokenRecord};
use crate::transport::Transport;

/// Default timeout of a request (and of a token fetch).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Formats the header value from the access token and its type.
pub type Formatter = Arc<dyn Fn(&AccessToken, Option<&str>) -> String + Send + Sync>;

/// The default header value: `Bearer <token>`, or `<type> <token>` when the source reported a
/// type other than bearer.
pub fn default_format(token: &AccessToken, token_type: Option<&str>) -> String {
    match token_type {
        Some(kind) if !kind.eq_ignore_ascii_case("bearer") && !kind.is_empty() => {
            format!("{kind} {}", token.secret())
        }
        _ => format!("Bearer {}", token.secret()),
    }
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
    default_headers: HeaderMap,
    timeout: Option<Duration>,
    transport: Arc<dyn Transport>,
    runtime: Runtime,
    context_provider: Arc<dyn ContextProvider>,
    auth: Option<Auth>,
    interceptors: Interceptors,
    retry: RetryConfig,
    resolver: Option<HeaderResolver>,
}

struct Auth {
    manager: Manager,
    header_name: HeaderName,
    formatter: Formatter,
    /// Set in endpoint mode: serves login and logout.
    endpoint: Option<Arc<EndpointSource>>,
    /// Set in OAuth password mode: serves login (password grant) and logout (revocation).
    oauth: Option<Arc<OAuth2Source>>,
}

impl Auth {
    /// The header value carrying `record`'s access token.
    fn header_value(&self, record: &TokenRecord) -> Result<HeaderValue, Error> {
        let access = record.access_token.as_ref().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Auth(crate::AuthFailure::TokenUnavailable),
                "the session holds no access token",
            )
        })?;
        let formatter = Arc::as_ptr(&self.formatter) as *const () as usize;
        if let Some(value) = record.header_cache.get(formatter, access) {
            return Ok(value);
        }
        let formatted = (self.formatter)(access, record.token_type.as_deref());
        let mut value = HeaderValue::try_from(formatted)
            .map_err(|_| Error::invalid_token("the formatted token is not a valid header value"))?;
        value.set_sensitive(true);
        record.header_cache.set(formatter, access, &value);
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

    /// Waits before retry attempt `attempt + 1` (no wait without a Sleep hook).
    pub(crate) async fn backoff(
        &self,
        retry: &RetryConfig,
        attempt: u32,
        headers: Option<&HeaderMap>,
        why: &str,
    ) {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(attempt);
        let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
        let delay = retry.delay_after(attempt, headers, self.inner.runtime.clock.now(), unit);
        tracing::info!(target: "tokenkit", attempt, delay_ms = delay.as_millis() as u64, reason = why, "retrying");
        if let Some(sleep) = &self.inner.runtime.sleep {
            sleep.sleep(delay).await;
        }
    }

    pub(crate) async fn send_with_timeout(
        &self,
        transport: &(dyn Transport + '_),
        request: http::Request<bytes::Bytes>,
        timeout: Option<Duration>,
    ) -> Result<http::Response<bytes::Bytes>, Error> {
        let sleep = self.inner.runtime.sleep.as_deref();
        crate::transport::send_with_timeout(transport, sleep, request, timeout).await
    }

    /// Sends a prepared request through the full flow — token injection (base origin only),
    /// interceptors, retry, recovery after a rejected token — and returns the final response
    /// as is, whatever its status. For embedding tokenkit into another HTTP stack.
    pub async fn send_http(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, Error> {
        RequestBuilder::from_http(self.clone(), request)
            .send_raw(&*self.inner.transport)
            .await
    }

    /// Like [`send_http`](Self::send_http), but the API call goes through `transport` (an
    /// existing middleware chain, a tower service) while token endpoints keep using the
    /// client's own transport. All rotation state is the client's.
    pub async fn send_http_via(
        &self,
        transport: &(dyn Transport + '_),
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, Error> {
        RequestBuilder::from_http(self.clone(), request)
            .send_raw(transport)
            .await
    }
}

enum PolicyChoice {
    Standard(StandardPolicy),
    Custom(Arc<dyn RefreshPolicy>),
}

/// Configures a [`Client`]. Errors in the chain (an invalid header, a bad URL) are kept and
/// reported by [`build`](ClientBuilder::build).
#[must_use = "call .build() to get a Client"]
pub struct ClientBuilder {
    base_url: String,
    default_headers: HeaderMap,
    timeout: Option<Duration>,
    fetch_timeout: Option<Duration>,
    transport: Option<Arc<dyn Transport>>,
    runtime: Runtime,
    context_provider: Arc<dyn ContextProvider>,
    source: Option<Arc<dyn TokenSource>>,
    endpoints: Option<EndpointConfig>,
    oauth: Option<(OAuth2Config, Grant)>,
    store: Option<Arc<dyn TokenStore>>,
    coordinator: Option<Arc<dyn Coordinator>>,
    policy: Option<PolicyChoice>,
    provider_mode: bool,
    header_name: HeaderName,
    formatter: Formatter,
    events: Events,
    interceptors: Interceptors,
    retry: RetryConfig,
    resolver: Option<HeaderResolver>,
    error: Option<Error>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("default_headers", &RedactedHeaders(&self.default_headers))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder with the defaults: 30 s timeouts, a memory store, the task-scoped context
    /// provider, `Authorization: Bearer <token>`, no transport yet.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            default_headers: HeaderMap::new(),
            timeout: Some(DEFAULT_TIMEOUT),
            fetch_timeout: Some(DEFAULT_TIMEOUT),
            transport: None,
            runtime: Runtime::new(),
            context_provider: Arc::new(TaskContextProvider),
            source: None,
            endpoints: None,
            oauth: None,
            store: None,
            coordinator: None,
            policy: None,
            provider_mode: false,
            header_name: AUTHORIZATION,
            formatter: Arc::new(default_format),
            events: Events::default(),
            interceptors: Interceptors::default(),
            retry: RetryConfig::default(),
            resolver: None,
            error: None,
        }
    }

    fn fail(&mut self, err: Error) {
        self.error.get_or_insert(err);
    }

    /// Sets the transport.
    pub fn transport(mut self, transport: impl Transport + 'static) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Sets a shared transport.
    pub fn shared_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Sets the runtime hooks (clock, sleeper, spawner). This replaces the clock too: call
    /// [`clock`](Self::clock) afterwards to inject a test clock.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }

    /// Replaces only the clock (tests inject a `ManualClock` here).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.runtime = self.runtime.with_clock(clock);
        self
    }

    /// Adds a header sent with every request. Credential headers are marked sensitive.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match crate::header::header_pair(name, value) {
            Ok((name, value)) => {
                self.default_headers.append(name, value);
            }
            Err(err) => self.fail(err),
        }
        self
    }

    /// The timeout of each request attempt (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Disables request timeouts (needed when no Sleep hook is available).
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self.fetch_timeout = None;
        self
    }

    /// The timeout of a token fetch (default 30 s); `None` disables it.
    pub fn token_fetch_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Sets the context provider (default: [`TaskContextProvider`]).
    pub fn context_provider(mut self, provider: impl ContextProvider + 'static) -> Self {
        self.context_provider = Arc::new(provider);
        self
    }

    /// Sets the token source.
    pub fn token_source(mut self, source: impl TokenSource + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Provider mode: `provider` is called whenever a new token is needed. The policy defaults
    /// to [`StandardPolicy::provider`] (10 s refresh buffer).
    ///
    /// ```
    /// # use tokenkit_core::{Client, ProvidedToken};
    /// let builder = Client::builder("https://api.example.com").provider(|| async {
    ///     // call your token endpoint here
    ///     Ok::<_, std::io::Error>(ProvidedToken::new("token-value", 3600))
    /// });
    /// ```
    pub fn provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ProvidedToken, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        self.source = Some(Arc::new(ProviderSource::new(provider)));
        self.provider_mode = true;
        self
    }

    /// Endpoint mode: tokens come from your API's login and refresh
    /// endpoints, per user session. The store defaults to a [`CookieStore`] (HttpOnly cookies
    /// of the request context); the policy to [`StandardPolicy::default`].
    ///
    /// ```
    /// # use tokenkit_core::{Client, EndpointConfig};
    /// let builder = Client::builder("https://api.example.com")
    ///     .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"));
    /// ```
    pub fn endpoints(mut self, config: EndpointConfig) -> Self {
        self.endpoints = Some(config);
        self.provider_mode = false;
        self
    }

    /// OAuth 2.0 client credentials (RFC 6749 §4.4) as the token provider: one token for the
    /// whole client, from the token endpoint; provider-mode defaults (memory store, 10 s
    /// buffer).
    ///
    /// ```
    /// # use tokenkit_core::{Client, OAuth2Config};
    /// let builder = Client::builder("https://api.example.com").oauth2_client_credentials(
    ///     OAuth2Config::new("https://auth.example.com/oauth/token", "my-client")
    ///         .client_secret("…")
    ///         .scope("read"),
    /// );
    /// ```
    pub fn oauth2_client_credentials(mut self, config: OAuth2Config) -> Self {
        self.oauth = Some((config, Grant::ClientCredentials));
        self.endpoints = None;
        self.provider_mode = true;
        self
    }

    /// OAuth 2.0 sessions: [`Client::login`] uses the resource-owner password grant
    /// (§4.3, credentials `{"username", "password"}`), refreshes use the refresh-token grant
    /// (§6), [`Client::logout`] revokes (RFC 7009) when a revocation URL is set. Session-mode
    /// defaults (cookie store).
    pub fn oauth2_password(mut self, config: OAuth2Config) -> Self {
        self.oauth = Some((config, Grant::RefreshToken));
        self.endpoints = None;
        self.provider_mode = false;
        self
    }

    /// Sets the token store (default: a [`MemoryStore`] in provider mode, a [`CookieStore`]
    /// in endpoint mode).
    pub fn store(mut self, store: impl TokenStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Sets a shared token store.
    pub fn shared_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Shares single flight and the grace window beyond this client: with the other clients
    /// given the same [`InProcessCoordinator`](crate::rotation::InProcessCoordinator), or with
    /// a fleet's replicas through a distributed coordinator. By default each client
    /// coordinates its own requests.
    pub fn coordinator(mut self, coordinator: impl Coordinator + 'static) -> Self {
        self.coordinator = Some(Arc::new(coordinator));
        self
    }

    /// Sets the refresh policy.
    pub fn policy(mut self, policy: StandardPolicy) -> Self {
        self.policy = Some(PolicyChoice::Standard(policy));
        self
    }

    /// Sets a custom refresh policy. The shortcuts below ([`refresh_buffer`](Self::refresh_buffer),
    /// [`refresh_on_status`](Self::refresh_on_status), [`max_recovery_tries`](Self::max_recovery_tries))
    /// then report an error: configure the custom policy instead.
    pub fn custom_policy(mut self, policy: impl RefreshPolicy + 'static) -> Self {
        self.policy = Some(PolicyChoice::Custom(Arc::new(policy)));
        self
    }

    fn standard_policy(&mut self) -> Option<&mut StandardPolicy> {
        if self.policy.is_none() {
            let default = if self.provider_mode {
                StandardPolicy::provider()
            } else {
                StandardPolicy::default()
            };
            self.policy = Some(PolicyChoice::Standard(default));
        }
        if matches!(self.policy, Some(PolicyChoice::Custom(_))) {
            self.fail(Error::config("a custom policy is set: configure it directly"));
            return None;
        }
        match &mut self.policy {
            Some(PolicyChoice::Standard(policy)) => Some(policy),
            _ => None,
        }
    }

    /// Provider mode's `refresh_buffer`: the proactive window (default 10 s).
    pub fn refresh_buffer(mut self, window: Duration) -> Self {
        if let Some(policy) = self.standard_policy() {
            policy.refresh_before = window;
        }
        self
    }

    /// Statuses that trigger recovery with a new token (default `[401]`).
    pub fn refresh_on_status(mut self, statuses: impl IntoIterator<Item = http::StatusCode>) -> Self {
        let statuses: Vec<_> = statuses.into_iter().collect();
        if let Some(policy) = self.standard_policy() {
            policy.refresh_on_status = statuses;
        }
        self
    }

    /// Recoveries per request before giving up (default 5).
    pub fn max_recovery_tries(mut self, tries: u32) -> Self {
        if let Some(policy) = self.standard_policy() {
            policy.max_recovery_tries = tries;
        }
        self
    }

    /// The header the token goes in (default `Authorization`).
    pub fn header_name<K>(mut self, name: K) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
    {
        match HeaderName::try_from(name) {
            Ok(name) => self.header_name = name,
            Err(e) => {
                let e: http::Error = e.into();
                self.fail(Error::config(format!("invalid header name: {e}")));
            }
        }
        self
    }

    /// Formats the header value from the token (default `Bearer <token>`).
    pub fn formatter(mut self, formatter: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.formatter = Arc::new(move |token: &AccessToken, _kind: Option<&str>| formatter(token.secret()));
        self
    }

    /// Formats the header value from the token and its type (default
    /// `<type or Bearer> <token>`).
    pub fn inject_token(
        mut self,
        inject: impl Fn(&str, Option<&str>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.formatter =
            Arc::new(move |token: &AccessToken, kind: Option<&str>| inject(token.secret(), kind));
        self
    }

    /// Called after a successful login with the bundle, the response body and the context.
    pub fn on_login(
        mut self,
        f: impl Fn(&TokenRecord, &serde_json::Value, Option<&crate::Context>) + Send + Sync + 'static,
    ) -> Self {
        self.events.on_login = Some(Arc::new(f));
        self
    }

    /// Called after a failed login with the error and the context.
    pub fn on_error(mut self, f: impl Fn(&Error, Option<&crate::Context>) + Send + Sync + 'static) -> Self {
        self.events.on_error = Some(Arc::new(f));
        self
    }

    /// Called after each successful refresh with the new bundle and the context.
    pub fn on_refresh(
        mut self,
        f: impl Fn(&TokenRecord, Option<&crate::Context>) + Send + Sync + 'static,
    ) -> Self {
        self.events.on_refresh = Some(Arc::new(f));
        self
    }

    /// Called after each failed refresh with the error and the context.
    pub fn on_refresh_error(
        mut self,
        f: impl Fn(&Error, Option<&crate::Context>) + Send + Sync + 'static,
    ) -> Self {
        self.events.on_refresh_error = Some(Arc::new(f));
        self
    }

    /// Called when a refresh token is rejected and the session is cleared.
    pub fn on_session_invalid(mut self, f: impl Fn(Option<&crate::Context>) + Send + Sync + 'static) -> Self {
        self.events.on_session_invalid = Some(Arc::new(f));
        self
    }

    /// Adds a request interceptor (run in order on every attempt, after token injection).
    pub fn request_interceptor(mut self, interceptor: impl RequestInterceptor + 'static) -> Self {
        self.interceptors.request.push(Arc::new(interceptor));
        self
    }

    /// Adds a response interceptor (run in order on the final response).
    pub fn response_interceptor(mut self, interceptor: impl ResponseInterceptor + 'static) -> Self {
        self.interceptors.response.push(Arc::new(interceptor));
        self
    }

    /// Adds an error interceptor (run in order on the final error).
    pub fn error_interceptor(mut self, interceptor: impl ErrorInterceptor + 'static) -> Self {
        self.interceptors.error.push(Arc::new(interceptor));
        self
    }

    /// Sets the retry policy (default: 3 attempts, idempotent methods only).
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Adds dynamic headers per context and operation (requests, login, refresh, logout).
    pub fn resolve_headers(
        mut self,
        resolve: impl Fn(Option<&Context>, Operation) -> HeaderMap + Send + Sync + 'static,
    ) -> Self {
        self.resolver = Some(Arc::new(resolve));
        self
    }

    /// Called with a message each time a token is obtained.
    pub fn on_token_refresh(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.events.on_token_refresh = Some(Arc::new(f));
        self
    }

    /// Called with a message when a response status means "token rejected".
    pub fn on_auth_fail(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.events.on_auth_fail = Some(Arc::new(f));
        self
    }

    /// Called with the error each time a token fetch fails.
    pub fn on_token_request_fail(mut self, f: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.events.on_token_request_fail = Some(Arc::new(f));
        self
    }

    /// Called with a message before each replay with a new token.
    pub fn on_recovery_try(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.events.on_recovery_try = Some(Arc::new(f));
        self
    }

    /// Called with the count at every multiple of the token try threshold of consecutive
    /// fetch failures (the 10th, 20th, … by default).
    pub fn on_token_try_threshold(mut self, f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.events.on_token_try_threshold = Some(Arc::new(f));
        self
    }

    /// Called with a message when a request's recoveries are exhausted.
    pub fn on_recovery_abort(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.events.on_recovery_abort = Some(Arc::new(f));
        self
    }

    /// Failures between two `on_token_try_threshold` calls (default 10; 0 disables).
    pub fn token_try_threshold(mut self, threshold: u64) -> Self {
        self.events.token_try_threshold = threshold;
        self
    }

    /// Include token values in callback messages and log messages (default false). Only for
    /// debugging: tokens then reach your logs.
    pub fn add_token_to_logs(mut self, enabled: bool) -> Self {
        self.events.add_token_to_logs = enabled;
        self
    }

    /// Builds the client, reporting the first configuration error.
    pub fn build(mut self) -> Result<Client, Error> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        let base = crate::urls::parse_base(&self.base_url)?;
        let transport = self.transport.take().ok_or_else(|| {
            Error::config("no transport: use an adapter's builder() or call .transport(..)")
        })?;
        let has_source = self.source.is_some() || self.endpoints.is_some() || self.oauth.is_some();
        if (self.timeout.is_some() || (has_source && self.fetch_timeout.is_some()))
            && !self.runtime.has_sleep()
        {
            return Err(Error::config(
                "timeouts need a Sleep hook: set .runtime(..) (adapters' builder() do) or call .no_timeout()",
            ));
        }
        let policy: Arc<dyn RefreshPolicy> = match self.policy.take() {
            Some(PolicyChoice::Custom(policy)) => policy,
            Some(PolicyChoice::Standard(policy)) => Arc::new(policy),
            None if self.provider_mode => Arc::new(StandardPolicy::provider()),
            None => Arc::new(StandardPolicy::default()),
        };
        if let Some(err) = self.endpoints.as_mut().and_then(|e| e.error.take()) {
            return Err(err);
        }
        let endpoint = self.endpoints.take().map(|config| {
            Arc::new(EndpointSource::new(
                config,
                Arc::clone(&transport),
                base.clone(),
                self.runtime.sleep.clone(),
                self.resolver.clone(),
            ))
        });
        let oauth = self.oauth.take().map(|(config, grant)| {
            let source = OAuth2Source::new(
                config,
                grant,
                Arc::clone(&transport),
                base.clone(),
                self.runtime.sleep.clone(),
            );
            (Arc::new(source), grant)
        });
        let (source, default_store): (Option<Arc<dyn TokenSource>>, Arc<dyn TokenStore>) =
            match (&endpoint, &oauth) {
                (Some(endpoint), _) => (
                    Some(Arc::clone(endpoint) as Arc<dyn TokenSource>),
                    Arc::new(CookieStore::default()),
                ),
                (None, Some((oauth, Grant::ClientCredentials))) => (
                    Some(Arc::clone(oauth) as Arc<dyn TokenSource>),
                    Arc::new(MemoryStore::new()),
                ),
                (None, Some((oauth, Grant::RefreshToken))) => (
                    Some(Arc::clone(oauth) as Arc<dyn TokenSource>),
                    Arc::new(CookieStore::default()),
                ),
                (None, None) => (self.source.take(), Arc::new(MemoryStore::new())),
            };
        let session_oauth =
            oauth.and_then(|(source, grant)| (grant == Grant::RefreshToken).then_some(source));
        let auth = source.map(|source| Auth {
            manager: Manager::new(Parts {
                source,
                store: self.store.take().unwrap_or(default_store),
                policy,
                runtime: self.runtime.clone(),
                events: self.events.clone(),
                fetch_timeout: self.fetch_timeout,
                coordinator: self.coordinator.take(),
            }),
            header_name: self.header_name.clone(),
            formatter: Arc::clone(&self.formatter),
            endpoint,
            oauth: session_oauth,
        });
        for (name, value) in self.default_headers.iter_mut() {
            if is_sensitive_header(name) {
                value.set_sensitive(true);
            }
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                base,
                default_headers: self.default_headers,
                timeout: self.timeout,
                transport,
                runtime: self.runtime,
                context_provider: self.context_provider,
                auth,
                interceptors: self.interceptors,
                retry: self.retry,
                resolver: self.resolver,
            }),
        })
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
