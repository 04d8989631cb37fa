//! Request deadlines on one shared thread: a [`Deadline`] is cheap to create and to drop.
//!
//! Every request with a timeout creates a deadline, and almost every deadline is dropped
//! before it fires. A runtime's general-purpose timer pays for precision nobody needs here:
//! tokio's costs about 1,350 instructions per request (a clock read, a boxed entry, insertion
//! into and removal from its wheel, and the driver recomputing its next expiration on every
//! park). A deadline registers in a slab under an uncontended lock and is removed the same
//! way; polling it before it fires is one atomic load. One thread, started on first use,
//! sleeps until the earliest deadline it knows of and wakes the tasks whose deadlines passed.
//! A deadline never fires early; it may fire a little late (the thread's wake-up latency).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::runtime::SpawnError;

/// After this long without a deadline to watch, the thread waits for a notification instead
/// of waking up on its own.
const IDLE: Duration = Duration::from_secs(1);

/// A future that completes once its duration has passed, driven by tokenkit's deadline thread
/// (`tokenkit-deadlines`, one per process, started on first use). Built for request timeouts:
/// creating and dropping one is cheap, it never completes early and may complete a few
/// milliseconds late. It follows the real monotonic clock, whatever runtime polls it.
///
/// [`Sleep::timeout`](crate::Sleep::timeout) implementations use it; see
/// `tokenkit_tokio::TokioSleep`.
///
/// ```
/// # futures_executor::block_on(async {
/// let started = std::time::Instant::now();
/// tokenkit_core::Deadline::after(std::time::Duration::from_millis(20))?.await;
/// assert!(started.elapsed() >= std::time::Duration::from_millis(20));
/// # Ok::<(), tokenkit_core::SpawnError>(()) }).unwrap();
/// ```
#[derive(Debug)]
#[must_use = "a deadline does nothing unless polled"]
pub struct Deadline {
    /// `None`: never completes (the duration does not fit in an `Instant`).
    at: Option<Instant>,
    timer: &'static Timer,
    state: Registration,
}

#[derive(Debug)]
enum Registration {
    /// Not polled yet.
    New,
    /// In the timer's slot `key`, registered with `waker`, seen unfired at `epoch`.
    Waiting { key: usize, waker: Waker, epoch: u64 },
    /// Completed (its slot is released).
    Done,
}

