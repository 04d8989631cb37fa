//! Tokio runtime hooks for tokenkit: a [`Sleep`] and a [`Spawn`] implementation, written once
//! and shared by the tokio-based adapters (reqwest, hyper).
//!
//! ```
//! let runtime = tokenkit_tokio::runtime();
//! assert!(runtime.has_sleep() && runtime.has_spawn());
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use tokenkit_core::{BoxFuture, Runtime, Sleep, Spawn, SpawnError, Timeout};

/// Sleeps with `tokio::time::sleep` (retry pauses); request timeouts are
/// [`Deadline`](tokenkit_core::Deadline)s on tokenkit's deadline thread.
///
/// A request timeout is created for every request and almost never fires; tokio's timer
/// costs about 1,350 instructions per request for it, a deadline about a third of that (see
/// BENCHMARKS.md). Deadlines follow the real clock: `tokio::time::pause()` does not stop them
/// (test timeouts with tokenkit's `ManualSleep`). Should the deadline thread fail to start,
/// timeouts fall back to `tokio::time::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleep;

impl Sleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn timeout(&self, duration: Duration) -> Timeout {
        match tokenkit_core::Deadline::after(duration) {
            Ok(deadline) => Timeout::Deadline(deadline),
            Err(_) => Timeout::Other(self.sleep(duration)),
        }
    }
}

/// Spawns onto the tokio runtime the caller is running in.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSpawn;

impl Spawn for TokioSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), SpawnError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| SpawnError(format!("not inside a tokio runtime: {e}")))?;
        drop(handle.spawn(task));
        Ok(())
    }

    /// Tasks run on the spawning code's runtime.
    fn runs_on_caller_executor(&self) -> bool {
        true
    }
}

/// The system clock with tokio's sleeper and spawner.
pub fn runtime() -> Runtime {
    Runtime::new().with_sleep(TokioSleep).with_spawn(TokioSpawn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn sleep_waits() {
        let start = tokio::time::Instant::now();
        TokioSleep.sleep(Duration::from_secs(5)).await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn spawn_runs_the_task() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let (tx, rx) = tokio::sync::oneshot::channel();
        TokioSpawn
            .spawn(Box::pin(async move {
                flag.store(true, Ordering::SeqCst);
                let _ = tx.send(());
            }))
            .unwrap();
        rx.await.unwrap();
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn spawn_outside_a_runtime_is_an_error() {
        assert!(TokioSpawn.spawn(Box::pin(async {})).is_err());
    }
}
