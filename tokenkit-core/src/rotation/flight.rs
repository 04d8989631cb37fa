//! A refresh in flight: one future shared by every request waiting for it. With a Spawn hook
//! that runs tasks on the caller's own runtime (tokio), the flight is spawned as it starts.
//! Otherwise waiters drive it on their own executor, and when the last of them goes away
//! before it ends, it is handed to the Spawn hook: a refresh once started completes and is
//! stored even with no one waiting, and a user's token source runs on the caller's executor
//! whenever a caller is there.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{FutureExt, Shared};

use crate::error::Error;
use crate::runtime::{BoxFuture, Spawn};
use crate::token::TokenRecord;

type Outcome = Result<Arc<TokenRecord>, Error>;

/// One refresh, and how many requests wait for it.
#[derive(Clone)]
pub(crate) struct Flight {
    pub(crate) id: u64,
    future: Shared<BoxFuture<'static, Outcome>>,
    waiters: Arc<AtomicUsize>,
    /// Handed to the Spawn hook already: nothing to hand over when waiters leave.
    detached: Arc<AtomicBool>,
}

impl Flight {
    pub(crate) fn new(id: u64, work: BoxFuture<'static, Outcome>) -> Self {
        Self {
            id,
            future: work.shared(),
            waiters: Arc::new(AtomicUsize::new(0)),
            detached: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A request waiting for the flight (and driving it while it waits).
    pub(crate) fn wait(&self, spawn: Option<Arc<dyn Spawn>>) -> Waiter {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        Waiter {
            flight: self.clone(),
            spawn,
            done: false,
        }
    }

    /// Runs the flight detached (a background refresh, or any refresh when the hook runs
    /// tasks on the caller's runtime). `false` when the hook refused.
    pub(crate) fn detach(&self, spawn: &dyn Spawn) -> bool {
        if self.detached.swap(true, Ordering::AcqRel) {
            return true;
        }
        let spawned = spawn.spawn(Box::pin(self.future.clone().map(drop))).is_ok();
        if !spawned {
            self.detached.store(false, Ordering::Release);
        }
        spawned
    }
}

/// Awaits a [`Flight`]; see the [module](self) docs for what happens when it is dropped.
pub(crate) struct Waiter {
    flight: Flight,
    spawn: Option<Arc<dyn Spawn>>,
    done: bool,
}

impl Future for Waiter {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let poll = self.flight.future.poll_unpin(cx);
        if poll.is_ready() {
            self.done = true;
        }
        poll
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let last = self.flight.waiters.fetch_sub(1, Ordering::AcqRel) == 1;
        let running_anyway = self.flight.detached.load(Ordering::Acquire);
        if !last || self.done || running_anyway || self.flight.future.peek().is_some() {
            return;
        }
        // The last waiter left mid-flight: hand the refresh over so it still completes (the
        // request may already be at the token endpoint, rotating the refresh token). Without
        // a Spawn hook it stays in the session table, and the next request joins it.
        if let Some(spawn) = &self.spawn {
            if !self.flight.detach(&**spawn) {
                tracing::warn!("could not hand an abandoned refresh to the Spawn hook");
            }
        }
    }
}
