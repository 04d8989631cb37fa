//! Per-user sessions in a session backend you already run (Redis, a database, memory…).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{StoreScope, TokenStore};
use crate::context::{no_context, Context};
use crate::error::{Error, ErrorKind};
use crate::runtime::{Clock, SystemClock};
use crate::token::TokenRecord;

/// A key-value session backend, keyed per session, with a TTL per value. Implement it over
/// your session store; tokenkit keeps one value per session under the key `tokenkit` (or
/// `<prefix>_tokenkit`).
#[async_trait]
pub trait SessionBackend: Send + Sync + fmt::Debug {
    /// The value of `key` in session `session_id`.
    async fn get(&self, session_id: &str, key: &str) -> Result<Option<String>, Error>;
    /// Sets `key` in session `session_id`, expiring after `ttl`.
    async fn set(&self, session_id: &str, key: &str, value: String, ttl: Duration) -> Result<(), Error>;
    /// Deletes `key` from session `session_id`.
    async fn delete(&self, session_id: &str, key: &str) -> Result<(), Error>;
    /// Destroys the whole session.
    async fn destroy(&self, session_id: &str) -> Result<(), Error>;
}

/// A shared backend (several stores or clients over one backend, as replicas share one).
#[async_trait]
impl<B: SessionBackend + ?Sized> SessionBackend for Arc<B> {
    async fn get(&self, session_id: &str, key: &str) -> Result<Option<String>, Error> {
        (**self).get(session_id, key).await
    }
    async fn set(&self, session_id: &str, key: &str, value: String, ttl: Duration) -> Result<(), Error> {
        (**self).set(session_id, key, value, ttl).await
    }
    async fn delete(&self, session_id: &str, key: &str) -> Result<(), Error> {
        (**self).delete(session_id, key).await
    }
    async fn destroy(&self, session_id: &str) -> Result<(), Error> {
        (**self).destroy(session_id).await
    }
}

/// The session id of a context, as a typed extension: `ctx.insert(SessionId("…".into()))`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(pub String);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A session id is a bearer credential too.
        f.write_str("SessionId([redacted])")
    }
}

/// A [`TokenStore`] over a [`SessionBackend`]. The session id comes from the context: the
/// [`SessionId`] extension, or else the cookie named by [`session_cookie`](Self::session_cookie).
#[derive(Debug)]
pub struct SessionStore<B> {
    backend: B,
    key: String,
    session_cookie: Option<String>,
}

impl<B: SessionBackend> SessionStore<B> {
    /// A store keeping records under the key `tokenkit`.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            key: "tokenkit".to_owned(),
            session_cookie: None,
        }
    }

    /// Keys records under `<prefix>_tokenkit`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.key = format!("{prefix}_tokenkit");
        self
    }

    /// Reads the session id from this cookie when the context has no [`SessionId`].
    pub fn session_cookie(mut self, name: impl Into<String>) -> Self {
        self.session_cookie = Some(name.into());
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The key records are kept under.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn session_id(&self, ctx: Option<&Context>) -> Result<String, Error> {
        let ctx = ctx.ok_or_else(no_context)?;
        if let Some(SessionId(id)) = ctx.get::<SessionId>() {
            return Ok(id);
        }
        self.session_cookie
            .as_deref()
            .and_then(|name| ctx.cookie(name))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NoContext,
                    "the context has no session id: insert a SessionId extension or configure session_cookie",
                )
            })
    }
}

#[async_trait]
impl<B: SessionBackend> TokenStore for SessionStore<B> {
    async fn load(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        let id = self.session_id(ctx)?;
        let Some(text) = self.backend.get(&id, &self.key).await? else {
            return Ok(None);
        };
        match TokenRecord::decode(&text) {
            Some(record) => Ok(Some(Arc::new(record))),
            None => {
                tracing::warn!("ignoring an unreadable session record");
                Ok(None)
            }
        }
    }

    async fn save(
        &self,
        ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        _replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        let id = self.session_id(ctx)?;
        let ttl = record
            .refresh_lifetime()
            .unwrap_or(crate::defaults::COOKIE_MAX_AGE);
        let text = record.encode()?;
        self.backend.set(&id, &self.key, text, ttl).await
    }

