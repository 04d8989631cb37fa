//! The rotation state machine, sans I/O: every rotation decision is made here, by
//! [`decide`], from what is known about one session (its [`SessionState`]), the record at
//! hand, the instant, the policy and an [`Event`]. No async, no clock reads, no locks — the
//! manager supplies the facts and executes the [`Decision`].
//!
//! Per session: no token → fresh → stale (proactive window) → expired, plus refreshing (a
//! flight is in progress), rotated (a successor is kept for the grace window), cooling down
//! (a proactive refresh just failed) and invalid (the session was cleared).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{AuthFailure, Error};
use crate::policy::{Freshness, RefreshPolicy};
use crate::source::FetchReason;
use crate::token::{AccessToken, TokenRecord};

/// Everything rotation knows about one session.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionState {
    /// A refresh of this session is in flight in this process.
    pub(crate) refreshing: bool,
    /// The record that replaced this session's record, kept for the grace window.
    pub(crate) successor: Option<Successor>,
    /// When a proactive refresh of this session last failed.
    pub(crate) proactive_failed_at: Option<SystemTime>,
}

/// The record a rotation produced, kept so late requests presenting the rotated-away refresh
/// token get it instead of rotating again.
#[derive(Debug, Clone)]
pub(crate) struct Successor {
    pub(crate) record: Arc<TokenRecord>,
    /// When the new tokens arrived: the window runs from here.
    pub(crate) arrived_at: SystemTime,
    pub(crate) window: Duration,
}

impl Successor {
    /// The end of the window; `None` when the clock cannot represent it (never ends).
    pub(crate) fn until(&self) -> Option<SystemTime> {
        self.arrived_at.checked_add(self.window)
    }

    /// Whether the window is still open at `now`.
    pub(crate) fn is_open(&self, now: SystemTime) -> bool {
        self.until().is_none_or(|until| now < until)
    }
}

impl SessionState {
    /// Whether the state holds nothing worth keeping at `now` (it can be dropped).
    pub(crate) fn is_idle(&self, now: SystemTime, proactive_retry_delay: Duration) -> bool {
        !self.refreshing
            && self.successor.as_ref().is_none_or(|s| !s.is_open(now))
            && !self.cooling_down(now, proactive_retry_delay)
    }

    /// Whether a proactive refresh failed less than `delay` ago.
    pub(crate) fn cooling_down(&self, now: SystemTime, delay: Duration) -> bool {
        self.proactive_failed_at
            .is_some_and(|at| now.duration_since(at).unwrap_or(Duration::ZERO) < delay)
    }

    /// The successor to hand out at `now`: within its window, still usable (a token shorter
    /// lived than the window may have expired), and not the token just rejected.
    fn usable_successor(
        &self,
        now: SystemTime,
        policy: &dyn RefreshPolicy,
        rejected: Option<&AccessToken>,
    ) -> Option<Arc<TokenRecord>> {
        let successor = self.successor.as_ref().filter(|s| s.is_open(now))?;
        servable(&successor.record, now, policy, rejected).then(|| Arc::clone(&successor.record))
    }
}

/// Whether a successor may be handed to a request: still usable (a token shorter lived than
/// the window may have expired) and not the very token the server just rejected.
fn servable(
    record: &TokenRecord,
    now: SystemTime,
    policy: &dyn RefreshPolicy,
    rejected: Option<&AccessToken>,
) -> bool {
    let rejected_already = rejected.is_some() && record.access_token.as_ref() == rejected;
    policy.freshness(Some(record), now).is_usable() && !rejected_already
}

