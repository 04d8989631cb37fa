//! [`RedisCoordinator`]: the coordination contract of `tokenkit_core::Coordinator` on Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::future::Future;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use tokenkit_core::{Coordinator, Error, InProcessCoordinator, SessionKey, TokenRecord};
use tokenkit_core::{Lease, Role};

use crate::connection::{redis_error, Outage, RedisConnection, WhenUnavailable};
use crate::encryption::AtRest;
use crate::keys::Keys;
use tokenkit_core::Encryption;

/// The key prefix unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "tokenkit";
/// The first pause of a follower polling for its leader's result; it doubles up to
/// [`MAX_POLL_INTERVAL`].
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The longest pause between two polls of a waiting follower.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Extends a lease only if the caller still owns it.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes a lease only if the caller still owns it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Single flight and the grace window for a fleet: leases (`SET key owner NX PX ttl`, extended
/// and released by their owner only, through Lua scripts), successors published with the
/// window as their TTL, followers polling with backoff until the leader's result or the
/// lease's end.
///
/// While Redis cannot be reached it fails open by default ([`WhenUnavailable`]): leases and
/// successors are kept in the process meanwhile, so the fleet refreshes at most once per
/// replica, and coordination resumes by itself when Redis is back.
///
/// Cheap to clone; clones share one [`RedisConnection`](crate::RedisConnection) (to a
/// server, reconnecting by itself, or to a Redis Cluster).
#[derive(Clone)]
pub struct RedisCoordinator {
    connection: RedisConnection,
    when_unavailable: WhenUnavailable,
    /// Coordination within this process while Redis is unreachable (fail open).
    local: InProcessCoordinator,
    outage: Arc<Outage>,
    at_rest: AtRest,
    max_lease: Option<Duration>,
    prefix: Arc<str>,
    /// Names this process in owner tokens and in keys of context-only sessions.
    instance: Arc<str>,
    extend: Arc<Script>,
    release: Arc<Script>,
}

impl std::fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordinator")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl RedisCoordinator {
    /// A coordinator on the Redis server at `url` (`redis://127.0.0.1:6379/`). It connects
    /// lazily: a replica starts even while Redis is down. Fails only on an invalid URL.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Ok(Self::new(RedisConnection::open(url)?))
    }

    /// A coordinator over an existing connection manager.
    pub fn new(connection: impl Into<RedisConnection>) -> Self {
        Self {
            connection: connection.into(),
            when_unavailable: WhenUnavailable::default(),
            local: InProcessCoordinator::new(tokenkit_tokio::runtime()),
            outage: Arc::default(),
            at_rest: AtRest::default(),
            max_lease: None,
            prefix: Arc::from(DEFAULT_PREFIX),
            instance: Arc::from(instance_id()),
            extend: Arc::new(Script::new(EXTEND)),
            release: Arc::new(Script::new(RELEASE)),
        }
    }

    /// Namespaces every key under `prefix` (default [`DEFAULT_PREFIX`]): clients that share
    /// sessions must share the prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// Whether Redis answers a `PING` now (for health checks).
    pub async fn is_reachable(&self) -> bool {
        self.connection.is_reachable().await
    }

    /// Encrypts the successors it publishes (they hold a session's tokens for the grace
    /// window).
    pub fn encryption(mut self, encryption: Encryption) -> Self {
        self.at_rest = AtRest(Some(encryption));
        self
    }

    /// Grants leases of at most `limit` (default: as long as asked, the token-fetch timeout
    /// plus a margin). A shorter lease lets the fleet take over sooner from a replica that
    /// died mid-refresh; a live leader keeps it by extending it at a third of `limit`.
    pub fn max_lease(mut self, limit: Duration) -> Self {
        self.max_lease = Some(limit);
        self
    }

    fn lease_ttl(&self, asked: Duration) -> Duration {
        self.max_lease.map_or(asked, |limit| asked.min(limit))
    }

    /// What to do while Redis cannot be reached (default: fail open).
    pub fn when_unavailable(mut self, policy: WhenUnavailable) -> Self {
        self.when_unavailable = policy;
        self
    }

    /// Runs `redis`; on failure, fails open to `local` or closed with the error.
    async fn or_local<T>(
        &self,
        what: &'static str,
        redis: impl Future<Output = Result<T, Error>>,
        local: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match redis.await {
            Ok(value) => {
                self.outage.ok();
                Ok(value)
            }
            Err(err) if self.outage.failed(self.when_unavailable, what, &err) => local.await,
            Err(err) => Err(err),
        }
    }

    fn keys(&self, key: &SessionKey) -> Keys {
        Keys::new(&self.prefix, &self.instance, key)
    }

    fn owner(&self) -> String {
        static GRANTS: AtomicU64 = AtomicU64::new(0);
        format!("{}-{}", self.instance, GRANTS.fetch_add(1, Ordering::Relaxed))
    }

    async fn read_successor(&self, keys: &Keys) -> Result<Option<Arc<TokenRecord>>, Error> {
        let mut connection = self.connection.clone();
        let text: Option<String> = connection
            .get(&keys.successor)
            .await
            .map_err(|e| redis_error("could not read the successor", e))?;
        Ok(text.and_then(|text| self.at_rest.decode(&keys.successor, &text)))
    }

    async fn lease_held(&self, keys: &Keys) -> Result<bool, Error> {
        let mut connection = self.connection.clone();
        connection
            .exists(&keys.lease)
            .await
            .map_err(|e| redis_error("could not read the lease", e))
    }
}

