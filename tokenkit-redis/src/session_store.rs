//! [`RedisSessionStore`]: each session's record in Redis, the browser holding only an opaque
//! session id cookie.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use sha2::{Digest, Sha256};
use tokenkit_core::cookie::{Cookie, SameSite};
use tokenkit_core::store::cookie::DEFAULT_COOKIE_MAX_AGE;
use tokenkit_core::{Context, Error, ErrorKind, SessionId, StoreScope, TokenRecord, TokenStore};

use crate::connection::{redis_error, RedisConnection};
use crate::coordinator::{millis, DEFAULT_PREFIX};
use crate::encryption::{AtRest, Encryption};
use crate::keys::hex;

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
/// While Redis cannot be reached, a session cannot be read: its requests fail with a typed
/// [`ErrorKind::Store`] error, and nothing is cleared or rewritten (the browser keeps its
/// cookie). With Redis's persistence on, every session is back when Redis is.
#[derive(Clone)]
pub struct RedisSessionStore {
    connection: RedisConnection,
    prefix: Arc<str>,
    cookie_name: Arc<str>,
    secure: bool,
    at_rest: AtRest,
    compare_and_set: Arc<Script>,
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
        }
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
        let mut connection = self.connection.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("record")
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not read the session", e))?;
        Ok(text.and_then(|text| self.at_rest.decode(&key, &text)))
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
        let value = self.at_rest.encode(&key, &record)?;
        let mut connection = self.connection.clone();
        let written: i64 = self
            .compare_and_set
            .key(&key)
            .arg(replaces.map(fingerprint).unwrap_or_default())
            .arg(value)
            .arg(fingerprint(&record))
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not write the session", e))?;
        if written != 1 {
            return Err(Error::new(
                ErrorKind::StoreConflict,
                "the session was rotated by another writer since it was read",
            ));
        }
        // The cookie lives as long as the record.
        ctx.set_cookie(self.cookie(id, ttl));
        Ok(())
    }

    async fn clear(&self, ctx: Option<&Context>) -> Result<(), Error> {
        let ctx = context(ctx)?;
        if let Some(id) = self.session_id(ctx) {
            let mut connection = self.connection.clone();
            let _: i64 = redis::cmd("DEL")
                .arg(self.record_key(&id))
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
