//! The one error type of tokenkit: a kind, optional HTTP details, and the source chain.
//!
//! An [`Error`] never contains a token: messages are written by tokenkit from non-secret facts,
//! response bodies are kept aside (reachable through [`Error::body`], never printed), and
//! sources come from transports and user closures that never see the token record.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;

use crate::transport::{TransportError, TransportErrorKind};

/// Why an authenticated request could not be authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The server answered 401 or 403 and no recovery was attempted (for instance `skip_auth`,
    /// or a status not listed in `refresh_on_status`).
    Rejected,
    /// The server kept rejecting fresh tokens; recovery gave up after `max_recovery_tries`.
    RecoveryExhausted,
    /// No token could be obtained (the provider or token endpoint failed).
    TokenUnavailable,
    /// The session is no longer valid (its refresh token was rejected); log in again.
    SessionInvalid,
    /// There is no session to use or refresh (not logged in).
    NoSession,
    /// The token endpoint refused the client itself (`invalid_client`: a wrong or revoked
    /// client secret or assertion; `unauthorized_client`: the client may not use this grant).
    /// Fix the client's registration or credentials; retrying cannot help.
    InvalidClient,
    /// A sign-in through an identity provider was refused: its callback did not check out
    /// (unknown or expired state, an error from the provider, a code the provider would not
    /// exchange, an ID token with a bad signature, issuer, audience, expiry or nonce). No
    /// session was created.
    SignInRefused,
    /// The server accepted the token but says it lacks a scope (`WWW-Authenticate: Bearer
    /// error="insufficient_scope"`, RFC 6750 §3.1): a new token for the same scopes cannot help,
    /// so none was fetched. The error's message names the scope the server asked for.
    InsufficientScope,
    /// The token source (the identity provider) keeps failing and tokenkit stopped calling it
    /// for a while — a backoff between failures, or an open circuit (see
    /// [`OutageConfig`](crate::OutageConfig)). Requests whose token was still valid were
    /// served with it; this one needed a new token. [`Error::retry_at`] says until when; the
    /// message says why and names the last failure.
    SourceUnavailable,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthFailure::Rejected => "the server rejected the request's credentials",
            AuthFailure::RecoveryExhausted => "recovery with fresh tokens was exhausted",
            AuthFailure::TokenUnavailable => "no access token could be obtained",
            AuthFailure::SessionInvalid => "the session is no longer valid",
            AuthFailure::NoSession => "not logged in",
            AuthFailure::InvalidClient => "the client's own credentials were refused",
            AuthFailure::SignInRefused => "the sign-in was refused",
            AuthFailure::InsufficientScope => "the token lacks a scope the server requires",
            AuthFailure::SourceUnavailable => "the token source is unavailable",
        })
    }
}

/// What went wrong, in categories a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The client or a request was configured wrongly (invalid header, missing hook, …).
    Config,
    /// A URL could not be parsed or joined.
    Url,
    /// The connection could not be established.
    Connect,
    /// The request, or a token fetch, took longer than its timeout.
    Timeout,
    /// Another transport failure (reset connection, oversize body, …).
    Transport,
    /// The server answered with a non-2xx status other than an authorisation failure.
    Status,
    /// The request could not be authorised; see [`Error::auth_failure`].
    Auth(AuthFailure),
    /// A token (or token response) was malformed: missing fields, bytes illegal in a header,
    /// absurd lifetimes.
    InvalidToken,
    /// A response body could not be decoded into the requested type, or a request body could
    /// not be encoded.
    Decode,
    /// The token store failed.
    Store,
    /// The token store refused a write because the record changed underneath (compare-and-swap).
    StoreConflict,
    /// A session operation ran without a bound request context.
    NoContext,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Config => f.write_str("configuration error"),
            ErrorKind::Url => f.write_str("invalid URL"),
            ErrorKind::Connect => f.write_str("connection failed"),
            ErrorKind::Timeout => f.write_str("timed out"),
            ErrorKind::Transport => f.write_str("transport error"),
            ErrorKind::Status => f.write_str("unsuccessful status"),
            ErrorKind::Auth(reason) => write!(f, "authentication failed: {reason}"),
            ErrorKind::InvalidToken => f.write_str("invalid token"),
            ErrorKind::Decode => f.write_str("decode error"),
            ErrorKind::Store => f.write_str("token store error"),
            ErrorKind::StoreConflict => f.write_str("token store conflict"),
            ErrorKind::NoContext => f.write_str("no request context"),
        }
    }
}

/// A tokenkit error. Cheap to clone (shared refresh results hand the same error to every
/// waiter).
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<StatusCode>,
    body: Option<Bytes>,
    oauth: Option<OAuthError>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
    /// The server's `Retry-After`.
    retry_after: Option<Duration>,
    /// When tokenkit calls the token source again.
    retry_at: Option<SystemTime>,
}

/// An OAuth 2.0 error response (RFC 6749 §5.2): the standard fields of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OAuthError {
    /// The error code (`invalid_grant`, `invalid_client`, …).
    pub error: String,
    /// The human-readable description, if any.
    pub description: Option<String>,
    /// A URI with more information, if any.
    pub uri: Option<String>,
}

