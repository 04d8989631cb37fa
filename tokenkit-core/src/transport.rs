//! The transport seam: one buffered HTTP exchange.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;

/// Sends one HTTP request and returns the whole response.
///
/// Bodies are buffered ([`Bytes`]) so tokenkit can replay a request after refreshing a token.
/// A non-2xx status is a response, not an error: return `Err` only when no response arrived.
/// Timeouts are owned by tokenkit-core, so an implementation need not enforce one (but may).
///
/// ```
/// use tokenkit_core::{async_trait, http, Transport, TransportError};
/// use bytes::Bytes;
///
/// /// A transport that answers every request itself.
/// #[derive(Debug)]
/// struct Canned;
///
/// #[async_trait]
/// impl Transport for Canned {
///     async fn send(&self, _req: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
///         Ok(http::Response::new(Bytes::from_static(b"{}")))
///     }
/// }
/// ```
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends `request` and buffers the response.
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError>;
}

/// A shared transport is a transport: `builder.transport(Arc::clone(&transport))`.
#[async_trait]
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        (**self).send(request).await
    }
}

/// The class of a transport failure; tokenkit decides retries from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No connection could be made (refused, DNS, TLS handshake).
    Connect,
    /// The transport's own timeout elapsed.
    Timeout,
    /// Anything else: reset mid-response, oversize body, protocol error.
    Other,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportErrorKind::Connect => "connect",
            TransportErrorKind::Timeout => "timeout",
            TransportErrorKind::Other => "other",
        })
    }
}

/// A failure to exchange a request and a response, with its kind and source.
#[derive(Debug, thiserror::Error)]
#[error("{kind} error: {message}")]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl TransportError {
    /// A new error. `message` must not contain secrets (no headers, no bodies).
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A connect error wrapping `source`.
    pub fn connect(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::new(TransportErrorKind::Connect, "could not connect").with_source(source)
    }

    /// A timeout error wrapping `source`.
    pub fn timeout(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::new(TransportErrorKind::Timeout, "timed out").with_source(source)
    }

    /// Any other error wrapping `source`.
    pub fn other(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::new(TransportErrorKind::Other, "request failed").with_source(source)
    }

    /// Attaches a source.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }
}

/// Sends `request` through `transport`, racing it against `timeout` when a sleeper exists.
pub(crate) async fn send_with_timeout(
    transport: &(dyn Transport + '_),
    sleep: Option<&dyn crate::runtime::Sleep>,
    request: http::Request<Bytes>,
    timeout: Option<std::time::Duration>,
) -> Result<http::Response<Bytes>, crate::Error> {
    TimeLimited::new(transport.send(request), sleep, timeout).await
}

/// A transport's answer, or a timeout error once `limit` has passed: polls the send, then the
/// timeout, and returns the typed result directly (no intermediate `Either` to move around).
pub(crate) struct TimeLimited<'a> {
    send: Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'a>>,
    timeout: Option<(crate::runtime::Timeout, std::time::Duration)>,
}

impl<'a> TimeLimited<'a> {
    pub(crate) fn new(
        send: Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'a>>,
        sleep: Option<&dyn crate::runtime::Sleep>,
        limit: Option<std::time::Duration>,
    ) -> Self {
        let timeout = match (limit, sleep) {
            (Some(limit), Some(sleep)) => Some((sleep.timeout(limit), limit)),
            _ => None,
        };
        Self { send, timeout }
    }
}

impl Future for TimeLimited<'_> {
    type Output = Result<http::Response<Bytes>, crate::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(sent) = this.send.as_mut().poll(cx) {
            return Poll::Ready(sent.map_err(crate::Error::from));
        }
        match &mut this.timeout {
            Some((timeout, limit)) => match Pin::new(timeout).poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(crate::Error::timeout(format!(
                    "no response within {}ms",
                    limit.as_millis()
                )))),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// A transport made of a closure: `Fn(Request<Bytes>) -> impl Future<Output = Result<Response<Bytes>, TransportError>>`.
///
/// ```
/// use tokenkit_core::{http, transport_fn, Transport};
/// use bytes::Bytes;
///
/// let echo = transport_fn(|req: http::Request<Bytes>| async move {
///     Ok(http::Response::new(req.into_body()))
/// });
/// let _shared: std::sync::Arc<dyn Transport> = std::sync::Arc::new(echo);
/// ```
pub fn transport_fn<F, Fut>(f: F) -> FnTransport<F>
where
    F: Fn(http::Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static,
{
    FnTransport(f)
}

/// The transport returned by [`transport_fn`].
pub struct FnTransport<F>(F);

impl<F> fmt::Debug for FnTransport<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnTransport")
    }
}

#[async_trait]
impl<F, Fut> Transport for FnTransport<F>
where
    F: Fn(http::Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static,
{
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        (self.0)(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    // Compile-time: the trait is object safe and Send + Sync.
    fn _object_safe(t: Arc<dyn Transport>) -> impl Send + Sync {
        t
    }

    #[test]
    fn transport_error_keeps_kind_and_source() {
        let err = TransportError::connect(std::io::Error::other("refused"));
        assert_eq!(err.kind(), TransportErrorKind::Connect);
        assert_eq!(err.to_string(), "connect error: could not connect");
        assert!(StdError::source(&err).is_some());
    }

    #[test]
    fn transport_fn_sends() {
        let t =
            transport_fn(|req: http::Request<Bytes>| async move { Ok(http::Response::new(req.into_body())) });
        let resp = futures_executor::block_on(t.send(http::Request::new(Bytes::from_static(b"hi")))).unwrap();
        assert_eq!(resp.body().as_ref(), b"hi");
    }
}
