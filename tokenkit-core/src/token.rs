//! Tokens and the record a store keeps.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::error::Error;

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Its `Debug` and `Display` print `[redacted]`; read the value with
        /// [`secret`](Self::secret) only where it must leave the process.
        #[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a token value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The token value. Never log it.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[redacted]")
            }
        }
    };
}

secret!(
    /// An access token: the credential sent with each request.
    AccessToken
);
secret!(
    /// A refresh token: the credential that obtains new access tokens.
    RefreshToken
);

/// What a store keeps for one session: the tokens, when they expire and when they were obtained.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenRecord {
    /// The access token; `None` when only a refresh token survived (it is then refreshed).
    pub access_token: Option<AccessToken>,
    /// The refresh token, if the source issued one.
    pub refresh_token: Option<RefreshToken>,
    /// The token type (`Bearer`, …) as the source reported it.
    pub token_type: Option<String>,
    /// The granted scope, if reported.
    pub scope: Option<String>,
    /// When the access token expires; `None` means "until rejected".
    pub expires_at: Option<SystemTime>,
    /// When the refresh token expires, if the source said so (sets cookie lifetimes).
    pub refresh_expires_at: Option<SystemTime>,
    /// When the access token was obtained (the last refresh).
    pub obtained_at: SystemTime,
    /// The session payload (user, profile…): a response field, or the access token's JWT
    /// claims (decoded, not verified).
    pub payload: Option<serde_json::Value>,
    /// What the hot path derived from this record (see [`RecordCache`]).
    pub(crate) cache: RecordCache,
}

/// What the hot path derives from a record, kept so it is not derived again on every
/// request: the formatted header value, and until when the policy calls the token fresh.
/// Each is keyed by who derived it (the formatter's, the policy's identity) and checked
/// against the fields it was derived from, so it can never serve a stale value; clones start
/// empty. Never printed.
///
/// A record is often used once (a session read from the request's cookies for one call):
/// the header value is kept from its second use on, so a single use costs no copies. The
/// kept values are boxed: a record used once stays small to build and to move.
#[derive(Default)]
pub(crate) struct RecordCache {
    value: std::sync::OnceLock<Box<(usize, AccessToken, http::HeaderValue)>>,
    used: std::sync::atomic::AtomicBool,
    fresh_until: std::sync::OnceLock<Box<FreshUntil>>,
    fresh_asked: std::sync::atomic::AtomicBool,
}

/// A policy's answer to "fresh until when?", and what it was derived from.
struct FreshUntil {
    policy: usize,
    /// The access token's buffer and length, the expiry and the time obtained.
    token: Option<(usize, usize)>,
    expires_at: Option<SystemTime>,
    obtained_at: SystemTime,
    until: Option<SystemTime>,
}

/// What of `record` a policy's fresh-until answer depends on.
fn fresh_inputs(record: &TokenRecord) -> (Option<(usize, usize)>, Option<SystemTime>, SystemTime) {
    let token = record
        .access_token
        .as_ref()
        .map(|t| (t.secret().as_ptr() as usize, t.secret().len()));
    (token, record.expires_at, record.obtained_at)
}

impl RecordCache {
    /// Until when `policy` (identified by `key`) calls `record` fresh, derived on the
    /// record's second use and kept (`None` on the first: a record used once is checked with
    /// `freshness`, which is cheaper than deriving the instant).
    pub(crate) fn fresh_until(
        record: &TokenRecord,
        key: usize,
        policy: &dyn crate::policy::RefreshPolicy,
    ) -> Option<SystemTime> {
        let (token, expires_at, obtained_at) = fresh_inputs(record);
        if let Some(cached) = record.cache.fresh_until.get() {
            if cached.policy == key
                && cached.token == token
                && cached.expires_at == expires_at
                && cached.obtained_at == obtained_at
            {
                return cached.until;
            }
            return policy.fresh_until(record);
        }
        if !record
            .cache
            .fresh_asked
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let until = policy.fresh_until(record);
        let _ = record.cache.fresh_until.set(Box::new(FreshUntil {
            policy: key,
            token,
            expires_at,
            obtained_at,
            until,
        }));
        until
    }

    /// Whether a value made now is worth keeping: true from the second call on.
    pub(crate) fn worth_keeping(&self) -> bool {
        self.used.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// The cached value, if it was made by `formatter` from `token`.
    pub(crate) fn get(&self, formatter: usize, token: &AccessToken) -> Option<http::HeaderValue> {
        let (key, from, value) = &**self.value.get()?;
        (*key == formatter && from == token).then(|| value.clone())
    }

    /// Remembers the value (first writer wins; later calls are no-ops).
    pub(crate) fn set(&self, formatter: usize, token: &AccessToken, value: &http::HeaderValue) {
        let _ = self
            .value
            .set(Box::new((formatter, token.clone(), value.clone())));
    }
}

impl Clone for RecordCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
}

