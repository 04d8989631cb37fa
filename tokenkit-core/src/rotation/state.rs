//! The rotation state machine, sans I/O: given what is known (the record's freshness, whether a
//! refresh is in flight, what the server said), decide what to do. No async, no clock reads, no
//! locks — the manager supplies the facts and executes the decisions.
//!
//! Per session the states are: no token → fresh → stale (proactive window) → expired, plus
//! refreshing (a flight is in progress) and invalid (the session was cleared).

use crate::error::{AuthFailure, Error};
use crate::policy::Freshness;
use crate::source::FetchReason;

/// What to do when a request needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDecision {
    /// Use the current token as is.
    Use,
    /// Use the current token and start a refresh in the background.
    UseAndRefreshInBackground,
    /// Start a refresh and wait for it. `proactive`: the current token is still valid and may
    /// be used if the refresh fails.
    StartRefreshAndWait {
        /// Whether the current token is still usable.
        proactive: bool,
    },
    /// Wait for the refresh already in flight.
    JoinRefresh {
        /// Whether the current token is still usable.
        proactive: bool,
    },
}

impl TokenDecision {
    /// The fetch reason of a decision that refreshes.
    pub fn reason(self) -> Option<FetchReason> {
        match self {
            TokenDecision::Use => None,
            TokenDecision::UseAndRefreshInBackground => Some(FetchReason::Proactive),
            TokenDecision::StartRefreshAndWait { proactive } | TokenDecision::JoinRefresh { proactive } => {
                Some(if proactive {
                    FetchReason::Proactive
                } else {
                    FetchReason::Needed
                })
            }
        }
    }
}

/// Decides how a request obtains its token.
///
/// - fresh → use it;
/// - stale with a refresh in flight → use it (the flight will replace it);
/// - stale, background work possible → use it and refresh in the background;
/// - stale, no background work → refresh inline, falling back to the valid token on failure;
/// - missing or expired → wait for a refresh (joining the one in flight, if any).
pub fn on_token_needed(freshness: Freshness, refresh_in_flight: bool, can_spawn: bool) -> TokenDecision {
    match freshness {
        Freshness::Fresh => TokenDecision::Use,
        Freshness::Stale if refresh_in_flight => TokenDecision::Use,
        Freshness::Stale if can_spawn => TokenDecision::UseAndRefreshInBackground,
        Freshness::Stale => TokenDecision::StartRefreshAndWait { proactive: true },
        Freshness::Missing | Freshness::Expired if refresh_in_flight => {
            TokenDecision::JoinRefresh { proactive: false }
        }
        Freshness::Missing | Freshness::Expired => TokenDecision::StartRefreshAndWait { proactive: false },
    }
}

/// Inside a refresh flight, just before calling the token source: is the fetch still needed?
/// (Double-check: another flight may have stored a newer token since the request looked.)
///
/// `current_is_rejected`: the stored access token is the one the server rejected.
pub fn flight_should_fetch(reason: FetchReason, current: Freshness, current_is_rejected: bool) -> bool {
    if reason == FetchReason::Forced {
        return true;
    }
    match current {
        Freshness::Missing | Freshness::Expired => true,
        Freshness::Stale => reason != FetchReason::Needed || current_is_rejected,
        Freshness::Fresh => reason == FetchReason::Rejected && current_is_rejected,
    }
}

/// What a flight does with its session after the source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// The session's credentials were refused: clear it (re-login needed).
    ClearSession,
    /// A transient or unknown failure: keep the session for a later attempt.
    KeepSession,
}

/// Classifies a token source failure.
pub fn on_fetch_failed(error: &Error) -> FetchFailure {
    match error.auth_failure() {
        Some(AuthFailure::SessionInvalid) => FetchFailure::ClearSession,
        _ => FetchFailure::KeepSession,
    }
}

/// Whether a fetch failure counts towards the try threshold and fires the failure callbacks.
/// "Not logged in" is a state, not a failure.
pub fn counts_as_failure(error: &Error) -> bool {
    error.auth_failure() != Some(AuthFailure::NoSession)
}

/// What a waiting request does after the refresh it waited for failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailedRefresh {
    /// Keep using the previous token: the refresh was proactive and the token is still valid.
    UseOld,
    /// Fail the request with the refresh error.
    Fail,
}

/// A failed proactive refresh keeps a still-valid token; a failed mandatory refresh, or one
/// that invalidated the session, fails the request.
pub fn after_failed_refresh(proactive: bool, old_now: Freshness, error: &Error) -> AfterFailedRefresh {
    let still_valid = matches!(old_now, Freshness::Fresh | Freshness::Stale);
    if proactive && still_valid && on_fetch_failed(error) == FetchFailure::KeepSession {
        AfterFailedRefresh::UseOld
    } else {
        AfterFailedRefresh::Fail
    }
}

