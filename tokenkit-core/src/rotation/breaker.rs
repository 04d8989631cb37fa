//! Staying up while the token source is down: one gate shared by every caller of a client.
//!
//! After a fetch fails the way an outage fails (no answer, a timeout, a 5xx or 429, the
//! client's own credentials refused), no fetch is made before a jittered, doubling delay —
//! or the server's `Retry-After`, whichever is later. After
//! [`OutageConfig::open_after`] such failures in a row the circuit opens: no fetch for
//! [`OutageConfig::cooldown`]; then one fetch probes (the circuit is half-open, everyone
//! else keeps failing fast); its success closes the circuit, its failure opens it again.
//! While the gate is shut, a request whose token is still valid is served with it (a failed
//! proactive refresh keeps the old token) and one that needs a new token fails at once with
//! [`AuthFailure::SourceUnavailable`], saying why and until when ([`Error::retry_at`]).
//!
//! The decisions are pure (instants in, instants out); the randomness for the jitter is
//! passed in.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::{AuthFailure, Error, ErrorKind};

/// How a client behaves while its token source (the identity provider) fails: the backoff
/// between failed fetches, shared by every request of the client, and the circuit breaker.
///
/// ```
/// use std::time::Duration;
/// use tokenkit_core::OutageConfig;
///
/// let outage = OutageConfig::default()
///     .first_delay(Duration::from_millis(500))
///     .open_after(3)
///     .cooldown(Duration::from_secs(60));
/// assert_eq!(outage.max_delay, tokenkit_core::defaults::OUTAGE_MAX_DELAY);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutageConfig {
    /// The pause after the first failure; it doubles with each failure in a row, and each
    /// pause is jittered down to half of it (default
    /// [`OUTAGE_FIRST_DELAY`](crate::defaults::OUTAGE_FIRST_DELAY)).
    pub first_delay: Duration,
    /// The longest pause between failures while the circuit is closed, and the cap on a
    /// server's `Retry-After` (default [`OUTAGE_MAX_DELAY`](crate::defaults::OUTAGE_MAX_DELAY)).
    pub max_delay: Duration,
    /// Failures in a row that open the circuit (default
    /// [`OUTAGE_OPEN_AFTER`](crate::defaults::OUTAGE_OPEN_AFTER)); 0 never opens it.
    pub open_after: u32,
    /// How long an open circuit stays open before one probe (default
    /// [`OUTAGE_COOLDOWN`](crate::defaults::OUTAGE_COOLDOWN)).
    pub cooldown: Duration,
}

impl Default for OutageConfig {
    fn default() -> Self {
        Self {
            first_delay: crate::defaults::OUTAGE_FIRST_DELAY,
            max_delay: crate::defaults::OUTAGE_MAX_DELAY,
            open_after: crate::defaults::OUTAGE_OPEN_AFTER,
            cooldown: crate::defaults::OUTAGE_COOLDOWN,
        }
    }
}

impl OutageConfig {
    /// No backoff and no circuit: every request that needs a token calls the source, as
    /// long as it fails. Meant for tests and for sources that do their own backoff.
    pub fn disabled() -> Self {
        Self {
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            open_after: 0,
            cooldown: Duration::ZERO,
        }
    }
    /// Sets the first pause.
    pub fn first_delay(mut self, delay: Duration) -> Self {
        self.first_delay = delay;
        self
    }
    /// Sets the longest pause (and the cap on `Retry-After`).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }
    /// Sets the failures in a row that open the circuit (0: never).
    pub fn open_after(mut self, failures: u32) -> Self {
        self.open_after = failures;
        self
    }
    /// Sets how long the circuit stays open.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// The pause after the `failures`-th failure in a row while the circuit is closed,
    /// before jitter.
    fn backoff(&self, failures: u32) -> Duration {
        let doubling = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(doubling).min(self.max_delay)
    }
}

