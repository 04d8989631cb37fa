//! The coordination seam: single flight and the grace window, within one process or across a
//! fleet of replicas sharing sessions.
//!
//! The contract is documented on [`Coordinator`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::key::SessionKey;
use super::sessions::SessionTable;
use crate::error::Error;
use crate::runtime::Runtime;
use crate::token::TokenRecord;

/// Single flight and the grace window for session keys.
///
/// For a session key K a [`Coordinator`] answers three questions:
/// - *lead or follow* ([`acquire`](Coordinator::acquire)): may I lead K's refresh? The leader
///   gets a [`Lease`] that expires on its own (so a crashed leader never blocks K for good) and
///   can be [extended](Coordinator::extend) while a slow refresh runs; everyone else follows
///   and [waits](Coordinator::wait), bounded, for the leader's result;
/// - *publish* ([`publish`](Coordinator::publish)): the leader publishes K's successor record
///   for the grace window;
/// - *successor* ([`successor`](Coordinator::successor)): anyone still holding K's old
///   refresh token gets the successor while the window lasts, instead of rotating again.
///
/// Correctness never rests on the lease alone (an identity provider cannot check a fencing
/// token): the leader re-reads the store once granted the lead, commits with compare-and-swap
/// ([`TokenStore::save`](crate::TokenStore::save) with `replaces`), and a caller that loses a
/// race adopts the winner's record. The lease only avoids wasted refreshes.
///
/// Every client coordinates in-process by default. [`InProcessCoordinator`] shares one
/// rotation between several clients of a process; `tokenkit-redis` implements the same
/// contract for a fleet, and both pass the same contract tests (`rotation::contract`, feature
/// `test-util`).
#[async_trait]
pub trait Coordinator: Send + Sync + fmt::Debug {
    /// Asks to lead the refresh of `key`. The lease, if granted, lapses after `ttl` unless
    /// [extended](Self::extend).
    async fn acquire(&self, key: &SessionKey, ttl: Duration) -> Result<Role, Error>;

    /// Extends a lease its owner still holds to `ttl` from now; `false` when it was lost
    /// (it lapsed, and another leader may hold the key).
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error>;

    /// Releases a lease. Only the owner's lease is removed: one that lapsed and was granted
    /// to another leader is left alone.
    async fn release(&self, lease: &Lease) -> Result<(), Error>;

    /// Publishes `successor` as the record that replaced `key`'s, for `window` from now, and
    /// wakes the followers waiting for it.
    async fn publish(
        &self,
        key: &SessionKey,
        successor: Arc<TokenRecord>,
        window: Duration,
    ) -> Result<(), Error>;

    /// `key`'s published successor, while its window lasts.
    async fn successor(&self, key: &SessionKey) -> Result<Option<Arc<TokenRecord>>, Error>;

    /// Waits until `key` has no leader or has a successor, for at most `timeout`; returns the
    /// successor, if one was published. A follower then re-reads the store.
    async fn wait(&self, key: &SessionKey, timeout: Duration) -> Result<Option<Arc<TokenRecord>>, Error>;
}

/// The answer to [`Coordinator::acquire`].
#[derive(Debug)]
#[must_use = "a granted lease must be released"]
pub enum Role {
    /// Lead the refresh, holding this lease.
    Lead(Lease),
    /// Another leader holds the key: wait for its result.
    Follow,
}

/// The right to refresh one session, for a while. Identified by its key and an owner token
/// unique to this grant.
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    key: SessionKey,
    owner: String,
    ttl: Option<Duration>,
}

impl Lease {
    /// A lease on `key` owned by `owner` (a token no other grant shares).
    pub fn new(key: SessionKey, owner: impl Into<String>) -> Self {
        Self {
            key,
            owner: owner.into(),
            ttl: None,
        }
    }

    /// Says the lease was granted for `ttl`, when the coordinator granted less than asked
    /// (its leader then extends it at that pace).
    pub fn granted_for(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long the lease was granted for, when it differs from what was asked.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The session the lease is for.
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// The owner token.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("owner", &self.owner)
            .finish()
    }
}

/// Coordination within one process, shared by every client it is given to: one refresh per
/// session across those clients, and one grace window.
///
/// Each client already coordinates its own requests; share an `InProcessCoordinator` (it is
/// cheap to clone) between clients that serve the same sessions, as replicas of a fleet
/// would share a Redis coordinator.
#[derive(Debug, Clone)]
pub struct InProcessCoordinator {
    table: Arc<SessionTable>,
}

impl InProcessCoordinator {
    /// A coordinator on `runtime`'s clock; its Sleep hook (if any) bounds
    /// [`wait`](Coordinator::wait), and with a Spawn hook expired entries are dropped in the
    /// background.
    pub fn new(runtime: Runtime) -> Self {
        Self {
            table: SessionTable::new(runtime),
        }
    }

    /// The sessions it holds state for (leases, successors), for monitoring and tests.
    pub fn sessions(&self) -> usize {
        self.table.stats().sessions
    }
}

#[async_trait]
impl Coordinator for InProcessCoordinator {
    async fn acquire(&self, key: &SessionKey, ttl: Duration) -> Result<Role, Error> {
        self.table.acquire(key, ttl).await
    }
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        self.table.extend(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.table.release(lease).await
    }
    async fn publish(
        &self,
        key: &SessionKey,
        successor: Arc<TokenRecord>,
        window: Duration,
    ) -> Result<(), Error> {
        self.table.publish(key, successor, window).await
    }
    async fn successor(&self, key: &SessionKey) -> Result<Option<Arc<TokenRecord>>, Error> {
        self.table.successor(key).await
    }
    async fn wait(&self, key: &SessionKey, timeout: Duration) -> Result<Option<Arc<TokenRecord>>, Error> {
        self.table.wait(key, timeout).await
    }
}

/// A client's own session table as its coordinator, held weakly: a flight holding it never
/// keeps a dropped client alive. Once the client is gone, a flight still running finishes
/// alone (it leads, publishes nowhere).
#[derive(Debug)]
pub(crate) struct OwnTable(pub(crate) std::sync::Weak<SessionTable>);

#[async_trait]
impl Coordinator for OwnTable {
    async fn acquire(&self, key: &SessionKey, ttl: Duration) -> Result<Role, Error> {
        match self.0.upgrade() {
            Some(table) => table.acquire(key, ttl).await,
            None => Ok(Role::Lead(Lease::new(key.clone(), "client-dropped"))),
        }
    }
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        match self.0.upgrade() {
            Some(table) => table.extend(lease, ttl).await,
            None => Ok(true),
        }
    }
    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        match self.0.upgrade() {
            Some(table) => table.release(lease).await,
            None => Ok(()),
        }
    }
    async fn publish(
        &self,
        key: &SessionKey,
        successor: Arc<TokenRecord>,
        window: Duration,
    ) -> Result<(), Error> {
        match self.0.upgrade() {
            Some(table) => table.publish(key, successor, window).await,
            None => Ok(()),
        }
    }
    async fn successor(&self, key: &SessionKey) -> Result<Option<Arc<TokenRecord>>, Error> {
        match self.0.upgrade() {
            Some(table) => table.successor(key).await,
            None => Ok(None),
        }
    }
    async fn wait(&self, key: &SessionKey, timeout: Duration) -> Result<Option<Arc<TokenRecord>>, Error> {
        // A client's own flights never wait on its own table (it grants the one flight of a
        // key the lead), so holding it for the wait keeps nothing alive for long.
        match self.0.upgrade() {
            Some(table) => table.wait(key, timeout).await,
            None => Ok(None),
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
pub mod contract;
