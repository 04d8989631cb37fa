//! The in-process session table: one [`SessionState`] per [`SessionKey`], in one map under one
//! lock, with the refresh in flight beside it. It makes the atomic "serve the successor / join
//! the flight / lead a new one" step, and it is the in-process [`Coordinator`] (leases and
//! published successors live in the same entries).
//!
//! Entries expire through a deadline index (grace windows, proactive cooldowns, leases), so
//! pruning costs O(expired entries · log n), never a scan of the table.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::future::{self, Either};

use super::coordination::{Coordinator, Lease, Role};
use super::flight::Flight;
use super::key::SessionKey;
use super::state::{decide, Decision, Event, SessionState, Successor};
use super::RotationStats;
use crate::error::Error;
use crate::policy::RefreshPolicy;
use crate::runtime::{BoxFuture, Runtime};
use crate::source::FetchReason;
use crate::token::TokenRecord;

#[derive(Default)]
struct Entry {
    state: SessionState,
    /// The refresh in flight (a finishing flight removes only itself, by id).
    flight: Option<Flight>,
    /// How long a proactive cooldown lasts, as the policy said when it began.
    cooldown: Duration,
    lease: Option<LocalLease>,
    /// Followers waiting for the lease to be released or a successor to be published.
    waiters: Vec<Waker>,
}

struct LocalLease {
    owner: String,
    /// Its place in the deadline index; `None` when the end is not representable.
    deadline: Option<(SystemTime, u64)>,
}

impl Entry {
    fn lease_is_live(&self, now: SystemTime) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| l.deadline.is_none_or(|(until, _)| now < until))
    }

    /// Nothing worth keeping: no flight, no live lease (followers of a lapsed or released
    /// lease are woken when the entry goes), no open window, no cooldown.
    fn is_idle(&self, now: SystemTime) -> bool {
        self.flight.is_none() && !self.lease_is_live(now) && self.state.is_idle(now, self.cooldown)
    }

    fn wake_waiters(&mut self) {
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<SessionKey, Entry>,
    /// (when, sequence) → the key to re-examine then.
    deadlines: BTreeMap<(SystemTime, u64), SessionKey>,
    sequence: u64,
}

