//! When to refresh: a pure, synchronous classifier of token records.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::token::TokenRecord;

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

    /// An instant before which [`freshness`](Self::freshness) of `record` is
    /// [`Fresh`](Freshness::Fresh) whatever `now` is, if the policy can tell. The client keeps
    /// it with the record and then only compares the clock against it on each request.
    /// Returning an instant too late would serve a stale token; `None` (the default) makes
    /// the client ask [`freshness`](Self::freshness) every time.
    fn fresh_until(&self, record: &TokenRecord) -> Option<SystemTime> {
        let _ = record;
        None
    }

    /// Whether a final response status (after any recovery) is an authentication failure
    /// (an [`AuthFailure::Rejected`](crate::AuthFailure::Rejected) error) rather than a plain
    /// status error. By default: a status this policy recovers from, or 403.
    fn is_auth_failure(&self, status: StatusCode) -> bool {
        self.is_rejection(status) || is_auth_failure_by_default(status)
    }

    /// How many times one request is recovered (new token, replay) before giving up.
    fn max_recovery_tries(&self) -> u32;

    /// How long to keep using a still-valid token after a failed proactive refresh before
    /// trying again. Mandatory refreshes (missing or expired token) are never delayed.
    fn proactive_retry_delay(&self) -> Duration {
        crate::defaults::PROACTIVE_RETRY_DELAY
    }

    /// How long a rotated-away refresh token still maps to its successor (so parallel requests
    /// carrying it do not rotate twice).
    fn grace_window(&self) -> Duration {
        crate::defaults::GRACE_WINDOW
    }
}

/// The statuses that are authentication failures whatever the policy: 401 and 403.
pub(crate) fn is_auth_failure_by_default(status: StatusCode) -> bool {
    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
}

/// When a token counts as expired, relative to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpiryRule {
    /// Within `clock_skew` of its expiry, the skew capped at half the token's lifetime (the
    /// default): a freshly obtained token is usable for half its life, however short.
    #[default]
    CappedSkew,
    /// Within `clock_skew` of its expiry, whatever the token's lifetime: the rule of session
    /// libraries that compare `now + skew` with the expiry directly; choose it to reproduce
    /// their timing. A token whose whole lifetime is at most the skew is expired on arrival,
    /// so every request refreshes it. (The refresh window stays capped at half the lifetime.)
    Skew,
}

/// The standard policy.
///
/// A token is **expired** when `now + min(clock_skew, lifetime/2) >= expires_at` (with
/// [`ExpiryRule::Skew`]: `now + clock_skew >= expires_at`) and **stale**
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
    refresh_before: Duration,
    clock_skew: Duration,
    min_interval: Duration,
    /// Percent of `refresh_before`, at most 100.
    jitter_percent: u8,
    refresh_on_status: Vec<StatusCode>,
    max_recovery_tries: u32,
    proactive_retry_delay: Duration,
    grace_window: Duration,
    expiry_rule: ExpiryRule,
}

impl Default for StandardPolicy {
    /// Session-mode defaults: refresh 5 min before expiry, 60 s clock skew, 30 s minimum
    /// interval, 10 % jitter, recover on 401 up to 5 times.
    fn default() -> Self {
        Self {
            refresh_before: crate::defaults::REFRESH_BEFORE,
            clock_skew: crate::defaults::CLOCK_SKEW,
            min_interval: crate::defaults::MIN_INTERVAL,
            jitter_percent: crate::defaults::JITTER_PERCENT,
            refresh_on_status: vec![StatusCode::UNAUTHORIZED],
            max_recovery_tries: crate::defaults::MAX_RECOVERY_TRIES,
            proactive_retry_delay: crate::defaults::PROACTIVE_RETRY_DELAY,
            grace_window: crate::defaults::GRACE_WINDOW,
            expiry_rule: ExpiryRule::default(),
        }
    }
}

