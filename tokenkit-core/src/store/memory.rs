//! One token for the whole process (provider mode).

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;

use super::{StoreScope, TokenStore};
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::token::TokenRecord;

/// Keeps one record in memory, shared by every request of a client regardless of context.
/// Reads take a shared lock only.
#[derive(Debug, Default)]
pub struct MemoryStore {
    record: RwLock<Option<Arc<TokenRecord>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current record, synchronously.
    pub fn get(&self) -> Option<Arc<TokenRecord>> {
        self.record.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn load(&self, _ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        Ok(self.get())
    }

    fn peek(&self, _ctx: Option<&Context>) -> Option<Result<Option<Arc<TokenRecord>>, Error>> {
        Some(Ok(self.get()))
    }

    async fn save(
        &self,
        _ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        let mut slot = self.record.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(expected) = replaces {
            let unchanged = slot
                .as_deref()
                .is_some_and(|current| current.same_tokens(expected));
            if !unchanged {
                return Err(Error::new(
                    ErrorKind::StoreConflict,
                    "the stored token changed since it was read",
                ));
            }
        }
        *slot = Some(record);
        Ok(())
    }

    async fn clear(&self, _ctx: Option<&Context>) -> Result<(), Error> {
        *self.record.write().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// One record for the whole store, so one refresh at a time, whatever the context.
    fn scope(&self) -> StoreScope {
        StoreScope::Process
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::AccessToken;
    use futures_executor::block_on;
    use std::time::UNIX_EPOCH;

    fn rec(token: &str) -> Arc<TokenRecord> {
        Arc::new(TokenRecord::new(AccessToken::new(token), UNIX_EPOCH))
    }

    #[test]
    fn save_load_clear() {
        let store = MemoryStore::new();
        assert!(block_on(store.load(None)).unwrap().is_none());
        block_on(store.save(None, rec("a"), None)).unwrap();
        assert_eq!(
            block_on(store.load(None))
                .unwrap()
                .unwrap()
                .access_token
                .as_ref()
                .unwrap()
                .secret(),
            "a"
        );
        block_on(store.clear(None)).unwrap();
        assert!(store.get().is_none());
    }

    #[test]
    fn compare_and_swap_refuses_stale_writes() {
        let store = MemoryStore::new();
        block_on(store.save(None, rec("a"), None)).unwrap();
        let old = rec("a");
        block_on(store.save(None, rec("b"), Some(&old))).unwrap();
        let err = block_on(store.save(None, rec("c"), Some(&old))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreConflict);
        assert_eq!(store.get().unwrap().access_token.as_ref().unwrap().secret(), "b");
        // Expecting a record in an empty store is a conflict too.
        block_on(store.clear(None)).unwrap();
        assert!(block_on(store.save(None, rec("d"), Some(&old))).is_err());
    }
}
