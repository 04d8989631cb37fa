//! The runtime seams: where time comes from, how to wait, how to run a task in the background.
//!
//! tokenkit-core depends on no async runtime. Adapters (or the user) supply a [`Sleep`] hook
//! for timeouts and a [`Spawn`] hook for background refreshes; tests supply a
//! `ManualClock` (feature `test-util`) and move time by hand.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A boxed, sendable future, the currency of the runtime hooks.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The source of wall-clock time. Token lifetimes are wall-clock facts (`expires_at`), so the
/// clock returns [`SystemTime`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the real clock
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Waits for a duration; used for timeouts and retry backoff.
pub trait Sleep: Send + Sync + fmt::Debug {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// The timeout of one request (or token request): a future that completes no earlier than
    /// `duration` from now. One is created for every request sent with a timeout and nearly
    /// all are dropped before they complete, so this should be cheap to create and drop; it
    /// may complete somewhat late. The default is [`sleep`](Self::sleep); a hook on the real
    /// clock can return a [`Deadline`](crate::Deadline) (no allocation), as
    /// `tokenkit_tokio::TokioSleep` does.
    fn timeout(&self, duration: Duration) -> Timeout {
        Timeout::Other(self.sleep(duration))
    }
}

/// The future [`Sleep::timeout`] returns.
#[must_use = "a timeout does nothing unless polled"]
pub enum Timeout {
    /// A deadline on tokenkit's deadline thread.
    Deadline(crate::Deadline),
    /// Any other future, boxed.
    Other(BoxFuture<'static, ()>),
}

impl fmt::Debug for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timeout::Deadline(deadline) => f.debug_tuple("Deadline").field(deadline).finish(),
            Timeout::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl Future for Timeout {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.get_mut() {
            Timeout::Deadline(deadline) => Pin::new(deadline).poll(cx),
            Timeout::Other(future) => future.as_mut().poll(cx),
        }
    }
}

/// Runs a future to completion in the background.
pub trait Spawn: Send + Sync + fmt::Debug {
    /// Starts `task`. Returns an error when no executor is available (for instance outside a
    /// runtime); the caller then drives the work itself.
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), SpawnError>;

    /// Whether tasks run on the executor of the code that spawns them (tokio's `spawn` does).
    /// Then a refresh is spawned the moment it starts, and its callers only wait. A hook that
    /// runs tasks elsewhere (a thread of its own) keeps the default, `false`: it then receives
    /// only background refreshes and refreshes whose callers all went away, so a token source
    /// runs on the caller's executor whenever a caller is there.
    fn runs_on_caller_executor(&self) -> bool {
        false
    }
}

/// A [`Spawn`] hook could not start a task.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not spawn a background task: {0}")]
pub struct SpawnError(pub String);

/// The set of runtime hooks a client uses: a clock (always), and optionally a sleeper and a
/// spawner.
///
/// Without a [`Sleep`] hook timeouts cannot be enforced, so building a client with a timeout
/// fails; without a [`Spawn`] hook refreshes in the proactive window are awaited by the
/// request that notices them instead of running in the background.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleep: Option<Arc<dyn Sleep>>,
    pub(crate) spawn: Option<Arc<dyn Spawn>>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// The system clock, no sleeper, no spawner.
    pub fn new() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            sleep: None,
            spawn: None,
        }
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Replaces the clock with a shared one.
    pub(crate) fn with_shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the sleeper used for timeouts and backoff.
    pub fn with_sleep(mut self, sleep: impl Sleep + 'static) -> Self {
        self.sleep = Some(Arc::new(sleep));
        self
    }

    /// Sets the spawner used for background refreshes.
    pub fn with_spawn(mut self, spawn: impl Spawn + 'static) -> Self {
        self.spawn = Some(Arc::new(spawn));
        self
    }

    /// Whether a sleeper is set.
    pub fn has_sleep(&self) -> bool {
        self.sleep.is_some()
    }

    /// Whether a spawner is set.
    pub fn has_spawn(&self) -> bool {
        self.spawn.is_some()
    }
}

#[cfg(any(test, feature = "test-util"))]
pub use manual::{ManualClock, ManualSleep};

#[cfg(any(test, feature = "test-util"))]
mod manual {
    use super::{BoxFuture, Clock, Sleep};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[derive(Debug)]
    struct Inner {
        now: SystemTime,
        /// Sleepers to wake when time moves.
        sleepers: Vec<Waker>,
    }

    /// A clock that moves only when told to. Clones share the same time.
    #[derive(Clone, Debug)]
    pub struct ManualClock(Arc<Mutex<Inner>>);

    impl Default for ManualClock {
        fn default() -> Self {
            // A fixed, recognisable instant: 2026-01-01T00:00:00Z.
            Self::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        }
    }

    impl ManualClock {
        /// A clock standing at `start`.
        pub fn new(start: SystemTime) -> Self {
            Self(Arc::new(Mutex::new(Inner {
                now: start,
                sleepers: Vec::new(),
            })))
        }

        fn lock(&self) -> MutexGuard<'_, Inner> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// Moves the clock forward (saturating at the largest representable instant) and
        /// wakes the [`ManualSleep`]s waiting on it.
        pub fn advance(&self, by: Duration) {
            let mut inner = self.lock();
            inner.now = inner.now.checked_add(by).unwrap_or(inner.now);
            let sleepers = std::mem::take(&mut inner.sleepers);
            drop(inner);
            sleepers.into_iter().for_each(Waker::wake);
        }

        /// Sets the clock to `to`.
        pub fn set(&self, to: SystemTime) {
            let sleepers = {
                let mut inner = self.lock();
                inner.now = to;
                std::mem::take(&mut inner.sleepers)
            };
            sleepers.into_iter().for_each(Waker::wake);
        }

        /// A [`Sleep`] hook on this clock: its sleeps end when the clock is moved past them.
        pub fn sleeper(&self) -> ManualSleep {
            ManualSleep(self.clone())
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            self.lock().now
        }
    }

    /// Sleeps on a [`ManualClock`]: a sleep ends when the clock is moved past its end.
    #[derive(Clone, Debug)]
    pub struct ManualSleep(ManualClock);

    struct Until {
        clock: ManualClock,
        until: Option<SystemTime>,
    }

    impl Future for Until {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut inner = self.clock.lock();
            match self.until {
                Some(until) if inner.now >= until => Poll::Ready(()),
                _ => {
                    inner.sleepers.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    impl Sleep for ManualSleep {
        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            let until = self.0.now().checked_add(duration);
            Box::pin(Until {
                clock: self.0.clone(),
                until,
            })
        }
    }
}