/// What to do when the server rejects a request's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionDecision {
    /// A newer token is already current: replay with it, no refresh.
    RetryWithCurrent,
    /// The rejected token is still current: refresh (single flight), then replay.
    RefreshAndRetry,
    /// `max_recovery_tries` recoveries were already made: give up.
    Abort,
}

/// Compare-and-refresh with a bounded number of recoveries per request.
pub fn on_rejected(
    rejected_is_current: bool,
    recoveries_done: u32,
    max_recovery_tries: u32,
) -> RejectionDecision {
    if recoveries_done >= max_recovery_tries {
        RejectionDecision::Abort
    } else if rejected_is_current {
        RejectionDecision::RefreshAndRetry
    } else {
        RejectionDecision::RetryWithCurrent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use Freshness::*;

    #[test]
    fn token_needed_decisions() {
        use TokenDecision::*;
        for spawn in [false, true] {
            for flight in [false, true] {
                assert_eq!(on_token_needed(Fresh, flight, spawn), Use);
            }
            assert_eq!(on_token_needed(Stale, true, spawn), Use);
            assert_eq!(
                on_token_needed(Missing, true, spawn),
                JoinRefresh { proactive: false }
            );
            assert_eq!(
                on_token_needed(Expired, true, spawn),
                JoinRefresh { proactive: false }
            );
            assert_eq!(
                on_token_needed(Missing, false, spawn),
                StartRefreshAndWait { proactive: false }
            );
            assert_eq!(
                on_token_needed(Expired, false, spawn),
                StartRefreshAndWait { proactive: false }
            );
        }
        assert_eq!(on_token_needed(Stale, false, true), UseAndRefreshInBackground);
        assert_eq!(
            on_token_needed(Stale, false, false),
            StartRefreshAndWait { proactive: true }
        );
        assert_eq!(Use.reason(), None);
        assert_eq!(UseAndRefreshInBackground.reason(), Some(FetchReason::Proactive));
        assert_eq!(
            JoinRefresh { proactive: false }.reason(),
            Some(FetchReason::Needed)
        );
    }

    #[test]
    fn flight_double_check() {
        use FetchReason::*;
        // Missing/expired: always fetch.
        for reason in [Needed, Proactive, Rejected] {
            assert!(flight_should_fetch(reason, Missing, false));
            assert!(flight_should_fetch(reason, Expired, false));
        }
        // Someone stored a fresh token meanwhile: no fetch, unless that very token was rejected.
        assert!(!flight_should_fetch(Needed, Fresh, false));
        assert!(!flight_should_fetch(Proactive, Fresh, false));
        assert!(!flight_should_fetch(Rejected, Fresh, false));
        assert!(flight_should_fetch(Rejected, Fresh, true));
        // Stale: a proactive flight fetches; a mandatory one is satisfied by a valid token.
        assert!(flight_should_fetch(Proactive, Stale, false));
        assert!(!flight_should_fetch(Needed, Stale, false));
        assert!(flight_should_fetch(Rejected, Stale, true));
        // A forced refresh always fetches.
        assert!(flight_should_fetch(Forced, Fresh, false));
    }

    #[test]
    fn failed_refreshes() {
        let transient = Error::new(ErrorKind::Auth(AuthFailure::TokenUnavailable), "down");
        let invalid = Error::new(
            ErrorKind::Auth(AuthFailure::SessionInvalid),
            "refresh token rejected",
        );
        assert_eq!(on_fetch_failed(&transient), FetchFailure::KeepSession);
        assert_eq!(on_fetch_failed(&invalid), FetchFailure::ClearSession);
        assert_eq!(
            after_failed_refresh(true, Stale, &transient),
            AfterFailedRefresh::UseOld
        );
        assert_eq!(
            after_failed_refresh(true, Fresh, &transient),
            AfterFailedRefresh::UseOld
        );
        assert_eq!(
            after_failed_refresh(true, Expired, &transient),
            AfterFailedRefresh::Fail
        );
        assert_eq!(
            after_failed_refresh(false, Stale, &transient),
            AfterFailedRefresh::Fail
        );
        assert_eq!(
            after_failed_refresh(true, Stale, &invalid),
            AfterFailedRefresh::Fail
        );
    }

    #[test]
    fn rejections() {
        use RejectionDecision::*;
        assert_eq!(on_rejected(true, 0, 5), RefreshAndRetry);
        assert_eq!(on_rejected(false, 0, 5), RetryWithCurrent);
        assert_eq!(on_rejected(true, 4, 5), RefreshAndRetry);
        assert_eq!(on_rejected(true, 5, 5), Abort);
        assert_eq!(on_rejected(false, 5, 5), Abort);
        assert_eq!(on_rejected(true, 0, 0), Abort, "0 means no recovery");
    }
}

/// Generated event sequences run through a model driver that follows the decisions.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::error::ErrorKind;
    use crate::policy::{RefreshPolicy, StandardPolicy};
    use crate::token::{AccessToken, TokenRecord};
    use proptest::prelude::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[derive(Debug, Clone)]
    enum Event {
        Advance(u64),
        Request { can_spawn: bool },
        FlightSucceeds,
        FlightFails,
        ServerRevokesCurrent,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (1u64..400).prop_map(Event::Advance),
            any::<bool>().prop_map(|can_spawn| Event::Request { can_spawn }),
            Just(Event::FlightSucceeds),
            Just(Event::FlightFails),
            Just(Event::ServerRevokesCurrent),
        ]
    }

    struct Model {
        policy: StandardPolicy,
        now: SystemTime,
        record: Option<TokenRecord>,
        revoked: Option<String>,
        flights: u32,
        flight_reason: Option<FetchReason>,
        next_token: u32,
        waiters: Vec<bool>, // proactive flag of each request waiting on the flight
    }

    impl Model {
        fn freshness(&self) -> Freshness {
            self.policy.freshness(self.record.as_ref(), self.now)
        }

        fn use_token(&self) -> Result<(), TestCaseError> {
            // Invariant: a token handed to a request is never expired or missing.
            let f = self.freshness();
            prop_assert!(
                matches!(f, Freshness::Fresh | Freshness::Stale),
                "used a {f:?} token"
            );
            Ok(())
        }

        fn start_or_join(&mut self, reason: FetchReason) {
            if self.flights == 0 {
                self.flights += 1;
                self.flight_reason = Some(reason);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn decisions_keep_the_invariants(events in prop::collection::vec(event(), 1..80)) {
            let mut m = Model {
                policy: StandardPolicy::default().jitter(0.0),
                now: UNIX_EPOCH + Duration::from_secs(1_000_000),
                record: None,
                revoked: None,
                flights: 0,
                flight_reason: None,
                next_token: 0,
                waiters: Vec::new(),
            };
            for ev in events {
                match ev {
                    Event::Advance(secs) => m.now += Duration::from_secs(secs * 10),
                    Event::Request { can_spawn } => {
                        let decision = on_token_needed(m.freshness(), m.flights > 0, can_spawn);
                        match decision {
                            TokenDecision::Use => m.use_token()?,
                            TokenDecision::UseAndRefreshInBackground => {
                                // Invariant: never a second flight for the session.
                                prop_assert_eq!(m.flights, 0);
                                m.use_token()?;
                                m.start_or_join(FetchReason::Proactive);
                            }
                            TokenDecision::StartRefreshAndWait { proactive } => {
                                prop_assert_eq!(m.flights, 0, "start while a flight is in progress");
                                m.start_or_join(decision.reason().unwrap());
                                m.waiters.push(proactive);
                            }
                            TokenDecision::JoinRefresh { proactive } => {
                                prop_assert_eq!(m.flights, 1, "join without a flight");
                                m.waiters.push(proactive);
                            }
                        }
                    }
                    Event::FlightSucceeds if m.flights == 1 => {
                        let reason = m.flight_reason.take().unwrap();
                        let current_is_rejected = m.record.as_ref().and_then(|r| r.access_token.as_ref())
                            .is_some_and(|t| Some(t.secret()) == m.revoked.as_deref());
                        if flight_should_fetch(reason, m.freshness(), current_is_rejected) {
                            m.next_token += 1;
                            m.record = Some(
                                TokenRecord::new(AccessToken::new(format!("t{}", m.next_token)), m.now)
                                    .with_expires_in(Duration::from_secs(3600)).unwrap(),
                            );
                        }
                        m.flights = 0;
                        // Invariant: after a successful refresh, every waiter gets a usable token.
                        for _ in std::mem::take(&mut m.waiters) {
                            let f = m.policy.freshness(m.record.as_ref(), m.now);
                            prop_assert!(matches!(f, Freshness::Fresh | Freshness::Stale), "waiter got {f:?}");
                        }
                    }
                    Event::FlightFails if m.flights == 1 => {
                        m.flights = 0;
                        m.flight_reason = None;
                        let err = Error::new(ErrorKind::Auth(AuthFailure::TokenUnavailable), "down");
                        for proactive in std::mem::take(&mut m.waiters) {
                            if after_failed_refresh(proactive, m.freshness(), &err) == AfterFailedRefresh::UseOld {
                                m.use_token()?;
                            }
                        }
                    }
                    Event::ServerRevokesCurrent => {
                        if let Some(t) = m.record.as_ref().and_then(|r| r.access_token.as_ref()) {
                            m.revoked = Some(t.secret().to_owned());
                            // The request holding it is rejected: compare-and-refresh.
                            match on_rejected(true, 0, 5) {
                                RejectionDecision::RefreshAndRetry => m.start_or_join(FetchReason::Rejected),
                                other => prop_assert!(false, "unexpected {other:?}"),
                            }
                        }
                    }
                    _ => {}
                }
                prop_assert!(m.flights <= 1);
            }
        }
    }
}
