//! When to refresh: a pure, synchronous classifier of token records.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::token::TokenRecord;

/// Default proactive window of session mode: refresh 5 minutes before expiry.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Default allowance for clock differences between client and server.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Default minimum time between two proactive refreshes of one session.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Default proactive window of provider mode (`refresh_buffer`).
pub const DEFAULT_REFRESH_BUFFER: Duration = Duration::from_secs(10);
/// Default number of recoveries (new token + replay) after a rejected response.
pub const DEFAULT_MAX_RECOVERY_TRIES: u32 = 5;
/// Default pause after a failed proactive refresh before the next proactive attempt (the
/// still-valid token is used meanwhile), so a failing token endpoint is not called on every
/// request of the proactive window.
pub const DEFAULT_PROACTIVE_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Default grace window: for this long after a rotation, requests still presenting the old
/// refresh token get the new tokens instead of rotating again.
pub const DEFAULT_GRACE_WINDOW: Duration = Duration::from_secs(5);
/// Default jitter, as a fraction of the proactive window, added to spread refreshes of many
/// clients holding tokens with the same expiry.
pub const DEFAULT_JITTER_FRACTION: f64 = 0.1;

/// How usable a token record is at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// No record, or a record without an access token.
    Missing,
    /// Usable; no refresh needed.
    Fresh,
    /// Usable, but inside the proactive window: refresh soon.
    Stale,
    /// Not usable any more (or about to be rejected given the clock skew).
    Expired,
}

impl Freshness {
    /// Whether a token of this freshness may be sent: fresh, or stale but not yet expired.
    pub fn is_usable(self) -> bool {
        matches!(self, Freshness::Fresh | Freshness::Stale)
    }
}

/// Decides freshness and what a rejected response means. Pure and synchronous: no I/O, no
/// clock reads (the instant is an argument).
pub trait RefreshPolicy: Send + Sync + fmt::Debug {
    /// The freshness of `record` at `now`.
    fn freshness(&self, record: Option<&TokenRecord>, now: SystemTime) -> Freshness;

    /// Whether a response status means "the token was rejected" (triggers recovery).
    fn is_rejection(&self, status: StatusCode) -> bool;

    /// How many times one request is recovered (new token, replay) before giving up.
    fn max_recovery_tries(&self) -> u32;

    /// How long to keep using a still-valid token after a failed proactive refresh before
    /// trying again. Mandatory refreshes (missing or expired token) are never delayed.
    fn proactive_retry_delay(&self) -> Duration {
        DEFAULT_PROACTIVE_RETRY_DELAY
    }

    /// How long a rotated-away refresh token still maps to its successor (so parallel requests
    /// carrying it do not rotate twice).
    fn grace_window(&self) -> Duration {
        DEFAULT_GRACE_WINDOW
    }
}

/// The standard policy.
///
/// A token is **expired** when `now + min(clock_skew, lifetime/2) >= expires_at` and **stale**
/// (due for a proactive refresh) when
/// `now + min(refresh_before + clock_skew + jitter, lifetime/2) >= expires_at` and at least
/// `min_interval` has passed since it was obtained. Capping both margins at half the lifetime
/// means a freshly obtained token is always usable for half its life, so short-lived tokens
/// (`expires_in` at or below the window) never cause a refetch loop. The jitter is a fraction
/// of the window derived from the token itself, so the classification is deterministic for a
/// given record and instant while different tokens spread their refreshes.
///
/// Every value is taken as given: `0` means zero, never "the default".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StandardPolicy {
    /// The proactive window before expiry.
    pub refresh_before: Duration,
    /// Allowance for clock differences between client and server.
    pub clock_skew: Duration,
    /// Minimum time since the last refresh before a proactive refresh.
    pub min_interval: Duration,
    /// Jitter as a fraction (0.0–1.0) of `refresh_before`.
    pub jitter: f64,
    /// Statuses that mean "token rejected" (default `[401]`).
    pub refresh_on_status: Vec<StatusCode>,
    /// Recoveries per request before giving up (default 5).
    pub max_recovery_tries: u32,
    /// Pause after a failed proactive refresh (default 5 s).
    pub proactive_retry_delay: Duration,
    /// Grace window after a rotation (default 5 s).
    pub grace_window: Duration,
}

