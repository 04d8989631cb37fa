//! [`RedisTokenSlot`]: one token for a whole fleet (provider or client-credentials mode), with
//! a local copy in front so a fresh token costs no Redis round trip.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use sha2::{Digest, Sha256};
use tokenkit_core::{Context, Error, ErrorKind, StoreScope, TokenRecord, TokenStore};

use crate::connection::{redis_error, RedisConnection};
use crate::connection::{Outage, WhenUnavailable};
use crate::coordinator::{millis, DEFAULT_PREFIX};
use crate::encryption::AtRest;
use crate::keys::hex;
use crate::session_store::fingerprint;
use tokenkit_core::Encryption;

/// Writes the shared record unless another replica replaced the one the writer read. A
/// missing record (expired, or Redis restarted empty) protects nothing: the write goes in.
const COMPARE_AND_SET: &str = r"
local fp = redis.call('HGET', KEYS[1], 'fp')
if ARGV[1] ~= '' and fp and fp ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'record', ARGV[2], 'fp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1";

/// How long the shared record outlives its access token in Redis (it is replaced at the next
/// rotation anyway; the margin only keeps it readable while a refresh runs).
const TTL_MARGIN: Duration = Duration::from_secs(60);
/// How long a record without an expiry is kept.
const TTL_WITHOUT_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// A two-level token cache for a fleet sharing one token (provider or client-credentials
/// mode): requests read the in-process copy and never touch Redis while it is fresh; when it
/// is due, one replica of the fleet refreshes (with a [`RedisCoordinator`](crate::RedisCoordinator))
/// and the others [`reload`](TokenStore::reload) its record from Redis instead of fetching their
/// own. Writes are compare-and-swap, like the session store's.
///
/// While Redis cannot be reached it fails open by default ([`WhenUnavailable`]): the local copy
/// keeps being served and written, and the fleet shares again once Redis is back.
///
/// Give each client its own slot `name` (one per token: an API, an audience).
#[derive(Clone)]
pub struct RedisTokenSlot {
    connection: RedisConnection,
    when_unavailable: WhenUnavailable,
    outage: Arc<Outage>,
    at_rest: AtRest,
    name: Arc<str>,
    prefix: Arc<str>,
    local: Arc<RwLock<Option<Arc<TokenRecord>>>>,
    compare_and_set: Arc<Script>,
}

impl std::fmt::Debug for RedisTokenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenSlot")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisTokenSlot {
    /// A slot named `name` on the Redis server at `url`; it connects lazily (fails only on an
    /// invalid URL).
    pub async fn connect(url: &str, name: impl Into<String>) -> Result<Self, Error> {
        Ok(Self::new(RedisConnection::open(url)?, name))
    }

    /// A slot named `name` over an existing connection manager.
    pub fn new(connection: impl Into<RedisConnection>, name: impl Into<String>) -> Self {
        Self {
            connection: connection.into(),
            when_unavailable: WhenUnavailable::default(),
            outage: Arc::default(),
            at_rest: AtRest::default(),
            name: Arc::from(name.into()),
            prefix: Arc::from(DEFAULT_PREFIX),
            local: Arc::default(),
            compare_and_set: Arc::new(Script::new(COMPARE_AND_SET)),
        }
    }

    /// Namespaces the key (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// Whether Redis answers a `PING` now (for health checks).
    pub async fn is_reachable(&self) -> bool {
        self.connection.is_reachable().await
    }

    /// Encrypts and authenticates the shared record at rest (see [`Encryption`]).
    pub fn encryption(mut self, encryption: Encryption) -> Self {
        self.at_rest = AtRest(Some(encryption));
        self
    }

    /// What to do while Redis cannot be reached (default: fail open).
    pub fn when_unavailable(mut self, policy: WhenUnavailable) -> Self {
        self.when_unavailable = policy;
        self
    }

    fn key(&self) -> String {
        let tag = hex(&Sha256::digest(self.name.as_bytes())[..8]);
        format!("{}:{{slot-{tag}}}:token", self.prefix)
    }

    fn local(&self) -> Option<Arc<TokenRecord>> {
        self.local.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_local(&self, record: Option<Arc<TokenRecord>>) {
        *self.local.write().unwrap_or_else(PoisonError::into_inner) = record;
    }

    async fn read(&self) -> Result<Option<Arc<TokenRecord>>, Error> {
        let key = self.key();
        let mut connection = self.connection.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("record")
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not read the shared token", e))?;
        Ok(text.and_then(|text| self.at_rest.decode(&key, &text)))
    }

    /// The compare-and-swap write; `false` when another replica replaced the record.
    async fn write(&self, record: &TokenRecord, replaces: Option<&TokenRecord>) -> Result<bool, Error> {
        let ttl = record
            .lifetime()
            .map_or(TTL_WITHOUT_EXPIRY, |lifetime| lifetime.saturating_add(TTL_MARGIN));
        let key = self.key();
        let value = self.at_rest.encode(&key, record)?;
        let mut connection = self.connection.clone();
        let written: i64 = self
            .compare_and_set
            .key(&key)
            .arg(replaces.map(fingerprint).unwrap_or_default())
            .arg(value)
            .arg(fingerprint(record))
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not write the shared token", e))?;
        Ok(written == 1)
    }
}

#[async_trait]
impl TokenStore for RedisTokenSlot {
    /// The local copy; Redis only when there is none yet.
    async fn load(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        match self.local() {
            Some(record) => Ok(Some(record)),
            None => self.reload(ctx).await,
        }
    }

    async fn reload(&self, _ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        match self.read().await {
            Ok(record) => {
                self.outage.ok();
                if let Some(record) = &record {
                    self.set_local(Some(Arc::clone(record)));
                }
                Ok(record)
            }
            Err(err)
                if self
                    .outage
                    .failed(self.when_unavailable, "read the shared token", &err) =>
            {
                Ok(self.local())
            }
            Err(err) => Err(err),
        }
    }

    async fn save(
        &self,
        _ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        match self.write(&record, replaces).await {
            Ok(true) => self.outage.ok(),
            Ok(false) => {
                self.outage.ok();
                return Err(Error::new(
                    ErrorKind::StoreConflict,
                    "the shared token was replaced by another replica since it was read",
                ));
            }
            Err(err)
                if self
                    .outage
                    .failed(self.when_unavailable, "write the shared token", &err) => {}
            Err(err) => return Err(err),
        }
        self.set_local(Some(record));
        Ok(())
    }

    async fn clear(&self, _ctx: Option<&Context>) -> Result<(), Error> {
        self.set_local(None);
        let mut connection = self.connection.clone();
        let deleted: Result<i64, _> = redis::cmd("DEL")
            .arg(self.key())
            .query_async(&mut connection)
            .await;
        match deleted.map_err(|e| redis_error("could not delete the shared token", e)) {
            Ok(_) => self.outage.ok(),
            Err(err)
                if self
                    .outage
                    .failed(self.when_unavailable, "delete the shared token", &err) => {}
            Err(err) => return Err(err),
        }
        Ok(())
    }

    fn scope(&self) -> StoreScope {
        StoreScope::Process
    }
}
