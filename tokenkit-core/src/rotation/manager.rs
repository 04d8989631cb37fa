//! Executes the decisions of [`state`](super::state): single flight per session, the
//! double-check inside a flight, compare-and-refresh, failure counting, background refresh.
//!
//! Ownership: a [`Manager`] owns the flight table; each flight's future owns the [`Core`]
//! (source, store, policy, hooks) and only a weak handle on the table, so an abandoned flight
//! never keeps a dropped client alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::{self, Either, FutureExt, Shared};

use super::state::{self, AfterFailedRefresh, FetchFailure, RejectionDecision, TokenDecision};
use crate::context::Context;
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::events::Events;
use crate::policy::{Freshness, RefreshPolicy};
use crate::runtime::{BoxFuture, Runtime};
use crate::source::{FetchReason, FetchRequest, RefreshHints, TokenSource};
use crate::store::TokenStore;
use crate::token::{AccessToken, TokenRecord};

type FlightFuture = Shared<BoxFuture<'static, Result<Arc<TokenRecord>, Error>>>;

struct Flight {
    id: u64,
    future: FlightFuture,
}

/// The refreshes in flight, by session key.
#[derive(Default)]
struct Flights {
    map: Mutex<HashMap<u64, Flight>>,
    next_id: AtomicU64,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Flight>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn contains(&self, key: u64) -> bool {
        self.lock().contains_key(&key)
    }

    fn remove(&self, key: u64, id: u64) {
        let mut map = self.lock();
        if map.get(&key).is_some_and(|f| f.id == id) {
            map.remove(&key);
        }
    }
}

/// What a refresh needs to run.
struct Core {
    source: Arc<dyn TokenSource>,
    store: Arc<dyn TokenStore>,
    policy: Arc<dyn RefreshPolicy>,
    runtime: Runtime,
    events: Events,
    fetch_timeout: Option<Duration>,
    /// Consecutive token fetch failures; reset by a successful fetch.
    failures: AtomicU64,
    /// When a proactive refresh last failed, per session key (cleared on success).
    proactive_failed_at: Mutex<HashMap<u64, SystemTime>>,
    /// Grace window: the successor of each recently rotated session key, and when it was
    /// obtained. Pruned as it is written, so it holds only the last grace window's rotations.
    successors: Mutex<HashMap<u64, (Arc<TokenRecord>, SystemTime)>>,
    /// Whether a background task is scheduled to prune `successors`.
    prune_scheduled: std::sync::atomic::AtomicBool,
}

/// The size of a client's rotation state, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStats {
    /// Refreshes in flight (one per session being refreshed).
    pub refreshes_in_flight: usize,
    /// Rotated sessions still in the grace window (their successors are kept).
    pub grace_entries: usize,
}

/// Drives token rotation for one client.
#[derive(Clone)]
pub(crate) struct Manager {
    core: Arc<Core>,
    flights: Arc<Flights>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("source", &self.core.source)
            .field("store", &self.core.store)
            .field("policy", &self.core.policy)
            .finish_non_exhaustive()
    }
}

impl Manager {
    pub(crate) fn new(
        source: Arc<dyn TokenSource>,
        store: Arc<dyn TokenStore>,
        policy: Arc<dyn RefreshPolicy>,
        runtime: Runtime,
        events: Events,
        fetch_timeout: Option<Duration>,
    ) -> Self {
        Self {
            core: Arc::new(Core {
                source,
                store,
                policy,
                runtime,
                events,
                fetch_timeout,
                failures: AtomicU64::new(0),
                proactive_failed_at: Mutex::new(HashMap::new()),
                successors: Mutex::new(HashMap::new()),
                prune_scheduled: std::sync::atomic::AtomicBool::new(false),
            }),
            flights: Arc::new(Flights::default()),
        }
    }

    pub(crate) fn policy(&self) -> &Arc<dyn RefreshPolicy> {
        &self.core.policy
    }

    pub(crate) fn events(&self) -> &Events {
        &self.core.events
    }

    pub(crate) fn store(&self) -> &Arc<dyn TokenStore> {
        &self.core.store
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.core.runtime.clock.now()
    }