impl RedisCoordinator {
    async fn redis_acquire(&self, key: &SessionKey, asked: Duration) -> Result<Role, Error> {
        let ttl = self.lease_ttl(asked);
        let keys = self.keys(key);
        let owner = self.owner();
        let mut connection = self.connection.clone();
        let granted: Option<String> = redis::cmd("SET")
            .arg(&keys.lease)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not acquire the refresh lease", e))?;
        Ok(match granted {
            Some(_) => Role::Lead(Lease::new(key.clone(), owner).granted_for(ttl)),
            None => Role::Follow,
        })
    }

    async fn redis_extend(&self, lease: &Lease, asked: Duration) -> Result<bool, Error> {
        let ttl = self.lease_ttl(asked);
        let keys = self.keys(lease.key());
        let mut connection = self.connection.clone();
        let extended: i64 = self
            .extend
            .key(&keys.lease)
            .arg(lease.owner())
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not extend the refresh lease", e))?;
        Ok(extended == 1)
    }

    async fn redis_release(&self, lease: &Lease) -> Result<(), Error> {
        let keys = self.keys(lease.key());
        let mut connection = self.connection.clone();
        let _: i64 = self
            .release
            .key(&keys.lease)
            .arg(lease.owner())
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not release the refresh lease", e))?;
        Ok(())
    }

    async fn redis_publish(
        &self,
        key: &SessionKey,
        successor: Arc<TokenRecord>,
        window: Duration,
    ) -> Result<(), Error> {
        if window.is_zero() {
            return Ok(());
        }
        let keys = self.keys(key);
        let text = self.at_rest.encode(&keys.successor, &successor)?;
        let mut connection = self.connection.clone();
        let _: () = redis::cmd("SET")
            .arg(&keys.successor)
            .arg(text)
            .arg("PX")
            .arg(millis(window))
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("could not publish the successor", e))?;
        Ok(())
    }

    async fn redis_successor(&self, key: &SessionKey) -> Result<Option<Arc<TokenRecord>>, Error> {
        self.read_successor(&self.keys(key)).await
    }

    async fn redis_wait(
        &self,
        key: &SessionKey,
        timeout: Duration,
    ) -> Result<Option<Arc<TokenRecord>>, Error> {
        let keys = self.keys(key);
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut pause = FIRST_POLL_INTERVAL;
        loop {
            if let Some(successor) = self.read_successor(&keys).await? {
                return Ok(Some(successor));
            }
            if !self.lease_held(&keys).await? {
                // The leader publishes before it releases: a successor published between the
                // two reads above is visible now.
                return self.read_successor(&keys).await;
            }
            let now = tokio::time::Instant::now();
            let left = deadline.map_or(pause, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_POLL_INTERVAL);
        }
    }
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    async fn acquire(&self, key: &SessionKey, ttl: Duration) -> Result<Role, Error> {
        self.or_local(
            "acquire",
            self.redis_acquire(key, ttl),
            self.local.acquire(key, ttl),
        )
        .await
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        // A lease granted locally during an outage is extended locally.
        let extended = self
            .or_local("extend", self.redis_extend(lease, ttl), async { Ok(false) })
            .await?;
        Ok(extended || self.local.extend(lease, ttl).await?)
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.local.release(lease).await?;
        self.or_local("release", self.redis_release(lease), async { Ok(()) })
            .await
    }

    async fn publish(
        &self,
        key: &SessionKey,
        successor: Arc<TokenRecord>,
        window: Duration,
    ) -> Result<(), Error> {
        let local = self.local.publish(key, Arc::clone(&successor), window);
        self.or_local("publish", self.redis_publish(key, successor, window), local)
            .await
    }

    async fn successor(&self, key: &SessionKey) -> Result<Option<Arc<TokenRecord>>, Error> {
        self.or_local("successor", self.redis_successor(key), self.local.successor(key))
            .await
    }

    async fn wait(&self, key: &SessionKey, timeout: Duration) -> Result<Option<Arc<TokenRecord>>, Error> {
        self.or_local(
            "wait",
            self.redis_wait(key, timeout),
            self.local.wait(key, timeout),
        )
        .await
    }
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0) and at most what Redis accepts.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64 / 2)
}

/// A token naming this process: its id and when it started, to the nanosecond.
fn instance_id() -> String {
    #[allow(clippy::disallowed_methods)] // an identifier, not a time the logic depends on
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}
