//! # tokenkit-reqwest
//!
//! [reqwest] as the transport of a tokenkit [`Client`]: [`ReqwestTransport`] plus a
//! [`builder()`] preset that also installs the tokio runtime hooks, so one line gets a client.
//!
//! ```no_run
//! use tokenkit_core::ProvidedToken;
//!
//! # async fn run() -> Result<(), tokenkit_core::Error> {
//! let client = tokenkit_reqwest::builder("https://api.example.com")
//!     .provider(|| async { Ok::<_, std::io::Error>(ProvidedToken::new("token", 3600)) })
//!     .build()?;
//! let me = client.get("/me").send::<serde_json::Value>().await?;
//! println!("{}", me.data);
//! # Ok(()) }
//! ```
//!
//! Features: `rustls` (default) enables HTTPS through reqwest's rustls backend. TLS
//! verification stays on; relax it only on the `reqwest::Client` you pass in, never globally.
//!
//! **Redirects.** tokenkit never lets a credential follow a redirect: reqwest's default policy
//! follows up to 10 and re-sends custom headers (a token in `x-api-key`) and 307/308 bodies (a
//! refresh token, a client secret) to whatever origin the `Location` names. The default client
//! here follows none (a 3xx is the answer), and a `reqwest::Client` you pass in must be built
//! with `.redirect(reqwest::redirect::Policy::none())` too (see [`client_builder`]): a response
//! that a passed-in client reached through a redirect is refused with an error, so the
//! misconfiguration shows at once.
#![forbid(unsafe_code)]

use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokenkit_core::{Client, ClientBuilder, OriginCache, Transport, TransportError, TransportErrorKind};

pub use reqwest;

/// The default cap on a buffered response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A [`Transport`] over a `reqwest::Client`.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    /// `Err` when the default client could not be built (no TLS backend): every request then
    /// fails with that message, where `reqwest::Client::new` would have panicked.
    client: Result<reqwest::Client, &'static str>,
    max_response_bytes: usize,
    /// Set for a passed-in client, whose redirect policy is unknown.
    refuse_redirected: bool,
    /// Request URIs become reqwest's `Url`s without parsing the origin every time.
    urls: Arc<OriginCache>,
}

/// A `reqwest::ClientBuilder` that follows no redirect: start from it to configure your own
/// client (proxies, TLS roots, pools) for [`with_client`] or [`ReqwestTransport::new`].
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

impl Default for ReqwestTransport {
    /// A transport over a default client that follows no redirect.
    fn default() -> Self {
        Self {
            client: client_builder()
                .build()
                .map_err(|_| "the default reqwest client could not be built (TLS backend)"),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            refuse_redirected: false,
            urls: Arc::default(),
        }
    }
}

impl From<reqwest::Client> for ReqwestTransport {
    /// Wraps `client`, which must follow no redirect (build it from [`client_builder`]).
    fn from(client: reqwest::Client) -> Self {
        Self {
            client: Ok(client),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            refuse_redirected: true,
            urls: Arc::default(),
        }
    }
}

impl ReqwestTransport {
    /// Wraps `client`, which must follow no redirect (build it from [`client_builder`]): a
    /// response it reached through a redirect is refused with an error.
    pub fn new(client: reqwest::Client) -> Self {
        Self::from(client)
    }

    /// Caps the size of a buffered response body (default 16 MiB); larger bodies fail with a
    /// transport error instead of exhausting memory.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }
}

impl Transport for ReqwestTransport {
    // Written out instead of `async fn`: the request is converted and handed to reqwest before
    // the future is made, so the boxed future holds reqwest's pending call, not the request.
    fn send<'a, 'f>(
        &'a self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        let started = self
            .client
            .as_ref()
            .map_err(|message| TransportError::new(TransportErrorKind::Other, *message))
            .and_then(|client| {
                let request = to_reqwest(request, &self.urls)?;
                // Boxed: only passed-in clients need it.
                let sent_to = self.refuse_redirected.then(|| Box::new(request.url().clone()));
                Ok((client.execute(request), sent_to))
            });
        let limit = self.max_response_bytes;
        Box::pin(async move {
            let (pending, sent_to) = started?;
            let mut response = pending.await.map_err(map_error)?;
            if sent_to.is_some_and(|url| *url != *response.url()) {
                return Err(followed_a_redirect());
            }
            // The body collected right here (not in a nested future): one move less of
            // reqwest's collection state.
            let head = Head::take(&mut response, limit)?;
            let body = if head.exact_length {
                response.bytes().await.map_err(map_error)?
            } else {
                Box::pin(chunks(response, limit)).await?
            };
            Ok(head.with_body(body))
        })
    }
}