    /// The current size of the rotation state.
    pub(crate) fn stats(&self) -> RotationStats {
        RotationStats {
            refreshes_in_flight: self.flights.lock().len(),
            grace_entries: self
                .core
                .successors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }

    /// The key de-duplicating refreshes of this session with this override data.
    fn key(&self, ctx: Option<&Context>, record: Option<&TokenRecord>, hints: &RefreshHints) -> u64 {
        self.core.store.session_key(ctx, record) ^ hints.data_key()
    }

    /// The token a request should carry, refreshing first when needed.
    pub(crate) async fn token(
        &self,
        ctx: Option<&Context>,
        hints: &RefreshHints,
    ) -> Result<Arc<TokenRecord>, Error> {
        let core = &self.core;
        let record = core.store.load(ctx).await?;
        let now = core.runtime.clock.now();
        let mut freshness = core.policy.freshness(record.as_deref(), now);
        if freshness == Freshness::Fresh {
            if let Some(record) = record {
                return Ok(record);
            }
        }
        let key = self.key(ctx, record.as_deref(), hints);
        if freshness == Freshness::Stale && core.proactive_cooling_down(key, now) {
            freshness = Freshness::Fresh;
        }
        let can_spawn = core.runtime.spawn.is_some() && core.store.is_shared();
        let decision = state::on_token_needed(freshness, self.flights.contains(key), can_spawn);
        let proactive = match decision {
            TokenDecision::Use => return record.ok_or_else(no_token),
            TokenDecision::UseAndRefreshInBackground => {
                let (_, runs_without_us) = self.join_or_start(key, ctx, FetchReason::Proactive, None, hints);
                if runs_without_us {
                    return record.ok_or_else(no_token);
                }
                true // no executor after all: refresh inline
            }
            TokenDecision::StartRefreshAndWait { proactive } | TokenDecision::JoinRefresh { proactive } => {
                proactive
            }
        };
        let reason = if proactive {
            FetchReason::Proactive
        } else {
            FetchReason::Needed
        };
        match self.refresh(key, ctx, reason, None, hints).await {
            Ok(new) => Ok(new),
            Err(err) => {
                let old = core.policy.freshness(record.as_deref(), core.runtime.clock.now());
                match (state::after_failed_refresh(proactive, old, &err), record) {
                    (AfterFailedRefresh::UseOld, Some(record)) => {
                        tracing::debug!(target: "tokenkit", "proactive refresh failed; keeping the valid token");
                        Ok(record)
                    }
                    _ => Err(err),
                }
            }
        }
    }

    /// The server rejected `rejected`; `recoveries_done` replays were already made for this
    /// request. Returns the token to replay with, or the abort error.
    pub(crate) async fn recover(
        &self,
        ctx: Option<&Context>,
        rejected: &TokenRecord,
        recoveries_done: u32,
        hints: &RefreshHints,
    ) -> Result<Arc<TokenRecord>, Error> {
        let core = &self.core;
        let max = core.policy.max_recovery_tries();
        let current = core.store.load(ctx).await?;
        let rejected_is_current = match &current {
            Some(current) => current.access_token == rejected.access_token,
            None => true,
        };
        let next = match state::on_rejected(rejected_is_current, recoveries_done, max) {
            RejectionDecision::Abort => {
                core.events.recovery_aborted(recoveries_done);
                return Err(Error::new(
                    ErrorKind::Auth(AuthFailure::RecoveryExhausted),
                    format!("the server kept rejecting the token after {recoveries_done} recoveries"),
                ));
            }
            RejectionDecision::RetryWithCurrent => match current {
                Some(current) if current.access_token.is_some() => current,
                _ => self.token(ctx, hints).await?,
            },
            RejectionDecision::RefreshAndRetry => {
                let key = self.key(ctx, Some(rejected), hints);
                let rejected_token = rejected.access_token.clone();
                match self
                    .refresh(key, ctx, FetchReason::Rejected, rejected_token, hints)
                    .await
                {
                    Ok(next) => next,
                    // The server refused the token and nothing can replace it: the session is
                    // over (a forged or stale cookie, say). Clear it rather than keep failing.
                    Err(err) if err.auth_failure() == Some(AuthFailure::NoSession) => {
                        if let Err(clear_err) = core.store.clear(ctx).await {
                            tracing::warn!(target: "tokenkit", error = %clear_err, "could not clear the rejected session");
                        }
                        core.events.session_invalid(ctx);
                        return Err(Error::new(
                            ErrorKind::Auth(AuthFailure::SessionInvalid),
                            "the server rejected the session's token and it cannot be refreshed",
                        ));
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        core.events
            .recovery_try(recoveries_done + 1, max, next.access_token.as_ref());
        Ok(next)
    }

    /// Refreshes the session now, whatever its freshness (`refresh_session`).
    pub(crate) async fn force_refresh(
        &self,
        ctx: Option<&Context>,
        hints: &RefreshHints,
    ) -> Result<Arc<TokenRecord>, Error> {
        let record = self.core.store.load(ctx).await?;
        let key = self.key(ctx, record.as_deref(), hints);
        self.refresh(key, ctx, FetchReason::Forced, None, hints).await
    }

    /// Obtains the successor of the session keyed `key`: from the grace window when it was
    /// rotated moments ago, else from a (shared) flight. Either way the result is saved into
    /// this request's own context too, so every response of a rotation carries the new tokens.
    async fn refresh(
        &self,
        key: u64,
        ctx: Option<&Context>,
        reason: FetchReason,
        rejected: Option<AccessToken>,
        hints: &RefreshHints,
    ) -> Result<Arc<TokenRecord>, Error> {
        let now = self.core.runtime.clock.now();
        let successor = match reason {
            FetchReason::Forced => None,
            _ => self
                .core
                .successor(key, now)
                .filter(|s| rejected.is_none() || s.access_token != rejected),
        };
        let record = match successor {
            Some(successor) => {
                tracing::debug!(target: "tokenkit", "refresh token rotated moments ago; using its successor");
                successor
            }
            None => {
                let (flight, _) = self.join_or_start(key, ctx, reason, rejected, hints);
                flight.await?
            }
        };
        self.core.adopt(ctx, &record).await?;
        Ok(record)
    }

    /// Joins the session's refresh in flight, or starts one. Starting and joining happen under
    /// one lock, so a session never has two flights. The flag says whether the flight runs
    /// without the caller: it was already in flight, or it was handed to the Spawn hook.
    fn join_or_start(
        &self,
        key: u64,
        ctx: Option<&Context>,
        reason: FetchReason,
        rejected: Option<AccessToken>,
        hints: &RefreshHints,
    ) -> (FlightFuture, bool) {
        let future = {
            let mut map = self.flights.lock();
            if let Some(flight) = map.get(&key) {
                return (flight.future.clone(), true);
            }
            let id = self.flights.next_id.fetch_add(1, Ordering::Relaxed);
            let core = Arc::clone(&self.core);
            let flights: Weak<Flights> = Arc::downgrade(&self.flights);
            let ctx = ctx.cloned();
            let hints = hints.clone();
            let future: BoxFuture<'static, _> = Box::pin(async move {
                // A panic (in a user's provider closure, say) must not poison the shared
                // flight: it ends as a typed error for every waiter, and the flight is removed.
                let work = core.fetch_and_store(key, ctx.as_ref(), reason, rejected.as_ref(), hints);
                let result = std::panic::AssertUnwindSafe(work)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(refresh_panicked()));
                if let Some(flights) = flights.upgrade() {
                    flights.remove(key, id);
                }
                result
            });
            let future = future.shared();
            map.insert(
                key,
                Flight {
                    id,
                    future: future.clone(),
                },
            );
            future
        };
        // A refresh once started completes and is stored even if every waiter goes away.
        let spawned = match &self.core.runtime.spawn {
            Some(spawn) => spawn.spawn(Box::pin(future.clone().map(|_| ()))).is_ok(),
            None => false,
        };
        (future, spawned)
    }
}

fn refresh_panicked() -> Error {
    tracing::error!(target: "tokenkit", "the token source panicked; the refresh was abandoned");
    Error::new(
        ErrorKind::Auth(AuthFailure::TokenUnavailable),
        "the token source panicked; the refresh was abandoned",
    )
}

fn no_token() -> Error {
    Error::new(
        ErrorKind::Auth(AuthFailure::TokenUnavailable),
        "the session holds no access token",
    )
}

impl Core {
    /// The record that replaced session `key` within the grace window, if it is still
    /// usable (a token shorter-lived than the window may already have expired).
    fn successor(&self, key: u64, now: SystemTime) -> Option<Arc<TokenRecord>> {
        let window = self.policy.grace_window();
        let record = {
            let successors = self.successors.lock().unwrap_or_else(PoisonError::into_inner);
            let (record, at) = successors.get(&key)?;
            if now.duration_since(*at).unwrap_or(Duration::ZERO) >= window {
                return None;
            }
            Arc::clone(record)
        };
        let usable = matches!(
            self.policy.freshness(Some(&record), now),
            Freshness::Fresh | Freshness::Stale
        );
        usable.then_some(record)
    }

    fn remember_successor(self: &Arc<Self>, key: u64, record: &Arc<TokenRecord>, now: SystemTime) {
        let window = self.policy.grace_window();
        if window.is_zero() {
            return;
        }
        self.prune_successors(now);
        self.successors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (Arc::clone(record), now));
        self.schedule_prune(window);
    }

    /// Drops successors older than the grace window; returns how many remain.
    fn prune_successors(&self, now: SystemTime) -> usize {
        let window = self.policy.grace_window();
        let mut successors = self.successors.lock().unwrap_or_else(PoisonError::into_inner);
        successors.retain(|_, (_, at)| now.duration_since(*at).unwrap_or(Duration::ZERO) < window);
        successors.len()
    }

    /// With Spawn and Sleep hooks, empties the grace table once its entries expire, so the
    /// memory of a rotation wave is returned without waiting for the next rotation. The task
    /// holds the client weakly and stops when the table is empty.
    fn schedule_prune(self: &Arc<Self>, window: Duration) {
        use std::sync::atomic::Ordering::{AcqRel, Release};
        let (Some(spawn), Some(sleep)) = (self.runtime.spawn.clone(), self.runtime.sleep.clone()) else {
            return;
        };
        if self.prune_scheduled.swap(true, AcqRel) {
            return;
        }
        let core = Arc::downgrade(self);
        let task = Box::pin(async move {
            loop {
                sleep.sleep(window).await;
                let Some(core) = core.upgrade() else { return };
                if core.prune_successors(core.runtime.clock.now()) > 0 {
                    continue;
                }
                core.prune_scheduled.store(false, Release);
                // An entry added between the prune and the store: keep going.
                let still = core
                    .successors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len();
                if still == 0 || core.prune_scheduled.swap(true, AcqRel) {
                    return;
                }
            }
        });
        if spawn.spawn(task).is_err() {
            self.prune_scheduled.store(false, Release);
        }
    }

    /// Makes sure this request's own session holds `record` (a joiner's cookies, say).
    async fn adopt(&self, ctx: Option<&Context>, record: &Arc<TokenRecord>) -> Result<(), Error> {
        let mine = self.store.load(ctx).await?;
        if mine.as_deref().is_some_and(|m| m.same_tokens(record)) {
            return Ok(());
        }
        self.store.save(ctx, Arc::clone(record), None).await
    }

    fn proactive_failures(&self) -> MutexGuard<'_, HashMap<u64, SystemTime>> {
        self.proactive_failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn proactive_cooling_down(&self, key: u64, now: SystemTime) -> bool {
        let delay = self.policy.proactive_retry_delay();
        self.proactive_failures()
            .get(&key)
            .is_some_and(|failed_at| now.duration_since(*failed_at).unwrap_or(Duration::ZERO) < delay)
    }

    fn note_outcome(&self, key: u64, reason: FetchReason, failed: bool, now: SystemTime) {
        let mut failures = self.proactive_failures();
        if failed && reason == FetchReason::Proactive {
            // Forget stale entries so the table stays as small as the set of failing sessions.
            let delay = self.policy.proactive_retry_delay();
            failures.retain(|_, at| now.duration_since(*at).unwrap_or(Duration::ZERO) < delay);
            failures.insert(key, now);
        } else if !failed && !failures.is_empty() {
            failures.remove(&key);
        }
    }

    async fn fetch_and_store(
        self: &Arc<Self>,
        key: u64,
        ctx: Option<&Context>,
        reason: FetchReason,
        rejected: Option<&AccessToken>,
        hints: RefreshHints,
    ) -> Result<Arc<TokenRecord>, Error> {
        let current = self.store.load(ctx).await?;
        let now = self.runtime.clock.now();
        let freshness = self.policy.freshness(current.as_deref(), now);
        let current_is_rejected = match (rejected, current.as_ref().and_then(|c| c.access_token.as_ref())) {
            (Some(rejected), Some(current)) => rejected == current,
            _ => false,
        };
        if !state::flight_should_fetch(reason, freshness, current_is_rejected) {
            if let Some(current) = current {
                tracing::debug!(target: "tokenkit", "a newer token is already stored; no fetch");
                return Ok(current);
            }
        }
        let request = FetchRequest {
            reason,
            current: current.clone(),
            context: ctx.cloned(),
            now,
            headers: hints.headers,
            data: hints.data,
        };
        let fetched = self.with_fetch_timeout(self.source.fetch(request)).await;
        let mut record = match fetched.and_then(|r| r.validate().map(|()| r)) {
            Ok(record) => record,
            Err(err) if !state::counts_as_failure(&err) => return Err(err),
            Err(err) => {
                self.note_outcome(key, reason, true, now);
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                self.events.token_request_failed(&err, failures, ctx);
                if state::on_fetch_failed(&err) == FetchFailure::ClearSession {
                    if let Err(clear_err) = self.store.clear(ctx).await {
                        tracing::warn!(target: "tokenkit", error = %clear_err, "could not clear the invalid session");
                    }
                    self.events.session_invalid(ctx);
                }
                return Err(err);
            }
        };
        self.note_outcome(key, reason, false, now);
        self.failures.store(0, Ordering::Relaxed);
        // A refresh response without a new refresh token keeps the old one.
        if record.refresh_token.is_none() {
            record.refresh_token = current.as_ref().and_then(|c| c.refresh_token.clone());
        }
        let record = Arc::new(record);
        match self
            .store
            .save(ctx, Arc::clone(&record), current.as_deref())
            .await
        {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::StoreConflict => {
                // Another writer rotated the session first: its record wins.
                if let Some(winner) = self.store.load(ctx).await? {
                    return Ok(winner);
                }
                return Err(err);
            }
            Err(err) => return Err(err),
        }
        if current.as_ref().is_some_and(|c| c.refresh_token.is_some()) {
            // The window runs from when the new tokens arrived, not from when the (possibly
            // slow) refresh started.
            let arrived_at = self.runtime.clock.now();
            self.remember_successor(key, &record, arrived_at);
        }
        self.events.refreshed(&record, now, ctx);
        Ok(record)
    }

    async fn with_fetch_timeout<T>(&self, fetch: BoxFuture<'_, Result<T, Error>>) -> Result<T, Error> {
        match (self.fetch_timeout, &self.runtime.sleep) {
            (Some(limit), Some(sleep)) => match future::select(fetch, sleep.sleep(limit)).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => Err(Error::timeout(format!("no token within {}ms", limit.as_millis()))),
            },
            _ => fetch.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::StandardPolicy;
    use crate::runtime::ManualClock;
    use crate::source::{ProvidedToken, ProviderSource};
    use crate::store::MemoryStore;
    use futures_executor::block_on;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context as TaskContext, Poll, Waker};

    /// Pending on its first poll, ready on the second.
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn manager(calls: Arc<AtomicUsize>, runtime: Runtime) -> Manager {
        let source = ProviderSource::new(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                YieldOnce(false).await;
                Ok::<_, std::io::Error>(ProvidedToken::new(format!("t{n}"), 3600))
            }
        });
        Manager::new(
            Arc::new(source),
            Arc::new(MemoryStore::new()),
            Arc::new(StandardPolicy::provider()),
            runtime,
            Events::default(),
            None,
        )
    }

    #[test]
    fn without_a_spawner_an_abandoned_flight_is_joined_by_the_next_caller() {
        let calls = Arc::new(AtomicUsize::new(0));
        let m = manager(
            Arc::clone(&calls),
            Runtime::new().with_clock(ManualClock::default()),
        );
        {
            // Poll the first caller once (the fetch starts and is pending), then drop it.
            let hints = RefreshHints::default();
            let mut first = pin!(m.token(None, &hints));
            let mut cx = TaskContext::from_waker(Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(m.flights.contains(0), "the flight is kept");
        let record = block_on(m.token(None, &RefreshHints::default())).unwrap();
        assert_eq!(
            record.access_token.as_ref().unwrap().secret(),
            "t1",
            "joined, not refetched"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!m.flights.contains(0), "a finished flight is removed");
    }

    #[test]
    fn rejection_with_an_older_token_uses_the_current_one() {
        let calls = Arc::new(AtomicUsize::new(0));
        let m = manager(
            Arc::clone(&calls),
            Runtime::new().with_clock(ManualClock::default()),
        );
        let first = block_on(m.token(None, &RefreshHints::default())).unwrap();
        let rejected = (*first).clone();
        // Rejected while current: one refresh.
        let second = block_on(m.recover(None, &rejected, 0, &RefreshHints::default())).unwrap();
        assert_eq!(second.access_token.as_ref().unwrap().secret(), "t2");
        // The same old token rejected again (a late response): no refresh, use t2.
        let third = block_on(m.recover(None, &rejected, 0, &RefreshHints::default())).unwrap();
        assert_eq!(third.access_token.as_ref().unwrap().secret(), "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The recovery limit is enforced before anything else.
        let err = block_on(m.recover(None, &second, DEFAULT_MAX, &RefreshHints::default())).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    const DEFAULT_MAX: u32 = crate::policy::DEFAULT_MAX_RECOVERY_TRIES;

    /// Issues short-lived tokens with rotating refresh tokens.
    #[derive(Debug)]
    struct Rotating(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl TokenSource for Rotating {
        async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            TokenRecord::new(crate::AccessToken::new(format!("t{n}")), request.now)
                .with_refresh_token(crate::RefreshToken::new(format!("r{n}")))
                .with_expires_in(Duration::from_secs(2))
        }
    }

    #[test]
    fn the_grace_window_never_serves_an_expired_successor() {
        let calls = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::default();
        let m = Manager::new(
            Arc::new(Rotating(Arc::clone(&calls))),
            Arc::new(MemoryStore::new()),
            Arc::new(StandardPolicy::default().jitter(0.0)),
            Runtime::new().with_clock(clock.clone()),
            Events::default(),
            None,
        );
        let hints = RefreshHints::default();
        assert_eq!(
            block_on(m.token(None, &hints))
                .unwrap()
                .access_token
                .as_ref()
                .unwrap()
                .secret(),
            "t1"
        );
        clock.advance(Duration::from_secs(3));
        assert_eq!(
            block_on(m.token(None, &hints))
                .unwrap()
                .access_token
                .as_ref()
                .unwrap()
                .secret(),
            "t2"
        );
        // t2 (2 s lifetime) is expired after 1.5 s, well inside the 5 s grace window.
        clock.advance(Duration::from_millis(1500));
        let third = block_on(m.token(None, &hints)).unwrap();
        assert_eq!(third.access_token.as_ref().unwrap().secret(), "t3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn an_abandoned_flight_does_not_keep_a_dropped_client_alive() {
        let calls = Arc::new(AtomicUsize::new(0));
        let m = manager(
            Arc::clone(&calls),
            Runtime::new().with_clock(ManualClock::default()),
        );
        let core = Arc::downgrade(&m.core);
        {
            let hints = RefreshHints::default();
            let mut first = pin!(m.token(None, &hints));
            let mut cx = TaskContext::from_waker(Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        assert!(m.flights.contains(0));
        drop(m);
        assert!(
            core.upgrade().is_none(),
            "no reference cycle through the flight table"
        );
    }
}
