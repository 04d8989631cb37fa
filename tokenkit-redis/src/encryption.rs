//! How records are written to and read from Redis: encoded, and sealed when encryption is
//! configured (with tokenkit-core's [`Encryption`]).

use std::sync::Arc;

use tokenkit_core::{Encryption, Error, TokenRecord};

/// How records are written to and read from Redis: encoded, and sealed when encryption is
/// configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct AtRest(pub(crate) Option<Encryption>);

impl AtRest {
    /// The value to store under `redis_key`.
    pub(crate) fn encode(&self, redis_key: &str, record: &TokenRecord) -> Result<String, Error> {
        let plaintext = record.encode()?;
        match &self.0 {
            Some(encryption) => encryption.seal(redis_key, &plaintext),
            None => Ok(plaintext),
        }
    }

    /// The record a stored value holds; `None` (logged) for anything that does not open or
    /// decode: a damaged value is no record, never a panic.
    pub(crate) fn decode(&self, redis_key: &str, value: &str) -> Option<Arc<TokenRecord>> {
        let opened = match &self.0 {
            Some(encryption) => encryption.open(redis_key, value),
            None => Some(value.to_owned()),
        };
        let record = opened.as_deref().and_then(TokenRecord::decode);
        if record.is_none() {
            tracing::warn!("a stored record does not open or decode; treated as absent");
        }
        record.map(Arc::new)
    }
}
