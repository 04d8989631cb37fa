//! Token rotation: the pure decisions (`state`), the in-process session table (`sessions`),
//! the coordination seam ([`Coordinator`]) and the driver that executes the decisions
//! (`manager`, with one flight's steps in `refresh`).

mod breaker;
mod coordination;
mod flight;
mod key;
pub(crate) mod manager;
mod refresh;
mod sessions;
pub(crate) mod state;

pub use breaker::OutageConfig;
#[cfg(any(test, feature = "test-util"))]
pub use coordination::contract;
pub use coordination::{Coordinator, InProcessCoordinator, Lease, Role};
pub use key::{SessionKey, SessionKind};

/// The size of a client's rotation state, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStats {
    /// Refreshes in flight (one per session being refreshed).
    pub refreshes_in_flight: usize,
    /// Rotated sessions still in the grace window (their successors are kept).
    pub grace_entries: usize,
    /// Sessions the client holds any rotation state for (a flight, a successor, a cooldown,
    /// a lease). Returns to 0 once windows and cooldowns are over.
    pub sessions: usize,
}
