//! # tokenkit-tower
//!
//! [`AuthLayer`] adds tokenkit to an HTTP stack you already have: any `tower::Service` of
//! `http::Request<Full<Bytes>>` (a hyper-util client, a tower stack with timeouts or tracing,
//! …) gets token injection, proactive refresh, recovery after a rejected token and retries —
//! all driven by a tokenkit [`Client`], whose rotation state it shares.
//!
//! The inner service sends the API calls; the client's own transport fetches tokens. Request
//! bodies are buffered (a request must be replayable after a refresh) and so are responses.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_layer::Layer;
//!
//! /// Any service of `http::Request<Full<Bytes>>` works; this one answers by itself.
//! #[derive(Clone)]
//! struct Echo;
//!
//! impl tower_service::Service<http::Request<Full<Bytes>>> for Echo {
//!     type Response = http::Response<Full<Bytes>>;
//!     type Error = std::convert::Infallible;
//!     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
//!     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//!         std::task::Poll::Ready(Ok(()))
//!     }
//!     fn call(&mut self, req: http::Request<Full<Bytes>>) -> Self::Future {
//!         let auth = req.headers().get("authorization").cloned();
//!         let body = auth.map(|v| Bytes::copy_from_slice(v.as_bytes())).unwrap_or_default();
//!         std::future::ready(Ok(http::Response::new(Full::new(body))))
//!     }
//! }
//!
//! let client = tokenkit_core::Client::builder("http://api.example")
//!     .transport(tokenkit_core::transport_fn(|_req: http::Request<Bytes>| async {
//!         Ok(http::Response::new(Bytes::new())) // the token endpoint would go here
//!     }))
//!     .no_timeout()
//!     .provider(|| async { Ok::<_, std::io::Error>(tokenkit_core::ProvidedToken::new("t-1", 60)) })
//!     .build()?;
//! let service = tokenkit_tower::AuthLayer::new(client).layer(Echo);
//! // `service` is a tower Service<http::Request<B>>; requests to http://api.example get the token.
//! # let _ = service;
//! # Ok::<(), tokenkit_core::Error>(())
//! ```
#![forbid(unsafe_code)]

use std::error::Error as StdError;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tokenkit_core::{Client, Error, ErrorKind, RetryConfig, Transport, TransportError, TransportErrorKind};
use tower_layer::Layer;
use tower_service::Service;

/// The default cap on a buffered body (request or response): 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Wraps services with token management driven by `client`.
///
/// The layer retries nothing but its own recovery after a rejected token: the client's
/// [`RetryConfig`] is not used, because a stack that embeds tokenkit has its own retry layer,
/// and retrying in both multiplies the attempts. Place `AuthLayer` inside the retry layer
/// (`ServiceBuilder::new().layer(retry).layer(auth)`): each retry then carries a current
/// token. [`retry`](Self::retry) opts in to tokenkit's retries instead.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    client: Client,
    max_body_bytes: usize,
    retry: Option<RetryConfig>,
}

impl AuthLayer {
    /// A layer using `client`'s configuration and rotation state.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retry: None,
        }
    }

    /// Retries network errors and retryable statuses in the layer, as configured (default:
    /// no retries; see the type's docs).
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Caps buffered request and response bodies (default 16 MiB).
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            client: self.client.clone(),
            max_body_bytes: self.max_body_bytes,
            retry: self.retry.clone(),
        }
    }
}

/// A service that authenticates its requests; see [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    client: Client,
    max_body_bytes: usize,
    retry: Option<RetryConfig>,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<Full<Bytes>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    /// Ready when the inner service is (its backpressure and its errors pass through). Each
    /// attempt of a request then awaits the readiness of its own clone.
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::new(ErrorKind::Transport, "the inner service failed").with_source(e.into()))
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The service polled ready is the one to use; leave a clone in its place.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let transport = ServiceTransport {
            inner: Mutex::new(ready),
            max_body_bytes: self.max_body_bytes,
        };
        if let Some(retry) = &self.retry {
            request.extensions_mut().insert(retry.clone());
        }
        let client = self.client.clone();
        let limit = self.max_body_bytes;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    Error::new(ErrorKind::Config, "the request body could not be buffered").with_source(e)
                })?
                .to_bytes();
            let response = client
                .send_http_via(&transport, http::Request::from_parts(parts, body))
                .await?;
            Ok(response.map(Full::new))
        })
    }
}

/// The inner service as a tokenkit [`Transport`]: each attempt calls a ready clone.
struct ServiceTransport<S> {
    inner: Mutex<S>,
    max_body_bytes: usize,
}

impl<S> fmt::Debug for ServiceTransport<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceTransport")
    }
}

#[async_trait]
impl<S, ResBody> Transport for ServiceTransport<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        let mut service = self.inner.lock().unwrap_or_else(PoisonError::into_inner).clone();
        poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(|e| TransportError::other(e.into()))?;
        let response = service
            .call(request.map(Full::new))
            .await
            .map_err(|e| TransportError::other(e.into()))?;
        let (parts, body) = response.into_parts();
        let limit = self.max_body_bytes;
        let body = Limited::new(body, limit).collect().await.map_err(|e| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("response body failed or exceeds {limit} bytes"),
            )
            .with_source(e)
        })?;
        Ok(http::Response::from_parts(parts, body.to_bytes()))
    }
}