impl StandardPolicy {
    /// Provider-mode defaults: a 10 s refresh buffer, no clock skew,
    /// no minimum interval; otherwise as [`Default`].
    pub fn provider() -> Self {
        Self {
            refresh_before: crate::defaults::REFRESH_BUFFER,
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

    /// Sets the jitter: up to `percent` % of the proactive window is added per token, to
    /// spread the refreshes of many clients whose tokens expire together. Values above 100
    /// count as 100; 0 disables it.
    pub fn jitter_percent(mut self, percent: u8) -> Self {
        self.jitter_percent = percent.min(100);
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

    /// Sets when a token counts as expired (default [`ExpiryRule::CappedSkew`]).
    pub fn expiry_rule(mut self, rule: ExpiryRule) -> Self {
        self.expiry_rule = rule;
        self
    }

    /// How close to its expiry a token is expired, for a token of `half_life`.
    fn expiry_margin(&self, half_life: Duration) -> Duration {
        match self.expiry_rule {
            ExpiryRule::CappedSkew => self.clock_skew.min(half_life),
            ExpiryRule::Skew => self.clock_skew,
        }
    }

    fn jitter_for(&self, record: &TokenRecord) -> Duration {
        if self.jitter_percent == 0 || self.refresh_before.is_zero() {
            return Duration::ZERO;
        }
        // Integer arithmetic: exact and panic-free for any window, Duration::MAX included.
        // A deterministic share in [0, 1) of the maximum, from the token's fingerprint.
        let max = self.refresh_before.as_nanos() * u128::from(self.jitter_percent.min(100)) / 100;
        let nanos = max * u128::from(record.fingerprint() % 1024) / 1024;
        const NANOS_PER_SEC: u128 = 1_000_000_000;
        match u64::try_from(nanos / NANOS_PER_SEC) {
            // The remainder is below 10^9, so it fits in u32.
            Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
            Err(_) => Duration::MAX,
        }
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
        let remaining = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
        let window_without_jitter = self.refresh_before.saturating_add(self.clock_skew);
        let most_jitter = (self.refresh_before / 100)
            .saturating_mul(u32::from(self.jitter_percent))
            .saturating_add(Duration::from_micros(1));
        let widest_window = window_without_jitter.saturating_add(most_jitter);
        // Beyond the widest window, whatever the lifetime and the jitter: fresh, without
        // the lifetime or hashing the token for its jitter (the common case, on every
        // request). The margin below is at most the skew, inside that window.
        if remaining > widest_window {
            return Freshness::Fresh;
        }
        let half_life = record.lifetime().unwrap_or(Duration::ZERO) / 2;
        let expiry_margin = self.expiry_margin(half_life);
        if remaining.is_zero() || remaining <= expiry_margin {
            return Freshness::Expired;
        }
        if remaining > widest_window.min(half_life) {
            return Freshness::Fresh;
        }
        let window = window_without_jitter
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

    /// Fresh before the refresh window opens (`expires_at - window`), and also inside it
    /// until `min_interval` after the token was obtained (while not yet expired).
    fn fresh_until(&self, record: &TokenRecord) -> Option<SystemTime> {
        record.access_token.as_ref()?;
        let expires_at = record.expires_at?;
        let half_life = record.lifetime().unwrap_or(Duration::ZERO) / 2;
        let expiry_margin = self.expiry_margin(half_life);
        let window = self
            .refresh_before
            .saturating_add(self.clock_skew)
            .saturating_add(self.jitter_for(record))
            .min(half_life);
        let before_window = expires_at.checked_sub(window);
        // Inside the window, a token obtained less than `min_interval` ago stays fresh until
        // it is about to expire. (With no interval this ends at `obtained_at`, which is never
        // after the window opens: the window is at most half the lifetime.)
        // Never past the expiry margin (under the skew rule it can be wider than the window).
        let not_expired = expires_at.checked_sub(expiry_margin)?;
        let recently_obtained = record.obtained_at.checked_add(self.min_interval);
        before_window
            .max(recently_obtained)
            .map(|until| until.min(not_expired))
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

/// Parses durations written as a whole number and a unit: `"500ms"`, `"30s"`, `"5m"`, `"1h"`,
/// `"2d"`. A bare number means seconds. Surrounding whitespace is ignored; anything else
/// (negative numbers, fractions, unknown units, overflow) is an error.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(tokenkit_core::parse_duration("5m")?, Duration::from_secs(300));
/// assert!(tokenkit_core::parse_duration("-5m").is_err());
/// # Ok::<(), tokenkit_core::Error>(())
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, crate::error::Error> {
    let err = || {
        let shown: String = input.chars().take(32).filter(|c| !c.is_control()).collect();
        crate::error::Error::config(format!(
            "invalid duration {shown:?}: expected a whole number followed by ms, s, m, h or d (e.g. \"30s\", \"5m\")"
        ))
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
        StandardPolicy::default().jitter_percent(0)
    }

    /// The skew rule expires a token within the skew of its expiry whatever its lifetime;
    /// the default caps the skew at half the lifetime.
    #[test]
    fn the_skew_rule_does_not_cap_at_half_the_lifetime() {
        let capped = no_jitter()
            .clock_skew(Duration::from_secs(60))
            .refresh_before(Duration::ZERO);
        let skew = capped.clone().expiry_rule(ExpiryRule::Skew);
        // A 100 s token, 40 s in: 60 s left, within the 60 s skew but not within half its
        // lifetime.
        assert_eq!(capped.freshness(Some(&record(100)), at(40)), Freshness::Fresh);
        assert_eq!(skew.freshness(Some(&record(100)), at(40)), Freshness::Expired);
        // A 30 s token is expired on arrival under the skew rule, usable under the default.
        assert_eq!(skew.freshness(Some(&record(30)), at(0)), Freshness::Expired);
        assert_eq!(capped.freshness(Some(&record(30)), at(0)), Freshness::Fresh);
        // A long token: both rules agree (expired from 60 s before the end).
        for (secs, expected) in [(3539, Freshness::Fresh), (3540, Freshness::Expired)] {
            assert_eq!(
                capped.freshness(Some(&record(3600)), at(secs)),
                expected,
                "{secs}"
            );
            assert_eq!(skew.freshness(Some(&record(3600)), at(secs)), expected, "{secs}");
        }
    }

    #[test]
    fn extreme_windows_and_jitter_never_panic() {
        let lifetime = 3600;
        for percent in [0, 1, 100, 255] {
            let p = StandardPolicy::default()
                .refresh_before(Duration::MAX)
                .jitter_percent(percent);
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
        let p = StandardPolicy::provider().jitter_percent(0);
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
            .jitter_percent(50);
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
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// The instant the client caches says exactly what `freshness` says: fresh before it,
        /// not fresh from it on (clocks before `obtained_at`, zero windows and intervals
        /// included).
        #[test]
        fn fresh_until_agrees_with_freshness(
            lifetime in 0u64..20_000,
            obtained in 1_000u64..10_000,
            before in 0u64..5_000,
            skew in 0u64..500,
            min_interval in prop::sample::select(vec![0u64, 1, 30, 600]),
            jitter in 0u8..=100,
            position in 0.0f64..1.0,
            token in "[a-z]{1,8}",
            skew_rule in any::<bool>(),
        ) {
            // Anywhere from a little before the token was obtained to a little after it expired.
            let now = obtained - 100 + (position * (lifetime + 200) as f64) as u64;
            let rule = if skew_rule { ExpiryRule::Skew } else { ExpiryRule::CappedSkew };
            let policy = StandardPolicy::default()
                .refresh_before(Duration::from_secs(before))
                .clock_skew(Duration::from_secs(skew))
                .min_interval(Duration::from_secs(min_interval))
                .jitter_percent(jitter)
                .expiry_rule(rule);
            let record = TokenRecord::new(AccessToken::new(token), at(obtained))
                .with_expires_at(at(obtained + lifetime));
            let now = at(now);
            let fresh = policy.freshness(Some(&record), now) == Freshness::Fresh;
            let until = policy.fresh_until(&record);
            prop_assert_eq!(fresh, until.is_some_and(|until| now < until), "until {:?}", until);
        }

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
            jitter in 0u8..=100,
        ) {
            let p = StandardPolicy::default()
                .refresh_before(Duration::from_secs(before))
                .clock_skew(Duration::from_secs(skew))
                .min_interval(Duration::ZERO)
                .jitter_percent(jitter);
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
