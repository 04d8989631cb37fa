//! Where token records live.

mod codec;
mod cookie;
mod memory;
mod session;

pub use self::cookie::{CookieConfig, CookieStore};
pub use memory::MemoryStore;
pub use session::{MemorySessionBackend, SessionBackend, SessionId, SessionStore};

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::Error;
use crate::token::TokenRecord;

/// Where a store keeps its records, which decides how refreshes are shared. Every store
/// declares it: there is no default, because a wrong guess is silent (a process-wide store
/// taken for a per-session one refreshes once per request; the reverse shares one user's
/// token with another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreScope {
    /// One record for every request, whatever the context ([`MemoryStore`]): one refresh at a
    /// time for the whole store, and refreshes may run in the background.
    Process,
    /// One record per session, carried by the request itself ([`CookieStore`]): a refresh
    /// runs inline, because only the response being built can carry the new tokens.
    Request,
    /// One record per session, kept outside the request in a backend ([`SessionStore`],
    /// Redis): refreshes may run in the background.
    Backend,
}

impl StoreScope {
    /// Whether a refresh may run in the background, detached from the request that noticed it
    /// is due: only when the record lives outside the response being built.
    pub fn refreshes_in_background(self) -> bool {
        !matches!(self, StoreScope::Request)
    }
}

/// Loads, saves and clears the token record of the current session.
///
/// The session is identified by the [`Context`] (a per-user store reads its cookies or session
/// id from it) or, for stores holding one process-wide token such as [`MemoryStore`], ignored.
/// [`scope`](Self::scope) says which, and has no default: a store that does not say what it
/// is does not compile.
///
/// ```compile_fail,E0046
/// use std::sync::Arc;
/// use tokenkit_core::{async_trait, Context, Error, TokenRecord, TokenStore};
///
/// #[derive(Debug)]
/// struct Unscoped;
///
/// #[async_trait]
/// impl TokenStore for Unscoped {
///     async fn load(&self, _: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
///         Ok(None)
///     }
///     async fn save(&self, _: Option<&Context>, _: Arc<TokenRecord>, _: Option<&TokenRecord>) -> Result<(), Error> {
///         Ok(())
///     }
///     async fn clear(&self, _: Option<&Context>) -> Result<(), Error> {
///         Ok(())
///     }
///     // error[E0046]: not all trait items implemented, missing: `scope`
/// }
/// ```
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

    /// The session's record from its source of truth, bypassing any cache the store keeps in
    /// front of it. The leader of a refresh re-reads with it once granted the lead (another
    /// process may have rotated the session), and so do callers adopting a winner. The
    /// default is [`load`](Self::load): right for every store without a cache.
    async fn reload(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        self.load(ctx).await
    }

    /// The session's record when the store can answer without I/O (a record in memory, a
    /// cookie of the request): `Some(result)`; `None` when only [`load`](Self::load) can.
    /// Requests with a fresh token are served from here without an await. The default is
    /// `None`.
    fn peek(&self, ctx: Option<&Context>) -> Option<Result<Option<Arc<TokenRecord>>, Error>> {
        let _ = ctx;
        None
    }

    /// Where the records live: one for the process, one per session carried by the request,
    /// or one per session in a backend. Decides which requests share a refresh and whether
    /// refreshes may run in the background.
    fn scope(&self) -> StoreScope;

    /// A configuration mistake the store can tell before it is used (a cookie prefix whose
    /// browser rules the attributes break, a missing key…): `ClientBuilder::build` fails with
    /// it. The default finds none.
    fn check(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A shared store is a store: `builder.store(Arc::clone(&store))` lets several clients use one.
#[async_trait]
impl<S: TokenStore + ?Sized> TokenStore for Arc<S> {
    async fn load(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        (**self).load(ctx).await
    }

    async fn save(
        &self,
        ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        (**self).save(ctx, record, replaces).await
    }

    async fn clear(&self, ctx: Option<&Context>) -> Result<(), Error> {
        (**self).clear(ctx).await
    }

    async fn reload(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        (**self).reload(ctx).await
    }

    fn peek(&self, ctx: Option<&Context>) -> Option<Result<Option<Arc<TokenRecord>>, Error>> {
        (**self).peek(ctx)
    }

    fn scope(&self) -> StoreScope {
        (**self).scope()
    }

    fn check(&self) -> Result<(), Error> {
        (**self).check()
    }
}
