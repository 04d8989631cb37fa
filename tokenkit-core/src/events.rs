//! Lifecycle events: one typed [`Event`] per moment, reported to the user's handlers, to
//! `tracing` (target `tokenkit_core::events`) and, with the `metrics` feature, to the
//! `metrics` facade.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::context::Context;
use crate::error::Error;
use crate::source::FetchReason;
use crate::token::TokenRecord;

/// A moment in the life of a client's tokens, reported to the handlers registered with
/// [`ClientBuilder::on_event`](crate::ClientBuilder::on_event).
///
/// Each moment is reported once, as one variant. The data borrows from the client: copy what
/// you keep. Token values are reachable only through the [`TokenRecord`]s, whose `Debug`
/// redacts them, so logging an event with `{:?}` never prints a secret.
///
/// ```
/// use tokenkit_core::Event;
///
/// fn on_event(event: &Event<'_>) {
///     match event {
///         Event::Refreshed { reason, .. } => println!("new token ({reason:?})"),
///         Event::SessionInvalid { .. } => println!("signed out by the server"),
///         other => println!("{other}"),
///     }
/// }
/// # on_event(&Event::RecoveryAborted { attempts: 5, status: http::StatusCode::UNAUTHORIZED });
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// [`Client::login`](crate::Client::login) succeeded.
    LoggedIn {
        /// The tokens now stored in the session.
        tokens: &'a TokenRecord,
        /// The login response body.
        response: &'a serde_json::Value,
        /// The session's context.
        context: Option<&'a Context>,
    },
    /// [`Client::login`](crate::Client::login) failed.
    LoginFailed {
        /// Why.
        error: &'a Error,
        /// The session's context.
        context: Option<&'a Context>,
    },
    /// A new token was obtained and stored (a first fetch, a proactive or forced refresh, or a
    /// refresh after a rejection).
    Refreshed {
        /// The tokens now stored.
        tokens: &'a TokenRecord,
        /// Why the token was fetched.
        reason: FetchReason,
        /// The access token's remaining lifetime, when it has an expiry.
        expires_in: Option<Duration>,
        /// The session's context.
        context: Option<&'a Context>,
    },
    /// A token fetch failed.
    RefreshFailed {
        /// Why.
        error: &'a Error,
        /// Why the token was being fetched.
        reason: FetchReason,
        /// Failures in a row, this one included (reset by a successful fetch).
        consecutive_failures: u64,
        /// The session's context.
        context: Option<&'a Context>,
    },
    /// The consecutive failures reached a multiple of the try threshold
    /// ([`ClientBuilder::token_try_threshold`](crate::ClientBuilder::token_try_threshold)).
    FailureThreshold {
        /// Failures in a row.
        consecutive_failures: u64,
    },
    /// The server refused the session's refresh token: the session was cleared.
    SessionInvalid {
        /// The session's context.
        context: Option<&'a Context>,
    },
    /// A response rejected the token (its status is one the policy recovers from).
    Rejected {
        /// The request's method.
        method: &'a Method,
        /// The rejecting status.
        status: StatusCode,
    },
    /// A rejected request is replayed with a new token.
    RecoveryTry {
        /// This replay's number, from 1.
        attempt: u32,
        /// The most replays a request gets.
        max: u32,
    },
    /// A request's recoveries are exhausted: it fails with the rejection.
    RecoveryAborted {
        /// Replays made before giving up.
        attempts: u32,
        /// The last rejecting status.
        status: StatusCode,
    },
}

impl Event<'_> {
    /// A stable, lower-case name of the variant (`"refreshed"`, `"session_invalid"`, …), as
    /// used in log fields and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Event::LoggedIn { .. } => "logged_in",
            Event::LoginFailed { .. } => "login_failed",
            Event::Refreshed { .. } => "refreshed",
            Event::RefreshFailed { .. } => "refresh_failed",
            Event::FailureThreshold { .. } => "failure_threshold",
            Event::SessionInvalid { .. } => "session_invalid",
            Event::Rejected { .. } => "rejected",
            Event::RecoveryTry { .. } => "recovery_try",
            Event::RecoveryAborted { .. } => "recovery_aborted",
        }
    }
}

/// The variant and its non-secret data: the login response body (which holds the tokens) is
/// left out, and token records print redacted.
impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct(self.name());
        match self {
            Event::LoggedIn { tokens, context, .. } => s.field("tokens", tokens).field("context", context),
            Event::LoginFailed { error, context } => s.field("error", error).field("context", context),
            Event::Refreshed {
                tokens,
                reason,
                expires_in,
                context,
            } => s
                .field("tokens", tokens)
                .field("reason", reason)
                .field("expires_in", expires_in)
                .field("context", context),
            Event::RefreshFailed {
                error,
                reason,
                consecutive_failures,
                context,
            } => s
                .field("error", error)
                .field("reason", reason)
                .field("consecutive_failures", consecutive_failures)
                .field("context", context),
            Event::FailureThreshold { consecutive_failures } => {
                s.field("consecutive_failures", consecutive_failures)
            }
            Event::SessionInvalid { context } => s.field("context", context),
            Event::Rejected { method, status } => s.field("method", method).field("status", status),
            Event::RecoveryTry { attempt, max } => s.field("attempt", attempt).field("max", max),
            Event::RecoveryAborted { attempts, status } => {
                s.field("attempts", attempts).field("status", status)
            }
        };
        s.finish_non_exhaustive()
    }
}

