//! Generated event sequences — slow refreshes, late requests with old tokens, rejections,
//! forced refreshes, store conflicts, failures, panics and dropped callers — driven through
//! the real [`decide`] by a model of one user's session: browsers holding old and new
//! records, a token server that remembers which refresh tokens it rotated, and a store.
//!
//! Invariants checked after every step:
//! - never two fetches in flight for one session key;
//! - never a rotated-away refresh token sent again while its successor's window is open;
//! - never an unusable token handed to a request (after a successful refresh every waiter
//!   gets a usable one);
//! - once every flight has ended and the windows have passed, no session state is left.

use super::*;
use crate::policy::StandardPolicy;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

/// The events the generator draws from.
#[derive(Debug, Clone)]
enum Ev {
    /// Time passes (seconds).
    Advance(u64),
    /// A request presents a record (`pick` 0 = the newest, higher = older: a late request).
    Request { pick: u8, background: bool },
    /// The server rejects the presented record's access token; the request recovers.
    Rejected { pick: u8 },
    /// The application forces a refresh.
    Forced,
    /// A flight's source answers after `slow` seconds.
    Complete { pick: u8, slow: u64 },
    /// A flight's source fails.
    Fail { pick: u8 },
    /// A flight's source panics.
    Panic { pick: u8 },
    /// A flight's source answers, but another writer stored a record first (compare-and-swap
    /// conflict).
    Conflict { pick: u8 },
    /// A waiting caller goes away; its flight goes on.
    DropCaller { pick: u8 },
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => (1u64..400).prop_map(Ev::Advance),
        1 => (0u64..6).prop_map(Ev::Advance),
        5 => (any::<u8>(), any::<bool>()).prop_map(|(pick, background)| Ev::Request { pick, background }),
        2 => any::<u8>().prop_map(|pick| Ev::Rejected { pick }),
        1 => Just(Ev::Forced),
        4 => (any::<u8>(), 0u64..9).prop_map(|(pick, slow)| Ev::Complete { pick, slow }),
        1 => any::<u8>().prop_map(|pick| Ev::Fail { pick }),
        1 => any::<u8>().prop_map(|pick| Ev::Panic { pick }),
        1 => any::<u8>().prop_map(|pick| Ev::Conflict { pick }),
        1 => any::<u8>().prop_map(|pick| Ev::DropCaller { pick }),
    ]
}

struct Waiter {
    reason: FetchReason,
    /// The record the caller held.
    old: usize,
}

struct Flight {
    reason: FetchReason,
    rejected: Option<AccessToken>,
    waiters: Vec<Waiter>,
}

const LIFETIMES: [u64; 3] = [3600, 600, 90];

struct Model {
    policy: StandardPolicy,
    now: SystemTime,
    /// The store is a backend (re-read gives the newest record, writes compare-and-swap);
    /// otherwise cookies (re-read gives the request's own record).
    backend: bool,
    /// Every record issued; record `n` holds refresh token `r{n}`. Keys are indexes.
    records: Vec<Arc<TokenRecord>>,
    /// The newest record of the session (what the backend holds).
    newest: usize,
    states: HashMap<usize, SessionState>,
    flights: HashMap<usize, Flight>,
    /// Server: when each rotated-away refresh token's successor arrived.
    rotated: HashMap<usize, SystemTime>,
}

fn usable(policy: &StandardPolicy, rec: &TokenRecord, now: SystemTime) -> bool {
    policy.freshness(Some(rec), now).is_usable()
}

impl Model {
    fn new(backend: bool) -> Self {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut m = Self {
            policy: StandardPolicy::default().jitter_percent(0),
            now,
            backend,
            records: Vec::new(),
            newest: 0,
            states: HashMap::new(),
            flights: HashMap::new(),
            rotated: HashMap::new(),
        };
        m.issue(now);
        m
    }

    fn issue(&mut self, obtained_at: SystemTime) -> usize {
        let n = self.records.len();
        let rec = TokenRecord::new(AccessToken::new(format!("a{n}")), obtained_at)
            .with_refresh_token(crate::token::RefreshToken::new(format!("r{n}")))
            .with_expires_in(Duration::from_secs(LIFETIMES[n % LIFETIMES.len()]))
            .unwrap_or_else(|e| panic!("{e}"));
        self.records.push(Arc::new(rec));
        n
    }

    fn present(&self, pick: u8) -> usize {
        self.newest.saturating_sub(usize::from(pick % 4))
    }

    fn state(&mut self, key: usize) -> SessionState {
        let mut state = self.states.get(&key).cloned().unwrap_or_default();
        state.refreshing = self.flights.contains_key(&key);
        state
    }

    fn decide(&mut self, key: usize, event: Event<'_>) -> Decision {
        let state = self.state(key);
        decide(&state, self.now, &self.policy, event)
    }

