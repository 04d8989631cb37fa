//! Connecting to Redis, and what to do while it is unreachable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokenkit_core::{Error, ErrorKind};

/// How long a Redis command may take before it counts as a failure.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long connecting to Redis may take.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// What tokenkit does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenUnavailable {
    /// Keep serving: coordinate within the process and serve the local record, warn once
    /// per outage. A fleet then refreshes at most once per replica instead of once in all.
    #[default]
    FailOpen,
    /// Fail the operation with a typed error ([`ErrorKind::Store`]).
    FailClosed,
}

/// A connection manager that connects lazily (a replica starts even while Redis is down),
/// reconnects by itself, and gives up on a command after [`DEFAULT_RESPONSE_TIMEOUT`].
pub(crate) fn connect(url: &str) -> Result<ConnectionManager, Error> {
    let client = redis::Client::open(url).map_err(|e| redis_error("invalid Redis URL", e))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(DEFAULT_RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(DEFAULT_CONNECTION_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| redis_error("could not set up the Redis connection", e))
}

/// A Redis failure as a store error. The message is ours; Redis's own text stays in the
/// source chain (tokenkit's commands never put a token where an error could echo it).
pub(crate) fn redis_error(what: &str, err: redis::RedisError) -> Error {
    Error::new(ErrorKind::Store, what).with_source(err)
}

/// Tracks outages so that each is logged once, when it starts and when it ends.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    down: AtomicBool,
}

impl Outage {
    /// Notes a failed command; `true` when the caller should fall back (fail open).
    pub(crate) fn failed(&self, policy: WhenUnavailable, what: &str, err: &Error) -> bool {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %err, policy = ?policy, "Redis is unavailable ({what})");
        }
        policy == WhenUnavailable::FailOpen
    }

    /// Notes a command that worked.
    pub(crate) fn ok(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis is reachable again");
        }
    }
}

/// A connection to a Redis (or Valkey) server or to a Redis Cluster, shared by every tokenkit
/// type on it. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisConnection(Kind);

#[derive(Clone)]
enum Kind {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Single(_) => "RedisConnection(server)",
            Kind::Cluster(_) => "RedisConnection(cluster)",
        })
    }
}

impl RedisConnection {
    /// A connection to the server at `url` (`redis://127.0.0.1:6379/`). It connects lazily (a
    /// replica starts even while Redis is down), reconnects by itself, and gives up on a
    /// command after [`DEFAULT_RESPONSE_TIMEOUT`]. Fails only on an invalid URL.
    pub fn open(url: &str) -> Result<Self, Error> {
        connect(url).map(|manager| Self(Kind::Single(manager)))
    }

    /// A connection to the Redis Cluster reachable through `nodes` (any of its masters). Every
    /// key tokenkit writes for one session shares a hash tag, so each script runs in one slot.
    pub async fn open_cluster(nodes: &[&str]) -> Result<Self, Error> {
        let client = redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(DEFAULT_CONNECTION_TIMEOUT)
            .response_timeout(DEFAULT_RESPONSE_TIMEOUT)
            .build()
            .map_err(|e| redis_error("invalid Redis Cluster nodes", e))?;
        let connection = client
            .get_async_connection()
            .await
            .map_err(|e| redis_error("could not connect to the Redis Cluster", e))?;
        Ok(Self(Kind::Cluster(connection)))
    }
}

impl RedisConnection {
    /// Whether Redis answers a `PING` now (for health checks).
    pub async fn is_reachable(&self) -> bool {
        let mut connection = self.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .is_ok()
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(manager: ConnectionManager) -> Self {
        Self(Kind::Single(manager))
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_command(cmd),
            Kind::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Single(c) => c.get_db(),
            Kind::Cluster(c) => c.get_db(),
        }
    }
}