impl Default for StandardPolicy {
    /// Session-mode defaults: refresh 5 min before expiry, 60 s clock skew, 30 s minimum
    /// interval, 10 % jitter, recover on 401 up to 5 times.
    fn default() -> Self {
        Self {
            refresh_before: DEFAULT_REFRESH_BEFORE,
            clock_skew: DEFAULT_CLOCK_SKEW,
            min_interval: DEFAULT_MIN_INTERVAL,
            jitter: DEFAULT_JITTER_FRACTION,
            refresh_on_status: vec![StatusCode::UNAUTHORIZED],
            max_recovery_tries: DEFAULT_MAX_RECOVERY_TRIES,
            proactive_retry_delay: DEFAULT_PROACTIVE_RETRY_DELAY,
            grace_window: DEFAULT_GRACE_WINDOW,
        }
    }
}

impl StandardPolicy {
    /// Provider-mode defaults: a 10 s refresh buffer, no clock skew,
    /// no minimum interval; otherwise as [`Default`].
    pub fn provider() -> Self {
        Self {
            refresh_before: DEFAULT_REFRESH_BUFFER,
            clock_skew: Duration::ZERO,
            min_interval: Duration::ZERO,
            ..Self::default()
        }
    }

    /// Sets the proactive window.
    pub fn refresh_before(mut self, window: Duration) -> Self {
        self.refresh_before = window;
        self
    }

    /// Sets the clock skew allowance.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// Sets the minimum interval between proactive refreshes.
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// Sets the jitter fraction (clamped to 0.0–1.0; NaN counts as 0).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// Sets the statuses that trigger recovery.
    pub fn refresh_on_status(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.refresh_on_status = statuses.into_iter().collect();
        self
    }

    /// Sets the recovery limit per request.
    pub fn max_recovery_tries(mut self, tries: u32) -> Self {
        self.max_recovery_tries = tries;
        self
    }

    /// Sets the grace window after a rotation.
    pub fn grace_window(mut self, window: Duration) -> Self {
        self.grace_window = window;
        self
    }

    /// Sets the pause after a failed proactive refresh.
    pub fn proactive_retry_delay(mut self, delay: Duration) -> Self {
        self.proactive_retry_delay = delay;
        self
    }

    fn jitter_for(&self, record: &TokenRecord) -> Duration {
        // The field is public: NaN, infinities and out-of-range values are read as the
        // setter would have clamped them, so the hot path can never panic.
        let fraction = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        if fraction == 0.0 || self.refresh_before.is_zero() {
            return Duration::ZERO;
        }
        // A deterministic value in [0, 1) from the token's fingerprint.
        let unit = (record.fingerprint() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::try_from_secs_f64(self.refresh_before.as_secs_f64() * fraction * unit)
            .unwrap_or(self.refresh_before)
    }
}

impl RefreshPolicy for StandardPolicy {
    fn freshness(&self, record: Option<&TokenRecord>, now: SystemTime) -> Freshness {
        let Some(record) = record else {
            return Freshness::Missing;
        };
        if record.access_token.is_none() {
            return Freshness::Missing;
        }
        let Some(expires_at) = record.expires_at else {
            return Freshness::Fresh;
        };
        let half_life = record.lifetime().unwrap_or(Duration::ZERO) / 2;
        let remaining = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
        let expiry_margin = self.clock_skew.min(half_life);
        if remaining.is_zero() || remaining <= expiry_margin {
            return Freshness::Expired;
        }
        let window = self
            .refresh_before
            .saturating_add(self.clock_skew)
            .saturating_add(self.jitter_for(record))
            .min(half_life);
        if remaining <= window {
            let since_refresh = now.duration_since(record.obtained_at).unwrap_or(Duration::ZERO);
            if since_refresh >= self.min_interval {
                return Freshness::Stale;
            }
        }
        Freshness::Fresh
    }

    fn is_rejection(&self, status: StatusCode) -> bool {
        self.refresh_on_status.contains(&status)
    }

    fn max_recovery_tries(&self) -> u32 {
        self.max_recovery_tries
    }