impl Error {
    /// A new error of `kind` with a message. The message must not contain secrets.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                status: None,
                body: None,
                oauth: None,
                source: None,
                retry_after: None,
                retry_at: None,
            }),
        }
    }

    /// Attaches a source error.
    pub fn with_source(self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        let boxed: Box<dyn StdError + Send + Sync> = source.into();
        self.map(|inner| inner.source = Some(Arc::from(boxed)))
    }

    /// Attaches an HTTP status and the response body.
    pub fn with_response(self, status: StatusCode, body: Bytes) -> Self {
        self.map(|inner| {
            inner.status = Some(status);
            inner.body = Some(body);
        })
    }

    /// Attaches the parsed OAuth error body.
    pub fn with_oauth(self, oauth: OAuthError) -> Self {
        self.map(|inner| inner.oauth = Some(oauth))
    }

    /// The OAuth 2.0 error body (`error`, `error_description`, `error_uri`), when the error
    /// comes from a token endpoint that sent one.
    pub fn oauth(&self) -> Option<&OAuthError> {
        self.inner.oauth.as_ref()
    }

    /// Attaches the server's `Retry-After` (a token source that got one from its server
    /// passes it on: the client then calls the source no sooner, see
    /// [`OutageConfig`](crate::OutageConfig)).
    pub fn with_retry_after(self, after: Duration) -> Self {
        self.map(|inner| inner.retry_after = Some(after))
    }

    /// How long the server asked clients to wait (`Retry-After`), when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    pub(crate) fn with_retry_at(self, at: SystemTime) -> Self {
        self.map(|inner| inner.retry_at = Some(at))
    }

    /// For [`AuthFailure::SourceUnavailable`]: the instant (by the client's clock) from which
    /// the token source is called again.
    pub fn retry_at(&self) -> Option<SystemTime> {
        self.inner.retry_at
    }

    /// The same error with another kind (used when a cause is re-classified, e.g. a transport
    /// failure while fetching a token becomes [`AuthFailure::TokenUnavailable`]).
    pub fn with_kind(self, kind: ErrorKind) -> Self {
        self.map(|inner| inner.kind = kind)
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                kind: shared.kind,
                message: shared.message.clone(),
                status: shared.status,
                body: shared.body.clone(),
                oauth: shared.oauth.clone(),
                source: shared.source.clone(),
                retry_after: shared.retry_after,
                retry_at: shared.retry_at,
            },
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidToken, message)
    }

    pub(crate) fn decode(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Decode, message)
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The human-readable message (without the kind prefix of `Display`).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The response status, when the error comes from a response.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The response body, when the error comes from a response. Not part of `Display` or
    /// `Debug`: bodies of token endpoints may hold secrets.
    pub fn body(&self) -> Option<&Bytes> {
        self.inner.body.as_ref()
    }

    /// Why authorisation failed, for [`ErrorKind::Auth`] errors.
    pub fn auth_failure(&self) -> Option<AuthFailure> {
        match self.inner.kind {
            ErrorKind::Auth(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether a timeout elapsed.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// Whether the connection could not be established.
    pub fn is_connect(&self) -> bool {
        self.inner.kind == ErrorKind::Connect
    }

    /// Whether this is an authorisation failure (rejected credentials, exhausted recovery,
    /// no token obtainable, invalid session).
    pub fn is_auth(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Auth(_))
    }

    /// Whether the token endpoint refused the client's own credentials (`invalid_client`,
    /// `unauthorized_client`): a misconfigured client secret or key, not a user's session.
    pub fn is_invalid_client(&self) -> bool {
        self.inner.kind == ErrorKind::Auth(AuthFailure::InvalidClient)
    }

    /// Whether the failure happened in the transport (connect, timeout, other I/O).
    pub fn is_transport(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Transport
        )
    }
}

impl From<TransportError> for Error {
    fn from(err: TransportError) -> Self {
        let kind = match err.kind() {
            TransportErrorKind::Connect => ErrorKind::Connect,
            TransportErrorKind::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::Transport,
        };
        Error::new(kind, "the request could not be sent").with_source(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.kind)?;
        if let Some(status) = self.inner.status {
            write!(f, " (HTTP {})", status.as_u16())?;
        }
        if !self.inner.message.is_empty() {
            write!(f, ": {}", self.inner.message)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(body) = &self.inner.body {
            d.field("body_len", &body.len());
        }
        if let Some(oauth) = &self.inner.oauth {
            d.field("oauth", oauth);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        if let Some(after) = self.inner.retry_after {
            d.field("retry_after", &after);
        }
        if let Some(at) = self.inner.retry_at {
            d.field("retry_at", &at);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_debug_never_include_body() {
        let err = Error::new(ErrorKind::Status, "GET /x").with_response(
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"{\"token\":\"s3cr3t\"}"),
        );
        assert!(!format!("{err}").contains("s3cr3t"));
        assert!(!format!("{err:?}").contains("s3cr3t"));
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(err.body().map(|b| b.len()), Some(18));
        assert_eq!(err.to_string(), "unsuccessful status (HTTP 400): GET /x");
    }

    #[test]
    fn predicates_follow_kind() {
        let err = Error::new(ErrorKind::Auth(AuthFailure::RecoveryExhausted), "");
        assert!(err.is_auth());
        assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
        assert!(!err.is_timeout());
        let err = Error::timeout("x");
        assert!(err.is_timeout() && err.is_transport());
        let shared = err.clone();
        let reclassified = err.with_kind(ErrorKind::Auth(AuthFailure::TokenUnavailable));
        assert!(shared.is_timeout());
        assert!(reclassified.is_auth());
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let err = Error::new(ErrorKind::Transport, "x").with_source(io);
        assert!(StdError::source(&err).is_some_and(|s| s.to_string() == "reset"));
    }
}