impl TokenRecord {
    /// A record holding `access_token`, obtained at `obtained_at`, with no expiry.
    pub fn new(access_token: AccessToken, obtained_at: SystemTime) -> Self {
        Self {
            access_token: Some(access_token),
            refresh_token: None,
            token_type: None,
            scope: None,
            expires_at: None,
            refresh_expires_at: None,
            obtained_at,
            payload: None,
            cache: RecordCache::default(),
        }
    }

    /// A record that holds only a refresh token (its access token is gone); it will be refreshed.
    pub fn from_refresh_token(refresh_token: RefreshToken, obtained_at: SystemTime) -> Self {
        Self {
            access_token: None,
            refresh_token: Some(refresh_token),
            token_type: None,
            scope: None,
            expires_at: None,
            refresh_expires_at: None,
            obtained_at,
            payload: None,
            cache: RecordCache::default(),
        }
    }

    /// Sets the session payload.
    pub fn with_payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Sets the refresh token's expiry.
    pub fn with_refresh_expires_at(mut self, at: SystemTime) -> Self {
        self.refresh_expires_at = Some(at);
        self
    }

    /// Sets the refresh token.
    pub fn with_refresh_token(mut self, token: RefreshToken) -> Self {
        self.refresh_token = Some(token);
        self
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

    /// Sets the absolute expiry.
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets the expiry relative to `obtained_at`, rejecting absurd lifetimes.
    pub fn with_expires_in(mut self, lifetime: Duration) -> Result<Self, Error> {
        if lifetime > crate::defaults::MAX_TOKEN_LIFETIME {
            return Err(Error::invalid_token(format!(
                "token lifetime of {}s exceeds the maximum of {}s",
                lifetime.as_secs(),
                crate::defaults::MAX_TOKEN_LIFETIME.as_secs()
            )));
        }
        let expires_at = self
            .obtained_at
            .checked_add(lifetime)
            .ok_or_else(|| Error::invalid_token("token expiry is out of range"))?;
        self.expires_at = Some(expires_at);
        Ok(self)
    }

    /// The access token's lifetime as issued (`expires_at - obtained_at`), if it expires.
    pub fn lifetime(&self) -> Option<Duration> {
        let expires_at = self.expires_at?;
        Some(
            expires_at
                .duration_since(self.obtained_at)
                .unwrap_or(Duration::ZERO),
        )
    }

    /// The refresh token's lifetime as issued (`refresh_expires_at - obtained_at`), if known:
    /// how long a session holding this record can live (cookie Max-Age, backend TTL).
    pub fn refresh_lifetime(&self) -> Option<Duration> {
        self.refresh_expires_at?.duration_since(self.obtained_at).ok()
    }

    /// Whether both records carry the same access and refresh tokens.
    pub fn same_tokens(&self, other: &TokenRecord) -> bool {
        self.access_token == other.access_token && self.refresh_token == other.refresh_token
    }

    /// Checks that the tokens can travel in an HTTP header: non-empty, visible ASCII only
    /// (no CR, LF, control bytes or non-ASCII), and a plausible token type.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.access_token.is_none() && self.refresh_token.is_none() {
            return Err(Error::invalid_token("the token record holds no token"));
        }
        if let Some(token) = &self.access_token {
            check_token_chars("access token", token.secret())?;
        }
        if let Some(token) = &self.refresh_token {
            check_token_chars("refresh token", token.secret())?;
        }
        if let Some(kind) = &self.token_type {
            check_token_chars("token type", kind)?;
        }
        Ok(())
    }

    /// A stable, non-reversible fingerprint of the refresh token (or, without one, of the
    /// access token), used to key single-flight refreshes. Never a secret.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match (&self.refresh_token, &self.access_token) {
            (Some(refresh), _) => ("r", refresh.secret()).hash(&mut hasher),
            (None, Some(access)) => ("a", access.secret()).hash(&mut hasher),
            (None, None) => "none".hash(&mut hasher),
        }
        hasher.finish()
    }
}

/// The claims of a JWT (`header.claims.signature`), decoded **without verifying** the
/// signature: fit for display and expiry hints, never for authorisation decisions.
pub(crate) fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    // Most tokens that are not JWTs hold no dot: turned away by one vectorized search.
    memchr::memchr(b'.', token.as_bytes())?;
    let mut parts = token.split('.');
    let (_header, claims, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || claims.is_empty() || claims.len() > 64 * 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(claims)
        .or_else(|_| URL_SAFE.decode(claims))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.is_object().then_some(value)
}