    fn flight_key(&self, pick: u8) -> Option<usize> {
        let mut keys: Vec<usize> = self.flights.keys().copied().collect();
        keys.sort_unstable();
        (!keys.is_empty()).then(|| keys[usize::from(pick) % keys.len()])
    }

    fn start(
        &mut self,
        key: usize,
        reason: FetchReason,
        rejected: Option<AccessToken>,
    ) -> Result<(), TestCaseError> {
        prop_assert!(
            !self.flights.contains_key(&key),
            "two fetches in flight for session {key}"
        );
        self.flights.insert(
            key,
            Flight {
                reason,
                rejected,
                waiters: Vec::new(),
            },
        );
        Ok(())
    }

    fn wait(&mut self, key: usize, reason: FetchReason, old: usize) -> Result<(), TestCaseError> {
        let flight = self.flights.get_mut(&key);
        prop_assert!(flight.is_some(), "joined a flight that does not exist");
        if let Some(flight) = flight {
            flight.waiters.push(Waiter { reason, old });
        }
        Ok(())
    }

    fn request(&mut self, pick: u8, background: bool) -> Result<(), TestCaseError> {
        let key = self.present(pick);
        let rec = Arc::clone(&self.records[key]);
        let background = background && self.backend;
        match self.decide(
            key,
            Event::TokenNeeded {
                record: Some(&rec),
                background,
            },
        ) {
            Decision::Use => prop_assert!(usable(&self.policy, &rec, self.now), "used an unusable token"),
            Decision::ServeSuccessor(s) => {
                prop_assert!(usable(&self.policy, &s, self.now), "served an unusable successor")
            }
            Decision::UseAndRefreshInBackground => {
                prop_assert!(usable(&self.policy, &rec, self.now));
                self.start(key, FetchReason::Proactive, None)?;
            }
            Decision::Lead { reason } => {
                self.start(key, reason, None)?;
                self.wait(key, reason, key)?;
            }
            Decision::Join { reason } => self.wait(key, reason, key)?,
            other => prop_assert!(false, "unexpected {other:?}"),
        }
        Ok(())
    }

    fn rejected(&mut self, pick: u8) -> Result<(), TestCaseError> {
        let key = self.present(pick);
        let rec = Arc::clone(&self.records[key]);
        let current = if self.backend {
            Arc::clone(&self.records[self.newest])
        } else {
            Arc::clone(&rec)
        };
        match self.decide(
            key,
            Event::Rejected {
                rejected: &rec,
                current: Some(&current),
                recoveries_done: 0,
            },
        ) {
            Decision::RetryWithCurrent => prop_assert!(current.access_token != rec.access_token),
            Decision::ServeSuccessor(s) => prop_assert!(s.access_token != rec.access_token),
            Decision::Lead { reason } => {
                self.start(key, reason, rec.access_token.clone())?;
                self.wait(key, reason, key)?;
            }
            Decision::Join { reason } => self.wait(key, reason, key)?,
            other => prop_assert!(false, "unexpected {other:?}"),
        }
        Ok(())
    }

    fn forced(&mut self) -> Result<(), TestCaseError> {
        let key = self.newest;
        match self.decide(key, Event::RefreshForced) {
            Decision::Lead { reason } => {
                self.start(key, reason, None)?;
                self.wait(key, reason, key)
            }
            Decision::Join { reason } => self.wait(key, reason, key),
            other => {
                prop_assert!(false, "unexpected {other:?}");
                Ok(())
            }
        }
    }

