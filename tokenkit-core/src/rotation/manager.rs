//! Executes the decisions of [`state`](super::state) for one client: the fresh-token fast
//! path, the atomic serve / join / lead step, waiting for a flight, and putting the result
//! into the request's own session.
//!
//! Ownership: a [`Manager`] owns the session table; each flight owns the [`Core`] (source,
//! store, policy, hooks) and only a weak handle on the table, so an abandoned flight never
//! keeps a dropped client alive.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::coordination::{Coordinator, OwnTable};
use super::flight::Waiter;
use super::key::SessionKey;
use super::refresh::{starter, Core};
use super::sessions::SessionTable;
use super::state::{decide, Decision, Event, SessionState};
use super::RotationStats;
use crate::context::Context;
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::events::{Event as Lifecycle, Events};
use crate::policy::{Freshness, RefreshPolicy};
use crate::runtime::Runtime;
use crate::source::{FetchReason, RefreshHints, TokenSource};
use crate::store::TokenStore;
use crate::token::TokenRecord;

/// Drives token rotation for one client.
#[derive(Clone)]
pub(crate) struct Manager {
    core: Arc<Core>,
    sessions: Arc<SessionTable>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("source", &self.core.source)
            .field("store", &self.core.store)
            .field("policy", &self.core.policy)
            .field("coordinator", &self.core.coordinator)
            .finish_non_exhaustive()
    }
}

/// The parts of a client that rotation uses.
pub(crate) struct Parts {
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) policy: Arc<dyn RefreshPolicy>,
    pub(crate) runtime: Runtime,
    pub(crate) events: Events,
    pub(crate) fetch_timeout: Option<Duration>,
    pub(crate) coordinator: Option<Arc<dyn Coordinator>>,
    pub(crate) outage: super::OutageConfig,
}

impl Manager {
    pub(crate) fn new(parts: Parts) -> Self {
        let sessions = SessionTable::new(parts.runtime.clone());
        let shared_coordinator = parts.coordinator.is_some();
        let coordinator = parts
            .coordinator
            .unwrap_or_else(|| Arc::new(OwnTable(Arc::downgrade(&sessions))));
        Self {
            sessions,
            core: Arc::new(Core {
                source: parts.source,
                store: parts.store,
                policy: parts.policy,
                runtime: parts.runtime,
                events: parts.events,
                fetch_timeout: parts.fetch_timeout,
                coordinator,
                shared_coordinator,
                failures: AtomicU64::new(0),
                breaker: Arc::new(super::breaker::Breaker::new(parts.outage)),
                params: None,
            }),
        }
    }

    /// A manager of tokens fetched with `params`: its own in-memory token and its own single
    /// flight, the same source, policy, hooks, events and outage gate. Only for a client-wide
    /// token (a store of [`StoreScope::Process`](crate::StoreScope::Process)): a user's
    /// session has one token set.
    pub(crate) fn for_params(&self, params: crate::source::TokenParams) -> Result<Self, Error> {
        let core = &self.core;
        if core.store.scope() != crate::store::StoreScope::Process {
            return Err(Error::config(
                "per-request token parameters need a client-wide token (provider or client \
                 credentials mode); a user's session has one set of tokens",
            ));
        }
        let sessions = SessionTable::new(core.runtime.clone());
        Ok(Self {
            core: Arc::new(Core {
                source: Arc::clone(&core.source),
                store: Arc::new(crate::store::MemoryStore::new()),
                policy: Arc::clone(&core.policy),
                runtime: core.runtime.clone(),
                events: core.events.clone(),
                fetch_timeout: core.fetch_timeout,
                coordinator: Arc::new(OwnTable(Arc::downgrade(&sessions))),
                shared_coordinator: false,
                failures: AtomicU64::new(0),
                breaker: Arc::clone(&core.breaker),
                params: Some(params),
            }),
            sessions,
        })
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
        self.core.now()
    }

    /// The current size of the rotation state.
    pub(crate) fn stats(&self) -> RotationStats {
        self.sessions.stats()
    }

