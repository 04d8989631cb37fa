//! Exhaustive checks of each decision, then generated event sequences driven through
//! [`decide`] by a model of sessions, browsers, a token server and a store.

use super::*;
use crate::error::ErrorKind;
use crate::policy::StandardPolicy;
use crate::token::RefreshToken;
use std::time::UNIX_EPOCH;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn record(n: u32, obtained: u64, lifetime: u64) -> TokenRecord {
    TokenRecord::new(AccessToken::new(format!("a{n}")), at(obtained))
        .with_refresh_token(RefreshToken::new(format!("r{n}")))
        .with_expires_in(Duration::from_secs(lifetime))
        .unwrap()
}

fn policy() -> StandardPolicy {
    StandardPolicy::default().jitter_percent(0)
}

fn successor(rec: TokenRecord, arrived: u64) -> Successor {
    Successor {
        record: Arc::new(rec),
        arrived_at: at(arrived),
        window: Duration::from_secs(5),
    }
}

fn transient() -> Error {
    Error::new(ErrorKind::Auth(AuthFailure::TokenUnavailable), "down")
}

fn needed(state: &SessionState, now: u64, rec: Option<&TokenRecord>, background: bool) -> Decision {
    decide(
        state,
        at(now),
        &policy(),
        Event::TokenNeeded {
            record: rec,
            background,
        },
    )
}

#[test]
fn token_needed() {
    use Decision::*;
    let p = &policy();
    let idle = SessionState::default();
    let refreshing = SessionState {
        refreshing: true,
        ..SessionState::default()
    };
    let rec = record(1, 0, 3600);
    // Fresh (t=100), stale (t=3300: inside 5 min + 60 s), expired (t=3590).
    for bg in [false, true] {
        assert_eq!(needed(&idle, 100, Some(&rec), bg), Use);
        assert_eq!(needed(&refreshing, 100, Some(&rec), bg), Use);
        assert_eq!(
            needed(&refreshing, 3300, Some(&rec), bg),
            Use,
            "stale, flight running"
        );
        assert_eq!(
            needed(&idle, 3590, Some(&rec), bg),
            Lead {
                reason: FetchReason::Needed
            }
        );
        assert_eq!(
            needed(&idle, 0, None, bg),
            Lead {
                reason: FetchReason::Needed
            }
        );
        assert_eq!(
            needed(&refreshing, 3590, Some(&rec), bg),
            Join {
                reason: FetchReason::Needed
            }
        );
    }
    assert_eq!(needed(&idle, 3300, Some(&rec), true), UseAndRefreshInBackground);
    assert_eq!(
        needed(&idle, 3300, Some(&rec), false),
        Lead {
            reason: FetchReason::Proactive
        }
    );
    // Cooldown after a failed proactive refresh: use the valid token; expired still leads.
    let cooling = SessionState {
        proactive_failed_at: Some(at(3298)),
        ..SessionState::default()
    };
    assert_eq!(needed(&cooling, 3300, Some(&rec), true), Use);
    assert_eq!(
        needed(&cooling, 3304, Some(&rec), true),
        UseAndRefreshInBackground
    );
    assert!(matches!(needed(&cooling, 3599, Some(&rec), true), Lead { .. }));
    // A successor within its window is served to a late request, stale or expired.
    let next = record(2, 3590, 3600);
    let rotated = SessionState {
        successor: Some(successor(next.clone(), 3590)),
        ..SessionState::default()
    };
    for now in [3590, 3594] {
        let d = needed(&rotated, now, Some(&rec), false);
        assert!(
            matches!(&d, ServeSuccessor(s) if s.same_tokens(&next)),
            "{now}: {d:?}"
        );
    }
    assert!(
        matches!(needed(&rotated, 3595, Some(&rec), false), Lead { .. }),
        "window over"
    );
    // A successor that itself expired inside the window is not served.
    let short = record(3, 3590, 2);
    let rotated_short = SessionState {
        successor: Some(successor(short, 3590)),
        ..SessionState::default()
    };
    assert!(matches!(
        needed(&rotated_short, 3592, Some(&rec), false),
        Lead { .. }
    ));
    let _ = p;
}

