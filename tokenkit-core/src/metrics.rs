//! Metrics through the `metrics` facade (feature `metrics`); without the feature every
//! function here is empty and compiles away.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tokenkit_token_fetches_total` | counter | `reason`, `outcome` (`ok` / `error`) |
//! | `tokenkit_refresh_duration_seconds` | histogram | `reason` |
//! | `tokenkit_recoveries_total` | counter | `outcome` (`replayed` / `aborted`) |
//! | `tokenkit_flight_wait_seconds` | histogram | |
//! | `tokenkit_store_conflicts_total` | counter | |
//! | `tokenkit_sessions_invalidated_total` | counter | |
//! | `tokenkit_logins_total` | counter | `outcome` |

use std::time::Duration;

use crate::events::Event;
#[cfg(feature = "metrics")]
use crate::source::FetchReason;

/// Counts what an event reports.
#[cfg(feature = "metrics")]
pub(crate) fn event(event: &Event<'_>) {
    match event {
        Event::Refreshed { reason, .. } => fetch(*reason, "ok"),
        Event::RefreshFailed { reason, .. } => fetch(*reason, "error"),
        Event::RecoveryTry { .. } => {
            metrics::counter!("tokenkit_recoveries_total", "outcome" => "replayed").increment(1)
        }
        Event::RecoveryAborted { .. } => {
            metrics::counter!("tokenkit_recoveries_total", "outcome" => "aborted").increment(1)
        }
        Event::SessionInvalid { .. } => metrics::counter!("tokenkit_sessions_invalidated_total").increment(1),
        Event::LoggedIn { .. } => metrics::counter!("tokenkit_logins_total", "outcome" => "ok").increment(1),
        Event::LoginFailed { .. } => {
            metrics::counter!("tokenkit_logins_total", "outcome" => "error").increment(1)
        }
        Event::FailureThreshold { .. } | Event::Rejected { .. } => {}
    }
}

#[cfg(feature = "metrics")]
fn fetch(reason: FetchReason, outcome: &'static str) {
    metrics::counter!("tokenkit_token_fetches_total", "reason" => reason.as_str(), "outcome" => outcome)
        .increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn event(_event: &Event<'_>) {}

/// How long one token fetch took (on the injected clock).
pub(crate) fn refresh_duration(reason: crate::source::FetchReason, took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("tokenkit_refresh_duration_seconds", "reason" => reason.as_str())
        .record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (reason, took);
}

/// How long a request waited for a refresh led by another request (or replica).
pub(crate) fn flight_wait(took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("tokenkit_flight_wait_seconds").record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = took;
}

/// A compare-and-swap write lost against another writer.
pub(crate) fn store_conflict() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tokenkit_store_conflicts_total").increment(1);
}