/// Whether a failed fetch says the source is down (rather than that one session is over, or
/// that the source's answer was malformed): no answer or a timeout, a 5xx or 429, the
/// client's own credentials refused, or a token provider (an opaque closure) that failed.
pub(crate) fn is_outage(err: &Error) -> bool {
    let status = err.status().map(|s| s.as_u16());
    match err.auth_failure() {
        Some(AuthFailure::InvalidClient) => true,
        // A provider's own failure: judged by its cause when that is a tokenkit error (a
        // provider that called a token endpoint through a tokenkit client), else an outage.
        Some(AuthFailure::TokenUnavailable) if status.is_none() => {
            match std::error::Error::source(err).and_then(|cause| cause.downcast_ref::<Error>()) {
                Some(cause) => is_outage(cause),
                None => true,
            }
        }
        _ => err.is_transport() || matches!(status, Some(429 | 500..=599)),
    }
}

#[derive(Debug, Default)]
struct State {
    /// Outage failures in a row.
    failures: u32,
    /// No fetch before this instant.
    shut_until: Option<SystemTime>,
    /// The circuit is open (or half-open: a probe is out).
    open: bool,
    /// What the last failure said (already filtered: it is an error's own message).
    last: Option<String>,
}

/// The gate of one client's token fetches.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: OutageConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(config: OutageConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave it inconsistent (plain assignments).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// May a fetch be made at `now`? When the circuit is open and its cooldown is over, the
    /// caller is the probe: everyone else is shut out until the probe ends.
    pub(crate) fn admit(&self, now: SystemTime) -> Result<(), Error> {
        let mut state = self.state();
        match state.shut_until {
            Some(until) if now < until => Err(shut_error(&state, until)),
            _ => {
                if state.open {
                    // Half-open: this fetch probes; the others wait one more cooldown (the
                    // probe's end reopens or closes the circuit before that).
                    state.shut_until = Some(later(now, self.config.cooldown.max(Duration::from_secs(1))));
                    tracing::info!("the token source's circuit is half-open: one fetch probes");
                }
                Ok(())
            }
        }
    }

    /// A fetch succeeded: the circuit closes.
    pub(crate) fn succeeded(&self) {
        let mut state = self.state();
        if state.open || state.failures > 0 {
            tracing::info!(failures = state.failures, "the token source answers again");
        }
        *state = State::default();
    }

    /// A fetch ended in `err` at `now`; `unit` in [0, 1) drives the jitter. Failures that are
    /// not outages leave the gate as it is (but end a probe: the source did answer).
    pub(crate) fn failed(&self, err: &Error, now: SystemTime, unit: f64) {
        let mut state = self.state();
        if !is_outage(err) {
            if state.open {
                *state = State::default();
            }
            return;
        }
        state.failures = state.failures.saturating_add(1);
        state.last = Some(err.to_string());
        let opens = self.config.open_after > 0 && state.failures >= self.config.open_after;
        let pause = if opens {
            if !state.open {
                tracing::warn!(
                    failures = state.failures,
                    cooldown_ms = self.config.cooldown.as_millis() as u64,
                    "the token source keeps failing: circuit open"
                );
            }
            state.open = true;
            self.config.cooldown
        } else {
            jittered(self.config.backoff(state.failures), unit)
        };
        let retry_after = err.retry_after().map(|after| after.min(self.config.max_delay));
        let pause = retry_after.map_or(pause, |after| pause.max(after));
        state.shut_until = Some(later(now, pause));
    }

    /// How many outage failures in a row the source has had.
    #[cfg(test)]
    fn failures(&self) -> u32 {
        self.state().failures
    }
}

