//! Token rotation: the pure decision logic ([`state`]) and the driver that executes it
//! (`manager`, internal).

pub mod state;
pub(crate) mod manager;