    /// A flight's source answers (`conflict`: another writer stored a record first).
    fn complete(&mut self, pick: u8, slow: u64, conflict: bool) -> Result<(), TestCaseError> {
        let Some(key) = self.flight_key(pick) else {
            return Ok(());
        };
        let stored_at = if self.backend { self.newest } else { key };
        let stored = Arc::clone(&self.records[stored_at]);
        let granted = {
            let flight = &self.flights[&key];
            (flight.reason, flight.rejected.clone())
        };
        let decision = self.decide(
            key,
            Event::LeadGranted {
                reason: granted.0,
                stored: Some(&stored),
                rejected: granted.1.as_ref(),
                published: None,
            },
        );
        let flight = self.flights.remove(&key).unwrap_or_else(|| unreachable!());
        let result = match decision {
            Decision::UseStored => stored_at,
            Decision::Fetch => {
                // The server sees the stored record's refresh token.
                if let Some(arrived) = self.rotated.get(&stored_at) {
                    let window = RefreshPolicy::grace_window(&self.policy);
                    prop_assert!(
                        self.now >= *arrived + window,
                        "refresh token r{stored_at} sent again inside its successor's window"
                    );
                }
                let started = self.now;
                self.now += Duration::from_secs(slow);
                let fetched = self.issue(started);
                let fetched_rec = Arc::clone(&self.records[fetched]);
                let commit = self.decide(
                    key,
                    Event::Fetched {
                        stored: Some(&stored),
                        fetched: &fetched_rec,
                    },
                );
                let committed = matches!(commit, Decision::Commit { .. });
                prop_assert!(committed, "expected a commit, got {:?}", commit);
                if conflict && self.backend {
                    // Another writer (a new login) got there first: adopt its record.
                    let winner = self.issue(self.now);
                    self.newest = winner;
                    let winner_rec = Arc::clone(&self.records[winner]);
                    let d = self.decide(
                        key,
                        Event::Conflict {
                            stored: Some(&winner_rec),
                        },
                    );
                    prop_assert_eq!(d, Decision::AdoptWinner);
                    winner
                } else {
                    self.newest = fetched;
                    // Published under the flight's key; the window runs from arrival.
                    self.rotated.insert(stored_at, self.now);
                    let state = self.states.entry(key).or_default();
                    state.successor = Some(Successor {
                        record: Arc::clone(&fetched_rec),
                        arrived_at: self.now,
                        window: RefreshPolicy::grace_window(&self.policy),
                    });
                    state.proactive_failed_at = None;
                    fetched
                }
            }
            other => {
                prop_assert!(false, "unexpected {other:?}");
                return Ok(());
            }
        };
        let result = Arc::clone(&self.records[result]);
        for _ in flight.waiters {
            prop_assert!(
                usable(&self.policy, &result, self.now),
                "a waiter got an unusable token after a successful refresh"
            );
        }
        Ok(())
    }

    fn fail(&mut self, pick: u8, panicked: bool) -> Result<(), TestCaseError> {
        let Some(key) = self.flight_key(pick) else {
            return Ok(());
        };
        let flight = self.flights.remove(&key).unwrap_or_else(|| unreachable!());
        let error = Error::new(
            crate::error::ErrorKind::Auth(AuthFailure::TokenUnavailable),
            if panicked {
                "the token source panicked"
            } else {
                "down"
            },
        );
        let d = self.decide(
            key,
            Event::FetchFailed {
                reason: flight.reason,
                error: &error,
                winner: None,
            },
        );
        prop_assert_eq!(d, Decision::Fail, "a transient failure keeps the session");
        if flight.reason == FetchReason::Proactive {
            self.states.entry(key).or_default().proactive_failed_at = Some(self.now);
        }
        for waiter in flight.waiters {
            let old = Arc::clone(&self.records[waiter.old]);
            let d = self.decide(
                key,
                Event::RefreshFailed {
                    reason: waiter.reason,
                    old: Some(&old),
                    error: &error,
                },
            );
            if d == Decision::KeepOldToken {
                prop_assert!(usable(&self.policy, &old, self.now), "kept an unusable token");
            }
        }
        Ok(())
    }

    fn drop_caller(&mut self, pick: u8) {
        if let Some(key) = self.flight_key(pick) {
            if let Some(flight) = self.flights.get_mut(&key) {
                flight.waiters.pop();
            }
        }
    }

    /// What the session table does as time passes: drop idle states.
    fn prune(&mut self) {
        let (now, delay) = (self.now, RefreshPolicy::proactive_retry_delay(&self.policy));
        let flights = &self.flights;
        self.states
            .retain(|key, state| flights.contains_key(key) || !state.is_idle(now, delay));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]
    #[test]
    fn decisions_keep_the_invariants(backend in any::<bool>(), events in prop::collection::vec(ev(), 1..120)) {
        let mut m = Model::new(backend);
        for event in events {
            match event {
                Ev::Advance(secs) => m.now += Duration::from_secs(secs),
                Ev::Request { pick, background } => m.request(pick, background)?,
                Ev::Rejected { pick } => m.rejected(pick)?,
                Ev::Forced => m.forced()?,
                Ev::Complete { pick, slow } => m.complete(pick, slow, false)?,
                Ev::Fail { pick } => m.fail(pick, false)?,
                Ev::Panic { pick } => m.fail(pick, true)?,
                Ev::Conflict { pick } => m.complete(pick, 0, true)?,
                Ev::DropCaller { pick } => m.drop_caller(pick),
            }
            m.prune();
        }
        // Every flight ends; once the windows pass, nothing is left.
        while let Some(key) = m.flight_key(0) {
            let _ = key;
            m.complete(0, 0, false)?;
        }
        m.now += RefreshPolicy::grace_window(&m.policy) + RefreshPolicy::proactive_retry_delay(&m.policy);
        m.prune();
        prop_assert!(m.states.is_empty(), "{} session states left", m.states.len());
    }
}
