//! Token rotation: the pure decision logic ([`state`]) and the driver that executes it
//! (`manager`, internal).

pub(crate) mod manager;

pub use manager::RotationStats;
pub mod state;
