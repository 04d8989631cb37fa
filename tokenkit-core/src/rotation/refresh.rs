//! One refresh flight: lead or follow through the [`Coordinator`], re-read the store, fetch,
//! commit with compare-and-swap, publish the successor, release. Every step that decides
//! something asks [`decide`]; this file only executes.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::{self, Either, FutureExt};
use tracing::Instrument;

use super::coordination::{Coordinator, Lease, Role};
use super::key::SessionKey;
use super::sessions::SessionTable;
use super::state::{counts_as_failure, decide, Decision, Event, SessionState};
use crate::context::Context;
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::events::{Event as Lifecycle, Events};
use crate::policy::RefreshPolicy;
use crate::runtime::{BoxFuture, Runtime};
use crate::source::{FetchReason, FetchRequest, RefreshHints, TokenSource};
use crate::store::TokenStore;
use crate::token::{AccessToken, TokenRecord};

/// How long a lease lasts when token fetches have no timeout.
const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How much longer than the fetch timeout a lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How many times a follower whose leader gave up asks to lead before failing.
const FOLLOW_ROUNDS: u32 = 3;

/// What a refresh needs to run; owned by every flight, so a flight outlives its client only
/// as long as it runs.
pub(crate) struct Core {
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) policy: Arc<dyn RefreshPolicy>,
    pub(crate) runtime: Runtime,
    pub(crate) events: Events,
    pub(crate) fetch_timeout: Option<Duration>,
    /// Leases and successors: the client's own table (held weakly), or one shared beyond it.
    pub(crate) coordinator: Arc<dyn Coordinator>,
    /// Whether `coordinator` is shared beyond this client (successors are then also kept in
    /// the client's own table, for its late requests).
    pub(crate) shared_coordinator: bool,
    /// Consecutive token fetch failures; reset by a successful fetch.
    pub(crate) failures: AtomicU64,
    /// The backoff and circuit breaker shared by every fetch of the client (and of its
    /// per-parameter token caches).
    pub(crate) breaker: Arc<super::breaker::Breaker>,
    /// The parameters every token of this core is fetched with (a per-parameter cache).
    pub(crate) params: Option<crate::source::TokenParams>,
}

impl Core {
    pub(crate) fn now(&self) -> SystemTime {
        self.runtime.clock.now()
    }