    fn proactive_retry_delay(&self) -> Duration {
        self.proactive_retry_delay
    }

    fn grace_window(&self) -> Duration {
        self.grace_window
    }
}

/// A duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a whole number followed by ms, s, m, h or d (e.g. \"30s\", \"5m\")"
)]
pub struct DurationParseError {
    input: String,
}

/// Parses durations written as a whole number and a unit: `"500ms"`, `"30s"`, `"5m"`, `"1h"`,
/// `"2d"`. A bare number means seconds. Surrounding whitespace is ignored; anything else
/// (negative numbers, fractions, unknown units, overflow) is an error.
pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let err = || DurationParseError {
        input: input.chars().take(64).collect(),
    };
    let text = input.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(err());
    }
    let value: u64 = digits.parse().map_err(|_| err())?;
    let seconds_per_unit: u64 = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(value)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    value
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(err)
}

/// A [`Duration`] that parses from the strings [`parse_duration`] accepts, for configuration
/// structs and `"5m".parse()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationStr(pub Duration);

impl FromStr for DurationStr {
    type Err = DurationParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(DurationStr)
    }
}

impl From<DurationStr> for Duration {
    fn from(value: DurationStr) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::AccessToken;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn record(lifetime_secs: u64) -> TokenRecord {
        TokenRecord::new(AccessToken::new("tok"), UNIX_EPOCH)
            .with_expires_in(Duration::from_secs(lifetime_secs))
            .unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn no_jitter() -> StandardPolicy {
        StandardPolicy::default().jitter(0.0)
    }

    #[test]
    fn non_finite_or_out_of_range_jitter_never_panics() {
        let lifetime = 3600;
        for jitter in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 7.5, f64::MAX] {
            let mut p = StandardPolicy::default().refresh_before(Duration::MAX);
            p.jitter = jitter; // the public field bypasses the clamping setter
            for secs in [0, 1000, 1799, 1800, 3599, 3600, 9999] {
                let _ = p.freshness(Some(&record(lifetime)), at(secs));
            }
            assert_eq!(p.freshness(Some(&record(lifetime)), at(4000)), Freshness::Expired);
        }
    }

    #[test]
    fn missing_and_without_expiry() {
        let p = no_jitter();
        assert_eq!(p.freshness(None, at(0)), Freshness::Missing);
        let only_refresh = TokenRecord::from_refresh_token(crate::RefreshToken::new("r"), UNIX_EPOCH);
        assert_eq!(p.freshness(Some(&only_refresh), at(0)), Freshness::Missing);
        let forever = TokenRecord::new(AccessToken::new("t"), UNIX_EPOCH);
        assert_eq!(p.freshness(Some(&forever), at(10_000_000)), Freshness::Fresh);
    }

    #[test]
    fn standard_boundaries_for_a_one_hour_token() {
        // window = 5 min + 60 s skew = 360 s; expiry margin = 60 s.
        let p = no_jitter();
        let r = record(3600);
        assert_eq!(p.freshness(Some(&r), at(0)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(3600 - 361)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(3600 - 360)), Freshness::Stale);
        assert_eq!(p.freshness(Some(&r), at(3600 - 61)), Freshness::Stale);
        assert_eq!(p.freshness(Some(&r), at(3600 - 60)), Freshness::Expired);
        assert_eq!(p.freshness(Some(&r), at(99_999)), Freshness::Expired);
    }

    #[test]
    fn window_is_capped_at_half_the_lifetime() {
        // A 60 s token: window and margin both cap at 30 s: fresh for 30 s, never a loop.
        let p = no_jitter();
        let r = record(60);
        assert_eq!(p.freshness(Some(&r), at(0)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(29)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(30)), Freshness::Expired);
        // Provider defaults: 10 s buffer, no skew: stale from 50 s, expired at 60 s.
        let p = StandardPolicy::provider().jitter(0.0);
        assert_eq!(p.freshness(Some(&r), at(49)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(50)), Freshness::Stale);
        assert_eq!(p.freshness(Some(&r), at(60)), Freshness::Expired);
        // A 10 s token under provider defaults: window capped at 5 s.
        let r = record(10);
        assert_eq!(p.freshness(Some(&r), at(4)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(5)), Freshness::Stale);
    }

