//! [`ClientBuilder`]: setters record intent; [`build`](ClientBuilder::build) settles the
//! defaults from the final configuration and refuses contradictions.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use http::StatusCode;

use super::interceptors::{ErrorInterceptor, Interceptors, RequestInterceptor, ResponseInterceptor};
use super::retry::RetryConfig;
use super::{default_format, Auth, Client, ClientInner, Formatter};
use crate::context::{Context, ContextProvider, HeaderResolver, Operation, TaskContextProvider};
use crate::error::Error;
use crate::events::{Event, Events};
use crate::policy::{RefreshPolicy, StandardPolicy};
use crate::redact::{is_sensitive_header, RedactedHeaders};
use crate::rotation::manager::{Manager, Parts};
use crate::rotation::Coordinator;
use crate::runtime::{Clock, Runtime};
use crate::source::discovery::Discovery;
use crate::source::endpoint::EndpointSource;
use crate::source::oauth2::{Grant, OAuth2Config, OAuth2Source};
use crate::source::{EndpointConfig, ProvidedToken, ProviderSource, TokenSource};
use crate::store::{CookieStore, MemoryStore, TokenStore};
use crate::token::AccessToken;
use crate::transport::Transport;

/// Where the client's tokens come from: one value, replaced by each mode setter.
enum Mode {
    /// No token source: requests go out unauthenticated.
    None,
    /// [`ClientBuilder::provider`].
    Provider(Arc<dyn TokenSource>),
    /// [`ClientBuilder::endpoints`].
    Endpoints(Box<EndpointConfig>),
    /// [`ClientBuilder::oauth2_client_credentials`] / [`ClientBuilder::oauth2_password`].
    OAuth(Box<OAuth2Config>, Grant),
    /// [`ClientBuilder::token_source`].
    Source(Arc<dyn TokenSource>),
}

impl Mode {
    /// Provider-like modes hold one token for the whole client; the others hold a session
    /// per user.
    fn is_per_client(&self) -> bool {
        matches!(self, Mode::Provider(_) | Mode::OAuth(_, Grant::ClientCredentials))
    }
}

/// Policy settings made on the builder, applied on top of the mode's default policy.
#[derive(Default)]
struct Overrides {
    refresh_before: Option<Duration>,
    refresh_on_status: Option<Vec<StatusCode>>,
    max_recovery_tries: Option<u32>,
}

impl Overrides {
    /// The name of the first override that is set, for the contradiction error.
    fn first_set(&self) -> Option<&'static str> {
        if self.refresh_before.is_some() {
            Some(".refresh_before(..)")
        } else if self.refresh_on_status.is_some() {
            Some(".refresh_on_status(..)")
        } else if self.max_recovery_tries.is_some() {
            Some(".max_recovery_tries(..)")
        } else {
            None
        }
    }

    fn apply(self, mut policy: StandardPolicy) -> StandardPolicy {
        if let Some(window) = self.refresh_before {
            policy = policy.refresh_before(window);
        }
        if let Some(statuses) = self.refresh_on_status {
            policy = policy.refresh_on_status(statuses);
        }
        if let Some(tries) = self.max_recovery_tries {
            policy = policy.max_recovery_tries(tries);
        }
        policy
    }
}