impl Deadline {
    /// A deadline `duration` from now. Fails only when the deadline thread cannot be started.
    #[allow(clippy::disallowed_methods)] // a timer on the real monotonic clock, like a Sleep hook
    pub fn after(duration: Duration) -> Result<Self, SpawnError> {
        let timer = timer()?;
        Ok(Self {
            at: Instant::now().checked_add(duration),
            timer,
            state: Registration::New,
        })
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(at) = this.at else {
            return Poll::Pending;
        };
        match &mut this.state {
            Registration::Done => Poll::Ready(()),
            Registration::New => {
                let (key, epoch) = this.timer.register(at, cx.waker().clone());
                this.state = Registration::Waiting {
                    key,
                    waker: cx.waker().clone(),
                    epoch,
                };
                Poll::Pending
            }
            Registration::Waiting { key, waker, epoch } => {
                let key = *key;
                let same_waker = waker.will_wake(cx.waker());
                // Nothing fired since we looked, and the same task waits: nothing to do.
                if same_waker && this.timer.epoch.load(Ordering::Acquire) == *epoch {
                    return Poll::Pending;
                }
                let mut state = this.timer.lock();
                match state.slots.get_mut(key) {
                    Some(Slot::Waiting { waker: stored, .. }) => {
                        if !same_waker {
                            stored.clone_from(cx.waker());
                            waker.clone_from(cx.waker());
                        }
                        *epoch = this.timer.epoch.load(Ordering::Acquire);
                        Poll::Pending
                    }
                    _ => {
                        let released = state.release(key);
                        drop(state);
                        drop(released);
                        this.state = Registration::Done;
                        Poll::Ready(())
                    }
                }
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Registration::Waiting { key, .. } = self.state {
            let released = self.timer.lock().release(key);
            drop(released);
        }
    }
}

struct Timer {
    state: Mutex<State>,
    wake: Condvar,
    /// Incremented (under the lock) every time the thread fires deadlines: a registration that
    /// saw epoch `e` has certainly not fired while the epoch is still `e`.
    epoch: AtomicU64,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// When the thread wakes up next on its own; `None` while it waits for a notification.
    next_wake: Option<Instant>,
}

enum Slot {
    Free,
    Waiting { at: Instant, waker: Waker },
    Fired,
}

impl State {
    /// Frees slot `key`, returning what it held (to be dropped after the lock is released).
    fn release(&mut self, key: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(key)?;
        let old = std::mem::replace(slot, Slot::Free);
        self.free.push(key);
        Some(old)
    }
}

fn timer() -> Result<&'static Timer, SpawnError> {
    static TIMER: OnceLock<Result<&'static Timer, String>> = OnceLock::new();
    TIMER
        .get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::new(Timer {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                epoch: AtomicU64::new(0),
            }));
            std::thread::Builder::new()
                .name("tokenkit-deadlines".into())
                .spawn(move || timer.run())
                .map(|_| timer)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .copied()
        .map_err(|e| SpawnError(format!("the deadline thread could not start: {e}")))
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a deadline; returns its slot and the epoch it was registered at.
    fn register(&self, at: Instant, waker: Waker) -> (usize, u64) {
        let mut state = self.lock();
        let slot = Slot::Waiting { at, waker };
        let key = match state.free.pop() {
            Some(key) => {
                state.slots[key] = slot;
                key
            }
            None => {
                state.slots.push(slot);
                state.slots.len() - 1
            }
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        // The thread would wake up too late for this one: tell it.
        let notify = state.next_wake.is_none_or(|next| at < next);
        if notify {
            state.next_wake = Some(at);
        }
        drop(state);
        if notify {
            self.wake.notify_one();
        }
        (key, epoch)
    }

    /// The thread: fire what is due, then sleep until the earliest deadline left.
    #[allow(clippy::disallowed_methods)] // the deadline thread runs on the real monotonic clock
    fn run(&self) {
        let mut due = Vec::new();
        let mut idle_rounds = 0u32;
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut earliest: Option<Instant> = None;
            for slot in &mut state.slots {
                if let Slot::Waiting { at, .. } = slot {
                    if *at <= now {
                        if let Slot::Waiting { waker, .. } = std::mem::replace(slot, Slot::Fired) {
                            due.push(waker);
                        }
                    } else {
                        earliest = Some(earliest.map_or(*at, |e| e.min(*at)));
                    }
                }
            }
            if !due.is_empty() {
                self.epoch.fetch_add(1, Ordering::AcqRel);
                drop(state);
                due.drain(..).for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            // With nothing to watch, wake up on our own for a while (registrations later
            // than that need no notification), then wait to be told.
            idle_rounds = if earliest.is_some() {
                0
            } else {
                idle_rounds.saturating_add(1)
            };
            let next = earliest.or_else(|| (idle_rounds < 3).then(|| now + IDLE));
            state.next_wake = next;
            state = match next {
                Some(next) => {
                    let wait = next.saturating_duration_since(now);
                    self.wake
                        .wait_timeout(state, wait)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|e| e.into_inner().0)
                }
                None => self.wake.wait(state).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // these tests are about the real clock
mod tests {
    use super::*;
    use std::sync::Arc;

    fn block_on<F: Future>(f: F) -> F::Output {
        futures_executor::block_on(f)
    }

    #[test]
    fn completes_after_its_duration_never_before() {
        for ms in [0u64, 1, 15, 40] {
            let started = Instant::now();
            block_on(Deadline::after(Duration::from_millis(ms)).unwrap());
            assert!(started.elapsed() >= Duration::from_millis(ms), "{ms} ms");
        }
    }

    #[test]
    fn an_earlier_deadline_registered_later_still_fires_first() {
        // A long deadline sets the thread's wake-up far away; a short one must wake it.
        let long = Deadline::after(Duration::from_secs(3600)).unwrap();
        let mut long = Box::pin(long);
        let waker = futures_util::task::noop_waker();
        assert!(long.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        let started = Instant::now();
        block_on(Deadline::after(Duration::from_millis(30)).unwrap());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(30) && took < Duration::from_secs(30),
            "{took:?}"
        );
        assert!(long.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    }

    #[test]
    fn a_duration_past_what_an_instant_holds_never_completes() {
        let mut never = Box::pin(Deadline::after(Duration::MAX).unwrap());
        let waker = futures_util::task::noop_waker();
        assert!(never.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    }

    #[test]
    fn dropped_deadlines_release_their_slots_and_many_fire_together() {
        let timer = timer().unwrap();
        // Drop a thousand registered deadlines: their slots come back.
        let waker = futures_util::task::noop_waker();
        let mut held = Vec::new();
        for _ in 0..1000 {
            let mut d = Box::pin(Deadline::after(Duration::from_secs(600)).unwrap());
            assert!(d.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
            held.push(d);
        }
        drop(held);
        {
            let state = timer.lock();
            let waiting = state
                .slots
                .iter()
                .filter(|s| matches!(s, Slot::Waiting { .. }))
                .count();
            // Other tests may hold a few deadlines of their own at the same time.
            assert!(waiting < 10, "{waiting} slots still waiting");
        }
        // 200 tasks on threads, each waiting 20 ms: all complete.
        let done = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        block_on(Deadline::after(Duration::from_millis(20)).unwrap());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(done.load(Ordering::Relaxed), 200);
    }

    #[test]
    fn a_moved_task_is_woken_through_its_new_waker() {
        use futures_util::task::ArcWake;
        struct Flag(AtomicU64);
        impl ArcWake for Flag {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let first = Arc::new(Flag(AtomicU64::new(0)));
        let second = Arc::new(Flag(AtomicU64::new(0)));
        let mut d = Box::pin(Deadline::after(Duration::from_millis(20)).unwrap());
        let w1 = futures_util::task::waker(Arc::clone(&first));
        let w2 = futures_util::task::waker(Arc::clone(&second));
        assert!(d.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(d.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        let started = Instant::now();
        while second.0.load(Ordering::SeqCst) == 0 {
            assert!(started.elapsed() < Duration::from_secs(30), "never woken");
            std::thread::yield_now();
        }
        assert_eq!(first.0.load(Ordering::SeqCst), 0, "the old waker was woken");
        assert!(d.as_mut().poll(&mut Context::from_waker(&w2)).is_ready());
    }
}