/// What happened, as far as rotation is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event<'a> {
    /// A request needs a token; its session holds `record`. `background`: a refresh may run
    /// detached from the request (a Spawn hook exists and the store's scope allows it).
    TokenNeeded {
        record: Option<&'a TokenRecord>,
        background: bool,
    },
    /// The server rejected `rejected`; the session now holds `current`; `recoveries_done`
    /// replays were already made for this request.
    Rejected {
        rejected: &'a TokenRecord,
        current: Option<&'a TokenRecord>,
        recoveries_done: u32,
    },
    /// The application asked for a refresh now.
    RefreshForced,
    /// The leader was granted the lead and re-read the store (`stored`); `published` is the
    /// successor the coordinator holds for the session within its window, if any (another
    /// leader finished first).
    LeadGranted {
        reason: FetchReason,
        stored: Option<&'a TokenRecord>,
        rejected: Option<&'a AccessToken>,
        published: Option<&'a Arc<TokenRecord>>,
    },
    /// The source returned `fetched` to replace `stored`.
    Fetched {
        stored: Option<&'a TokenRecord>,
        fetched: &'a TokenRecord,
    },
    /// The source failed, timed out or panicked (`error` says which). `winner`: after a
    /// refused refresh token, what the store holds now if another writer replaced the record
    /// meanwhile (it rotated the token first: a lost race, not a dead session).
    FetchFailed {
        reason: FetchReason,
        error: &'a Error,
        winner: Option<&'a TokenRecord>,
    },
    /// The compare-and-swap commit found `stored` instead of what the leader read: another
    /// writer rotated the session first.
    Conflict { stored: Option<&'a TokenRecord> },
    /// The refresh a request waited for failed with `error`; it held `old` before.
    RefreshFailed {
        reason: FetchReason,
        old: Option<&'a TokenRecord>,
        error: &'a Error,
    },
}

/// What to do.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// Use the session's token as it is.
    Use,
    /// Use it, and start a refresh in the background (lead it, detached).
    UseAndRefreshInBackground,
    /// Lead a new refresh for `reason` and wait for it.
    Lead { reason: FetchReason },
    /// Wait for the refresh already in flight.
    Join { reason: FetchReason },
    /// The session was rotated moments ago: use its successor, no refresh.
    ServeSuccessor(Arc<TokenRecord>),
    /// A newer token than the rejected one is current: replay with it, no refresh.
    RetryWithCurrent,
    /// `max_recovery_tries` recoveries were made: give up.
    AbortRecovery,
    /// The leader fetches from the source.
    Fetch,
    /// The leader finds the store already holds the answer (another flight stored it).
    UseStored,
    /// Store the fetched record; `keep_old_refresh_token` when the response carried none.
    Commit { keep_old_refresh_token: bool },
    /// A failed proactive refresh: keep using the still-valid token.
    KeepOldToken,
    /// Fail with the refresh's error; the session is kept.
    Fail,
    /// The session's credentials are refused and nothing can replace them: clear it, fail
    /// with [`AuthFailure::SessionInvalid`].
    ClearSessionAndFail,
    /// Another writer won the race: adopt its stored record instead of failing.
    AdoptWinner,
}