fn check_token_chars(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid_token(format!("the {what} is empty")));
    }
    if let Some(bad) = value.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        let shown = match bad {
            b'\r' => "CR".to_owned(),
            b'\n' => "LF".to_owned(),
            other => format!("0x{other:02x}"),
        };
        return Err(Error::invalid_token(format!(
            "the {what} contains a byte that is illegal in a header ({shown})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn secrets_never_print() {
        let access = AccessToken::new("s3cr3t-access");
        let refresh = RefreshToken::new("s3cr3t-refresh");
        let record = TokenRecord::new(access.clone(), UNIX_EPOCH).with_refresh_token(refresh.clone());
        for text in [
            format!("{access:?}"),
            format!("{access}"),
            format!("{refresh:?}"),
            format!("{refresh}"),
            format!("{record:?}"),
            format!("{record:#?}"),
        ] {
            assert!(!text.contains("s3cr3t"), "leaked in {text}");
        }
        assert_eq!(access.secret(), "s3cr3t-access");
    }

    #[test]
    fn validate_rejects_header_breaking_tokens() {
        for bad in ["", "zq\r\nzq", "zq zq", "zq\u{e9}", "zq\0"] {
            let record = TokenRecord::new(AccessToken::new(bad), UNIX_EPOCH);
            let err = record.validate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidToken, "{bad:?}");
            assert!(!err.to_string().contains(bad) || bad.is_empty());
        }
        TokenRecord::new(AccessToken::new("abc.DEF-123_~+/="), UNIX_EPOCH)
            .validate()
            .unwrap();
    }

    #[test]
    fn absurd_lifetimes_are_rejected() {
        let record = TokenRecord::new(AccessToken::new("a"), UNIX_EPOCH);
        assert!(record
            .clone()
            .with_expires_in(crate::defaults::MAX_TOKEN_LIFETIME * 2)
            .is_err());
        let ok = record.with_expires_in(Duration::from_secs(60)).unwrap();
        assert_eq!(ok.lifetime(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn jwt_claims_are_peeked() {
        // {"alg":"none"} . {"sub":"u1","exp":2000000000} . sig
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSIsImV4cCI6MjAwMDAwMDAwMH0.c2ln";
        let claims = jwt_claims(token).unwrap();
        assert_eq!(claims["sub"], "u1");
        assert_eq!(claims["exp"], 2_000_000_000u64);
        for bad in ["", "a.b", "a.b.c.d", "a.!!!.c", "a.bm90IGpzb24.c", "a..c"] {
            assert!(jwt_claims(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_fresh_until_cache_follows_the_record_and_the_policy() {
        use crate::policy::{RefreshPolicy, StandardPolicy};
        let policy = StandardPolicy::default().jitter_percent(0);
        let record = TokenRecord::new(AccessToken::new("t"), UNIX_EPOCH)
            .with_expires_at(UNIX_EPOCH + Duration::from_secs(3600));
        assert_eq!(
            RecordCache::fresh_until(&record, 1, &policy),
            None,
            "first use: not derived"
        );
        let until = RecordCache::fresh_until(&record, 1, &policy);
        assert!(until.is_some());
        assert_eq!(until, policy.fresh_until(&record));
        // The same cache, the fields changed: the kept answer is not served.
        let mut changed = record;
        changed.expires_at = Some(UNIX_EPOCH + Duration::from_secs(600));
        assert_ne!(policy.fresh_until(&changed), until);
        assert_eq!(
            RecordCache::fresh_until(&changed, 1, &policy),
            policy.fresh_until(&changed)
        );
        changed.access_token = Some(AccessToken::new("another"));
        assert_eq!(
            RecordCache::fresh_until(&changed, 1, &policy),
            policy.fresh_until(&changed)
        );
        let stricter = StandardPolicy::default()
            .jitter_percent(0)
            .refresh_before(Duration::from_secs(3000));
        assert_eq!(
            RecordCache::fresh_until(&changed, 2, &stricter),
            stricter.fresh_until(&changed),
            "another policy"
        );
    }

    #[test]
    fn the_cache_never_serves_a_stale_or_foreign_value() {
        let mut record = TokenRecord::new(AccessToken::new("zq-one"), UNIX_EPOCH);
        let value = http::HeaderValue::from_static("Bearer zq-one");
        let token = record.access_token.clone().unwrap();
        record.cache.set(1, &token, &value);
        assert_eq!(record.cache.get(1, &token), Some(value));
        assert_eq!(record.cache.get(2, &token), None, "another formatter");
        let clone = record.clone();
        assert_eq!(clone.cache.get(1, &token), None, "clones start empty");
        record.access_token = Some(AccessToken::new("zq-two"));
        let two = record.access_token.clone().unwrap();
        assert_eq!(record.cache.get(1, &two), None, "a changed token is not served");
        assert!(!format!("{record:?}").contains("zq-"), "never printed");
    }

    #[test]
    fn fingerprint_prefers_refresh_token() {
        let a =
            TokenRecord::new(AccessToken::new("a1"), UNIX_EPOCH).with_refresh_token(RefreshToken::new("r"));
        let b =
            TokenRecord::new(AccessToken::new("a2"), UNIX_EPOCH).with_refresh_token(RefreshToken::new("r"));
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = TokenRecord::new(AccessToken::new("a1"), UNIX_EPOCH);
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
