//! [`RedisSessionStore`]: each session's record in Redis, the browser holding only an opaque
//! session id cookie.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use sha2::{Digest, Sha256};
use tokenkit_core::cookie::{Cookie, SameSite};
use tokenkit_core::defaults::COOKIE_MAX_AGE as DEFAULT_COOKIE_MAX_AGE;
use tokenkit_core::{Context, Error, ErrorKind, SessionId, StoreScope, TokenRecord, TokenStore};

use crate::connection::{redis_error, Outage, RedisConnection, WhenUnavailable};
use crate::coordinator::{millis, DEFAULT_PREFIX};
use crate::encryption::AtRest;
use crate::keys::hex;
use tokenkit_core::Encryption;

/// The session id cookie's name by default: the `__Host-` prefix makes browsers refuse it
/// unless it is `Secure`, host-only and on `/`.
pub const DEFAULT_SESSION_COOKIE: &str = "__Host-tokenkit_sid";

/// Writes the record only if the stored one is still the one the writer read (its token
/// fingerprint), or unconditionally when the writer expects nothing.
pub(crate) const COMPARE_AND_SET: &str = r"
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'record', ARGV[2], 'fp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1";

/// A [`TokenStore`] keeping each session's record in Redis, with the refresh token's lifetime
/// as TTL (7 days when unknown). The browser holds only an opaque, random session id in an
/// `HttpOnly`, `Secure`, `__Host-` cookie; the record's key is a digest of that id, so a
/// Redis dump names no live session.
///
/// Writes are compare-and-swap (a Lua script on the record's token fingerprint): a stale
/// replica can never overwrite a rotated refresh token; it gets
/// [`ErrorKind::StoreConflict`] and tokenkit adopts the winner's record.
///
/// While Redis cannot be reached it fails open by default ([`WhenUnavailable`]): the sessions
/// this replica read or wrote lately are served from a local copy, rotations are written there
/// and back to Redis (compare-and-swap) when it returns. A session with no local copy, or any
/// session when failing closed, gets a typed [`ErrorKind::Store`] error; nothing is cleared
/// (the browser keeps its cookie), and with Redis's persistence on every session is back when
/// Redis is.
#[derive(Clone)]
pub struct RedisSessionStore {
    connection: RedisConnection,
    prefix: Arc<str>,
    cookie_name: Arc<str>,
    secure: bool,
    at_rest: AtRest,
    compare_and_set: Arc<Script>,
    when_unavailable: WhenUnavailable,
    outage: Arc<Outage>,
    local: Arc<Mutex<LocalCopies>>,
}

/// How many sessions a replica keeps a local copy of, to serve them while Redis is away.
pub const LOCAL_COPIES: usize = 10_000;

/// The records this replica read or wrote lately: served while Redis is away (fail open),
/// and written back, compare-and-swap, once it is back.
#[derive(Debug, Default)]
struct LocalCopies {
    copies: HashMap<String, LocalCopy>,
    /// Whether some copy waits to be written back.
    pending: bool,
}

#[derive(Debug)]
struct LocalCopy {
    record: Arc<TokenRecord>,
    ttl: Duration,
    /// Written while Redis was away: the fingerprint Redis held before, to write back with
    /// compare-and-swap (a record another replica stored meanwhile wins).
    written_over: Option<String>,
}

impl LocalCopies {
    fn keep(&mut self, key: &str, copy: LocalCopy) {
        if self.copies.len() >= LOCAL_COPIES && !self.copies.contains_key(key) {
            // Make room with a copy that has nothing to write back.
            let clean = self
                .copies
                .iter()
                .find(|(_, c)| c.written_over.is_none())
                .map(|(k, _)| k.clone());
            match clean {
                Some(evicted) => {
                    self.copies.remove(&evicted);
                }
                None => return,
            }
        }
        self.pending |= copy.written_over.is_some();
        self.copies.insert(key.to_owned(), copy);
    }
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .field("cookie_name", &self.cookie_name)
            .finish_non_exhaustive()
    }
}

