//! The driver against in-process sources and stores, on a manual clock and no runtime.

use super::*;
use crate::policy::StandardPolicy;
use crate::runtime::{Clock, ManualClock};
use crate::source::{FetchRequest, ProvidedToken, ProviderSource};
use crate::store::MemoryStore;
use futures_executor::block_on;
use futures_util::FutureExt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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

fn parts(source: Arc<dyn TokenSource>, policy: StandardPolicy, runtime: Runtime) -> Parts {
    Parts {
        source,
        store: Arc::new(MemoryStore::new()),
        policy: Arc::new(policy),
        runtime,
        events: Events::default(),
        fetch_timeout: None,
        coordinator: None,
        outage: crate::OutageConfig::default(),
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
    Manager::new(parts(Arc::new(source), StandardPolicy::provider(), runtime))
}

fn secret(record: &TokenRecord) -> &str {
    record.access_token.as_ref().map_or("", |t| t.secret())
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
    assert_eq!(m.stats().refreshes_in_flight, 1, "the flight is kept");
    let record = block_on(m.token(None, &RefreshHints::default())).unwrap();
    assert_eq!(secret(&record), "t1", "joined, not refetched");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(m.stats().refreshes_in_flight, 0, "a finished flight is removed");
    assert_eq!(m.stats().sessions, 0, "and leaves no state");
}

#[test]
fn rejection_with_an_older_token_uses_the_current_one() {
    let calls = Arc::new(AtomicUsize::new(0));
    let m = manager(
        Arc::clone(&calls),
        Runtime::new().with_clock(ManualClock::default()),
    );
    let hints = RefreshHints::default();
    let first = block_on(m.token(None, &hints)).unwrap();
    let rejected = (*first).clone();
    // Rejected while current: one refresh.
    let second = block_on(m.recover(None, &rejected, 0, http::StatusCode::UNAUTHORIZED, &hints)).unwrap();
    assert_eq!(secret(&second), "t2");
    // The same old token rejected again (a late response): no refresh, use t2.
    let third = block_on(m.recover(None, &rejected, 0, http::StatusCode::UNAUTHORIZED, &hints)).unwrap();
    assert_eq!(secret(&third), "t2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The recovery limit is enforced before anything else.
    let max = crate::defaults::MAX_RECOVERY_TRIES;
    let err = block_on(m.recover(None, &second, max, http::StatusCode::UNAUTHORIZED, &hints)).unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

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
    let m = Manager::new(parts(
        Arc::new(Rotating(Arc::clone(&calls))),
        StandardPolicy::default().jitter_percent(0),
        Runtime::new().with_clock(clock.clone()),
    ));
    let hints = RefreshHints::default();
    assert_eq!(secret(&block_on(m.token(None, &hints)).unwrap()), "t1");
    clock.advance(Duration::from_secs(3));
    assert_eq!(secret(&block_on(m.token(None, &hints)).unwrap()), "t2");
    // t2 (2 s lifetime) is expired after 1.5 s, well inside the 5 s grace window.
    clock.advance(Duration::from_millis(1500));
    assert_eq!(secret(&block_on(m.token(None, &hints)).unwrap()), "t3");
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
    assert_eq!(m.stats().refreshes_in_flight, 1);
    drop(m);
    assert!(
        core.upgrade().is_none(),
        "no reference cycle through the session table"
    );
}

/// A source that panics on its first call.
#[derive(Debug)]
struct PanicsOnce(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl TokenSource for PanicsOnce {
    async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
        YieldOnce(false).await; // so that both callers join before it panics
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("source bug");
        }
        TokenRecord::new(crate::AccessToken::new("ok"), request.now).with_expires_in(Duration::from_secs(60))
    }
}

#[test]
fn a_panicking_source_fails_every_waiter_and_the_next_request_starts_clean() {
    let calls = Arc::new(AtomicUsize::new(0));
    let m = Manager::new(parts(
        Arc::new(PanicsOnce(Arc::clone(&calls))),
        StandardPolicy::provider(),
        Runtime::new().with_clock(ManualClock::default()),
    ));
    let hints = RefreshHints::default();
    let (a, b) = block_on(futures_util::future::join(
        m.token(None, &hints),
        m.token(None, &hints),
    ));
    for result in [a, b] {
        assert_eq!(
            result.unwrap_err().auth_failure(),
            Some(AuthFailure::TokenUnavailable)
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one flight for both");
    assert_eq!(m.stats().refreshes_in_flight, 0);
    assert_eq!(secret(&block_on(m.token(None, &hints)).unwrap()), "ok");
}

/// A source that, while it fetches, lets "another writer" (another client, another replica)
/// store its own rotation first; then answers with `outcome`.
#[derive(Debug)]
struct RacedBy {
    store: Arc<MemoryStore>,
    invalid_grant: bool,
}

#[async_trait::async_trait]
impl TokenSource for RacedBy {
    async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
        let winner = TokenRecord::new(crate::AccessToken::new("winner"), request.now)
            .with_refresh_token(crate::RefreshToken::new("r-winner"))
            .with_expires_in(Duration::from_secs(3600))?;
        self.store.save(None, Arc::new(winner), None).await?;
        if self.invalid_grant {
            return Err(Error::new(
                ErrorKind::Auth(AuthFailure::SessionInvalid),
                "invalid_grant: refresh token already used",
            ));
        }
        TokenRecord::new(crate::AccessToken::new("loser"), request.now)
            .with_refresh_token(crate::RefreshToken::new("r-loser"))
            .with_expires_in(Duration::from_secs(3600))
    }
}

fn raced(invalid_grant: bool) -> (Manager, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::default();
    let expired = TokenRecord::new(crate::AccessToken::new("old"), clock.now())
        .with_refresh_token(crate::RefreshToken::new("r-old"));
    block_on(store.save(None, Arc::new(expired), None)).unwrap();
    let m = Manager::new(Parts {
        store: Arc::clone(&store) as Arc<dyn TokenStore>,
        ..parts(
            Arc::new(RacedBy {
                store: Arc::clone(&store),
                invalid_grant,
            }),
            StandardPolicy::default(),
            Runtime::new().with_clock(clock),
        )
    });
    (m, store)
}

#[test]
fn a_compare_and_swap_conflict_adopts_the_winner() {
    let (m, store) = raced(false);
    let rejected = (*store.get().unwrap()).clone();
    let got = block_on(m.recover(
        None,
        &rejected,
        0,
        http::StatusCode::UNAUTHORIZED,
        &RefreshHints::default(),
    ))
    .unwrap();
    assert_eq!(
        secret(&got),
        "winner",
        "the loser's write was refused; the winner is used"
    );
    assert_eq!(secret(&store.get().unwrap()), "winner");
}

#[test]
fn invalid_grant_after_a_lost_race_adopts_the_winner_instead_of_logging_out() {
    let (m, store) = raced(true);
    let rejected = (*store.get().unwrap()).clone();
    let got = block_on(m.recover(
        None,
        &rejected,
        0,
        http::StatusCode::UNAUTHORIZED,
        &RefreshHints::default(),
    ))
    .unwrap();
    assert_eq!(secret(&got), "winner");
    assert!(store.get().is_some(), "the session was not cleared");
}

/// A Spawn hook that keeps the tasks it is given, for the test to run.
#[derive(Default, Clone)]
struct Kept(Arc<std::sync::Mutex<Vec<crate::runtime::BoxFuture<'static, ()>>>>);

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

impl crate::runtime::Spawn for Kept {
    fn spawn(&self, task: crate::runtime::BoxFuture<'static, ()>) -> Result<(), crate::runtime::SpawnError> {
        self.0.lock().unwrap().push(task);
        Ok(())
    }
}

#[test]
fn a_refresh_runs_on_the_callers_executor_and_is_handed_over_only_when_abandoned() {
    let calls = Arc::new(AtomicUsize::new(0));
    let kept = Kept::default();
    let m = manager(
        Arc::clone(&calls),
        Runtime::new()
            .with_clock(ManualClock::default())
            .with_spawn(kept.clone()),
    );
    // A caller that waits drives the refresh itself: nothing is spawned.
    assert_eq!(
        secret(&block_on(m.token(None, &RefreshHints::default())).unwrap()),
        "t1"
    );
    assert!(
        kept.0.lock().unwrap().is_empty(),
        "no task while a caller drives the flight"
    );
    // A caller that goes away mid-refresh hands the flight to the hook.
    m.core.store.clear(None).now_or_never().unwrap().unwrap();
    {
        let hints = RefreshHints::default();
        let mut caller = pin!(m.token(None, &hints));
        let mut cx = TaskContext::from_waker(Waker::noop());
        assert!(caller.as_mut().poll(&mut cx).is_pending());
    }
    let tasks = std::mem::take(&mut *kept.0.lock().unwrap());
    assert_eq!(tasks.len(), 1, "the abandoned flight was handed over");
    for task in tasks {
        block_on(task);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(m.stats().refreshes_in_flight, 0);
    let stored = m.core.store.load(None).now_or_never().unwrap().unwrap().unwrap();
    assert_eq!(secret(&stored), "t2", "the abandoned refresh was stored");
}

/// A source that takes 100 s on the manual clock.
#[derive(Debug)]
struct Slow(crate::runtime::ManualSleep, Arc<AtomicUsize>);

#[async_trait::async_trait]
impl TokenSource for Slow {
    async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
        use crate::runtime::Sleep;
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.sleep(Duration::from_secs(100)).await;
        TokenRecord::new(crate::AccessToken::new("slow"), request.now)
            .with_expires_in(Duration::from_secs(3600))
    }
}

#[test]
fn a_refresh_slower_than_its_lease_keeps_extending_it_and_never_has_two_leaders() {
    use crate::rotation::{Coordinator, InProcessCoordinator, Role};
    let clock = ManualClock::default();
    let runtime = Runtime::new()
        .with_clock(clock.clone())
        .with_sleep(clock.sleeper());
    let shared = InProcessCoordinator::new(runtime.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let m = Manager::new(Parts {
        coordinator: Some(Arc::new(shared.clone())),
        outage: crate::OutageConfig::default(),
        ..parts(
            Arc::new(Slow(clock.sleeper(), Arc::clone(&calls))),
            StandardPolicy::provider(),
            runtime,
        )
    });
    // No fetch timeout: the lease is 60 s, the refresh takes 100 s.
    let hints = RefreshHints::default();
    let mut caller = pin!(m.token(None, &hints));
    let mut cx = TaskContext::from_waker(Waker::noop());
    let mut other_leaders = 0;
    for _ in 0..12 {
        assert!(caller.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_secs(9));
        // Another client asking for the lead, all along the 100 s, is told to follow.
        match block_on(shared.acquire(&SessionKey::process(), Duration::from_secs(60))).unwrap() {
            Role::Follow => {}
            Role::Lead(lease) => {
                other_leaders += 1;
                block_on(shared.release(&lease)).unwrap();
            }
        }
    }
    clock.advance(Duration::from_secs(10));
    let record = block_on(caller).unwrap();
    assert_eq!(secret(&record), "slow");
    assert_eq!(other_leaders, 0, "the lease lapsed during a slow refresh");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
