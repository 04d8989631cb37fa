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
            tracing::warn!(target: "tokenkit_redis", error = %err, policy = ?policy, "Redis is unavailable ({what})");
        }
        policy == WhenUnavailable::FailOpen
    }

    /// Notes a command that worked.
    pub(crate) fn ok(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(target: "tokenkit_redis", "Redis is reachable again");
        }
    }
}