impl RedisSessionStore {
    /// A store on the Redis server at `url`; it connects lazily (fails only on an invalid URL).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Ok(Self::new(RedisConnection::open(url)?))
    }

    /// A store over an existing connection manager.
    pub fn new(connection: impl Into<RedisConnection>) -> Self {
        Self {
            connection: connection.into(),
            prefix: Arc::from(DEFAULT_PREFIX),
            cookie_name: Arc::from(DEFAULT_SESSION_COOKIE),
            secure: true,
            at_rest: AtRest::default(),
            compare_and_set: Arc::new(Script::new(COMPARE_AND_SET)),
            when_unavailable: WhenUnavailable::default(),
            outage: Arc::default(),
            local: Arc::default(),
        }
    }

    /// What to do while Redis cannot be reached. Fail open (the default) serves the sessions
    /// this replica has a local copy of (read or written lately, up to [`LOCAL_COPIES`]) and
    /// writes rotations there, then back to Redis (compare-and-swap) once it returns.
    pub fn when_unavailable(mut self, policy: WhenUnavailable) -> Self {
        self.when_unavailable = policy;
        self
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, LocalCopies> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn read(&self, key: &str) -> Result<Option<Arc<TokenRecord>>, Error> {
        let mut connection = self.connection.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(key)
            .arg("record")
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not read the session", e))?;
        Ok(text.and_then(|text| self.at_rest.decode(key, &text)))
    }

    /// The compare-and-swap write; `false` when the stored record is not `expected`.
    async fn write(
        &self,
        key: &str,
        record: &TokenRecord,
        expected: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let value = self.at_rest.encode(key, record)?;
        let mut connection = self.connection.clone();
        let written: i64 = self
            .compare_and_set
            .key(key)
            .arg(expected)
            .arg(value)
            .arg(fingerprint(record))
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not write the session", e))?;
        Ok(written == 1)
    }

    /// Writes back what was written locally while Redis was away. A record another writer
    /// stored meanwhile wins: the local copy is dropped.
    async fn write_back(&self) -> Result<(), Error> {
        let pending: Vec<(String, Arc<TokenRecord>, Duration, String)> = {
            let copies = self.copies();
            if !copies.pending {
                return Ok(());
            }
            copies
                .copies
                .iter()
                .filter_map(|(k, c)| {
                    c.written_over
                        .clone()
                        .map(|fp| (k.clone(), Arc::clone(&c.record), c.ttl, fp))
                })
                .collect()
        };
        for (key, record, ttl, expected) in pending {
            let kept = self.write(&key, &record, &expected, ttl).await?;
            let mut copies = self.copies();
            if kept {
                if let Some(copy) = copies.copies.get_mut(&key) {
                    copy.written_over = None;
                }
            } else {
                tracing::warn!(
                    "a session rotated during the outage was rotated elsewhere too; keeping the stored one"
                );
                copies.copies.remove(&key);
            }
        }
        let mut copies = self.copies();
        copies.pending = copies.copies.values().any(|c| c.written_over.is_some());
        Ok(())
    }

    /// Namespaces the keys (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// Encrypts and authenticates the records at rest (keys can rotate: see [`Encryption`]).
    pub fn encryption(mut self, encryption: Encryption) -> Self {
        self.at_rest = AtRest(Some(encryption));
        self
    }

    /// For plain-http development only: the session cookie without `Secure`, named
    /// `tokenkit_sid` (browsers refuse a `__Host-` cookie that is not `Secure`).
    pub fn insecure_cookie_for_development(mut self) -> Self {
        self.secure = false;
        self.cookie_name = Arc::from("tokenkit_sid");
        self
    }

    /// The session id of `ctx`: its [`SessionId`] extension, else its session cookie.
    fn session_id(&self, ctx: &Context) -> Option<String> {
        ctx.get::<SessionId>()
            .map(|SessionId(id)| id)
            .or_else(|| ctx.cookie(&self.cookie_name))
            .filter(|id| !id.is_empty())
    }

    fn record_key(&self, session_id: &str) -> String {
        let digest = hex(&Sha256::digest(session_id.as_bytes()));
        format!("{}:{{sid-{digest}}}:record", self.prefix)
    }

    fn cookie(&self, value: String, max_age: Duration) -> Cookie<'static> {
        let seconds = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        Cookie::build((self.cookie_name.to_string(), value))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(tokenkit_core::cookie::time::Duration::seconds(seconds))
            .build()
    }
}