/// The request as reqwest takes it, its URL built from the URI without a round trip through
/// text (and without parsing a known origin again).
fn to_reqwest(request: http::Request<Bytes>, urls: &OriginCache) -> Result<reqwest::Request, TransportError> {
    let (parts, body) = request.into_parts();
    if !parts.extensions.is_empty() {
        // Only reqwest's own conversion carries extensions over.
        let request = http::Request::from_parts(parts, body);
        return reqwest::Request::try_from(request).map_err(map_error);
    }
    let url = urls.url(&parts.uri).map_err(|e| {
        TransportError::new(
            TransportErrorKind::Other,
            format!("the request URI is not a URL: {e}"),
        )
    })?;
    let mut request = reqwest::Request::new(parts.method, url);
    *request.headers_mut() = parts.headers;
    *request.body_mut() = Some(body.into());
    *request.version_mut() = parts.version;
    Ok(request)
}

/// Buffers a reqwest response, refusing bodies over `limit` bytes (the middleware's path;
/// `ReqwestTransport::send` writes the same steps out in its own future, which measured ~460
/// instructions per request cheaper than awaiting this one).
#[cfg(feature = "middleware")]
async fn buffer(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<http::Response<Bytes>, TransportError> {
    let head = Head::take(&mut response, limit)?;
    let body = if head.exact_length {
        response.bytes().await.map_err(map_error)?
    } else {
        Box::pin(chunks(response, limit)).await?
    };
    Ok(head.with_body(body))
}

/// A response's status line and headers, taken before its body is collected.
struct Head {
    status: http::StatusCode,
    version: http::Version,
    headers: http::HeaderMap,
    /// The body's length is known (and within the limit): it is exactly that long (hyper
    /// reads no further), so reqwest may collect it (without a copy when it arrives in one
    /// piece).
    exact_length: bool,
}

impl Head {
    /// Takes the head of `response`, refusing a declared length over `limit`.
    fn take(response: &mut reqwest::Response, limit: usize) -> Result<Self, TransportError> {
        let length = response.content_length();
        if length.is_some_and(|len| len > limit as u64) {
            return Err(too_large(limit));
        }
        Ok(Self {
            status: response.status(),
            version: response.version(),
            headers: std::mem::take(response.headers_mut()),
            exact_length: length.is_some(),
        })
    }

    fn with_body(self, body: Bytes) -> http::Response<Bytes> {
        let mut buffered = http::Response::new(body);
        *buffered.status_mut() = self.status;
        *buffered.version_mut() = self.version;
        *buffered.headers_mut() = self.headers;
        buffered
    }
}

/// A body of unknown length, chunk by chunk, refused past `limit` bytes.
async fn chunks(mut response: reqwest::Response, limit: usize) -> Result<Bytes, TransportError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(map_error)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The error for a response a passed-in client reached through a redirect.
fn followed_a_redirect() -> TransportError {
    TransportError::new(
        TransportErrorKind::Other,
        "the reqwest::Client followed a redirect: build it with redirect::Policy::none() \
         (tokenkit_reqwest::client_builder()), so credentials never follow one",
    )
}

fn too_large(limit: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::Other,
        format!("response body exceeds the limit of {limit} bytes"),
    )
}

/// Maps every reqwest error to a transport error kind, dropping the URL (it may carry
/// credentials in its query).
fn map_error(err: reqwest::Error) -> TransportError {
    let err = err.without_url();
    if err.is_timeout() {
        TransportError::timeout(err)
    } else if err.is_connect() {
        TransportError::connect(err)
    } else {
        TransportError::other(err)
    }
}

#[cfg(feature = "middleware")]
pub mod middleware;

/// A [`ClientBuilder`] with a default `reqwest::Client` (following no redirect) and the tokio
/// runtime hooks.
pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
    Client::builder(base_url)
        .transport(ReqwestTransport::default())
        .runtime(tokenkit_tokio::runtime())
}

/// A [`ClientBuilder`] over your own `reqwest::Client` (proxies, TLS roots, pools…), with the
/// tokio runtime hooks. Build the client from [`client_builder`]: it must follow no redirect.
pub fn with_client(base_url: impl Into<String>, client: reqwest::Client) -> ClientBuilder {
    Client::builder(base_url)
        .transport(ReqwestTransport::from(client))
        .runtime(tokenkit_tokio::runtime())
}
