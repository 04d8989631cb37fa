//! Where tokens come from.

pub mod parse;
mod provider;

pub use parse::{parse_token_response, FieldMapping};
pub use provider::{ProvidedToken, ProviderSource};

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
}

/// What a [`TokenSource`] is asked for.
#[derive(Debug, Clone)]
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
}

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
