//! Lifecycle callbacks (both seeds' hooks) and the matching `tracing` events.
//!
//! Every moment is reported twice: to the user's callback, if set, and as a `tracing` event
//! with target `tokenkit`. Messages carry a token value only when `add_token_to_logs` is set
//! (default off); structured fields never do.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;

use crate::context::Context;
use crate::error::Error;
use crate::token::{AccessToken, TokenRecord};

/// The default number of token fetch failures between two `on_token_try_threshold` calls.
pub const DEFAULT_TOKEN_TRY_THRESHOLD: u64 = 10;

type MessageFn = Arc<dyn Fn(&str) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&Error) + Send + Sync>;
type CountFn = Arc<dyn Fn(u64) + Send + Sync>;
/// `on_login(bundle, response body, context)`.
pub type LoginFn = Arc<dyn Fn(&TokenRecord, &serde_json::Value, Option<&Context>) + Send + Sync>;
/// `on_error(error, context)` / `on_refresh_error(error, context)`.
pub type ContextErrorFn = Arc<dyn Fn(&Error, Option<&Context>) + Send + Sync>;
/// `on_refresh(bundle, context)`.
pub type RefreshFn = Arc<dyn Fn(&TokenRecord, Option<&Context>) + Send + Sync>;
/// `on_session_invalid(context)`.
pub type SessionFn = Arc<dyn Fn(Option<&Context>) + Send + Sync>;

/// The lifecycle callbacks of a client.
#[derive(Clone)]
pub struct Events {
    pub(crate) on_token_refresh: Option<MessageFn>,
    pub(crate) on_auth_fail: Option<MessageFn>,
    pub(crate) on_token_request_fail: Option<ErrorFn>,
    pub(crate) on_recovery_try: Option<MessageFn>,
    pub(crate) on_token_try_threshold: Option<CountFn>,
    pub(crate) on_recovery_abort: Option<MessageFn>,
    pub(crate) on_login: Option<LoginFn>,
    pub(crate) on_error: Option<ContextErrorFn>,
    pub(crate) on_refresh: Option<RefreshFn>,
    pub(crate) on_refresh_error: Option<ContextErrorFn>,
    pub(crate) on_session_invalid: Option<SessionFn>,
    pub(crate) token_try_threshold: u64,
    pub(crate) add_token_to_logs: bool,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            on_token_refresh: None,
            on_auth_fail: None,
            on_token_request_fail: None,
            on_recovery_try: None,
            on_token_try_threshold: None,
            on_recovery_abort: None,
            on_login: None,
            on_error: None,
            on_refresh: None,
            on_refresh_error: None,
            on_session_invalid: None,
            token_try_threshold: DEFAULT_TOKEN_TRY_THRESHOLD,
            add_token_to_logs: false,
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("token_try_threshold", &self.token_try_threshold)
            .field("add_token_to_logs", &self.add_token_to_logs)
            .finish_non_exhaustive()
    }
}

impl Events {
    fn token_suffix(&self, token: Option<&AccessToken>) -> String {
        match token {
            Some(token) if self.add_token_to_logs => format!(" (access_token: {})", token.secret()),
            _ => String::new(),
        }
    }

    pub(crate) fn token_refreshed(&self, record: &TokenRecord, now: SystemTime) {
        let expires_in = record
            .expires_at
            .and_then(|at| at.duration_since(now).ok())
            .map(|d| d.as_secs());
        let mut message = match expires_in {
            Some(secs) => format!("access token refreshed, expires in {secs}s"),
            None => "access token refreshed, no expiry".to_owned(),
        };
        message.push_str(&self.token_suffix(record.access_token.as_ref()));
        tracing::info!(target: "tokenkit", expires_in_secs = expires_in, "{message}");
        if let Some(cb) = &self.on_token_refresh {
            cb(&message);
        }
    }

    pub(crate) fn refreshed(&self, record: &TokenRecord, now: SystemTime, ctx: Option<&Context>) {
        self.token_refreshed(record, now);
        if let Some(cb) = &self.on_refresh {
            cb(record, ctx);
        }
    }

    pub(crate) fn logged_in(&self, record: &TokenRecord, body: &serde_json::Value, ctx: Option<&Context>) {
        tracing::info!(target: "tokenkit", "logged in");
        if let Some(cb) = &self.on_login {
            cb(record, body, ctx);
        }
    }

    pub(crate) fn login_failed(&self, error: &Error, ctx: Option<&Context>) {
        tracing::warn!(target: "tokenkit", error = %error, "login failed");
        if let Some(cb) = &self.on_error {
            cb(error, ctx);
        }
    }

    pub(crate) fn session_invalid(&self, ctx: Option<&Context>) {
        tracing::warn!(target: "tokenkit", "session invalid: the refresh token was rejected; session cleared");
        if let Some(cb) = &self.on_session_invalid {
            cb(ctx);
        }
    }

    pub(crate) fn token_request_failed(&self, error: &Error, failures: u64, ctx: Option<&Context>) {
        tracing::warn!(target: "tokenkit", failures, error = %error, "token request failed");
        if let Some(cb) = &self.on_token_request_fail {
            cb(error);
        }
        if let Some(cb) = &self.on_refresh_error {
            cb(error, ctx);
        }
        let threshold = self.token_try_threshold;
        if threshold > 0 && failures % threshold == 0 {
            tracing::warn!(target: "tokenkit", failures, "token request failure threshold reached");
            if let Some(cb) = &self.on_token_try_threshold {
                cb(failures);
            }
        }
    }

    pub(crate) fn auth_failed(&self, status: StatusCode, token: Option<&AccessToken>) {
        let message = format!(
            "request rejected with HTTP {}{}",
            status.as_u16(),
            self.token_suffix(token)
        );
        tracing::warn!(target: "tokenkit", status = status.as_u16(), "{message}");
        if let Some(cb) = &self.on_auth_fail {
            cb(&message);
        }
    }

    pub(crate) fn recovery_try(&self, attempt: u32, max: u32, token: Option<&AccessToken>) {
        let message = format!("recovery attempt {attempt} of {max}{}", self.token_suffix(token));
        tracing::info!(target: "tokenkit", attempt, max, "{message}");
        if let Some(cb) = &self.on_recovery_try {
            cb(&message);
        }
    }

    pub(crate) fn recovery_aborted(&self, attempts: u32) {
        let message = format!("recovery aborted after {attempts} attempts");
        tracing::error!(target: "tokenkit", attempts, "{message}");
        if let Some(cb) = &self.on_recovery_abort {
            cb(&message);
        }
    }
}