impl Table {
    fn next(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn add_deadline(&mut self, at: Option<SystemTime>, key: &SessionKey) -> Option<(SystemTime, u64)> {
        let at = at?;
        let slot = (at, self.next());
        self.deadlines.insert(slot, key.clone());
        Some(slot)
    }

    /// Drops the entries that are idle once their deadlines passed.
    fn prune(&mut self, now: SystemTime) {
        while let Some(due) = self.deadlines.first_entry() {
            if due.key().0 > now {
                break;
            }
            let key = due.remove();
            self.drop_if_idle(&key, now);
        }
    }

    fn drop_if_idle(&mut self, key: &SessionKey, now: SystemTime) {
        if self.entries.get(key).is_some_and(|e| e.is_idle(now)) {
            if let Some(mut entry) = self.entries.remove(key) {
                entry.wake_waiters();
            }
        }
    }
}

/// The in-process session table; see the [module](self) docs.
pub(crate) struct SessionTable {
    runtime: Runtime,
    table: Mutex<Table>,
    prune_scheduled: AtomicBool,
    me: Weak<SessionTable>,
}

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SessionTable {
    pub(crate) fn new(runtime: Runtime) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            runtime,
            table: Mutex::new(Table::default()),
            prune_scheduled: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> SystemTime {
        self.runtime.clock.now()
    }

    /// One atomic step for `key`: decide on `event` with the session's state, and when the
    /// decision is to lead, start the flight `start(id)` builds, under the same lock. Returns
    /// the decision and, for a lead or a join, the flight to await.
    pub(crate) fn begin(
        &self,
        key: &SessionKey,
        now: SystemTime,
        policy: &dyn RefreshPolicy,
        event: Event<'_>,
        start: impl FnOnce(u64, FetchReason) -> BoxFuture<'static, Result<Arc<TokenRecord>, Error>>,
    ) -> (Decision, Option<Flight>) {
        let mut table = self.lock();
        let decision = match table.entries.get(key) {
            Some(entry) => {
                let mut state = entry.state.clone();
                state.refreshing = entry.flight.is_some();
                decide(&state, now, policy, event)
            }
            None => decide(&SessionState::default(), now, policy, event),
        };
        let lead = match &decision {
            Decision::Lead { reason } => Some(*reason),
            Decision::UseAndRefreshInBackground => Some(FetchReason::Proactive),
            _ => None,
        };
        let flight = match (&decision, lead) {
            (_, Some(reason)) => {
                let id = table.next();
                let flight = Flight::new(id, start(id, reason));
                let entry = table.entries.entry(key.clone()).or_default();
                entry.flight = Some(flight.clone());
                entry.state.refreshing = true;
                Some(flight)
            }
            (Decision::Join { .. }, None) => table.entries.get(key).and_then(|e| e.flight.clone()),
            _ => None,
        };
        (decision, flight)
    }

    /// Flight `id` of `key` ended. A failed proactive refresh starts a cooldown of `cooldown`;
    /// a success ends any cooldown.
    pub(crate) fn finish(&self, key: &SessionKey, id: u64, succeeded: bool, cooldown: Option<Duration>) {
        let now = self.now();
        let mut table = self.lock();
        let mut deadline = None;
        if let Some(entry) = table.entries.get_mut(key) {
            if entry.flight.as_ref().is_some_and(|own| own.id == id) {
                entry.flight = None;
                entry.state.refreshing = false;
            }
            if succeeded {
                entry.state.proactive_failed_at = None;
            } else if let Some(delay) = cooldown {
                entry.state.proactive_failed_at = Some(now);
                entry.cooldown = delay;
                deadline = Some(now.checked_add(delay));
            }
        }
        if let Some(at) = deadline {
            table.add_deadline(at, key);
        }
        table.prune(now);
        table.drop_if_idle(key, now);
        drop(table);
        if deadline.is_some() {
            self.schedule_prune();
        }
    }

    /// Sizes, for monitoring and tests (expired entries are dropped first).
    pub(crate) fn stats(&self) -> RotationStats {
        let now = self.now();
        let mut table = self.lock();
        table.prune(now);
        let mut stats = RotationStats {
            refreshes_in_flight: 0,
            grace_entries: 0,
            sessions: table.entries.len(),
        };
        for entry in table.entries.values() {
            stats.refreshes_in_flight += usize::from(entry.flight.is_some());
            stats.grace_entries +=
                usize::from(entry.state.successor.as_ref().is_some_and(|s| s.is_open(now)));
        }
        stats
    }

    /// With Spawn and Sleep hooks, drops expired entries in the background, so the memory of a
    /// rotation wave is returned without waiting for the next one. The task holds the table
    /// weakly and stops when no deadline is left.
    fn schedule_prune(&self) {
        let (Some(spawn), Some(sleep)) = (self.runtime.spawn.clone(), self.runtime.sleep.clone()) else {
            return;
        };
        if self.prune_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        let task = Box::pin(async move {
            loop {
                let wait = {
                    let Some(table) = me.upgrade() else { return };
                    let now = table.now();
                    let mut inner = table.lock();
                    inner.prune(now);
                    match inner.deadlines.first_key_value() {
                        Some(((at, _), _)) => at.duration_since(now).unwrap_or(Duration::ZERO),
                        None => {
                            table.prune_scheduled.store(false, Ordering::Release);
                            return;
                        }
                    }
                };
                sleep
                    .sleep(wait.clamp(Duration::from_millis(10), Duration::from_secs(60)))
                    .await;
            }
        });
        if spawn.spawn(task).is_err() {
            self.prune_scheduled.store(false, Ordering::Release);
        }
    }

    fn poll_wait(&self, key: &SessionKey, cx: &mut TaskContext<'_>) -> Poll<Option<Arc<TokenRecord>>> {
        let now = self.now();
        let mut table = self.lock();
        let Some(entry) = table.entries.get_mut(key) else {
            return Poll::Ready(None);
        };
        let successor = entry.state.successor.as_ref().filter(|s| s.is_open(now));
        if let Some(successor) = successor {
            return Poll::Ready(Some(Arc::clone(&successor.record)));
        }
        if !entry.lease_is_live(now) {
            return Poll::Ready(None);
        }
        if !entry.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            entry.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Waits for a lease release or a published successor.
struct Released<'a> {
    table: &'a SessionTable,
    key: &'a SessionKey,
}

impl Future for Released<'_> {
    type Output = Option<Arc<TokenRecord>>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.table.poll_wait(self.key, cx)
    }
}

