//! The per-request context, and how tokenkit finds it without it being passed by hand.
//!
//! A [`Context`] is a cheap handle (clones share state). [`run_with_context`] makes a context
//! current while a future is polled — the analogue of Node's `AsyncLocalStorage.run`, working
//! on any executor because it only sets a thread-local around each poll.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

/// The context of one incoming request (or any unit of work that owns a session).
#[derive(Clone, Default)]
pub struct Context {
    inner: Arc<ContextInner>,
}

#[derive(Default)]
struct ContextInner {
    extensions: Mutex<http::Extensions>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a typed value, returning the previous one of that type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.inner
            .extensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(value)
    }

    /// A clone of the stored value of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.inner
            .extensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get::<T>()
            .cloned()
    }

    /// Whether two handles refer to the same context.
    pub fn ptr_eq(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A stable identity for this context while it lives (used to key per-context state).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }
}

/// Finds the context of the work in progress.
pub trait ContextProvider: Send + Sync + fmt::Debug {
    /// The current context, if one is bound.
    fn current(&self) -> Option<Context>;
}

thread_local! {
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// The built-in provider: the context bound by [`run_with_context`] for the future being polled.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskContextProvider;

impl ContextProvider for TaskContextProvider {
    fn current(&self) -> Option<Context> {
        current_context()
    }
}

/// The context bound by the innermost [`run_with_context`] being polled on this thread.
pub fn current_context() -> Option<Context> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `future` with `ctx` as the current context: every poll of `future` (and of what it
/// awaits inline) sees `ctx` through [`current_context`]. Tasks spawned from inside do not
/// inherit it — wrap them too.
pub fn run_with_context<F: Future>(ctx: Context, future: F) -> WithContext<F> {
    WithContext { ctx, future }
}

pin_project_lite::pin_project! {
    /// The future returned by [`run_with_context`].
    pub struct WithContext<F> {
        ctx: Context,
        #[pin]
        future: F,
    }
}

impl<F> fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithContext")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// Restores the previous context even if the inner poll panics.
struct Restore(Option<Context>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let previous = CURRENT.with(|c| c.borrow_mut().replace(this.ctx.clone()));
        let _restore = Restore(previous);
        this.future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_current_only_inside_run() {
        assert!(current_context().is_none());
        let ctx = Context::new();
        ctx.insert(42u32);
        let seen = futures_executor::block_on(run_with_context(ctx.clone(), async {
            let inner = current_context().expect("bound");
            inner.get::<u32>()
        }));
        assert_eq!(seen, Some(42));
        assert!(current_context().is_none());
    }

    #[test]
    fn nested_contexts_restore_the_outer_one() {
        let outer = Context::new();
        let inner = Context::new();
        let (a, b, c) = futures_executor::block_on(run_with_context(outer.clone(), async {
            let a = current_context().unwrap();
            let b = run_with_context(inner.clone(), async { current_context().unwrap() }).await;
            let c = current_context().unwrap();
            (a, b, c)
        }));
        assert!(a.ptr_eq(&outer) && b.ptr_eq(&inner) && c.ptr_eq(&outer));
    }

    #[test]
    fn interleaved_tasks_see_their_own_context() {
        use futures_util::future::join_all;
        let contexts: Vec<Context> = (0..8).map(|_| Context::new()).collect();
        let futures = contexts.iter().enumerate().map(|(i, ctx)| {
            ctx.insert(i);
            run_with_context(ctx.clone(), async move {
                let mut seen = Vec::new();
                for _ in 0..3 {
                    seen.push(current_context().unwrap().get::<usize>().unwrap());
                    yield_now().await;
                }
                (i, seen)
            })
        });
        for (i, seen) in futures_executor::block_on(join_all(futures)) {
            assert_eq!(seen, vec![i; 3]);
        }
    }

    async fn yield_now() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }
}
