//! tokenkit as a `reqwest_middleware::Middleware` (feature `middleware`), for applications
//! that already have a reqwest-middleware chain.
//!
//! ```no_run
//! # fn run(client: tokenkit_core::Client) {
//! // A client that follows no redirect: credentials must never follow one.
//! let http = tokenkit_reqwest::client_builder().build().unwrap();
//! let chain = reqwest_middleware::ClientBuilder::new(http)
//!     // Retries outside, tokens inside: each retry carries a current token.
//!     // .with(reqwest_retry::RetryTransientMiddleware::new_with_policy(..))
//!     .with(tokenkit_reqwest::middleware::TokenMiddleware::new(client))
//!     .build();
//! # }
//! ```
//!
//! The rest of the chain (and reqwest) sends the API calls; the tokenkit [`Client`] supplies
//! tokens, refreshes and recovery, with all its rotation state. Requests must have buffered
//! bodies (a streaming body cannot be replayed after a refresh); responses are buffered.

use async_trait::async_trait;
use bytes::Bytes;
use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tokenkit_core::{Client, RetryConfig, Transport, TransportError};

use super::{buffer, followed_a_redirect, map_error, DEFAULT_MAX_RESPONSE_BYTES};

/// Token injection, refresh and recovery for a reqwest-middleware chain.
///
/// The middleware retries nothing but its own recovery after a rejected token: the client's
/// [`RetryConfig`] is not used, because a chain has its own retry middleware (reqwest-retry),
/// and retrying in both multiplies the attempts. Add `TokenMiddleware` **after** the retry
/// middleware (`.with(retry).with(tokens)`), so it runs inside it: each retry then carries a
/// current token. [`retry`](Self::retry) opts in to tokenkit's retries instead.
#[derive(Debug, Clone)]
pub struct TokenMiddleware {
    client: Client,
    max_response_bytes: usize,
    retry: Option<RetryConfig>,
}

impl TokenMiddleware {
    /// A middleware driven by `client`'s configuration and rotation state.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            retry: None,
        }
    }

    /// Retries network errors and retryable statuses in the middleware, as configured
    /// (default: no retries; see the type's docs).
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// The rest of the chain as a tokenkit [`Transport`]: each attempt runs a clone of `Next`.
struct NextTransport<'a> {
    next: Next<'a>,
    extensions: tokio::sync::Mutex<&'a mut Extensions>,
    max_response_bytes: usize,
}

impl std::fmt::Debug for NextTransport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NextTransport")
    }
}

#[async_trait]
impl Transport for NextTransport<'_> {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        let request = reqwest::Request::try_from(request).map_err(map_error)?;
        let sent_to = request.url().clone();
        let mut extensions = self.extensions.lock().await;
        let response = self
            .next
            .clone()
            .run(request, &mut extensions)
            .await
            .map_err(|err| match err {
                reqwest_middleware::Error::Reqwest(err) => map_error(err),
                other => TransportError::other(other),
            })?;
        if &sent_to != response.url() {
            return Err(followed_a_redirect());
        }
        buffer(response, self.max_response_bytes).await
    }
}

#[async_trait]
impl Middleware for TokenMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let body = match request.body() {
            None => Bytes::new(),
            Some(body) => match body.as_bytes() {
                Some(bytes) => Bytes::copy_from_slice(bytes),
                None => {
                    return Err(reqwest_middleware::Error::middleware(tokenkit_core::Error::new(
                        tokenkit_core::ErrorKind::Config,
                        "a streaming request body cannot be replayed after a refresh; buffer it",
                    )))
                }
            },
        };
        let mut prepared = http::Request::new(body);
        *prepared.method_mut() = request.method().clone();
        *prepared.uri_mut() = http::Uri::try_from(request.url().as_str()).map_err(|e| {
            reqwest_middleware::Error::middleware(tokenkit_core::Error::new(
                tokenkit_core::ErrorKind::Url,
                format!("invalid URL: {e}"),
            ))
        })?;
        *prepared.headers_mut() = request.headers().clone();
        if let Some(retry) = &self.retry {
            prepared.extensions_mut().insert(retry.clone());
        }
        let transport = NextTransport {
            next,
            extensions: tokio::sync::Mutex::new(extensions),
            max_response_bytes: self.max_response_bytes,
        };
        let response = self
            .client
            .send_http_via(&transport, prepared)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        Ok(reqwest::Response::from(response))
    }
}
