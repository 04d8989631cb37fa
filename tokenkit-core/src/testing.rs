//! Test doubles and conformance checks (feature `test-util`): a clock that moves only when
//! told to, a sleeper on it, and the contract every [`Coordinator`](crate::Coordinator) keeps.

pub use crate::rotation::contract;
pub use crate::runtime::{ManualClock, ManualSleep};
