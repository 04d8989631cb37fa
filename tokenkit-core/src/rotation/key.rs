//! Which session a refresh belongs to.

use std::fmt;
use std::sync::Arc;

use crate::context::Context;
use crate::store::StoreScope;
use crate::token::{RefreshToken, TokenRecord};

/// Names one session's rotation: requests with equal keys share one refresh, one grace
/// window and one proactive cooldown; different keys never share anything.
///
/// A key is typed, not hashed: two sessions can never collide. Its `Debug` never shows the
/// refresh token it may hold.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    session: Session,
    /// The per-request refresh data (`AuthOverride` data), as JSON: refreshes asked with
    /// different data never share a flight.
    variant: Option<Arc<str>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Session {
    Process,
    RefreshToken(RefreshToken),
    Context(u64),
}

/// What a [`SessionKey`] names, for a coordinator that maps keys onto its own namespace (a
/// distributed one hashes the refresh token; it never stores it as a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionKind<'a> {
    /// The one process-wide session of a store of [`StoreScope::Process`].
    Process,
    /// The session holding this refresh token.
    RefreshToken(&'a RefreshToken),
    /// A session without a refresh token, known only by its request context (never shared
    /// across processes).
    Context(u64),
}

impl SessionKey {
    /// The one process-wide session.
    pub fn process() -> Self {
        Self {
            session: Session::Process,
            variant: None,
        }
    }

    /// The session holding `token`.
    pub fn refresh_token(token: RefreshToken) -> Self {
        Self {
            session: Session::RefreshToken(token),
            variant: None,
        }
    }

    /// A session known only by its request context.
    pub fn context(id: u64) -> Self {
        Self {
            session: Session::Context(id),
            variant: None,
        }
    }

    /// The same session, refreshed with per-request `data` (a separate flight).
    pub fn with_variant(mut self, data: impl Into<Arc<str>>) -> Self {
        self.variant = Some(data.into());
        self
    }

    /// What the key names.
    pub fn kind(&self) -> SessionKind<'_> {
        match &self.session {
            Session::Process => SessionKind::Process,
            Session::RefreshToken(token) => SessionKind::RefreshToken(token),
            Session::Context(id) => SessionKind::Context(*id),
        }
    }

    /// The per-request refresh data, if any.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The key of the session a request works on: the store's scope decides. A process-wide
    /// store has one session; a per-session store keys by the record's refresh token (so
    /// every request presenting it, whatever its context, shares one rotation), else by the
    /// context.
    pub(crate) fn for_request(
        scope: StoreScope,
        ctx: Option<&Context>,
        record: Option<&TokenRecord>,
        data: Option<&serde_json::Value>,
    ) -> Self {
        let key = match (scope, record.and_then(|r| r.refresh_token.as_ref()), ctx) {
            (StoreScope::Process, _, _) => Self::process(),
            (_, Some(token), _) => Self::refresh_token(token.clone()),
            (_, None, Some(ctx)) => Self::context(ctx.id()),
            (_, None, None) => Self::process(),
        };
        match data {
            Some(data) => key.with_variant(data.to_string()),
            None => key,
        }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SessionKey");
        match &self.session {
            Session::Process => d.field("session", &"process"),
            Session::RefreshToken(_) => d.field("session", &"refresh token [redacted]"),
            Session::Context(id) => d.field("context", id),
        };
        d.field("variant", &self.variant.is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::AccessToken;
    use std::time::UNIX_EPOCH;

    #[test]
    fn the_scope_decides_the_key() {
        let with_refresh = TokenRecord::new(AccessToken::new("a"), UNIX_EPOCH)
            .with_refresh_token(RefreshToken::new("r-secret"));
        let without = TokenRecord::new(AccessToken::new("a"), UNIX_EPOCH);
        let (c1, c2) = (Context::new(), Context::new());
        assert_ne!(c1.id(), c2.id());
        let k = |scope, ctx, rec| SessionKey::for_request(scope, ctx, rec, None);
        assert_eq!(
            k(StoreScope::Process, Some(&c1), Some(&with_refresh)),
            SessionKey::process()
        );
        // Same refresh token, different contexts: one session.
        assert_eq!(
            k(StoreScope::Request, Some(&c1), Some(&with_refresh)),
            k(StoreScope::Backend, Some(&c2), Some(&with_refresh))
        );
        assert_ne!(
            k(StoreScope::Request, Some(&c1), Some(&without)),
            k(StoreScope::Request, Some(&c2), Some(&without))
        );
        let data = serde_json::json!({"tenant": 1});
        let plain = k(StoreScope::Process, None, None);
        let varied = SessionKey::for_request(StoreScope::Process, None, None, Some(&data));
        assert_ne!(plain, varied);
        assert_eq!(varied.variant(), Some(r#"{"tenant":1}"#));
    }

    #[test]
    fn debug_never_shows_the_refresh_token() {
        let key = SessionKey::refresh_token(RefreshToken::new("r-secret"));
        let text = format!("{key:?}");
        assert!(!text.contains("r-secret"), "{text}");
        assert!(matches!(key.kind(), SessionKind::RefreshToken(t) if t.secret() == "r-secret"));
    }
}