#[async_trait]
impl Coordinator for SessionTable {
    async fn acquire(&self, key: &SessionKey, ttl: Duration) -> Result<Role, Error> {
        let now = self.now();
        let mut table = self.lock();
        table.prune(now);
        if table.entries.get(key).is_some_and(|e| e.lease_is_live(now)) {
            return Ok(Role::Follow);
        }
        let owner = format!("in-process-{}", table.next());
        let deadline = table.add_deadline(now.checked_add(ttl), key);
        let entry = table.entries.entry(key.clone()).or_default();
        if let Some(lapsed) = entry.lease.replace(LocalLease {
            owner: owner.clone(),
            deadline,
        }) {
            if let Some(slot) = lapsed.deadline {
                table.deadlines.remove(&slot);
            }
        }
        // No background prune for leases: released leases leave the index at once, and a
        // lapsed one is dropped by the next operation on the table.
        Ok(Role::Lead(Lease::new(key.clone(), owner)))
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        let now = self.now();
        let mut table = self.lock();
        let owned = table.entries.get(lease.key()).is_some_and(|e| {
            e.lease_is_live(now) && e.lease.as_ref().is_some_and(|l| l.owner == lease.owner())
        });
        if !owned {
            return Ok(false);
        }
        let deadline = table.add_deadline(now.checked_add(ttl), lease.key());
        let old = table
            .entries
            .get_mut(lease.key())
            .and_then(|e| e.lease.as_mut())
            .and_then(|l| std::mem::replace(&mut l.deadline, deadline));
        if let Some(slot) = old {
            table.deadlines.remove(&slot);
        }
        Ok(true)
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let now = self.now();
        let mut table = self.lock();
        let Some(entry) = table.entries.get_mut(lease.key()) else {
            return Ok(());
        };
        if entry.lease.as_ref().is_none_or(|l| l.owner != lease.owner()) {
            return Ok(());
        }
        let slot = entry.lease.take().and_then(|l| l.deadline);
        entry.wake_waiters();
        if let Some(slot) = slot {
            table.deadlines.remove(&slot);
        }
        table.drop_if_idle(lease.key(), now);
        Ok(())
    }

    async fn publish(
        &self,
        key: &SessionKey,
        successor: Arc<TokenRecord>,
        window: Duration,
    ) -> Result<(), Error> {
        if window.is_zero() {
            return Ok(());
        }
        let arrived_at = self.now();
        let mut table = self.lock();
        table.prune(arrived_at);
        let successor = Successor {
            record: successor,
            arrived_at,
            window,
        };
        let until = successor.until();
        let entry = table.entries.entry(key.clone()).or_default();
        entry.state.successor = Some(successor);
        entry.wake_waiters();
        table.add_deadline(until, key);
        drop(table);
        self.schedule_prune();
        Ok(())
    }

    async fn successor(&self, key: &SessionKey) -> Result<Option<Arc<TokenRecord>>, Error> {
        let now = self.now();
        let table = self.lock();
        Ok(table
            .entries
            .get(key)
            .and_then(|e| e.state.successor.as_ref())
            .filter(|s| s.is_open(now))
            .map(|s| Arc::clone(&s.record)))
    }

    async fn wait(&self, key: &SessionKey, timeout: Duration) -> Result<Option<Arc<TokenRecord>>, Error> {
        let released = Released { table: self, key };
        let result = match &self.runtime.sleep {
            Some(sleep) => match future::select(released, sleep.sleep(timeout)).await {
                Either::Left((successor, _)) => successor,
                Either::Right(_) => None,
            },
            None => released.await,
        };
        Ok(result)
    }
}
