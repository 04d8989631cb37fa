//! Retrying failed attempts: which failures, how many times, how long to wait.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};

use crate::error::Error;

/// How delays grow between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    /// `delay × 2^(n-1)`: 1 s, 2 s, 4 s… (default).
    #[default]
    Exponential,
    /// `delay × n`: 1 s, 2 s, 3 s…
    Linear,
}

/// Retry of network errors and retryable statuses.
///
/// Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) are retried unless
/// `retry_non_idempotent` is set: a POST that timed out may have been applied. Recovery after
/// a rejected token is separate and does not count as a retry. A failure to obtain a token is
/// never retried here (the token endpoint is not hit once per retry).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Total attempts, the first included (default 3). 1 disables retries.
    pub attempts: u32,
    /// Statuses that are retried (default 408, 429, 500, 502, 503, 504).
    pub statuses: Vec<StatusCode>,
    /// Delay growth (default exponential).
    pub backoff: Backoff,
    /// The first delay (default 1 s).
    pub delay: Duration,
    /// The longest delay, `Retry-After` included (default 30 s).
    pub max_delay: Duration,
    /// Randomise each delay between 50 % and 100 % of its value (default on).
    pub jitter: bool,
    /// Retry POST and PATCH too (default off).
    pub retry_non_idempotent: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: crate::defaults::RETRY_ATTEMPTS,
            statuses: crate::defaults::RETRY_STATUSES
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect(),
            backoff: Backoff::Exponential,
            delay: crate::defaults::RETRY_DELAY,
            max_delay: crate::defaults::MAX_RETRY_DELAY,
            jitter: true,
            retry_non_idempotent: false,
        }
    }
}

impl RetryConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// No retries.
    pub fn none() -> Self {
        Self::default().attempts(1)
    }

    /// Sets the total attempts (0 counts as 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Sets the retried statuses.
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the first delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the delay cap.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Retries non-idempotent methods too.
    pub fn retry_non_idempotent(mut self, enabled: bool) -> Self {
        self.retry_non_idempotent = enabled;
        self
    }

    fn method_allowed(&self, method: &Method) -> bool {
        self.retry_non_idempotent
            || matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
            )
    }

    /// Whether attempt `attempt` (1-based) that ended in `error` is retried.
    pub(crate) fn retries_error(&self, method: &Method, attempt: u32, error: &Error) -> bool {
        attempt < self.attempts && error.is_transport() && self.method_allowed(method)
    }

    /// Whether attempt `attempt` that got `status` is retried.
    pub(crate) fn retries_status(&self, method: &Method, attempt: u32, status: StatusCode) -> bool {
        attempt < self.attempts && self.statuses.contains(&status) && self.method_allowed(method)
    }

    /// The wait after attempt `attempt`: the server's `Retry-After` if given, else the backoff;
    /// capped at `max_delay`. `unit` in [0, 1) drives the jitter.
    pub(crate) fn delay_after(
        &self,
        attempt: u32,
        headers: Option<&HeaderMap>,
        now: SystemTime,
        unit: f64,
    ) -> Duration {
        if let Some(after) = headers.and_then(|h| retry_after(h, now)) {
            return after.min(self.max_delay);
        }
        let n = attempt.max(1);
        let base = match self.backoff {
            Backoff::Exponential => self
                .delay
                .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX)),
            Backoff::Linear => self.delay.saturating_mul(n),
        }
        .min(self.max_delay);
        if self.jitter {
            let unit = if unit.is_nan() { 0.0 } else { unit.clamp(0.0, 1.0) };
            // Checked: `mul_f64` panics when the product rounds above `Duration::MAX`.
            Duration::try_from_secs_f64(base.as_secs_f64() * (0.5 + 0.5 * unit)).unwrap_or(base)
        } else {
            base
        }
    }
}

pub(crate) use crate::header::retry_after;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn which_failures_are_retried() {
        let r = RetryConfig::default();
        let network = Error::new(ErrorKind::Connect, "refused");
        let status = Error::new(ErrorKind::Status, "500");
        assert!(r.retries_error(&Method::GET, 1, &network));
        assert!(r.retries_error(&Method::GET, 2, &network));
        assert!(!r.retries_error(&Method::GET, 3, &network), "3 attempts in all");
        assert!(!r.retries_error(&Method::GET, 1, &status));
        assert!(
            !r.retries_error(&Method::POST, 1, &network),
            "POST is not idempotent"
        );
        assert!(!r.retries_error(&Method::PATCH, 1, &network));
        assert!(r
            .clone()
            .retry_non_idempotent(true)
            .retries_error(&Method::POST, 1, &network));
        for code in crate::defaults::RETRY_STATUSES {
            assert!(r.retries_status(&Method::PUT, 1, StatusCode::from_u16(code).unwrap()));
        }
        assert!(!r.retries_status(&Method::GET, 1, StatusCode::NOT_FOUND));
        assert!(!r.retries_status(&Method::GET, 1, StatusCode::UNAUTHORIZED));
        assert!(!RetryConfig::none().retries_error(&Method::GET, 1, &network));
    }

    #[test]
    fn jitter_on_a_huge_delay_never_panics() {
        let r = RetryConfig::default()
            .delay(Duration::MAX)
            .max_delay(Duration::MAX);
        for unit in [0.0, 0.5, 0.999_999, 1.0, f64::NAN, f64::INFINITY] {
            assert!(r.delay_after(64, None, now(), unit) >= Duration::from_secs(1 << 62));
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryConfig::default().jitter(false);
        let d: Vec<_> = (1..=6)
            .map(|n| r.delay_after(n, None, now(), 0.0).as_secs())
            .collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 30]);
        let r = r.backoff(Backoff::Linear);
        let d: Vec<_> = (1..=3)
            .map(|n| r.delay_after(n, None, now(), 0.0).as_secs())
            .collect();
        assert_eq!(d, [1, 2, 3]);
        let r = RetryConfig::default();
        assert_eq!(
            r.delay_after(2, None, now(), 0.0),
            Duration::from_secs(1),
            "jitter floor: half"
        );
        assert!(r.delay_after(2, None, now(), 0.999) < Duration::from_secs(2));
        assert_eq!(
            r.delay_after(40, None, now(), 0.0),
            Duration::from_secs(15),
            "no overflow"
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let r = RetryConfig::default();
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(r.delay_after(1, Some(&h), now(), 0.5), Duration::from_secs(7));
        h.insert(http::header::RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(r.delay_after(1, Some(&h), now(), 0.5), Duration::from_secs(30));
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(12));
        h.insert(http::header::RETRY_AFTER, date.parse().unwrap());
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(12)));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now()), None);
    }
}