    async fn clear(&self, ctx: Option<&Context>) -> Result<(), Error> {
        let id = self.session_id(ctx)?;
        self.backend.delete(&id, &self.key).await
    }

    fn scope(&self) -> StoreScope {
        StoreScope::Backend
    }
}

/// An in-memory [`SessionBackend`] honouring TTLs against a clock; for tests and single-process
/// apps. Expired values are evicted as the backend is used, in time proportional to the number
/// of expired values (an expiry index), so memory follows the live sessions only.
pub struct MemorySessionBackend {
    clock: Arc<dyn Clock>,
    values: Mutex<Values>,
}

/// The number of values only: the values are every user's tokens.
impl fmt::Debug for MemorySessionBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.lock().map(|v| v.live.len()).unwrap_or_default();
        f.debug_struct("MemorySessionBackend")
            .field("values", &values)
            .finish_non_exhaustive()
    }
}

type ValueKey = (String, String);

#[derive(Default)]
struct Values {
    /// (session id, key) → (value, expiry, write number).
    live: HashMap<ValueKey, (String, SystemTime, u64)>,
    /// Expiry order: (expiry, write number) → key. An entry whose write number no longer
    /// matches the live value (overwritten or deleted) is skipped when it comes due.
    expiries: BTreeMap<(SystemTime, u64), ValueKey>,
    writes: u64,
}

impl Values {
    fn evict_expired(&mut self, now: SystemTime) {
        while let Some(entry) = self.expiries.first_entry() {
            let (expires, write) = *entry.key();
            if expires > now {
                break;
            }
            let key = entry.remove();
            if self.live.get(&key).is_some_and(|(_, _, w)| *w == write) {
                self.live.remove(&key);
            }
        }
    }

    fn remove(&mut self, key: &ValueKey) {
        if let Some((_, expires, write)) = self.live.remove(key) {
            self.expiries.remove(&(expires, write));
        }
    }
}

impl Default for MemorySessionBackend {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemorySessionBackend {
    /// An empty backend on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            values: Mutex::new(Values::default()),
        }
    }

    /// The values, with the expired ones evicted.
    fn values(&self) -> std::sync::MutexGuard<'_, Values> {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values.evict_expired(self.clock.now());
        values
    }

    /// How many unexpired values are held.
    pub fn len(&self) -> usize {
        self.values().live.len()
    }

    /// Whether no unexpired values are held.
    pub fn is_empty(&self) -> bool {
        self.values().live.is_empty()
    }
}

#[async_trait]
impl SessionBackend for MemorySessionBackend {
    async fn get(&self, session_id: &str, key: &str) -> Result<Option<String>, Error> {
        let values = self.values();
        let k = (session_id.to_owned(), key.to_owned());
        Ok(values.live.get(&k).map(|(value, _, _)| value.clone()))
    }