    #[test]
    fn min_interval_delays_proactive_refresh() {
        let p = no_jitter()
            .refresh_before(Duration::from_secs(100))
            .clock_skew(Duration::ZERO);
        let r = record(300);
        // In the window at 200 s and 200 s since obtained >= 30 s.
        assert_eq!(p.freshness(Some(&r), at(200)), Freshness::Stale);
        let p = p.min_interval(Duration::from_secs(250));
        assert_eq!(p.freshness(Some(&r), at(200)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(250)), Freshness::Stale);
    }

    #[test]
    fn zero_means_zero() {
        let p = no_jitter()
            .refresh_before(Duration::ZERO)
            .clock_skew(Duration::ZERO)
            .min_interval(Duration::ZERO)
            .max_recovery_tries(0);
        let r = record(100);
        assert_eq!(p.freshness(Some(&r), at(99)), Freshness::Fresh);
        assert_eq!(p.freshness(Some(&r), at(100)), Freshness::Expired);
        assert_eq!(RefreshPolicy::max_recovery_tries(&p), 0);
    }

    #[test]
    fn jitter_widens_the_window_within_bounds() {
        let p = StandardPolicy::default()
            .clock_skew(Duration::ZERO)
            .refresh_before(Duration::from_secs(1000))
            .jitter(0.5);
        let mut stale_starts = std::collections::HashSet::new();
        for i in 0..50 {
            let r = TokenRecord::new(AccessToken::new(format!("tok-{i}")), UNIX_EPOCH)
                .with_expires_in(Duration::from_secs(100_000))
                .unwrap();
            assert_eq!(p.freshness(Some(&r), at(100_000 - 1501)), Freshness::Fresh);
            assert_eq!(p.freshness(Some(&r), at(100_000 - 1000)), Freshness::Stale);
            let start = (0..=500).find(|s| p.freshness(Some(&r), at(100_000 - 1500 + s)) == Freshness::Stale);
            stale_starts.insert(start);
        }
        assert!(
            stale_starts.len() > 10,
            "jitter should spread refreshes: {stale_starts:?}"
        );
    }

    #[test]
    fn rejection_statuses() {
        let p = StandardPolicy::default();
        assert!(p.is_rejection(StatusCode::UNAUTHORIZED));
        assert!(!p.is_rejection(StatusCode::FORBIDDEN));
        let p = p.refresh_on_status([StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]);
        assert!(p.is_rejection(StatusCode::FORBIDDEN));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(" 45 ").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!("5m".parse::<DurationStr>().unwrap().0, Duration::from_secs(300));
        for bad in [
            "",
            "s",
            "-5s",
            "1.5h",
            "5 minutes",
            "5w",
            "99999999999999999999d",
            "5m5s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        let msg = parse_duration("5w").unwrap_err().to_string();
        assert!(msg.contains("\"5w\"") && msg.contains("30s"), "{msg}");
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn duration_round_trips(n in 0u64..1_000_000, unit in prop::sample::select(vec!["ms", "s", "m", "h", "d"])) {
            let parsed = parse_duration(&format!("{n}{unit}")).unwrap();
            let expected = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n * 60),
                "h" => Duration::from_secs(n * 3600),
                _ => Duration::from_secs(n * 86_400),
            };
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn a_fresh_token_is_usable_for_half_its_life(
            lifetime in 1u64..1_000_000,
            before in 0u64..100_000,
            skew in 0u64..10_000,
            jitter in 0.0f64..1.0,
        ) {
            let p = StandardPolicy::default()
                .refresh_before(Duration::from_secs(before))
                .clock_skew(Duration::from_secs(skew))
                .min_interval(Duration::ZERO)
                .jitter(jitter);
            let r = record(lifetime);
            // Strictly before half-life the token is never expired or stale.
            let t = (lifetime - 1) / 2;
            if Duration::from_secs(lifetime - t) > Duration::from_secs(lifetime) / 2 {
                prop_assert_eq!(p.freshness(Some(&r), at(t)), Freshness::Fresh);
            }
            prop_assert_eq!(p.freshness(Some(&r), at(lifetime)), Freshness::Expired);
        }
    }
}