/// A one-line description without any token value.
impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::LoggedIn { .. } => f.write_str("logged in"),
            Event::LoginFailed { error, .. } => write!(f, "login failed: {error}"),
            Event::Refreshed {
                reason, expires_in, ..
            } => match expires_in {
                Some(left) => write!(
                    f,
                    "access token obtained ({}), expires in {}s",
                    reason.as_str(),
                    left.as_secs()
                ),
                None => write!(f, "access token obtained ({}), no expiry", reason.as_str()),
            },
            Event::RefreshFailed {
                error,
                consecutive_failures,
                ..
            } => write!(
                f,
                "token request failed ({consecutive_failures} in a row): {error}"
            ),
            Event::FailureThreshold { consecutive_failures } => {
                write!(f, "{consecutive_failures} token requests failed in a row")
            }
            Event::SessionInvalid { .. } => {
                f.write_str("session invalid: the refresh token was refused; session cleared")
            }
            Event::Rejected { method, status } => {
                write!(f, "{method} rejected with HTTP {}", status.as_u16())
            }
            Event::RecoveryTry { attempt, max } => write!(f, "recovery attempt {attempt} of {max}"),
            Event::RecoveryAborted { attempts, status } => write!(
                f,
                "recovery aborted after {attempts} attempts (HTTP {})",
                status.as_u16()
            ),
        }
    }
}

pub(crate) type Handler = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Where a client's events go: the handlers, `tracing` and `metrics`.
#[derive(Clone)]
pub(crate) struct Events {
    handlers: Vec<Handler>,
    pub(crate) token_try_threshold: u64,
    pub(crate) add_token_to_logs: bool,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            handlers: Vec::new(),
            token_try_threshold: crate::defaults::TOKEN_TRY_THRESHOLD,
            add_token_to_logs: false,
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("handlers", &self.handlers.len())
            .field("token_try_threshold", &self.token_try_threshold)
            .field("add_token_to_logs", &self.add_token_to_logs)
            .finish()
    }
}

impl Events {
    pub(crate) fn add(&mut self, handler: Handler) {
        self.handlers.push(handler);
    }

    /// Reports `event` to `tracing`, `metrics` and the handlers. A panicking handler is
    /// contained and logged: it never breaks the request or the refresh that reported.
    pub(crate) fn emit(&self, event: Event<'_>) {
        self.trace(&event);
        crate::metrics::event(&event);
        for handler in &self.handlers {
            if catch_unwind(AssertUnwindSafe(|| handler(&event))).is_err() {
                tracing::error!(
                    event = event.name(),
                    "an event handler panicked; the panic was contained"
                );
            }
        }
        if let Event::RefreshFailed {
            consecutive_failures, ..
        } = event
        {
            let threshold = self.token_try_threshold;
            if threshold > 0 && consecutive_failures % threshold == 0 {
                self.emit(Event::FailureThreshold { consecutive_failures });
            }
        }
    }

    /// The access token for log messages: only with `add_token_to_logs`.
    fn token_suffix(&self, tokens: &TokenRecord) -> String {
        match &tokens.access_token {
            Some(token) if self.add_token_to_logs => format!(" (access_token: {})", token.secret()),
            _ => String::new(),
        }
    }

    /// One `tracing` event per moment. A rejection that is about to be recovered is routine
    /// (DEBUG); what a user must look at is a WARN.
    fn trace(&self, event: &Event<'_>) {
        let name = event.name();
        match event {
            Event::LoggedIn { tokens, .. } => {
                tracing::info!(event = name, "{event}{}", self.token_suffix(tokens))
            }
            Event::Refreshed {
                tokens,
                reason,
                expires_in,
                ..
            } => tracing::info!(
                event = name,
                reason = reason.as_str(),
                expires_in_secs = expires_in.map(|d| d.as_secs()),
                "{event}{}",
                self.token_suffix(tokens)
            ),
            Event::RefreshFailed {
                reason,
                consecutive_failures,
                ..
            } => tracing::warn!(
                event = name,
                reason = reason.as_str(),
                consecutive_failures,
                "{event}"
            ),
            Event::LoginFailed { .. } | Event::FailureThreshold { .. } | Event::RecoveryAborted { .. } => {
                tracing::warn!(event = name, "{event}")
            }
            Event::SessionInvalid { .. } => tracing::info!(event = name, "{event}"),
            Event::Rejected { status, .. } => {
                tracing::debug!(event = name, status = status.as_u16(), "{event}")
            }
            Event::RecoveryTry { attempt, .. } => tracing::debug!(event = name, attempt, "{event}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_panicking_handler_is_contained_and_the_others_still_run() {
        let seen = Arc::new(AtomicU64::new(0));
        let mut events = Events::default();
        events.add(Arc::new(|_: &Event<'_>| panic!("handler bug")));
        let counter = Arc::clone(&seen);
        events.add(Arc::new(move |_: &Event<'_>| {
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        events.emit(Event::RecoveryTry { attempt: 1, max: 5 });
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_threshold_fires_at_each_multiple_only() {
        let thresholds = Arc::new(AtomicU64::new(0));
        let mut events = Events {
            token_try_threshold: 3,
            ..Events::default()
        };
        let seen = Arc::clone(&thresholds);
        events.add(Arc::new(move |event: &Event<'_>| {
            if let Event::FailureThreshold { .. } = event {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let error = Error::config("x");
        for failures in 1..=7 {
            events.emit(Event::RefreshFailed {
                error: &error,
                reason: FetchReason::Needed,
                consecutive_failures: failures,
                context: None,
            });
        }
        assert_eq!(thresholds.load(Ordering::Relaxed), 2, "at 3 and 6");
    }

    #[test]
    fn display_carries_no_token() {
        let record = TokenRecord::new(
            crate::token::AccessToken::new("secret-access"),
            std::time::UNIX_EPOCH,
        );
        let body = serde_json::json!({"access_token": "secret-access"});
        let event = Event::LoggedIn {
            tokens: &record,
            response: &body,
            context: None,
        };
        assert!(!format!("{event} {event:?}").contains("secret-access"));
    }
}