    fn key(&self, ctx: Option<&Context>, record: Option<&TokenRecord>, hints: &RefreshHints) -> SessionKey {
        SessionKey::for_request(self.core.store.scope(), ctx, record, hints.data.as_ref())
    }

    /// The token a request should carry when the store answers without I/O and the token is
    /// fresh: no await, no allocation. `None` sends the caller to [`token`](Self::token).
    pub(crate) fn fresh_token(&self, ctx: Option<&Context>) -> Option<Arc<TokenRecord>> {
        let core = &self.core;
        let record = core.store.peek(ctx)?.ok()??;
        let now = core.now();
        // The policy's answer for this record is derived once and kept with it.
        let key = Arc::as_ptr(&core.policy) as *const () as usize;
        if crate::token::RecordCache::fresh_until(&record, key, &*core.policy)
            .is_some_and(|until| now < until)
        {
            return Some(record);
        }
        (core.policy.freshness(Some(&record), now) == Freshness::Fresh).then_some(record)
    }

    /// The token a request should carry, refreshing first when needed.
    pub(crate) async fn token(
        &self,
        ctx: Option<&Context>,
        hints: &RefreshHints,
    ) -> Result<Arc<TokenRecord>, Error> {
        let core = &self.core;
        let record = core.store.load(ctx).await?;
        let now = core.now();
        // The fast path: a fresh token needs no key, no lock, no allocation.
        if let Some(record) = record.as_ref() {
            if core.policy.freshness(Some(record), now) == Freshness::Fresh {
                return Ok(Arc::clone(record));
            }
        }
        let key = self.key(ctx, record.as_deref(), hints);
        let background = core.runtime.spawn.is_some() && core.store.scope().refreshes_in_background();
        let event = Event::TokenNeeded {
            record: record.as_deref(),
            background,
        };
        let (decision, flight) = self.begin(&key, now, event, ctx, None, hints);
        let (reason, flight) = match (decision, flight) {
            (Decision::Use, _) => return record.ok_or_else(no_token),
            (Decision::ServeSuccessor(successor), _) => return self.adopt(ctx, successor).await,
            (Decision::UseAndRefreshInBackground, None) => return record.ok_or_else(no_token),
            // No executor took the background refresh after all: wait for it here.
            (Decision::UseAndRefreshInBackground, Some(flight)) => (FetchReason::Proactive, flight),
            (Decision::Lead { reason } | Decision::Join { reason }, Some(flight)) => (reason, flight),
            (other, _) => return Err(unexpected(&other)),
        };
        self.wait(ctx, reason, flight, record).await
    }

