//! Provider mode: a user closure returns `{access_token, expires_in, token_type?, scope?}`.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{FetchRequest, TokenSource};
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::token::{AccessToken, TokenRecord};

/// The token a provider returns: the shape of an OAuth token response, so a provider can
/// deserialize a token endpoint's JSON straight into it.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct ProvidedToken {
    /// The access token.
    pub access_token: AccessToken,
    /// Seconds until expiry. Must be positive.
    pub expires_in: i64,
    /// The token type (`Bearer` when absent).
    #[serde(default)]
    pub token_type: Option<String>,
    /// The granted scope.
    #[serde(default)]
    pub scope: Option<String>,
}

impl ProvidedToken {
    /// A token valid for `expires_in` seconds.
    pub fn new(access_token: impl Into<String>, expires_in: i64) -> Self {
        Self {
            access_token: AccessToken::new(access_token),
            expires_in,
            token_type: None,
            scope: None,
        }
    }

    /// Sets the token type.
    pub fn with_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = Some(token_type.into());
        self
    }

    /// Sets the scope.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Converts into a record obtained at `now`, rejecting non-positive or absurd lifetimes.
    pub fn into_record(self, now: std::time::SystemTime) -> Result<TokenRecord, Error> {
        let secs = u64::try_from(self.expires_in)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                Error::invalid_token(format!(
                    "expires_in must be a positive number of seconds, got {}",
                    self.expires_in
                ))
            })?;
        let mut record =
            TokenRecord::new(self.access_token, now).with_expires_in(Duration::from_secs(secs))?;
        record.token_type = self.token_type;
        record.scope = self.scope;
        Ok(record)
    }
}

/// A [`TokenSource`] made of an async closure that returns a [`ProvidedToken`].
pub(crate) struct ProviderSource<F> {
    provider: F,
}

impl<F> fmt::Debug for ProviderSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSource")
    }
}

impl<F, Fut, E> ProviderSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ProvidedToken, E>> + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    /// Wraps `provider`, called whenever a new token is needed.
    pub(crate) fn new(provider: F) -> Self {
        Self { provider }
    }
}

#[async_trait]
impl<F, Fut, E> TokenSource for ProviderSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ProvidedToken, E>> + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
        if request.params.is_some() {
            // The closure cannot be told what the token is for: never hand its token to a
            // request that asked for specific parameters.
            return Err(Error::config(
                "a token provider closure cannot fetch tokens for per-request parameters; \
                 use OAuth 2.0 (ClientBuilder::oauth2_client_credentials) or a TokenSource \
                 that reads FetchRequest::params",
            ));
        }
        let token = (self.provider)().await.map_err(|e| {
            let cause: Box<dyn StdError + Send + Sync> = e.into();
            // A provider that called a server through tokenkit passes its `Retry-After` on.
            let retry_after = cause.downcast_ref::<Error>().and_then(Error::retry_after);
            let err = Error::new(
                ErrorKind::Auth(AuthFailure::TokenUnavailable),
                "the token provider failed",
            )
            .with_source(cause);
            match retry_after {
                Some(after) => err.with_retry_after(after),
                None => err,
            }
        })?;
        token.into_record(request.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FetchReason;
    use std::time::UNIX_EPOCH;

    fn request() -> FetchRequest {
        FetchRequest {
            reason: FetchReason::Needed,
            current: None,
            context: None,
            now: UNIX_EPOCH,
            headers: http::HeaderMap::new(),
            data: None,
            params: None,
        }
    }

    #[test]
    fn provided_token_becomes_a_record() {
        let source = ProviderSource::new(|| async {
            Ok::<_, std::io::Error>(
                ProvidedToken::new("abc", 60)
                    .with_token_type("Bearer")
                    .with_scope("read"),
            )
        });
        let record = futures_executor::block_on(source.fetch(request())).unwrap();
        assert_eq!(record.access_token.unwrap().secret(), "abc");
        assert_eq!(record.expires_at, Some(UNIX_EPOCH + Duration::from_secs(60)));
        assert_eq!(record.token_type.as_deref(), Some("Bearer"));
        assert_eq!(record.scope.as_deref(), Some("read"));
    }

    #[test]
    fn bad_lifetimes_are_typed_errors() {
        for secs in [0, -5, i64::MAX] {
            let err = ProvidedToken::new("abc", secs)
                .into_record(UNIX_EPOCH)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidToken, "{secs}");
        }
    }

    #[test]
    fn provider_failure_is_token_unavailable_with_source() {
        let source = ProviderSource::new(|| async { Err::<ProvidedToken, _>(std::io::Error::other("down")) });
        let err = futures_executor::block_on(source.fetch(request())).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::TokenUnavailable));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn deserializes_from_a_token_response() {
        let t: ProvidedToken =
            serde_json::from_str(r#"{"access_token":"x","expires_in":30,"token_type":"bearer"}"#).unwrap();
        assert_eq!(t.expires_in, 30);
        assert!(!format!("{t:?}").contains("\"x\""));
    }
}
