//! # tokenkit-hyper
//!
//! [hyper] (through hyper-util's pooled client) as the transport of a tokenkit
//! [`Client`]: [`HyperTransport`], generic over the connector, plus a [`builder()`] preset
//! with the tokio runtime hooks.
//!
//! ```no_run
//! use tokenkit_core::ProvidedToken;
//!
//! # async fn run() -> Result<(), tokenkit_core::Error> {
//! let client = tokenkit_hyper::builder("http://127.0.0.1:8080")
//!     .provider(|| async { Ok::<_, std::io::Error>(ProvidedToken::new("token", 3600)) })
//!     .build()?;
//! let me = client.get("/me").send::<serde_json::Value>().await?;
//! # Ok(()) }
//! ```
//!
//! Plain HTTP by default; the `rustls` feature adds [`https()`] (webpki roots). TLS
//! verification is never relaxed here; pass your own connector for anything else.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokenkit_core::{Client, ClientBuilder, Transport, TransportError, TransportErrorKind};

pub use hyper_util;

/// The default cap on a buffered response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A [`Transport`] over `hyper_util::client::legacy::Client<C, Full<Bytes>>`.
#[derive(Debug, Clone)]
pub struct HyperTransport<C = HttpConnector> {
    client: HyperClient<C, Full<Bytes>>,
    max_response_bytes: usize,
}

impl HyperTransport<HttpConnector> {
    /// A pooled plain-HTTP client on the tokio executor.
    pub fn new() -> Self {
        Self::from(HyperClient::builder(TokioExecutor::new()).build_http())
    }
}

impl Default for HyperTransport<HttpConnector> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> From<HyperClient<C, Full<Bytes>>> for HyperTransport<C> {
    fn from(client: HyperClient<C, Full<Bytes>>) -> Self {
        Self {
            client,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl<C> HyperTransport<C> {
    /// Caps the size of a buffered response body (default 16 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }
}

impl<C> Transport for HyperTransport<C>
where
    C: Connect + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    // Written out instead of `async fn`: the request goes to hyper before the future is made,
    // so the boxed future holds hyper's response future, not the request.
    fn send<'a, 'f>(
        &'a self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        let pending = self.client.request(request.map(Full::new));
        let limit = self.max_response_bytes;
        Box::pin(async move {
            let response = pending.await.map_err(map_error)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit).collect().await.map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    TransportError::new(
                        TransportErrorKind::Other,
                        format!("response body exceeds the limit of {limit} bytes"),
                    )
                } else {
                    TransportError::other(err)
                }
            })?;
            Ok(http::Response::from_parts(parts, body.to_bytes()))
        })
    }
}

/// Maps every hyper-util error to a transport error kind.
fn map_error(err: hyper_util::client::legacy::Error) -> TransportError {
    if err.is_connect() {
        TransportError::connect(err)
    } else {
        TransportError::other(err)
    }
}

/// A pooled HTTPS (and HTTP) client with the webpki root certificates.
#[cfg(feature = "rustls")]
pub fn https() -> HyperTransport<hyper_rustls::HttpsConnector<HttpConnector>> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    HyperTransport::from(HyperClient::builder(TokioExecutor::new()).build(connector))
}

/// A [`ClientBuilder`] with a plain-HTTP [`HyperTransport`] and the tokio runtime hooks.
pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
    with_transport(base_url, HyperTransport::new())
}

/// A [`ClientBuilder`] over your own [`HyperTransport`] (any connector), with the tokio hooks.
pub fn with_transport<C>(base_url: impl Into<String>, transport: HyperTransport<C>) -> ClientBuilder
where
    C: Connect + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    Client::builder(base_url)
        .transport(transport)
        .runtime(tokenkit_tokio::runtime())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        let t = HyperTransport::new();
        let req = http::Request::get("http://127.0.0.1:9/")
            .body(Bytes::new())
            .unwrap();
        let err = t.send(req).await.unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Connect);
    }

    #[cfg(feature = "rustls")]
    #[tokio::test]
    async fn https_transport_builds() {
        let _ = with_transport("https://example.invalid", https())
            .build()
            .unwrap();
    }
}
