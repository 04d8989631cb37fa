//! Where token records live.

pub mod cookie;
mod memory;
pub mod session;

pub use self::cookie::{CookieConfig, CookieStore};
pub use memory::MemoryStore;
pub use session::{MemorySessionBackend, SessionBackend, SessionId, SessionStore};

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::Error;
use crate::token::TokenRecord;

/// Loads, saves and clears the token record of the current session.
///
/// The session is identified by the [`Context`] (a per-user store reads its cookies or session
/// id from it) or, for stores holding one process-wide token such as [`MemoryStore`], ignored.
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The session's record, if any. Must not modify the session.
    async fn load(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error>;

    /// Stores `record` for the session. When `replaces` is given, a store that can detect
    /// concurrent writers refuses the write with [`ErrorKind::StoreConflict`](crate::ErrorKind::StoreConflict)
    /// if the stored record is no longer `replaces` (compare-and-swap), instead of losing a
    /// rotated refresh token.
    async fn save(
        &self,
        ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        replaces: Option<&TokenRecord>,
    ) -> Result<(), Error>;

    /// Removes the session's record.
    async fn clear(&self, ctx: Option<&Context>) -> Result<(), Error>;

    /// Whether records live outside the request (process memory, a session backend) rather
    /// than in the request's own cookies. Only then may a refresh run in the background: a
    /// per-request store must refresh inline so the response carries the new tokens.
    fn is_shared(&self) -> bool {
        false
    }

    /// The key under which refreshes of this session are de-duplicated: requests with the
    /// same key share one refresh. The default keys by the record's refresh token, or else by
    /// the context's identity, so two users never share a refresh. A store holding one
    /// process-wide token returns a constant.
    fn session_key(&self, ctx: Option<&Context>, record: Option<&TokenRecord>) -> u64 {
        match (record, ctx) {
            (Some(record), _) if record.refresh_token.is_some() => record.fingerprint(),
            (_, Some(ctx)) => ctx.id() as u64,
            _ => 0,
        }
    }
}