    /// The server rejected `rejected`; `recoveries_done` replays were already made for this
    /// request. Returns the token to replay with, or the abort error.
    pub(crate) async fn recover(
        &self,
        ctx: Option<&Context>,
        rejected: &TokenRecord,
        recoveries_done: u32,
        status: http::StatusCode,
        hints: &RefreshHints,
    ) -> Result<Arc<TokenRecord>, Error> {
        let core = &self.core;
        let max = core.policy.max_recovery_tries();
        let current = core.store.load(ctx).await?;
        let key = self.key(ctx, Some(rejected), hints);
        let event = Event::Rejected {
            rejected,
            current: current.as_deref(),
            recoveries_done,
        };
        let rejected_token = rejected.access_token.as_ref();
        let next = match self.begin(&key, core.now(), event, ctx, rejected_token, hints) {
            (Decision::AbortRecovery, _) => {
                core.events.emit(Lifecycle::RecoveryAborted {
                    attempts: recoveries_done,
                    status,
                });
                return Err(Error::new(
                    ErrorKind::Auth(AuthFailure::RecoveryExhausted),
                    format!("the server kept rejecting the token after {recoveries_done} recoveries"),
                ));
            }
            (Decision::RetryWithCurrent, _) => match current {
                Some(current) if current.access_token.is_some() => current,
                _ => Box::pin(self.token(ctx, hints)).await?,
            },
            (Decision::ServeSuccessor(successor), _) => self.adopt(ctx, successor).await?,
            (Decision::Lead { .. } | Decision::Join { .. }, Some(flight)) => {
                let record = flight.await?;
                self.adopt(ctx, record).await?
            }
            (other, _) => return Err(unexpected(&other)),
        };
        core.events.emit(Lifecycle::RecoveryTry {
            attempt: recoveries_done.saturating_add(1),
            max,
        });
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
        match self.begin(&key, self.core.now(), Event::RefreshForced, ctx, None, hints) {
            (Decision::Lead { .. } | Decision::Join { .. }, Some(flight)) => {
                let record = flight.await?;
                self.adopt(ctx, record).await
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// The atomic step: decide with the session's state and, when leading, start the flight
    /// under the same lock. A background refresh is handed to the Spawn hook, and then nobody
    /// waits (`None`); a led refresh is spawned at once when the hook runs tasks on the
    /// caller's runtime; otherwise the request waits on the flight, driving it (see `flight`).
    fn begin(
        &self,
        key: &SessionKey,
        now: SystemTime,
        event: Event<'_>,
        ctx: Option<&Context>,
        rejected: Option<&crate::token::AccessToken>,
        hints: &RefreshHints,
    ) -> (Decision, Option<Waiter>) {
        let start = starter(&self.core, &self.sessions, key, ctx, rejected, hints);
        let (decision, flight) = self.sessions.begin(key, now, &*self.core.policy, event, start);
        let Some(flight) = flight else {
            return (decision, None);
        };
        let spawn = self.core.runtime.spawn.clone();
        if let Some(hook) = &spawn {
            match &decision {
                Decision::UseAndRefreshInBackground if flight.detach(&**hook) => return (decision, None),
                Decision::Lead { .. } if hook.runs_on_caller_executor() => {
                    flight.detach(&**hook);
                }
                _ => {}
            }
        }
        (decision, Some(flight.wait(spawn)))
    }

    /// Waits for a flight; a failed proactive refresh keeps the still-valid token.
    async fn wait(
        &self,
        ctx: Option<&Context>,
        reason: FetchReason,
        flight: Waiter,
        old: Option<Arc<TokenRecord>>,
    ) -> Result<Arc<TokenRecord>, Error> {
        let started = self.core.now();
        let outcome = flight.await;
        crate::metrics::flight_wait(self.core.now().duration_since(started).unwrap_or_default());
        let error = match outcome {
            Ok(record) => return self.adopt(ctx, record).await,
            Err(error) => error,
        };
        let failed = Event::RefreshFailed {
            reason,
            old: old.as_deref(),
            error: &error,
        };
        match (
            decide(
                &SessionState::default(),
                self.core.now(),
                &*self.core.policy,
                failed,
            ),
            old,
        ) {
            (Decision::KeepOldToken, Some(old)) => {
                tracing::debug!("proactive refresh failed; keeping the valid token");
                Ok(old)
            }
            _ => Err(error),
        }
    }

    /// Makes sure this request's own session holds `record` (a joiner's cookies, say), so
    /// every response of a rotation carries the new tokens.
    async fn adopt(
        &self,
        ctx: Option<&Context>,
        record: Arc<TokenRecord>,
    ) -> Result<Arc<TokenRecord>, Error> {
        let store = &self.core.store;
        let mine = store.load(ctx).await?;
        if !mine.as_deref().is_some_and(|m| m.same_tokens(&record)) {
            store.save(ctx, Arc::clone(&record), None).await?;
        }
        Ok(record)
    }
}

fn no_token() -> Error {
    Error::new(
        ErrorKind::Auth(AuthFailure::TokenUnavailable),
        "the session holds no access token",
    )
}

/// A decision the state machine never makes for this event; an error, never a panic.
fn unexpected(decision: &Decision) -> Error {
    tracing::error!(?decision, "unexpected rotation decision");
    Error::new(
        ErrorKind::Auth(AuthFailure::TokenUnavailable),
        "internal error: unexpected rotation decision",
    )
}

#[cfg(test)]
mod tests;