#[test]
fn rejections() {
    use Decision::*;
    let p = policy();
    let rec = record(1, 0, 3600);
    let newer = record(2, 10, 3600);
    let rejected = |state: &SessionState, current: Option<&TokenRecord>, done: u32| {
        decide(
            state,
            at(20),
            &p,
            Event::Rejected {
                rejected: &rec,
                current,
                recoveries_done: done,
            },
        )
    };
    let idle = SessionState::default();
    assert_eq!(
        rejected(&idle, Some(&rec), 0),
        Lead {
            reason: FetchReason::Rejected
        }
    );
    assert_eq!(
        rejected(&idle, None, 0),
        Lead {
            reason: FetchReason::Rejected
        }
    );
    assert_eq!(rejected(&idle, Some(&newer), 0), RetryWithCurrent);
    assert_eq!(rejected(&idle, Some(&rec), 5), AbortRecovery);
    assert_eq!(rejected(&idle, Some(&newer), 5), AbortRecovery);
    let refreshing = SessionState {
        refreshing: true,
        ..SessionState::default()
    };
    assert_eq!(
        rejected(&refreshing, Some(&rec), 4),
        Join {
            reason: FetchReason::Rejected
        }
    );
    // The successor is served, unless it is the very token that was rejected.
    let rotated = SessionState {
        successor: Some(successor(newer.clone(), 18)),
        ..SessionState::default()
    };
    assert!(matches!(rejected(&rotated, Some(&rec), 0), ServeSuccessor(_)));
    let rotated_to_rejected = SessionState {
        successor: Some(successor(rec.clone(), 18)),
        ..SessionState::default()
    };
    assert!(matches!(
        rejected(&rotated_to_rejected, Some(&rec), 0),
        Lead { .. }
    ));
    let zero = StandardPolicy::default().max_recovery_tries(0);
    let d = decide(
        &idle,
        at(20),
        &zero,
        Event::Rejected {
            rejected: &rec,
            current: Some(&rec),
            recoveries_done: 0,
        },
    );
    assert_eq!(d, AbortRecovery, "0 means no recovery");
}

#[test]
fn lead_granted_double_checks_the_store() {
    use Decision::*;
    use FetchReason::*;
    let p = policy();
    let idle = SessionState::default();
    let granted = |reason, stored: Option<&TokenRecord>, rejected: Option<&AccessToken>, now: u64| {
        decide(
            &idle,
            at(now),
            &p,
            Event::LeadGranted {
                reason,
                stored,
                rejected,
                published: None,
            },
        )
    };
    let rec = record(1, 0, 3600);
    let token = rec.access_token.clone();
    for reason in [Needed, Proactive, Rejected] {
        assert_eq!(granted(reason, None, None, 0), Fetch);
        assert_eq!(granted(reason, Some(&rec), None, 3590), Fetch, "expired");
    }
    // Another flight stored a fresh token meanwhile.
    assert_eq!(granted(Needed, Some(&rec), None, 100), UseStored);
    assert_eq!(granted(Proactive, Some(&rec), None, 100), UseStored);
    assert_eq!(granted(Rejected, Some(&rec), None, 100), UseStored);
    assert_eq!(granted(Rejected, Some(&rec), token.as_ref(), 100), Fetch);
    // Stale: a proactive flight fetches; a mandatory one is satisfied.
    assert_eq!(granted(Proactive, Some(&rec), None, 3300), Fetch);
    assert_eq!(granted(Needed, Some(&rec), None, 3300), UseStored);
    assert_eq!(granted(Forced, Some(&rec), None, 100), Fetch);
    // A coordinator holds the successor another leader published: serve it.
    let next = Arc::new(record(2, 3590, 3600));
    let d = decide(
        &idle,
        at(3591),
        &p,
        Event::LeadGranted {
            reason: Needed,
            stored: Some(&rec),
            rejected: None,
            published: Some(&next),
        },
    );
    assert!(matches!(d, ServeSuccessor(_)));
    let forced = decide(
        &idle,
        at(3591),
        &p,
        Event::LeadGranted {
            reason: Forced,
            stored: Some(&rec),
            rejected: None,
            published: Some(&next),
        },
    );
    assert_eq!(forced, Fetch, "a forced refresh always fetches");
}

