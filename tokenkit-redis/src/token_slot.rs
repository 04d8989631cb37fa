//! [`RedisTokenSlot`]: one token for a whole fleet (provider or client-credentials mode), with
//! a local copy in front so a fresh token costs no Redis round trip.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use sha2::{Digest, Sha256};
use tokenkit_core::store::{decode_record, encode_record};
use tokenkit_core::{Context, Error, ErrorKind, StoreScope, TokenRecord, TokenStore};

use crate::coordinator::{millis, redis_error, DEFAULT_PREFIX};
use crate::keys::hex;
use crate::session_store::{fingerprint, COMPARE_AND_SET};

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
/// Give each client its own slot `name` (one per token: an API, an audience).
#[derive(Clone)]
pub struct RedisTokenSlot {
    connection: ConnectionManager,
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
    /// Connects to the Redis server at `url`; the slot is named `name`.
    pub async fn connect(url: &str, name: impl Into<String>) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|e| redis_error("invalid Redis URL", e))?;
        let connection = ConnectionManager::new(client)
            .await
            .map_err(|e| redis_error("could not connect to Redis", e))?;
        Ok(Self::new(connection, name))
    }

    /// A slot named `name` over an existing connection manager.
    pub fn new(connection: ConnectionManager, name: impl Into<String>) -> Self {
        Self {
            connection,
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
        let mut connection = self.connection.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(self.key())
            .arg("record")
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not read the shared token", e))?;
        let record = text.and_then(|text| {
            let record = decode_record(&text);
            if record.is_none() {
                tracing::warn!(target: "tokenkit_redis", "ignoring an unreadable shared token");
            }
            record.map(Arc::new)
        });
        if let Some(record) = &record {
            self.set_local(Some(Arc::clone(record)));
        }
        Ok(record)
    }

    async fn save(
        &self,
        _ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        let ttl = record
            .lifetime()
            .map_or(TTL_WITHOUT_EXPIRY, |lifetime| lifetime.saturating_add(TTL_MARGIN));
        let mut connection = self.connection.clone();
        let written: i64 = self
            .compare_and_set
            .key(self.key())
            .arg(replaces.map(fingerprint).unwrap_or_default())
            .arg(encode_record(&record)?)
            .arg(fingerprint(&record))
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not write the shared token", e))?;
        if written != 1 {
            return Err(Error::new(
                ErrorKind::StoreConflict,
                "the shared token was replaced by another replica since it was read",
            ));
        }
        self.set_local(Some(record));
        Ok(())
    }

    async fn clear(&self, _ctx: Option<&Context>) -> Result<(), Error> {
        self.set_local(None);
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key())
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not delete the shared token", e))?;
        Ok(())
    }

    fn scope(&self) -> StoreScope {
        StoreScope::Process
    }
}
