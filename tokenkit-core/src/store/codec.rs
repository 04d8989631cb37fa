//! The stored form of a [`TokenRecord`], for stores that keep records outside the process
//! (a session backend, Redis). JSON with the secrets in plain text: encrypt it at rest where
//! the backend is shared, never log it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::token::{AccessToken, RefreshToken, TokenRecord};

impl TokenRecord {
    /// The stored form of this record, for a [`TokenStore`](crate::TokenStore) or
    /// [`SessionBackend`](crate::SessionBackend) that keeps records outside the process. It
    /// holds the secrets in plain text: encrypt it where the backend is shared; never log it.
    pub fn encode(&self) -> Result<String, Error> {
        serde_json::to_string(&Stored::from(self)).map_err(|e| {
            Error::new(
                ErrorKind::Store,
                format!("could not encode the session record: {e}"),
            )
        })
    }

    /// Reads what [`encode`](Self::encode) wrote; `None` for anything unreadable (a backend's
    /// value is input like any other: a damaged one is no session, never a panic).
    pub fn decode(text: &str) -> Option<TokenRecord> {
        serde_json::from_str::<Stored>(text)
            .ok()
            .and_then(Stored::into_record)
    }
}

/// The serialized form of a record: secrets in plain text, for the backend only.
#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: Option<String>,
    refresh_token: Option<String>,
    token_type: Option<String>,
    scope: Option<String>,
    expires_at: Option<u64>,
    refresh_expires_at: Option<u64>,
    obtained_at: u64,
    payload: Option<serde_json::Value>,
}

fn secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn time(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

impl From<&TokenRecord> for Stored {
    fn from(r: &TokenRecord) -> Self {
        Self {
            access_token: r.access_token.as_ref().map(|t| t.secret().to_owned()),
            refresh_token: r.refresh_token.as_ref().map(|t| t.secret().to_owned()),
            token_type: r.token_type.clone(),
            scope: r.scope.clone(),
            expires_at: r.expires_at.map(secs),
            refresh_expires_at: r.refresh_expires_at.map(secs),
            obtained_at: secs(r.obtained_at),
            payload: r.payload.clone(),
        }
    }
}

impl Stored {
    fn into_record(self) -> Option<TokenRecord> {
        let obtained_at = time(self.obtained_at)?;
        let mut record = match (self.access_token, self.refresh_token) {
            (Some(access), refresh) => {
                let mut r = TokenRecord::new(AccessToken::new(access), obtained_at);
                r.refresh_token = refresh.map(RefreshToken::new);
                r
            }
            (None, Some(refresh)) => TokenRecord::from_refresh_token(RefreshToken::new(refresh), obtained_at),
            (None, None) => return None,
        };
        record.token_type = self.token_type;
        record.scope = self.scope;
        record.expires_at = self.expires_at.and_then(time);
        record.refresh_expires_at = self.refresh_expires_at.and_then(time);
        record.payload = self.payload;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let record = TokenRecord::new(AccessToken::new("a"), at)
            .with_refresh_token(RefreshToken::new("r"))
            .with_expires_at(at + Duration::from_secs(60))
            .with_payload(serde_json::json!({"user": 1}));
        let back = TokenRecord::decode(&record.encode().unwrap()).unwrap();
        assert!(back.same_tokens(&record));
        assert_eq!(back.expires_at, record.expires_at);
        assert_eq!(back.payload, record.payload);
        for damaged in [
            "",
            "{",
            "[]",
            "{\"obtained_at\": -1}",
            "{\"obtained_at\": 1}",
            "{\"obtained_at\": 1e300}",
        ] {
            assert!(TokenRecord::decode(damaged).is_none(), "{damaged}");
        }
    }
}