#[test]
fn outcomes() {
    use Decision::*;
    let p = policy();
    let idle = SessionState::default();
    fn d(event: Event<'_>) -> Decision {
        decide(&SessionState::default(), at(3300), &policy(), event)
    }
    let rec = record(1, 0, 3600);
    let without_refresh = TokenRecord::new(AccessToken::new("x"), at(0));
    assert_eq!(
        d(Event::Fetched {
            stored: Some(&rec),
            fetched: &without_refresh
        }),
        Commit {
            keep_old_refresh_token: true
        }
    );
    assert_eq!(
        d(Event::Fetched {
            stored: Some(&rec),
            fetched: &rec
        }),
        Commit {
            keep_old_refresh_token: false
        }
    );
    let invalid = Error::new(ErrorKind::Auth(AuthFailure::SessionInvalid), "invalid_grant");
    let no_session = Error::new(ErrorKind::Auth(AuthFailure::NoSession), "log in");
    let failed = |reason, error| {
        d(Event::FetchFailed {
            reason,
            error: &error,
            winner: None,
        })
    };
    assert_eq!(failed(FetchReason::Needed, transient()), Fail);
    assert_eq!(failed(FetchReason::Needed, invalid.clone()), ClearSessionAndFail);
    assert_eq!(failed(FetchReason::Needed, no_session.clone()), Fail);
    assert_eq!(failed(FetchReason::Rejected, no_session), ClearSessionAndFail);
    // invalid_grant after a race another writer won: adopt the winner, keep the user.
    let winner = record(2, 3000, 3600);
    let lost_race = |winner: Option<&TokenRecord>| {
        d(Event::FetchFailed {
            reason: FetchReason::Needed,
            error: &invalid,
            winner,
        })
    };
    assert_eq!(lost_race(Some(&winner)), AdoptWinner);
    assert_eq!(
        lost_race(Some(&record(3, 0, 60))),
        ClearSessionAndFail,
        "an expired winner"
    );
    assert_eq!(lost_race(None), ClearSessionAndFail);
    assert_eq!(d(Event::Conflict { stored: Some(&rec) }), AdoptWinner);
    assert_eq!(d(Event::Conflict { stored: None }), Fail);
    let waiter = |reason, old: Option<&TokenRecord>, error: &Error, now| {
        decide(&idle, at(now), &p, Event::RefreshFailed { reason, old, error })
    };
    assert_eq!(
        waiter(FetchReason::Proactive, Some(&rec), &transient(), 3300),
        KeepOldToken
    );
    assert_eq!(
        waiter(FetchReason::Proactive, Some(&rec), &transient(), 3590),
        Fail,
        "expired meanwhile"
    );
    assert_eq!(waiter(FetchReason::Needed, Some(&rec), &transient(), 3300), Fail);
    assert_eq!(waiter(FetchReason::Proactive, Some(&rec), &invalid, 3300), Fail);
    assert!(counts_as_failure(&transient()));
}

#[test]
fn idle_states_can_be_dropped() {
    let delay = Duration::from_secs(5);
    assert!(SessionState::default().is_idle(at(0), delay));
    let s = SessionState {
        successor: Some(successor(record(2, 0, 60), 0)),
        proactive_failed_at: Some(at(2)),
        refreshing: false,
    };
    assert!(!s.is_idle(at(4), delay));
    assert!(!s.is_idle(at(6), delay), "cooling down until 7");
    assert!(s.is_idle(at(7), delay));
    let huge = Successor {
        window: Duration::MAX,
        ..successor(record(2, 0, 60), 0)
    };
    assert!(
        huge.is_open(at(1 << 40)),
        "an unrepresentable end never closes, never panics"
    );
}
