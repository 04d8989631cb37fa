//! Request builders, the request flow and responses.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::classify::{classify, jitter_draw, Next, Outcome, Progress};
use super::retry::RetryConfig;
use super::Client;
use crate::context::{Context, Operation};
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::events::Event;
use crate::redact::RedactedHeaders;
use crate::source::RefreshHints;
use crate::transport::{TimeLimited, Transport};
use crate::urls;
use tracing::Instrument;

/// Per-request overrides of the auth configuration,
/// e.g. extra refresh data for multi-tenancy. Requests with different override data never
/// share a refresh. `Debug` does not print the data.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AuthOverride {
    /// Extra fields merged into the refresh request body.
    pub data: Option<serde_json::Value>,
}

impl fmt::Debug for AuthOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthOverride")
            .field("data", &self.data.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl AuthOverride {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Extra fields (a JSON object) merged into any refresh this request triggers.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// A request being built. Errors in the chain are kept and returned by the `send` methods.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    /// `None` only for a request that failed before it had a client (see `failed`).
    client: Option<Client>,
    method: Method,
    target: String,
    headers: HeaderMap,
    query: String,
    body: Bytes,
    timeout: Option<Option<Duration>>,
    skip_auth: bool,
    auth_override: AuthOverride,
    /// The parameters of this request's token (boxed: most requests have none).
    token_params: Option<Box<crate::TokenParams>>,
    retry: Option<RetryConfig>,
    context: Option<Context>,
    error: Option<Error>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body_len", &self.body.len())
            .field("skip_auth", &self.skip_auth)
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    pub(crate) fn new(client: Client, method: Method, target: String) -> Self {
        Self::with(Some(client), None, method, target)
    }

    /// A request that fails with `err` when sent (the default client is not configured).
    pub(crate) fn failed(err: Error, method: Method, target: String) -> Self {
        Self::with(None, Some(err), method, target)
    }

    fn with(client: Option<Client>, error: Option<Error>, method: Method, target: String) -> Self {
        Self {
            client,
            method,
            target,
            headers: HeaderMap::new(),
            query: String::new(),
            body: Bytes::new(),
            timeout: None,
            skip_auth: false,
            auth_override: AuthOverride::default(),
            token_params: None,
            retry: None,
            context: None,
            error,
        }
    }

    fn fail(&mut self, err: Error) {
        self.error.get_or_insert(err);
    }

    /// Adds a header (replacing a client default of the same name).
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        crate::header::append(&mut self.headers, &mut self.error, name, value);
        self
    }

    /// Appends query parameters, serialized with `serde_urlencoded` (a map, a struct, or a
    /// slice of pairs). Parameters already in the target are kept.
    pub fn query<T: Serialize + ?Sized>(mut self, params: &T) -> Self {
        match serde_urlencoded::to_string(params) {
            Ok(encoded) if !encoded.is_empty() => {
                if !self.query.is_empty() {
                    self.query.push('&');
                }
                self.query.push_str(&encoded);
            }
            Ok(_) => {}
            Err(e) => self.fail(Error::decode(format!(
                "query parameters could not be encoded: {e}"
            ))),
        }
        self
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.set_body(bytes.into(), "application/json"),
            Err(e) => self.fail(Error::decode(format!("JSON body could not be encoded: {e}"))),
        }
        self
    }

    /// A form body (`Content-Type: application/x-www-form-urlencoded`).
    pub fn form<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_urlencoded::to_string(body) {
            Ok(encoded) => self.set_body(encoded.into(), "application/x-www-form-urlencoded"),
            Err(e) => self.fail(Error::decode(format!("form body could not be encoded: {e}"))),
        }
        self
    }

    /// A raw body with its content type.
    pub fn body(mut self, body: impl Into<Bytes>, content_type: &str) -> Self {
        match HeaderValue::from_str(content_type) {
            Ok(_) => self.set_body(body.into(), content_type),
            Err(_) => self.fail(Error::config("invalid content type")),
        }
        self
    }

    fn set_body(&mut self, body: Bytes, content_type: &str) {
        self.body = body;
        if let Ok(value) = HeaderValue::from_str(content_type) {
            self.headers.insert(CONTENT_TYPE, value);
        }
    }

    /// Overrides the client's timeout for this request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(Some(timeout));
        self
    }

    /// Sends this request without a token and without recovery.
    pub fn skip_auth(mut self) -> Self {
        self.skip_auth = true;
        self
    }

    /// Overrides auth settings for this request (e.g. extra refresh data). This request's
    /// own headers are propagated to any refresh it triggers.
    pub fn auth(mut self, overrides: AuthOverride) -> Self {
        self.auth_override = overrides;
        self
    }

    /// Asks for a token with these parameters (scopes, audience, resource indicators): the
    /// client keeps one cached token and one single flight per combination, and a token is
    /// never served to a request that asked for other parameters. Fields left unset inherit
    /// the client's configuration. For a client-wide token (OAuth 2.0 client credentials, or
    /// a [`TokenSource`](crate::TokenSource) that reads
    /// [`FetchRequest::params`](crate::FetchRequest::params)); a session-mode client
    /// answers with a configuration error. Empty parameters are the client's own token.
    ///
    /// ```no_run
    /// # async fn demo(client: tokenkit_core::Client) -> Result<(), tokenkit_core::Error> {
    /// use tokenkit_core::TokenParams;
    /// let orders = TokenParams::new().scope("orders:read").audience("https://orders.example.com");
    /// let body = client.get("/orders").token_params(orders).send::<serde_json::Value>().await?;
    /// # let _ = body; Ok(()) }
    /// ```
    pub fn token_params(mut self, params: crate::TokenParams) -> Self {
        self.token_params = (!params.is_empty()).then(|| Box::new(params));
        self
    }

    /// Uses `ctx` as this request's context instead of the ambient one.
    pub fn context(mut self, ctx: Context) -> Self {
        self.context = Some(ctx);
        self
    }

    /// Sends the request and decodes a JSON body into `T`.
    pub fn send<T: DeserializeOwned>(self) -> impl Future<Output = Result<ApiResponse<T>, Error>> {
        self.send_with(|response| {
            let data = serde_json::from_slice(&response.data).map_err(|e| {
                // serde's message may quote the body; report only where and what class of error.
                Error::decode(format!(
                    "response body is not the expected JSON ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
                .with_response(response.status, response.data.clone())
            })?;
            Ok(response.map(|_| data))
        })
    }

    /// Sends the request and returns the body as text (invalid UTF-8 is replaced).
    pub fn send_text(self) -> impl Future<Output = Result<ApiResponse<String>, Error>> {
        self.send_with(|response| {
            let text = String::from_utf8_lossy(&response.data).into_owned();
            Ok(response.map(|_| text))
        })
    }

    /// Overrides the client's retry policy for this request.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sends the request and returns the raw body.
    pub fn send_bytes(self) -> impl Future<Output = Result<ApiResponse<Bytes>, Error>> {
        self.send_with(Ok)
    }

    /// The client and the context of this request, or the error recorded while building it.
    fn prepare(&mut self) -> Result<(Client, Option<Context>), Error> {
        let (Some(client), None) = (self.client.take(), &self.error) else {
            return Err(self
                .error
                .take()
                .unwrap_or_else(|| Error::config("the request has no client")));
        };
        let ctx = self
            .context
            .take()
            .or_else(|| client.inner.context_provider.current());
        Ok((client, ctx))
    }

    // The request flow is one future: the builder is captured once, where it stays, and every
    // step borrows it, so the request's state is not copied from one nested future into the
    // next. Only the cold paths (refresh, recovery, retry pauses, error interceptors, a
    // listening tracing subscriber) are boxed futures of their own.

    /// Sends, converts the body, and lets the error interceptors observe any error.
    fn send_with<T>(
        self,
        convert: impl FnOnce(ApiResponse<Bytes>) -> Result<ApiResponse<T>, Error>,
    ) -> impl Future<Output = Result<ApiResponse<T>, Error>> {
        let mut builder = self;
        async move {
            let (client, ctx) = builder.prepare()?;
            let transport = &*client.inner.transport;
            let result = match builder.exchange(&client, ctx.as_ref(), transport).await {
                Ok((url, response)) => final_response(&client, url, response).and_then(convert),
                Err(err) => Err(err),
            };
            // Observed in place: the response is not moved out and back.
            if let Err(err) = &result {
                Box::pin(observe(&client, ctx, err)).await;
            }
            result
        }
    }

    /// Sends a prepared request through the full flow and returns the final response as is
    /// (non-2xx included): the entry point of embeddings ([`Client::send_http_via`]).
    pub(crate) fn send_raw<'t>(
        self,
        transport: &'t (dyn Transport + '_),
    ) -> impl Future<Output = Result<http::Response<Bytes>, Error>> + 't {
        let mut builder = self;
        async move {
            let (client, ctx) = builder.prepare()?;
            match builder.exchange(&client, ctx.as_ref(), transport).await {
                Ok((_, response)) => Ok(response),
                Err(err) => {
                    Box::pin(observe(&client, ctx, &err)).await;
                    Err(err)
                }
            }
        }
    }

    /// The exchange through `transport`: the final response, whatever its status. Inside a
    /// `request` span (fields: method, host, attempt, outcome) when a subscriber listens;
    /// without one, no span is entered on every poll.
    fn exchange<'a>(
        &'a mut self,
        client: &'a Client,
        ctx: Option<&'a Context>,
        transport: &'a (dyn Transport + '_),
    ) -> impl Future<Output = Result<(http::Uri, http::Response<Bytes>), Error>> + 'a {
        use futures_util::future::FutureExt;
        use tracing::field::Empty;
        let span = tracing::debug_span!(
            "request",
            method = %self.method,
            host = Empty,
            attempt = Empty,
            outcome = Empty
        );
        if span.is_disabled() {
            return self.attempts(client, ctx, transport, None).left_future();
        }
        let traced = async move {
            let result = self
                .attempts(client, ctx, transport, Some(&span))
                .instrument(span.clone())
                .await;
            match &result {
                Ok((_, response)) => span.record("outcome", response.status().as_u16()),
                Err(error) => span.record("outcome", tracing::field::display(error.kind())),
            };
            result
        };
        Box::pin(traced).right_future()
    }

    /// The attempts: token → request interceptors → send (with timeout) → retry of network
    /// errors and retryable statuses (idempotent methods) → on a rejected status,
    /// compare-and-refresh and replay (at most `max_recovery_tries`) → response interceptors.
    async fn attempts(
        &mut self,
        client: &Client,
        ctx: Option<&Context>,
        transport: &(dyn Transport + '_),
        span: Option<&tracing::Span>,
    ) -> Result<(http::Uri, http::Response<Bytes>), Error> {
        let inner = &client.inner;
        let urls::Resolved { uri, same_origin } =
            urls::request_uri(&inner.base, inner.base_parts.as_ref(), &self.target, &self.query)?;
        if let Some(span) = span {
            span.record("host", uri.host());
        }
        let timeout = self.timeout.unwrap_or(inner.timeout);
        // The token goes only to the base URL's origin.
        let auth = inner.auth.as_ref().filter(|_| !self.skip_auth && same_origin);

        // What a refresh this request triggers carries: its own headers and override data
        // (boxed: most requests have neither, and never refresh).
        let hints = match auth {
            Some(_) if !self.headers.is_empty() || self.auth_override.data.is_some() => Some(Box::new(
                RefreshHints::new(&self.headers, self.auth_override.data.take()),
            )),
            _ => None,
        };
        let hints = || hints.as_deref().unwrap_or_else(|| RefreshHints::none());
        // The manager of this request's token: the client's, or its parameters' own.
        let for_params = match (auth, self.token_params.as_deref()) {
            (Some(auth), Some(params)) => Some(auth.manager_for(params)?),
            _ => None,
        };
        let manager = for_params.as_ref().or(auth.map(|auth| &auth.manager));
        let headers = self.merged_headers(client, ctx);
        let retry = self.retry.as_ref().unwrap_or(&inner.retry);

        // A fresh token is read without an await; the refresh path is boxed, so its state
        // does not enlarge (and get copied with) every request's future.
        let mut token = match manager {
            Some(manager) => Some(match manager.fresh_token(ctx) {
                Some(record) => record,
                None => Box::pin(manager.token(ctx, hints())).await?,
            }),
            None => None,
        };
        let policy = manager.map(|manager| &**manager.policy());
        let (mut attempt, mut recoveries) = (1u32, 0u32);
        let mut response = loop {
            // The request of this attempt lives only until the transport takes it, so it does
            // not occupy the future while the response is awaited.
            let send = {
                let mut request = http::Request::new(self.body.clone());
                *request.method_mut() = self.method.clone();
                *request.uri_mut() = uri.clone();
                if !headers.is_empty() {
                    *request.headers_mut() = headers.clone();
                }
                if let (Some(auth), Some(record)) = (auth, &token) {
                    request
                        .headers_mut()
                        .insert(auth.header_name.clone(), auth.header_value(record)?);
                }
                if !inner.interceptors.request.is_empty() {
                    request = Box::pin(inner.interceptors.intercept_request(request, ctx)).await?;
                }
                transport.send(request)
            };
            let sent = TimeLimited::new(send, inner.runtime.sleep.as_deref(), timeout).await;
            let outcome = match &sent {
                Ok(response) => Outcome::Answered {
                    status: response.status(),
                    headers: response.headers(),
                },
                Err(error) => Outcome::Failed(error),
            };
            let progress = Progress {
                method: &self.method,
                attempt,
                recoveries,
                authenticated: token.is_some(),
            };
            if let Some(span) = span {
                span.record("attempt", attempt);
            }
            let now = || inner.runtime.clock.now();
            match classify(outcome, progress, retry, policy, now, || jitter_draw(attempt)) {
                Next::Done | Next::Fail => match sent {
                    Ok(response) => break response,
                    Err(error) => return Err(error),
                },
                Next::RetryAfter(pause) => {
                    let why = match &sent {
                        Ok(response) => response.status().as_str().to_owned(),
                        Err(error) => error.to_string(),
                    };
                    Box::pin(client.pause(attempt, pause, &why)).await;
                    attempt += 1;
                }
                Next::Recover | Next::GiveUp => {
                    let (Some(manager), Some(record), Ok(response)) = (manager, &token, sent) else {
                        return Err(Error::config("unreachable: a recovery without a token"));
                    };
                    let status = response.status();
                    let events = manager.events();
                    events.emit(Event::Rejected {
                        method: &self.method,
                        status,
                    });
                    match Box::pin(manager.recover(ctx, record, recoveries, status, hints())).await {
                        Ok(next) => {
                            recoveries += 1;
                            token = Some(next);
                        }
                        Err(err) if err.auth_failure() == Some(AuthFailure::RecoveryExhausted) => {
                            return Err(err.with_response(status, response.into_body()));
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
        };
        if !inner.interceptors.response.is_empty() {
            response = Box::pin(inner.interceptors.intercept_response(response, ctx)).await?;
        }
        Ok((uri, response))
    }

    /// The client's default headers, then the header resolver's, then this request's own
    /// (each replacing the names before it).
    fn merged_headers(&mut self, client: &Client, ctx: Option<&Context>) -> HeaderMap {
        let inner = &client.inner;
        if inner.default_headers.is_empty() && inner.resolver.is_none() {
            return std::mem::take(&mut self.headers);
        }
        let mut headers = inner.default_headers.clone();
        if let Some(resolve) = &inner.resolver {
            for (name, value) in resolve(ctx, Operation::Request) {
                if let Some(name) = name {
                    headers.insert(name, value);
                }
            }
        }
        for name in self.headers.keys() {
            headers.remove(name);
        }
        headers.extend(self.headers.drain());
        headers
    }

    /// A request builder from a prepared `http::Request` (its URI may be absolute or a path).
    pub(crate) fn from_http(client: Client, request: http::Request<Bytes>) -> Self {
        let (parts, body) = request.into_parts();
        let target = parts.uri.to_string();
        let mut builder = Self::new(client, parts.method, target);
        builder.headers = parts.headers;
        builder.body = body;
        builder
    }
}

/// The final response of a request sent by a `send` method: its data when the status is a
/// success, else a typed error carrying the status and body.
fn final_response(
    client: &Client,
    url: http::Uri,
    response: http::Response<Bytes>,
) -> Result<ApiResponse<Bytes>, Error> {
    let (parts, body) = response.into_parts();
    if parts.status.is_success() {
        return Ok(ApiResponse {
            data: body,
            status: parts.status,
            headers: parts.headers,
            url,
        });
    }
    let what = format!("{} {}", parts.status.as_u16(), url.path());
    // The policy says which final statuses are authentication failures (by default the
    // ones it recovers from, and 403).
    let auth_failure = match &client.inner.auth {
        Some(auth) => auth.manager.policy().is_auth_failure(parts.status),
        None => crate::policy::is_auth_failure_by_default(parts.status),
    };
    if let Some(scope) = super::classify::insufficient_scope(&parts.headers) {
        let scope = crate::redact::server_text(&scope, &[]);
        let message = if scope.is_empty() {
            format!("{what}: the token lacks a scope the server requires")
        } else {
            format!("{what}: the token lacks scope {scope:?}")
        };
        return Err(
            Error::new(ErrorKind::Auth(AuthFailure::InsufficientScope), message)
                .with_response(parts.status, body),
        );
    }
    let kind = if auth_failure {
        ErrorKind::Auth(AuthFailure::Rejected)
    } else {
        ErrorKind::Status
    };
    Err(Error::new(kind, what).with_response(parts.status, body))
}

/// Lets the error interceptors observe the final error of a request.
async fn observe(client: &Client, ctx: Option<Context>, err: &Error) {
    for interceptor in &client.inner.interceptors.error {
        interceptor.observe(err.clone(), ctx.clone()).await;
    }
}

/// A successful response: decoded data, status, headers and the final URL.
#[non_exhaustive]
pub struct ApiResponse<T> {
    /// The decoded body.
    pub data: T,
    /// The status (2xx).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The URL the request was sent to.
    pub url: http::Uri,
}

impl<T> ApiResponse<T> {
    /// Maps the data, keeping status, headers and URL.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> ApiResponse<U> {
        ApiResponse {
            data: f(self.data),
            status: self.status,
            headers: self.headers,
            url: self.url,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ApiResponse<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiResponse")
            .field("data", &self.data)
            .field("status", &self.status)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("url", &self.url)
            .finish()
    }
}