    async fn set(&self, session_id: &str, key: &str, value: String, ttl: Duration) -> Result<(), Error> {
        let now = self.clock.now();
        // Saturates: a TTL past what the clock can hold means "as long as possible".
        let expires = now
            .checked_add(ttl)
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(u32::MAX.into()))
            .max(now);
        let mut values = self.values();
        let k = (session_id.to_owned(), key.to_owned());
        values.remove(&k);
        values.writes += 1;
        let write = values.writes;
        values.expiries.insert((expires, write), k.clone());
        values.live.insert(k, (value, expires, write));
        Ok(())
    }

    async fn delete(&self, session_id: &str, key: &str) -> Result<(), Error> {
        self.values().remove(&(session_id.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn destroy(&self, session_id: &str) -> Result<(), Error> {
        let mut values = self.values();
        let keys: Vec<ValueKey> = values
            .live
            .keys()
            .filter(|(id, _)| id == session_id)
            .cloned()
            .collect();
        for key in keys {
            values.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ManualClock;
    use crate::token::{AccessToken, RefreshToken};
    use futures_executor::block_on;

    fn store(clock: &ManualClock) -> SessionStore<MemorySessionBackend> {
        SessionStore::new(MemorySessionBackend::new(Arc::new(clock.clone())))
            .prefix("app")
            .session_cookie("sid")
    }

    #[test]
    fn round_trip_per_session_with_ttl() {
        let clock = ManualClock::default();
        let store = store(&clock);
        assert_eq!(store.key(), "app_tokenkit");
        let now = clock.now();
        let record = TokenRecord::new(AccessToken::new("a"), now)
            .with_refresh_token(RefreshToken::new("r"))
            .with_expires_at(now + Duration::from_secs(60))
            .with_refresh_expires_at(now + Duration::from_secs(600))
            .with_payload(serde_json::json!({"user": 1}));
        let alice = Context::from_cookie_header("sid=alice");
        let bob = Context::new();
        bob.insert(SessionId("bob".into()));
        block_on(store.save(Some(&alice), Arc::new(record), None)).unwrap();
        let loaded = block_on(store.load(Some(&alice))).unwrap().unwrap();
        assert_eq!(loaded.access_token.as_ref().unwrap().secret(), "a");
        assert_eq!(loaded.payload, Some(serde_json::json!({"user": 1})));
        assert!(
            block_on(store.load(Some(&bob))).unwrap().is_none(),
            "sessions are separate"
        );
        clock.advance(Duration::from_secs(601));
        assert!(
            block_on(store.load(Some(&alice))).unwrap().is_none(),
            "TTL = refresh lifetime"
        );
    }

    #[test]
    fn clear_and_missing_session_ids() {
        let clock = ManualClock::default();
        let store = store(&clock);
        let ctx = Context::from_cookie_header("sid=s1");
        let r = TokenRecord::new(AccessToken::new("a"), clock.now());
        block_on(store.save(Some(&ctx), Arc::new(r), None)).unwrap();
        block_on(store.clear(Some(&ctx))).unwrap();
        assert!(block_on(store.load(Some(&ctx))).unwrap().is_none());
        let err = block_on(store.load(Some(&Context::new()))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoContext);
        assert!(!format!("{:?}", SessionId("secret-sid".into())).contains("secret-sid"));
    }

    #[test]
    fn unreadable_records_are_treated_as_absent() {
        let clock = ManualClock::default();
        let store = store(&clock);
        block_on(
            store
                .backend()
                .set("s", "app_tokenkit", "{not json".into(), Duration::from_secs(9)),
        )
        .unwrap();
        let ctx = Context::from_cookie_header("sid=s");
        assert!(block_on(store.load(Some(&ctx))).unwrap().is_none());
        block_on(store.backend().destroy("s")).unwrap();
        assert!(store.backend().is_empty());
    }
    #[test]
    fn expired_values_are_evicted_in_bulk() {
        let clock = ManualClock::default();
        let backend = MemorySessionBackend::new(Arc::new(clock.clone()));
        let sixty = Duration::from_secs(60);
        for n in 0..100_000 {
            block_on(backend.set(&format!("s{n}"), "k", "v".into(), sixty)).unwrap();
        }
        // Overwritten and deleted values leave no stale index entries behind.
        block_on(backend.set("s1", "k", "v2".into(), Duration::from_secs(600))).unwrap();
        block_on(backend.delete("s2", "k")).unwrap();
        assert_eq!(backend.len(), 99_999);
        clock.advance(Duration::from_secs(120));
        block_on(backend.set("fresh", "k", "v".into(), sixty)).unwrap();
        assert_eq!(backend.len(), 2, "only s1 (600 s) and the fresh value remain");
        let values = backend.values();
        assert_eq!(values.expiries.len(), 2, "the expiry index shrank with them");
        drop(values);
        assert_eq!(block_on(backend.get("s1", "k")).unwrap().as_deref(), Some("v2"));
        // Absurd TTLs saturate instead of overflowing.
        block_on(backend.set("long", "k", "v".into(), Duration::MAX)).unwrap();
        assert!(block_on(backend.get("long", "k")).unwrap().is_some());
    }
}