/// `now + pause`; a pause the clock cannot represent shuts the gate for a century instead
/// of wrapping around (or not shutting it at all).
fn later(now: SystemTime, pause: Duration) -> SystemTime {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(pause)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// `delay` scaled into [delay/2, delay) by `unit` in [0, 1).
fn jittered(delay: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Duration::try_from_secs_f64(delay.as_secs_f64() * (0.5 + 0.5 * unit)).unwrap_or(delay)
}

/// A random number in [0, 1) for the jitter (0.5 when the OS has no randomness to give:
/// the jitter is a courtesy, not a security property).
pub(crate) fn unit() -> f64 {
    getrandom::u32().map_or(0.5, |r| f64::from(r) / (f64::from(u32::MAX) + 1.0))
}

fn shut_error(state: &State, until: SystemTime) -> Error {
    let when = httpdate::fmt_http_date(until);
    let why = if state.open {
        format!("circuit open after {} failures in a row", state.failures)
    } else {
        format!("backing off after {} failure(s) in a row", state.failures)
    };
    let last = state.last.as_deref().unwrap_or("unknown");
    Error::new(
        ErrorKind::Auth(AuthFailure::SourceUnavailable),
        format!("the token source is not called until {when} ({why}; the last: {last})"),
    )
    .with_retry_at(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    fn down() -> Error {
        Error::new(
            ErrorKind::Auth(AuthFailure::TokenUnavailable),
            "token endpoint: no answer",
        )
        .with_response(http::StatusCode::SERVICE_UNAVAILABLE, bytes::Bytes::new())
    }

    #[test]
    fn which_failures_are_outages() {
        assert!(is_outage(&down()));
        assert!(is_outage(&Error::new(ErrorKind::Connect, "refused")));
        assert!(is_outage(&Error::timeout("slow")));
        assert!(is_outage(&Error::new(
            ErrorKind::Auth(AuthFailure::InvalidClient),
            ""
        )));
        let too_many = Error::new(ErrorKind::Auth(AuthFailure::TokenUnavailable), "")
            .with_response(http::StatusCode::TOO_MANY_REQUESTS, bytes::Bytes::new());
        assert!(is_outage(&too_many));
        let provider_failed = Error::new(
            ErrorKind::Auth(AuthFailure::TokenUnavailable),
            "the token provider failed",
        );
        assert!(is_outage(&provider_failed));
        let provider = |cause: Error| {
            Error::new(
                ErrorKind::Auth(AuthFailure::TokenUnavailable),
                "the token provider failed",
            )
            .with_source(cause)
        };
        assert!(is_outage(&provider(Error::new(ErrorKind::Connect, "refused"))));
        assert!(
            !is_outage(&provider(Error::decode("garbage"))),
            "a provider's malformed answer is not an outage"
        );
        for not in [
            Error::new(ErrorKind::Auth(AuthFailure::SessionInvalid), "invalid_grant"),
            Error::new(ErrorKind::Auth(AuthFailure::NoSession), ""),
            Error::invalid_token("not JSON"),
            Error::new(ErrorKind::Auth(AuthFailure::TokenUnavailable), "")
                .with_response(http::StatusCode::BAD_REQUEST, bytes::Bytes::new()),
        ] {
            assert!(!is_outage(&not), "{not}");
        }
    }

    #[test]
    fn the_backoff_doubles_jittered_then_the_circuit_opens_and_probes() {
        let config = OutageConfig::default()
            .first_delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(30))
            .open_after(5)
            .cooldown(Duration::from_secs(30));
        let breaker = Breaker::new(config);
        assert!(breaker.admit(t(0.0)).is_ok());
        // unit 0.999…: the pause is (almost) the full delay; 0: half of it.
        breaker.failed(&down(), t(0.0), 0.0);
        let err = breaker.admit(t(0.49)).unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::SourceUnavailable));
        assert_eq!(err.retry_at(), Some(t(0.5)));
        assert!(err.to_string().contains("backing off after 1 failure"), "{err}");
        assert!(
            err.to_string().contains("no answer"),
            "the last failure is named: {err}"
        );
        assert!(breaker.admit(t(0.5)).is_ok());
        breaker.failed(&down(), t(0.5), 0.999_999);
        assert!(breaker.admit(t(2.49)).is_err());
        assert!(breaker.admit(t(2.5)).is_ok(), "2 s after the second failure");
        breaker.failed(&down(), t(2.5), 0.5);
        assert!(breaker.admit(t(5.49)).is_err(), "4 s × 0.75 = 3 s");
        assert!(breaker.admit(t(5.5)).is_ok());
        breaker.failed(&down(), t(5.5), 0.0);
        assert!(breaker.admit(t(9.5)).is_ok(), "8 s × 0.5");
        breaker.failed(&down(), t(9.5), 0.0);
        // Five in a row: open for the cooldown, whatever the jitter.
        let err = breaker.admit(t(39.4)).unwrap_err();
        assert!(err.to_string().contains("circuit open after 5 failures"), "{err}");
        assert_eq!(err.retry_at(), Some(t(39.5)));
        // Half-open: one probe; the others keep failing fast while it runs.
        assert!(breaker.admit(t(39.5)).is_ok());
        assert!(breaker.admit(t(39.6)).is_err(), "one probe at a time");
        breaker.failed(&down(), t(40.0), 0.0);
        assert!(breaker.admit(t(69.9)).is_err(), "the failed probe reopens it");
        assert!(breaker.admit(t(70.0)).is_ok());
        breaker.succeeded();
        assert_eq!(breaker.failures(), 0);
        assert!(breaker.admit(t(70.0)).is_ok(), "closed again");
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let breaker = Breaker::new(OutageConfig::default().max_delay(Duration::from_secs(30)));
        let slow_down = down().with_retry_after(Duration::from_secs(20));
        breaker.failed(&slow_down, t(0.0), 0.0);
        assert!(breaker.admit(t(19.9)).is_err());
        assert!(breaker.admit(t(20.0)).is_ok());
        let absurd = down().with_retry_after(Duration::MAX);
        breaker.failed(&absurd, t(20.0), 0.0);
        assert!(breaker.admit(t(49.9)).is_err());
        assert!(breaker.admit(t(50.0)).is_ok(), "capped at max_delay");
    }

    #[test]
    fn non_outages_do_not_shut_the_gate_and_end_a_probe() {
        let breaker = Breaker::new(OutageConfig::default().open_after(1));
        let invalid_grant = Error::new(ErrorKind::Auth(AuthFailure::SessionInvalid), "invalid_grant");
        breaker.failed(&invalid_grant, t(0.0), 0.0);
        assert!(breaker.admit(t(0.0)).is_ok());
        breaker.failed(&down(), t(0.0), 0.0);
        assert!(breaker.admit(t(1.0)).is_err(), "open");
        let probe_at = t(crate::defaults::OUTAGE_COOLDOWN.as_secs_f64());
        assert!(breaker.admit(probe_at).is_ok());
        // The source answered (a per-session refusal): it is up.
        breaker.failed(&invalid_grant, probe_at, 0.0);
        assert!(breaker.admit(probe_at).is_ok());
    }

    #[test]
    fn disabled_never_shuts_and_extremes_never_panic() {
        let breaker = Breaker::new(OutageConfig::disabled());
        for _ in 0..100 {
            breaker.failed(&down(), t(0.0), 0.3);
            assert!(breaker.admit(t(0.0)).is_ok());
        }
        let extreme = Breaker::new(
            OutageConfig::default()
                .first_delay(Duration::MAX)
                .max_delay(Duration::MAX)
                .cooldown(Duration::MAX),
        );
        for unit in [f64::NAN, f64::INFINITY, -1.0, 2.0, 0.5] {
            extreme.failed(&down(), t(0.0), unit);
        }
        // The pause cannot be represented: the gate stays shut rather than wrapping around.
        assert!(extreme.admit(t(1e9)).is_err());
        assert!(jittered(Duration::MAX, 0.99) > Duration::from_secs(u64::MAX / 2));
        assert_eq!(
            OutageConfig::default().backoff(u32::MAX),
            crate::defaults::OUTAGE_MAX_DELAY
        );
    }
}
