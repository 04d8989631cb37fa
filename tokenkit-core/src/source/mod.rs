//! Where tokens come from.

#[cfg(feature = "jose")]
pub(crate) mod assertion;
pub(crate) mod discovery;
pub(crate) mod endpoint;
pub(crate) mod oauth2;
mod params;
pub(crate) mod parse;
mod provider;

#[cfg(feature = "jose")]
pub use assertion::{AssertionFile, AssertionSource, SigningAlgorithm, SigningKey};
pub use endpoint::{AuthContentType, EndpointConfig};
pub use oauth2::{ClientAuth, ClientSecret, OAuth2Config};
pub use params::TokenParams;
pub use parse::FieldMapping;
pub use provider::ProvidedToken;
pub(crate) use provider::ProviderSource;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::Error;
use crate::token::TokenRecord;

/// Why a token is being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchReason {
    /// There is no usable token (none yet, or expired).
    Needed,
    /// The token is still valid but inside the proactive window.
    Proactive,
    /// The server rejected the current token.
    Rejected,
    /// The application asked for a refresh (`refresh_session`).
    Forced,
}

impl FetchReason {
    /// A stable, lower-case name (`"needed"`, `"proactive"`, `"rejected"`, `"forced"`), as
    /// used in log fields and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchReason::Needed => "needed",
            FetchReason::Proactive => "proactive",
            FetchReason::Rejected => "rejected",
            FetchReason::Forced => "forced",
        }
    }
}

/// What a [`TokenSource`] is asked for.
#[derive(Clone)]
#[non_exhaustive]
pub struct FetchRequest {
    /// Why the fetch happens.
    pub reason: FetchReason,
    /// The record being replaced (holds the refresh token, if any).
    pub current: Option<Arc<TokenRecord>>,
    /// The session's context, if any.
    pub context: Option<Context>,
    /// The instant of the fetch, from the injected clock; use it as `obtained_at`.
    pub now: SystemTime,
    /// Headers of the request that triggered the refresh, to propagate (credentials and
    /// hop-by-hop headers already removed).
    pub headers: http::HeaderMap,
    /// Per-request `auth` override data to merge into the refresh body.
    pub data: Option<serde_json::Value>,
    /// The parameters the token is for, when the request named some
    /// ([`RequestBuilder::token_params`](crate::RequestBuilder::token_params)): a source
    /// must fetch a token for exactly these (or fail), never one for other parameters.
    pub params: Option<TokenParams>,
}

/// Credential headers and the per-request data print redacted.
impl fmt::Debug for FetchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchRequest")
            .field("reason", &self.reason)
            .field("current", &self.current)
            .field("context", &self.context)
            .field("now", &self.now)
            .field("headers", &crate::redact::RedactedHeaders(&self.headers))
            .field("data", &self.data.as_ref().map(|_| "[redacted]"))
            .field("params", &self.params)
            .finish()
    }
}

/// The refresh token of the record being replaced, or the "not logged in" error.
pub(crate) fn refresh_token_of(request: &FetchRequest) -> Result<crate::token::RefreshToken, Error> {
    request
        .current
        .as_ref()
        .and_then(|r| r.refresh_token.clone())
        .ok_or_else(|| {
            Error::new(
                crate::error::ErrorKind::Auth(crate::error::AuthFailure::NoSession),
                "there is no refresh token: log in first",
            )
        })
}

/// What a request passes along to a refresh it triggers: its own headers and its `auth`
/// override data.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub(crate) struct RefreshHints {
    /// Headers to propagate.
    pub headers: http::HeaderMap,
    /// Override data for the refresh body.
    pub data: Option<serde_json::Value>,
}

impl RefreshHints {
    /// No headers, no data.
    pub(crate) fn none() -> &'static Self {
        static NONE: std::sync::OnceLock<RefreshHints> = std::sync::OnceLock::new();
        NONE.get_or_init(Self::default)
    }

    /// Hints from a request's headers (credentials and hop-by-hop headers are dropped) and
    /// override data.
    pub(crate) fn new(headers: &http::HeaderMap, data: Option<serde_json::Value>) -> Self {
        let mut kept = http::HeaderMap::new();
        for (name, value) in headers {
            if !NOT_PROPAGATED.contains(&name.as_str()) && !crate::redact::is_sensitive_header(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        Self { headers: kept, data }
    }
}

/// Headers never propagated to a refresh request.
const NOT_PROPAGATED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "accept-encoding",
];

/// Obtains a new token record: a provider closure, a refresh endpoint, an OAuth grant.
///
/// Errors should say why: a rejected refresh token is
/// [`AuthFailure::SessionInvalid`](crate::AuthFailure::SessionInvalid) (the session is then
/// cleared), anything else keeps the session.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// Fetches a new record.
    async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error>;
}