impl PartialEq for Decision {
    /// Successors compare by their tokens; everything else structurally.
    fn eq(&self, other: &Self) -> bool {
        use Decision::*;
        match (self, other) {
            (ServeSuccessor(a), ServeSuccessor(b)) => a.same_tokens(b),
            (Lead { reason: a }, Lead { reason: b }) | (Join { reason: a }, Join { reason: b }) => a == b,
            (
                Commit {
                    keep_old_refresh_token: a,
                },
                Commit {
                    keep_old_refresh_token: b,
                },
            ) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// Decides what to do on `event`, for the session in `state` at `now`.
pub(crate) fn decide(
    state: &SessionState,
    now: SystemTime,
    policy: &dyn RefreshPolicy,
    event: Event<'_>,
) -> Decision {
    match event {
        Event::TokenNeeded { record, background } => {
            let freshness = policy.freshness(record, now);
            if freshness == Freshness::Fresh {
                return Decision::Use;
            }
            // A late request presenting the rotated-away refresh token: its successor, never a
            // second rotation.
            if let Some(successor) = state.usable_successor(now, policy, None) {
                return Decision::ServeSuccessor(successor);
            }
            match freshness {
                Freshness::Stale if state.refreshing => Decision::Use,
                Freshness::Stale if state.cooling_down(now, policy.proactive_retry_delay()) => Decision::Use,
                Freshness::Stale if background => Decision::UseAndRefreshInBackground,
                Freshness::Stale => Decision::Lead {
                    reason: FetchReason::Proactive,
                },
                _ if state.refreshing => Decision::Join {
                    reason: FetchReason::Needed,
                },
                _ => Decision::Lead {
                    reason: FetchReason::Needed,
                },
            }
        }
        Event::Rejected {
            rejected,
            current,
            recoveries_done,
        } => {
            if recoveries_done >= policy.max_recovery_tries() {
                return Decision::AbortRecovery;
            }
            let rejected_is_current = current.is_none_or(|c| c.access_token == rejected.access_token);
            if !rejected_is_current {
                return Decision::RetryWithCurrent;
            }
            let rejected_token = rejected.access_token.as_ref();
            if let Some(successor) = state.usable_successor(now, policy, rejected_token) {
                return Decision::ServeSuccessor(successor);
            }
            let reason = FetchReason::Rejected;
            if state.refreshing {
                Decision::Join { reason }
            } else {
                Decision::Lead { reason }
            }
        }
        Event::RefreshForced => {
            let reason = FetchReason::Forced;
            if state.refreshing {
                Decision::Join { reason }
            } else {
                Decision::Lead { reason }
            }
        }
        Event::LeadGranted {
            reason,
            stored,
            rejected,
            published,
        } => {
            if reason == FetchReason::Forced {
                return Decision::Fetch;
            }
            if let Some(successor) = published.filter(|s| servable(s, now, policy, rejected)) {
                return Decision::ServeSuccessor(Arc::clone(successor));
            }
            let stored_is_rejected = match (rejected, stored.and_then(|s| s.access_token.as_ref())) {
                (Some(rejected), Some(stored)) => rejected == stored,
                _ => false,
            };
            let fetch = match policy.freshness(stored, now) {
                Freshness::Missing | Freshness::Expired => true,
                Freshness::Stale => reason != FetchReason::Needed || stored_is_rejected,
                Freshness::Fresh => reason == FetchReason::Rejected && stored_is_rejected,
            };
            if fetch {
                Decision::Fetch
            } else {
                Decision::UseStored
            }
        }
        Event::Fetched { stored, fetched } => Decision::Commit {
            keep_old_refresh_token: fetched.refresh_token.is_none()
                && stored.is_some_and(|s| s.refresh_token.is_some()),
        },
        Event::FetchFailed {
            reason,
            error,
            winner,
        } => match error.auth_failure() {
            Some(AuthFailure::SessionInvalid)
                if winner.is_some_and(|w| policy.freshness(Some(w), now).is_usable()) =>
            {
                Decision::AdoptWinner
            }
            Some(AuthFailure::SessionInvalid) => Decision::ClearSessionAndFail,
            // The server refused the token and there is no refresh token to replace it (a
            // forged or stale cookie, say): the session is over.
            Some(AuthFailure::NoSession) if reason == FetchReason::Rejected => Decision::ClearSessionAndFail,
            _ => Decision::Fail,
        },
        Event::Conflict { stored } => match stored {
            Some(winner) if winner.access_token.is_some() => Decision::AdoptWinner,
            _ => Decision::Fail,
        },
        Event::RefreshFailed { reason, old, error } => {
            let still_valid = policy.freshness(old, now).is_usable();
            let session_kept = error.auth_failure() != Some(AuthFailure::SessionInvalid);
            if reason == FetchReason::Proactive && still_valid && session_kept {
                Decision::KeepOldToken
            } else {
                Decision::Fail
            }
        }
    }
}

/// Whether a fetch failure counts towards the try threshold and fires the failure callbacks.
/// "Not logged in" is a state, not a failure.
pub(crate) fn counts_as_failure(error: &Error) -> bool {
    error.auth_failure() != Some(AuthFailure::NoSession)
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
