//! # tokenkit-redis
//!
//! Redis (and Valkey) for a fleet of replicas: one refresh per session across the fleet, and
//! the grace window shared through Redis, so a browser's parallel requests landing on
//! different replicas never rotate a refresh token twice.
//!
//! ```no_run
//! use tokenkit_core::{CookieConfig, CookieStore, EndpointConfig};
//! use tokenkit_redis::RedisCoordinator;
//!
//! # async fn run() -> Result<(), tokenkit_core::Error> {
//! let coordinator = RedisCoordinator::connect("redis://127.0.0.1:6379/").await?;
//! let client = tokenkit_reqwest::builder("https://api.example.com")
//!     .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
//!     .store(CookieStore::new(CookieConfig::new()))
//!     // Every replica built like this shares one rotation per session.
//!     .coordinator(coordinator)
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! What a coordinator guarantees, and what it does not (correctness rests on re-reading the
//! store and compare-and-swap, not on the lease alone), is documented on
//! [`tokenkit_core::Coordinator`]; [`RedisCoordinator`] passes the same contract tests as the
//! in-process coordinator.
//!
//! The pieces:
//! - [`RedisCoordinator`]: one refresh per session across the fleet, and the grace window;
//! - [`RedisSessionStore`]: each user's record in Redis, the browser holding an opaque
//!   session id; compare-and-swap writes;
//! - [`RedisTokenSlot`]: one token for the fleet (provider or client-credentials mode) with a
//!   local copy in front, so a fresh token costs no round trip;
//! - [`Encryption`]: records encrypted at rest, keys rotating;
//! - [`WhenUnavailable`]: fail open (default) or closed while Redis is away;
//! - [`RedisConnection`]: a server or a Redis Cluster (every key of a session shares a hash
//!   tag).
//!
//! It runs on tokio (redis-rs's async connections do): use it with the reqwest or hyper
//! adapters, or any client inside a tokio runtime.
#![forbid(unsafe_code)]

mod connection;
mod coordinator;
mod encryption;
mod keys;
mod session_store;
mod token_slot;

pub use connection::{
    RedisConnection, WhenUnavailable, DEFAULT_CONNECTION_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT,
};
pub use coordinator::{RedisCoordinator, DEFAULT_PREFIX, FIRST_POLL_INTERVAL, MAX_POLL_INTERVAL};
pub use session_store::{RedisSessionStore, DEFAULT_SESSION_COOKIE, LOCAL_COPIES};
pub use token_slot::RedisTokenSlot;
pub use tokenkit_core::Encryption;