fn context(ctx: Option<&Context>) -> Result<&Context, Error> {
    ctx.ok_or_else(|| {
        Error::new(
            ErrorKind::NoContext,
            "the Redis session store needs a request context (run_with_context, or the framework layer)",
        )
    })
}

/// A new session id: 32 random bytes from the operating system, hex-encoded.
fn new_session_id() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::new(ErrorKind::Store, format!("no randomness for a session id: {e}")))?;
    Ok(hex(&bytes))
}

/// What compare-and-swap compares: a digest of the record's tokens.
pub(crate) fn fingerprint(record: &TokenRecord) -> String {
    let mut digest = Sha256::new();
    if let Some(access) = &record.access_token {
        digest.update(b"a:");
        digest.update(access.secret().as_bytes());
    }
    digest.update(b"\0r:");
    if let Some(refresh) = &record.refresh_token {
        digest.update(refresh.secret().as_bytes());
    }
    hex(&digest.finalize())
}

#[async_trait]
impl TokenStore for RedisSessionStore {
    async fn load(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        let Some(id) = self.session_id(context(ctx)?) else {
            return Ok(None);
        };
        let key = self.record_key(&id);
        let read = match self.write_back().await {
            Ok(()) => self.read(&key).await,
            Err(err) => Err(err),
        };
        match read {
            Ok(record) => {
                self.outage.ok();
                if let Some(record) = &record {
                    let ttl = record.refresh_lifetime().unwrap_or(DEFAULT_COOKIE_MAX_AGE);
                    let copy = LocalCopy {
                        record: Arc::clone(record),
                        ttl,
                        written_over: None,
                    };
                    self.copies().keep(&key, copy);
                }
                Ok(record)
            }
            Err(err) if self.outage.failed(self.when_unavailable, "read a session", &err) => {
                match self.copies().copies.get(&key) {
                    Some(copy) => Ok(Some(Arc::clone(&copy.record))),
                    // Never "logged out" for want of Redis: the session is there, unreadable.
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn save(
        &self,
        ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        let ctx = context(ctx)?;
        let id = match self.session_id(ctx) {
            Some(id) => id,
            None => {
                let id = new_session_id()?;
                ctx.insert(SessionId(id.clone()));
                id
            }
        };
        let ttl = record.refresh_lifetime().unwrap_or(DEFAULT_COOKIE_MAX_AGE);
        let key = self.record_key(&id);
        let expected = replaces.map(fingerprint).unwrap_or_default();
        let written_over = match self.write(&key, &record, &expected, ttl).await {
            Ok(true) => {
                self.outage.ok();
                None
            }
            Ok(false) => {
                return Err(Error::new(
                    ErrorKind::StoreConflict,
                    "the session was rotated by another writer since it was read",
                ))
            }
            Err(err) if self.outage.failed(self.when_unavailable, "write a session", &err) => {
                // Written back once Redis returns, over what Redis held before the outage.
                let before = self
                    .copies()
                    .copies
                    .get(&key)
                    .and_then(|c| c.written_over.clone());
                Some(before.unwrap_or(expected))
            }
            Err(err) => return Err(err),
        };
        let copy = LocalCopy {
            record,
            ttl,
            written_over,
        };
        self.copies().keep(&key, copy);
        // The cookie lives as long as the record.
        ctx.set_cookie(self.cookie(id, ttl));
        Ok(())
    }

    async fn clear(&self, ctx: Option<&Context>) -> Result<(), Error> {
        let ctx = context(ctx)?;
        if let Some(id) = self.session_id(ctx) {
            let key = self.record_key(&id);
            self.copies().copies.remove(&key);
            let mut connection = self.connection.clone();
            let _: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error("could not delete the session", e))?;
        }
        ctx.remove_cookie(self.cookie(String::new(), Duration::ZERO));
        Ok(())
    }

    fn scope(&self) -> StoreScope {
        StoreScope::Backend
    }
}