/// Configures a [`Client`].
///
/// Setters can be called in any order: each records a setting (a later call of the same
/// setter wins), and [`build`](Self::build) settles the defaults from the final
/// configuration. Invalid values (a bad header, a bad URL) and contradictory settings (a
/// policy override together with [`policy`](Self::policy)) are reported by `build`.
///
/// The token mode is one setting: [`provider`](Self::provider),
/// [`endpoints`](Self::endpoints), [`oauth2_client_credentials`](Self::oauth2_client_credentials),
/// [`oauth2_password`](Self::oauth2_password) and [`token_source`](Self::token_source) each
/// replace the previous mode.
///
/// | mode | default store | default policy |
/// |---|---|---|
/// | `provider`, `oauth2_client_credentials` | [`MemoryStore`] | [`StandardPolicy::provider`] (10 s window) |
/// | `endpoints`, `oauth2_password` | [`CookieStore`] | [`StandardPolicy::default`] (5 min window, 60 s skew) |
/// | `token_source` | [`MemoryStore`] | [`StandardPolicy::default`] |
#[must_use = "call .build() to get a Client"]
pub struct ClientBuilder {
    base_url: String,
    default_headers: HeaderMap,
    timeout: Option<Duration>,
    fetch_timeout: Option<Duration>,
    transport: Option<Arc<dyn Transport>>,
    runtime: Runtime,
    clock: Option<Arc<dyn Clock>>,
    context_provider: Arc<dyn ContextProvider>,
    mode: Mode,
    store: Option<Arc<dyn TokenStore>>,
    coordinator: Option<Arc<dyn Coordinator>>,
    outage: crate::OutageConfig,
    #[cfg(feature = "openid")]
    openid: Option<crate::client::openid::OpenIdConfig>,
    policy: Option<Arc<dyn RefreshPolicy>>,
    overrides: Overrides,
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
    pub(super) fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            default_headers: HeaderMap::new(),
            timeout: Some(crate::defaults::TIMEOUT),
            fetch_timeout: Some(crate::defaults::TIMEOUT),
            transport: None,
            runtime: Runtime::new(),
            clock: None,
            context_provider: Arc::new(TaskContextProvider),
            mode: Mode::None,
            store: None,
            #[cfg(feature = "openid")]
            openid: None,
            coordinator: None,
            outage: crate::OutageConfig::default(),
            policy: None,
            overrides: Overrides::default(),
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

    /// Sends requests (and token requests) through `transport`. Adapters' `builder()`
    /// presets set it; an `Arc<dyn Transport>` works too.
    pub fn transport(mut self, transport: impl Transport + 'static) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Sets the runtime hooks (clock, sleeper, spawner). Adapters' presets set them.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }

    /// Reads time from `clock` instead of the runtime's (tests inject a `ManualClock`).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
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
        crate::header::append(&mut self.default_headers, &mut self.error, name, value);
        self
    }

    /// The timeout of each request attempt (default [`crate::defaults::TIMEOUT`], 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Disables the request and token fetch timeouts (needed without a Sleep hook).
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self.fetch_timeout = None;
        self
    }

    /// The timeout of a token fetch (default [`crate::defaults::TIMEOUT`], 30 s); `None` disables it.
    pub fn token_fetch_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Sets the context provider (default: [`TaskContextProvider`]).
    pub fn context_provider(mut self, provider: impl ContextProvider + 'static) -> Self {
        self.context_provider = Arc::new(provider);
        self
    }

    /// Provider mode: `provider` is called whenever a new token is needed; one token serves
    /// the whole client.
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
        self.mode = Mode::Provider(Arc::new(ProviderSource::new(provider)));
        self
    }

    /// Endpoint mode: tokens come from your API's login and refresh endpoints, per user
    /// session (see [`Client::login`]).
    ///
    /// ```
    /// # use tokenkit_core::{Client, EndpointConfig};
    /// let builder = Client::builder("https://api.example.com")
    ///     .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"));
    /// ```
    pub fn endpoints(mut self, config: EndpointConfig) -> Self {
        self.mode = Mode::Endpoints(Box::new(config));
        self
    }

    /// OAuth 2.0 client credentials (RFC 6749 §4.4): one token for the whole client, from the
    /// token endpoint.
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
        self.mode = Mode::OAuth(Box::new(config), Grant::ClientCredentials);
        self
    }

    /// OAuth 2.0 sessions: [`Client::login`] uses the resource-owner password grant
    /// (§4.3, credentials `{"username", "password"}`), refreshes use the refresh-token grant
    /// (§6), [`Client::logout`] revokes (RFC 7009) when a revocation URL is set.
    pub fn oauth2_password(mut self, config: OAuth2Config) -> Self {
        self.mode = Mode::OAuth(Box::new(config), Grant::RefreshToken);
        self
    }

    /// Session mode signing users in through an OpenID provider (feature `openid`): the
    /// authorization code flow with PKCE, `state` and `nonce`, the ID token verified against
    /// the provider's keys ([`Client::begin_sign_in`], [`Client::finish_sign_in`],
    /// [`Client::sign_out`]; tokenkit-axum mounts them as routes). `config` names the
    /// provider ([`OAuth2Config::from_issuer`]) and this client; the tokens then rotate with
    /// the refresh-token grant like any session's. Default store: [`CookieStore`].
    #[cfg(feature = "openid")]
    pub fn openid(mut self, config: OAuth2Config, openid: crate::client::openid::OpenIdConfig) -> Self {
        self.openid = Some(openid);
        self.oauth2_password(config)
    }

    /// A custom [`TokenSource`].
    pub fn token_source(mut self, source: impl TokenSource + 'static) -> Self {
        self.mode = Mode::Source(Arc::new(source));
        self
    }

    /// Where tokens are kept (default: see the table above). An `Arc<dyn TokenStore>` works
    /// too.
    pub fn store(mut self, store: impl TokenStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Shares single flight and the grace window beyond this client: with the other clients
    /// given the same [`InProcessCoordinator`](crate::InProcessCoordinator), or with a
    /// fleet's replicas through a distributed coordinator. By default each client coordinates
    /// its own requests.
    pub fn coordinator(mut self, coordinator: impl Coordinator + 'static) -> Self {
        self.coordinator = Some(Arc::new(coordinator));
        self
    }

    /// How the client behaves while its token source fails (an identity provider outage):
    /// the jittered backoff between failed fetches, shared by every request, and the circuit
    /// breaker. Default: [`OutageConfig::default`](crate::OutageConfig::default).
    pub fn outage(mut self, outage: crate::OutageConfig) -> Self {
        self.outage = outage;
        self
    }

    /// Replaces the mode's default policy: a configured [`StandardPolicy`] or your own
    /// [`RefreshPolicy`]. The builder's overrides ([`refresh_before`](Self::refresh_before),
    /// [`refresh_on_status`](Self::refresh_on_status),
    /// [`max_recovery_tries`](Self::max_recovery_tries)) cannot be combined with it.
    pub fn policy(mut self, policy: impl RefreshPolicy + 'static) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Overrides the proactive window of the mode's default policy: refresh this long before
    /// expiry.
    pub fn refresh_before(mut self, window: Duration) -> Self {
        self.overrides.refresh_before = Some(window);
        self
    }

    /// Overrides the statuses that trigger recovery with a new token (default `[401]`).
    pub fn refresh_on_status(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.overrides.refresh_on_status = Some(statuses.into_iter().collect());
        self
    }

    /// Overrides the recoveries per request before giving up (default 5).
    pub fn max_recovery_tries(mut self, tries: u32) -> Self {
        self.overrides.max_recovery_tries = Some(tries);
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

    /// Formats the header value from the token and the token type the source reported
    /// (default: `Bearer <token>`, or `<type> <token>` for a type other than bearer).
    ///
    /// ```
    /// # use tokenkit_core::Client;
    /// let builder = Client::builder("https://api.example.com")
    ///     .header_name("x-api-key")
    ///     .format_token(|token, _token_type| token.to_owned());
    /// ```
    pub fn format_token(
        mut self,
        format: impl Fn(&str, Option<&str>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.formatter =
            Arc::new(move |token: &AccessToken, kind: Option<&str>| format(token.secret(), kind));
        self
    }

    /// Adds a handler of the client's lifecycle [`Event`]s (login, refresh, rejection,
    /// recovery, …). Handlers run in the order added, on the task that reached the moment;
    /// keep them short. A panicking handler is contained.
    ///
    /// ```
    /// # use tokenkit_core::{Client, Event};
    /// let builder = Client::builder("https://api.example.com").on_event(|event: &Event<'_>| {
    ///     if let Event::SessionInvalid { .. } = event {
    ///         eprintln!("the user must sign in again");
    ///     }
    /// });
    /// ```
    pub fn on_event(mut self, handler: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.events.add(Arc::new(handler));
        self
    }

    /// Consecutive fetch failures between two [`Event::FailureThreshold`]s (default
    /// [`crate::defaults::TOKEN_TRY_THRESHOLD`](crate::defaults::TOKEN_TRY_THRESHOLD), 10; 0 disables).
    pub fn token_try_threshold(mut self, threshold: u64) -> Self {
        self.events.token_try_threshold = threshold;
        self
    }

    /// Include access token values in tokenkit's log messages (default false). Only for
    /// debugging: tokens then reach your logs.
    pub fn add_token_to_logs(mut self, enabled: bool) -> Self {
        self.events.add_token_to_logs = enabled;
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

    /// The policy: the explicit one, or the mode's default with the overrides on top.
    fn settle_policy(&mut self) -> Result<Arc<dyn RefreshPolicy>, Error> {
        let overrides = std::mem::take(&mut self.overrides);
        match self.policy.take() {
            Some(policy) => match overrides.first_set() {
                Some(setting) => Err(Error::config(format!(
                    "contradictory settings: .policy(..) and {setting}; configure the policy you pass, or drop .policy(..)"
                ))),
                None => Ok(policy),
            },
            None => {
                let default = if self.mode.is_per_client() {
                    StandardPolicy::provider()
                } else {
                    StandardPolicy::default()
                };
                Ok(Arc::new(overrides.apply(default)))
            }
        }
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
        if let Some(clock) = self.clock.take() {
            self.runtime = self.runtime.with_shared_clock(clock);
        }
        let has_source = !matches!(self.mode, Mode::None);
        if (self.timeout.is_some() || (has_source && self.fetch_timeout.is_some()))
            && !self.runtime.has_sleep()
        {
            return Err(Error::config(
                "timeouts need a Sleep hook: set .runtime(..) (adapters' builder() do) or call .no_timeout()",
            ));
        }
        let policy = self.settle_policy()?;
        let per_client = self.mode.is_per_client();
        let mut endpoint = None;
        let mut session_oauth = None;
        let mut discovered = None;
        let source: Option<Arc<dyn TokenSource>> = match std::mem::replace(&mut self.mode, Mode::None) {
            Mode::None => None,
            Mode::Provider(source) | Mode::Source(source) => Some(source),
            Mode::Endpoints(mut config) => {
                if let Some(err) = config.error.take() {
                    return Err(err);
                }
                let source = Arc::new(EndpointSource::new(
                    *config,
                    Arc::clone(&transport),
                    base.clone(),
                    self.runtime.sleep.clone(),
                    self.resolver.clone(),
                ));
                endpoint = Some(Arc::clone(&source));
                Some(source)
            }
            Mode::OAuth(config, grant) => {
                let discovery = match &config.issuer {
                    Some(issuer) => Some(Arc::new(Discovery::new(
                        issuer.clone(),
                        Arc::clone(&transport),
                        self.runtime.clone(),
                    )?)),
                    None => None,
                };
                let source = Arc::new(OAuth2Source::new(
                    *config,
                    grant,
                    Arc::clone(&transport),
                    base.clone(),
                    &self.runtime,
                    discovery.clone(),
                ));
                discovered = discovery;
                if grant == Grant::RefreshToken {
                    session_oauth = Some(Arc::clone(&source));
                }
                Some(source)
            }
        };
        if let Some(store) = &self.store {
            store.check()?;
        }
        #[cfg(feature = "openid")]
        if let Some(openid) = &self.openid {
            openid.check()?;
            if discovered.is_none() {
                return Err(Error::config(
                    "OpenID sign-in needs the provider's issuer: OAuth2Config::from_issuer(..)",
                ));
            }
        }
        let per_user = endpoint.is_some() || session_oauth.is_some();
        let auth = source.map(|source| {
            let store = self.store.take().unwrap_or_else(|| -> Arc<dyn TokenStore> {
                if per_user && !per_client {
                    Arc::new(CookieStore::default())
                } else {
                    Arc::new(MemoryStore::new())
                }
            });
            Auth {
                manager: Manager::new(Parts {
                    source,
                    store,
                    policy,
                    runtime: self.runtime.clone(),
                    events: self.events.clone(),
                    fetch_timeout: self.fetch_timeout,
                    coordinator: self.coordinator.take(),
                    outage: self.outage,
                }),
                by_params: std::sync::Mutex::default(),
                header_name: self.header_name.clone(),
                formatter: Arc::clone(&self.formatter),
                endpoint,
                oauth: session_oauth,
            }
        });
        for (name, value) in self.default_headers.iter_mut() {
            if is_sensitive_header(name) {
                value.set_sensitive(true);
            }
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                base_parts: crate::urls::BaseParts::new(&base),
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
                discovery: discovered,
                #[cfg(feature = "openid")]
                openid: self.openid.map(Arc::new),
                #[cfg(feature = "openid")]
                openid_keys: crate::client::openid::Keys::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::run_with_context;
    use crate::source::FetchRequest;
    use crate::token::TokenRecord;
    use crate::transport::transport_fn;
    use crate::LoginOptions;
    use bytes::Bytes;
    use futures_executor::block_on;
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Fixed;

    #[async_trait::async_trait]
    impl TokenSource for Fixed {
        async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
            Ok(TokenRecord::new(AccessToken::new("from-source"), request.now))
        }
    }

    type Setter = fn(ClientBuilder) -> ClientBuilder;

    /// The five mode setters, named.
    fn modes() -> [(&'static str, Setter); 5] {
        [
            ("provider", |b| {
                b.provider(|| async { Ok::<_, std::io::Error>(ProvidedToken::new("from-provider", 3600)) })
            }),
            ("token_source", |b| b.token_source(Fixed)),
            ("oauth2_client_credentials", |b| {
                b.oauth2_client_credentials(OAuth2Config::new("http://h/oauth/token", "c").client_secret("s"))
            }),
            ("oauth2_password", |b| {
                b.oauth2_password(OAuth2Config::new("http://h/oauth/token", "c").client_secret("s"))
            }),
            ("endpoints", |b| {
                b.endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
            }),
        ]
    }

    /// A builder whose transport answers every call with a token and records the paths.
    fn builder(paths: &Arc<Mutex<Vec<String>>>) -> ClientBuilder {
        let paths = Arc::clone(paths);
        let transport = transport_fn(move |req: http::Request<Bytes>| {
            let paths = Arc::clone(&paths);
            async move {
                paths
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(req.uri().path().to_owned());
                let body = r#"{"access_token":"from-wire","refresh_token":"r","expires_in":3600}"#;
                Ok(http::Response::new(Bytes::from(body)))
            }
        });
        Client::builder("http://h").transport(transport).no_timeout()
    }

    /// Which mode a built client is in, told from what it does.
    fn observed_mode(client: &Client, paths: &Arc<Mutex<Vec<String>>>) -> &'static str {
        let last_path = || paths.lock().unwrap().last().cloned().unwrap_or_default();
        match block_on(client.token()) {
            Ok(record) => match record.access_token.as_ref().map(|t| t.secret()) {
                Some("from-provider") => "provider",
                Some("from-source") => "token_source",
                Some("from-wire") if last_path() == "/oauth/token" => "oauth2_client_credentials",
                other => panic!("unexpected token {other:?}"),
            },
            // A session mode: no session yet. Logging in tells which one.
            Err(_) => {
                let credentials = serde_json::json!({"username": "u", "password": "p"});
                block_on(run_with_context(
                    Context::new(),
                    client.login(&credentials, LoginOptions::new()),
                ))
                .unwrap();
                match last_path().as_str() {
                    "/oauth/token" => "oauth2_password",
                    "/auth/login" => "endpoints",
                    other => panic!("unexpected login path {other}"),
                }
            }
        }
    }

    #[test]
    fn every_pair_of_mode_setters_in_both_orders_gives_the_last_mode() {
        for (first_name, first) in modes() {
            for (second_name, second) in modes() {
                let paths = Arc::new(Mutex::new(Vec::new()));
                let client = second(first(builder(&paths))).build().unwrap();
                assert_eq!(
                    observed_mode(&client, &paths),
                    second_name,
                    ".{first_name}(..).{second_name}(..)"
                );
            }
        }
    }

    fn policy_of(client: &Client) -> String {
        format!("{:?}", client.auth().unwrap().manager.policy())
    }

    #[test]
    fn the_final_mode_settles_the_defaults_and_overrides_apply_on_top_in_any_order() {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let [(_, provider), _, _, _, (_, endpoints)] = modes();
        let window = Duration::from_secs(5);
        let expected = format!("{:?}", StandardPolicy::provider().refresh_before(window));
        for client in [
            provider(builder(&paths)).refresh_before(window).build().unwrap(),
            provider(builder(&paths).refresh_before(window)).build().unwrap(),
            provider(endpoints(builder(&paths)).refresh_before(window))
                .build()
                .unwrap(),
            provider(endpoints(builder(&paths).refresh_before(window)))
                .build()
                .unwrap(),
        ] {
            assert_eq!(policy_of(&client), expected);
        }
        // Without overrides: the mode's own defaults.
        let client = provider(endpoints(builder(&paths))).build().unwrap();
        assert_eq!(policy_of(&client), format!("{:?}", StandardPolicy::provider()));
        let client = endpoints(provider(builder(&paths))).build().unwrap();
        assert_eq!(policy_of(&client), format!("{:?}", StandardPolicy::default()));
    }

    #[test]
    fn every_contradictory_pair_is_a_build_error_naming_both() {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let overrides: [(&str, Setter); 3] = [
            (".refresh_before(..)", |b| {
                b.refresh_before(Duration::from_secs(1))
            }),
            (".refresh_on_status(..)", |b| {
                b.refresh_on_status([StatusCode::FORBIDDEN])
            }),
            (".max_recovery_tries(..)", |b| b.max_recovery_tries(1)),
        ];
        let policy: Setter = |b| b.policy(StandardPolicy::default());
        for (name, set) in overrides {
            for builder in [set(policy(builder(&paths))), policy(set(builder(&paths)))] {
                let err = builder.build().unwrap_err();
                assert_eq!(err.kind(), crate::ErrorKind::Config);
                let message = err.to_string();
                assert!(
                    message.contains(".policy(..)") && message.contains(name),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn a_later_call_of_the_same_setter_wins() {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let client = builder(&paths)
            .provider(|| async { Ok::<_, std::io::Error>(ProvidedToken::new("p", 60)) })
            .policy(StandardPolicy::default())
            .policy(StandardPolicy::provider())
            .build()
            .unwrap();
        assert_eq!(policy_of(&client), format!("{:?}", StandardPolicy::provider()));
        // The clock may be set before or after the runtime.
        let clock = crate::runtime::ManualClock::default();
        let before = builder(&paths)
            .clock(clock.clone())
            .runtime(Runtime::new())
            .build()
            .unwrap();
        let after = builder(&paths)
            .runtime(Runtime::new())
            .clock(clock.clone())
            .build()
            .unwrap();
        for client in [before, after] {
            assert_eq!(client.inner.runtime.clock.now(), clock.now());
        }
    }
}