    fn lease_ttl(&self) -> Duration {
        self.fetch_timeout
            .map_or(DEFAULT_LEASE, |limit| limit.saturating_add(LEASE_MARGIN))
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

/// The error every waiter of a refresh that panicked gets.
pub(crate) fn refresh_panicked() -> Error {
    tracing::error!("the token source panicked; the refresh was abandoned");
    Error::new(
        ErrorKind::Auth(AuthFailure::TokenUnavailable),
        "the token source panicked; the refresh was abandoned",
    )
}

/// What a fetch produced.
enum Fetched {
    /// New tokens from the source, to commit (boxed: a record is large, the enum moves).
    New(Box<TokenRecord>),
    /// The source refused a refresh token another writer had already rotated; the store holds
    /// that writer's record.
    Winner(Arc<TokenRecord>),
}

/// One flight of session `key`.
pub(crate) struct Refresh {
    pub(crate) core: Arc<Core>,
    pub(crate) sessions: Weak<SessionTable>,
    pub(crate) key: SessionKey,
    pub(crate) id: u64,
    pub(crate) ctx: Option<Context>,
    pub(crate) reason: FetchReason,
    pub(crate) rejected: Option<AccessToken>,
    pub(crate) hints: RefreshHints,
}

impl Refresh {
    /// Runs the flight to its end. A panic anywhere inside ends as a typed error; either way
    /// the flight leaves the session table.
    pub(crate) async fn run(self) -> Result<Arc<TokenRecord>, Error> {
        let span = tracing::info_span!(
            "refresh",
            reason = self.reason.as_str(),
            outcome = tracing::field::Empty
        );
        let result = AssertUnwindSafe(self.coordinate())
            .catch_unwind()
            .instrument(span.clone())
            .await
            .unwrap_or_else(|_| Err(refresh_panicked()));
        span.record("outcome", if result.is_ok() { "ok" } else { "error" });
        if let Some(sessions) = self.sessions.upgrade() {
            let failed_proactively =
                self.reason == FetchReason::Proactive && result.as_ref().is_err_and(counts_as_failure);
            let cooldown = failed_proactively.then(|| self.core.policy.proactive_retry_delay());
            sessions.finish(&self.key, self.id, result.is_ok(), cooldown);
        }
        result
    }

    /// Lead (holding a lease) or follow another leader's refresh.
    async fn coordinate(&self) -> Result<Arc<TokenRecord>, Error> {
        let coordinator = &self.core.coordinator;
        let ttl = self.core.lease_ttl();
        for _ in 0..FOLLOW_ROUNDS {
            match coordinator.acquire(&self.key, ttl).await? {
                Role::Lead(lease) => {
                    let work = AssertUnwindSafe(self.lead(&**coordinator));
                    let result = self
                        .extending(&**coordinator, &lease, ttl, work.catch_unwind())
                        .await;
                    if let Err(err) = coordinator.release(&lease).await {
                        tracing::warn!(error = %err, "could not release the refresh lease");
                    }
                    return result.unwrap_or_else(|_| Err(refresh_panicked()));
                }
                Role::Follow => {
                    if let Some(successor) = self.follow(&**coordinator, ttl).await? {
                        return Ok(successor);
                    }
                }
            }
        }
        Err(Error::new(
            ErrorKind::Auth(AuthFailure::TokenUnavailable),
            "another client is refreshing this session and did not finish",
        ))
    }

    /// Waits for the leader; then the successor it published, or a newer record it stored.
    async fn follow(
        &self,
        coordinator: &dyn Coordinator,
        ttl: Duration,
    ) -> Result<Option<Arc<TokenRecord>>, Error> {
        tracing::debug!("another client leads this refresh; waiting for it");
        let published = coordinator.wait(&self.key, ttl).await?;
        let stored = self.core.store.reload(self.ctx.as_ref()).await?;
        let idle = SessionState::default();
        let granted = Event::LeadGranted {
            reason: self.reason,
            stored: stored.as_deref(),
            rejected: self.rejected.as_ref(),
            published: published.as_ref(),
        };
        Ok(
            match decide(&idle, self.core.now(), &*self.core.policy, granted) {
                Decision::ServeSuccessor(successor) => Some(successor),
                Decision::UseStored => stored,
                _ => None, // nothing usable yet: ask to lead
            },
        )
    }

    /// Runs `work`, extending the lease while it runs (when a Sleep hook can pace it). A lost
    /// lease is logged, not fatal: correctness rests on compare-and-swap, not on the lease.
    async fn extending<T>(
        &self,
        coordinator: &dyn Coordinator,
        lease: &Lease,
        ttl: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        // A client's own table cannot lose a lease to anyone: no keep-alive needed.
        let sleep = match (&self.core.runtime.sleep, self.core.shared_coordinator) {
            (Some(sleep), true) => Arc::clone(sleep),
            _ => return work.await,
        };
        // The coordinator may have granted less than asked: keep pace with what it granted.
        let ttl = lease.ttl().unwrap_or(ttl);
        let keep_alive = async move {
            loop {
                sleep.sleep(ttl / 3).await;
                if !coordinator.extend(lease, ttl).await.unwrap_or(false) {
                    tracing::warn!("the refresh lease lapsed while the refresh ran");
                    future::pending::<()>().await;
                }
            }
        };
        match future::select(std::pin::pin!(work), std::pin::pin!(keep_alive)).await {
            Either::Left((result, _)) => result,
            // The keep-alive loop never ends; were it to, the work still runs to its end.
            Either::Right(((), work)) => work.await,
        }
    }

    /// The leader's work: re-read, fetch if still needed, commit, publish.
    async fn lead(&self, coordinator: &dyn Coordinator) -> Result<Arc<TokenRecord>, Error> {
        let core = &*self.core;
        let published = match self.reason {
            FetchReason::Forced => None,
            _ => coordinator.successor(&self.key).await.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "could not read the published successor");
                None
            }),
        };
        // Re-read after being granted the lead: another flight may have finished meanwhile.
        let stored = core.store.reload(self.ctx.as_ref()).await?;
        let now = core.now();
        let granted = Event::LeadGranted {
            reason: self.reason,
            stored: stored.as_deref(),
            rejected: self.rejected.as_ref(),
            published: published.as_ref(),
        };
        match (
            decide(&SessionState::default(), now, &*core.policy, granted),
            &stored,
        ) {
            (Decision::ServeSuccessor(successor), _) => {
                tracing::debug!("the session was rotated moments ago; using its successor");
                return Ok(successor);
            }
            (Decision::UseStored, Some(stored)) => {
                tracing::debug!("a newer token is already stored; no fetch");
                return Ok(Arc::clone(stored));
            }
            _ => {}
        }
        match self.fetch(stored.as_ref(), now).await? {
            Fetched::New(record) => self.commit(coordinator, stored, *record, now).await,
            Fetched::Winner(winner) => Ok(winner),
        }
    }

    async fn fetch(&self, stored: Option<&Arc<TokenRecord>>, now: SystemTime) -> Result<Fetched, Error> {
        let core = &*self.core;
        let ctx = self.ctx.as_ref();
        let request = FetchRequest {
            reason: self.reason,
            current: stored.cloned(),
            context: self.ctx.clone(),
            now,
            headers: self.hints.headers.clone(),
            data: self.hints.data.clone(),
            params: core.params.clone(),
        };
        // While the source is down, fail fast (a still-valid token is kept by the caller).
        if let Err(shut) = core.breaker.admit(now) {
            tracing::debug!(error = %shut, "token fetch skipped");
            return Err(shut);
        }
        let fetched = core.with_fetch_timeout(core.source.fetch(request)).await;
        crate::metrics::refresh_duration(self.reason, core.now().duration_since(now).unwrap_or_default());
        let err = match fetched.and_then(|r| r.validate().map(|()| r)) {
            Ok(record) => {
                core.failures.store(0, Ordering::Relaxed);
                core.breaker.succeeded();
                return Ok(Fetched::New(Box::new(record)));
            }
            Err(err) => err,
        };
        core.breaker.failed(&err, core.now(), super::breaker::unit());
        if counts_as_failure(&err) {
            let failures = core.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            core.events.emit(Lifecycle::RefreshFailed {
                error: &err,
                reason: self.reason,
                consecutive_failures: failures,
                context: ctx,
            });
        }
        // A refused refresh token may have lost a race: see whether another writer stored a
        // newer record meanwhile.
        let winner = match err.auth_failure() {
            Some(AuthFailure::SessionInvalid) => core
                .store
                .reload(ctx)
                .await
                .ok()
                .flatten()
                .filter(|w| stored.is_none_or(|s| !s.same_tokens(w))),
            _ => None,
        };
        let failed = Event::FetchFailed {
            reason: self.reason,
            error: &err,
            winner: winner.as_deref(),
        };
        match (
            decide(&SessionState::default(), core.now(), &*core.policy, failed),
            winner,
        ) {
            (Decision::AdoptWinner, Some(winner)) => {
                tracing::debug!("the refresh token was rotated by another writer; adopting its record");
                Ok(Fetched::Winner(winner))
            }
            (Decision::ClearSessionAndFail, _) => {
                if let Err(clear_err) = core.store.clear(ctx).await {
                    tracing::warn!(error = %clear_err, "could not clear the invalid session");
                }
                core.events.emit(Lifecycle::SessionInvalid { context: ctx });
                Err(match err.auth_failure() {
                    Some(AuthFailure::SessionInvalid) => err,
                    _ => Error::new(
                        ErrorKind::Auth(AuthFailure::SessionInvalid),
                        "the server rejected the session's token and it cannot be refreshed",
                    ),
                })
            }
            _ => Err(err),
        }
    }

    /// Stores the fetched record with compare-and-swap against what was read, then publishes
    /// it as the session's successor.
    async fn commit(
        &self,
        coordinator: &dyn Coordinator,
        stored: Option<Arc<TokenRecord>>,
        mut record: TokenRecord,
        now: SystemTime,
    ) -> Result<Arc<TokenRecord>, Error> {
        let core = &*self.core;
        let ctx = self.ctx.as_ref();
        let fetched = Event::Fetched {
            stored: stored.as_deref(),
            fetched: &record,
        };
        let idle = SessionState::default();
        if decide(&idle, now, &*core.policy, fetched)
            == (Decision::Commit {
                keep_old_refresh_token: true,
            })
        {
            record.refresh_token = stored.as_ref().and_then(|s| s.refresh_token.clone());
        }
        // A response without a payload (user, claims) keeps the session's.
        if record.payload.is_none() {
            record.payload = stored.as_ref().and_then(|s| s.payload.clone());
        }
        let record = Arc::new(record);
        match core.store.save(ctx, Arc::clone(&record), stored.as_deref()).await {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::StoreConflict => {
                crate::metrics::store_conflict();
                let winner = core.store.reload(ctx).await?;
                let conflict = Event::Conflict {
                    stored: winner.as_deref(),
                };
                return match (decide(&idle, core.now(), &*core.policy, conflict), winner) {
                    (Decision::AdoptWinner, Some(winner)) => {
                        tracing::debug!("another writer rotated the session first; adopting its record");
                        Ok(winner)
                    }
                    _ => Err(err),
                };
            }
            Err(err) => return Err(err),
        }
        if stored.as_ref().is_some_and(|s| s.refresh_token.is_some()) {
            self.publish(coordinator, &record).await;
        }
        core.events.emit(Lifecycle::Refreshed {
            tokens: &record,
            reason: self.reason,
            expires_in: record.expires_at.and_then(|at| at.duration_since(now).ok()),
            context: ctx,
        });
        Ok(record)
    }

    /// Publishes the successor for the grace window: to the coordinator, and to this client's
    /// own table when the coordinator is shared (late requests here need no round trip).
    async fn publish(&self, coordinator: &dyn Coordinator, record: &Arc<TokenRecord>) {
        let window = self.core.policy.grace_window();
        if let Err(err) = coordinator.publish(&self.key, Arc::clone(record), window).await {
            tracing::warn!(error = %err, "could not publish the rotated session");
        }
        if self.core.shared_coordinator {
            if let Some(own) = self.sessions.upgrade() {
                let _ = own.publish(&self.key, Arc::clone(record), window).await;
            }
        }
    }
}

/// Builds the flight of `key` that a request leads, when [`SessionTable::begin`] decides it
/// leads (nothing is cloned otherwise).
pub(crate) fn starter<'a>(
    core: &'a Arc<Core>,
    sessions: &'a Arc<SessionTable>,
    key: &'a SessionKey,
    ctx: Option<&'a Context>,
    rejected: Option<&'a AccessToken>,
    hints: &'a RefreshHints,
) -> impl FnOnce(u64, FetchReason) -> BoxFuture<'static, Result<Arc<TokenRecord>, Error>> + 'a {
    move |id, reason| {
        let refresh = Refresh {
            core: Arc::clone(core),
            sessions: Arc::downgrade(sessions),
            key: key.clone(),
            id,
            ctx: ctx.cloned(),
            reason,
            rejected: rejected.cloned(),
            hints: hints.clone(),
        };
        Box::pin(refresh.run())
    }
}
