//! Executes the decisions of [`state`](super::state): single flight per session, the
//! double-check inside a flight, compare-and-refresh, failure counting, background refresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::{self, Either, FutureExt, Shared};

use super::state::{self, AfterFailedRefresh, FetchFailure, RejectionDecision, TokenDecision};
use crate::context::Context;
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::events::Events;
use crate::policy::{Freshness, RefreshPolicy};
use crate::runtime::{BoxFuture, Runtime};
use crate::source::{FetchReason, FetchRequest, TokenSource};
use crate::store::TokenStore;
use crate::token::{AccessToken, TokenRecord};

type FlightFuture = Shared<BoxFuture<'static, Result<Arc<TokenRecord>, Error>>>;

struct Flight {
    id: u64,
    future: FlightFuture,
}

/// Drives token rotation for one client.
#[derive(Clone)]
pub(crate) struct Manager {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) policy: Arc<dyn RefreshPolicy>,
    pub(crate) runtime: Runtime,
    pub(crate) events: Events,
    pub(crate) fetch_timeout: Option<Duration>,
    flights: Mutex<HashMap<u64, Flight>>,
    next_flight: AtomicU64,
    /// Consecutive token fetch failures; reset by a successful fetch.
    failures: AtomicU64,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("source", &self.inner.source)
            .field("store", &self.inner.store)
            .field("policy", &self.inner.policy)
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
            inner: Arc::new(Inner {
                source,
                store,
                policy,
                runtime,
                events,
                fetch_timeout,
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn policy(&self) -> &Arc<dyn RefreshPolicy> {
        &self.inner.policy
    }

    pub(crate) fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The token a request should carry, refreshing first when needed.
    pub(crate) async fn token(&self, ctx: Option<&Context>) -> Result<Arc<TokenRecord>, Error> {
        let inner = &self.inner;
        let record = inner.store.load(ctx).await?;
        let freshness = inner
            .policy
            .freshness(record.as_deref(), inner.runtime.clock.now());
        if freshness == Freshness::Fresh {
            if let Some(record) = record {
                return Ok(record);
            }
        }
        let key = inner.store.session_key(ctx, record.as_deref());
        let decision = state::on_token_needed(freshness, inner.in_flight(key), inner.runtime.spawn.is_some());
        let proactive = match decision {
            TokenDecision::Use => return record.ok_or_else(no_token),
            TokenDecision::UseAndRefreshInBackground => {
                if inner.start_background(key, ctx) {
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
        let (flight, _) = self.inner.join_or_start(key, ctx, reason, None);
        match flight.await {
            Ok(new) => Ok(new),
            Err(err) => {
                let now = inner.runtime.clock.now();
                let old = inner.policy.freshness(record.as_deref(), now);
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
    ) -> Result<Arc<TokenRecord>, Error> {
        let inner = &self.inner;
        let max = inner.policy.max_recovery_tries();
        let current = inner.store.load(ctx).await?;
        let rejected_is_current = match &current {
            Some(current) => current.access_token == rejected.access_token,
            None => true,
        };
        let next = match state::on_rejected(rejected_is_current, recoveries_done, max) {
            RejectionDecision::Abort => {
                inner.events.recovery_aborted(recoveries_done);
                return Err(Error::new(
                    ErrorKind::Auth(AuthFailure::RecoveryExhausted),
                    format!("the server kept rejecting the token after {recoveries_done} recoveries"),
                ));
            }
            RejectionDecision::RetryWithCurrent => match current {
                Some(current) if current.access_token.is_some() => current,
                _ => self.token(ctx).await?,
            },
            RejectionDecision::RefreshAndRetry => {
                let key = inner.store.session_key(ctx, Some(rejected));
                let (flight, _) =
                    inner.join_or_start(key, ctx, FetchReason::Rejected, rejected.access_token.clone());
                flight.await?
            }
        };
        inner
            .events
            .recovery_try(recoveries_done + 1, max, next.access_token.as_ref());
        Ok(next)
    }
}

fn no_token() -> Error {
    Error::new(
        ErrorKind::Auth(AuthFailure::TokenUnavailable),
        "the session holds no access token",
    )
}

impl Inner {
    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Flight>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_flight(&self, key: u64) -> bool {
        self.flights().contains_key(&key)
    }

    /// Joins the session's refresh in flight, or starts one. Starting and joining happen under
    /// one lock, so a session never has two flights. The flag says whether the flight runs
    /// without the caller: it was already in flight, or it was handed to the Spawn hook.
    fn join_or_start(
        self: &Arc<Self>,
        key: u64,
        ctx: Option<&Context>,
        reason: FetchReason,
        rejected: Option<AccessToken>,
    ) -> (FlightFuture, bool) {
        let (future, started) = {
            let mut flights = self.flights();
            if let Some(flight) = flights.get(&key) {
                (flight.future.clone(), false)
            } else {
                let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
                let this = Arc::clone(self);
                let ctx = ctx.cloned();
                let future: BoxFuture<'static, _> = Box::pin(async move {
                    let result = this
                        .fetch_and_store(ctx.as_ref(), reason, rejected.as_ref())
                        .await;
                    let mut flights = this.flights();
                    if flights.get(&key).is_some_and(|f| f.id == id) {
                        flights.remove(&key);
                    }
                    result
                });
                let future = future.shared();
                flights.insert(
                    key,
                    Flight {
                        id,
                        future: future.clone(),
                    },
                );
                (future, true)
            }
        };
        if !started {
            return (future, true);
        }
        // A refresh once started completes and is stored even if every waiter goes away.
        let spawned = match &self.runtime.spawn {
            Some(spawn) => spawn.spawn(Box::pin(future.clone().map(|_| ()))).is_ok(),
            None => false,
        };
        (future, spawned)
    }

    /// Starts a background refresh if none is in flight. Returns false when the refresh
    /// cannot run in the background (no executor), so the caller refreshes inline.
    fn start_background(self: &Arc<Self>, key: u64, ctx: Option<&Context>) -> bool {
        if self.runtime.spawn.is_none() {
            return false;
        }
        let (_, runs_without_us) = self.join_or_start(key, ctx, FetchReason::Proactive, None);
        runs_without_us
    }

    async fn fetch_and_store(
        &self,
        ctx: Option<&Context>,
        reason: FetchReason,
        rejected: Option<&AccessToken>,
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
        };
        let fetched = self.with_fetch_timeout(self.source.fetch(request)).await;
        let mut record = match fetched.and_then(|r| r.validate().map(|()| r)) {
            Ok(record) => record,
            Err(err) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                self.events.token_request_failed(&err, failures);
                if state::on_fetch_failed(&err) == FetchFailure::ClearSession {
                    if let Err(clear_err) = self.store.clear(ctx).await {
                        tracing::warn!(target: "tokenkit", error = %clear_err, "could not clear the invalid session");
                    }
                }
                return Err(err);
            }
        };
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
        self.events.token_refreshed(&record, now);
        Ok(record)
    }

    async fn with_fetch_timeout<T>(&self, fetch: BoxFuture<'_, Result<T, Error>>) -> Result<T, Error> {
        match (self.fetch_timeout, &self.runtime.sleep) {
            (Some(limit), Some(sleep)) => match future::select(fetch, sleep.sleep(limit)).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => Err(Error::timeout(format!("no token within {}ms", limit.as_millis()))
                    .with_kind(ErrorKind::Timeout)),
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
            let mut first = pin!(m.token(None));
            let mut cx = TaskContext::from_waker(Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(m.inner.in_flight(0), "the flight is kept");
        let record = block_on(m.token(None)).unwrap();
        assert_eq!(
            record.access_token.as_ref().unwrap().secret(),
            "t1",
            "joined, not refetched"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!m.inner.in_flight(0), "a finished flight is removed");
    }

    #[test]
    fn rejection_with_an_older_token_uses_the_current_one() {
        let calls = Arc::new(AtomicUsize::new(0));
        let m = manager(
            Arc::clone(&calls),
            Runtime::new().with_clock(ManualClock::default()),
        );
        let first = block_on(m.token(None)).unwrap();
        let rejected = (*first).clone();
        // Rejected while current: one refresh.
        let second = block_on(m.recover(None, &rejected, 0)).unwrap();
        assert_eq!(second.access_token.as_ref().unwrap().secret(), "t2");
        // The same old token rejected again (a late response): no refresh, use t2.
        let third = block_on(m.recover(None, &rejected, 0)).unwrap();
        assert_eq!(third.access_token.as_ref().unwrap().secret(), "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The recovery limit is enforced before anything else.
        let err = block_on(m.recover(None, &second, DEFAULT_MAX)).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    const DEFAULT_MAX: u32 = crate::policy::DEFAULT_MAX_RECOVERY_TRIES;
}
