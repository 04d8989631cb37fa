//! Staying up while the identity provider is down: the shared backoff, `Retry-After`, the
//! circuit breaker, serving still-valid tokens, failing fast — on the injected clock, against
//! the test server's RFC 6749 token endpoint through reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use serde_json::Value;
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{AuthFailure, Client, Clock, OAuth2Config, OutageConfig, StandardPolicy};
use tokenkit_tests::{AuthServer, Fault};

const TOKEN_PATH: &str = "/oauth2/token";

struct Setup {
    server: AuthServer,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let clock = ManualClock::default();
    let server = AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap();
    Setup { server, clock }
}

impl Setup {
    /// Client credentials, one attempt per fetch (so the endpoint's count is the fetch count),
    /// the default outage settings.
    fn client(&self, outage: OutageConfig) -> Client {
        let config = OAuth2Config::new(self.server.oauth_token_url(), "client-1")
            .client_secret("secret-1")
            .attempts(1);
        tokenkit_reqwest::builder(self.server.url())
            .clock(self.clock.clone())
            .oauth2_client_credentials(config)
            .policy(StandardPolicy::provider().jitter_percent(0))
            .outage(outage)
            .build()
            .unwrap()
    }

    fn calls(&self) -> usize {
        self.server.count(TOKEN_PATH)
    }
}

/// The outage: the token endpoint answers 503 for 60 s of simulated time under a
/// steady 1,000 requests/s (10 concurrent requests every 10 ms).
///
/// The schedule, with the defaults (backoff from 1 s doubling, each pause jittered into
/// [½, 1) of it; the circuit opens after 5 failures for 30 s) and the provider policy
/// (tokens of 16 s here, refreshed proactively in their last 10 s, a failed proactive refresh
/// paused 5 s):
///
/// | call | when (s)  | why                                   | gate after it          |
/// |------|-----------|---------------------------------------|------------------------|
/// | 1    | 6         | proactive (token valid until 16)      | +[0.5, 1)              |
/// | 2    | 11        | proactive (5 s after the first)       | +[1, 2)                |
/// | 3    | 16        | needed: the token expired             | +[2, 4) → [18, 20)     |
/// | 4    | [18, 20)  | needed                                | +[4, 8) → [22, 28)     |
/// | 5    | [22, 28)  | needed; 5 in a row: circuit opens     | +30 → [52, 58)         |
/// | 6    | [52, 58)  | the half-open probe, still down       | +30 → [82, 88)         |
///
/// So the endpoint sees exactly **6 calls** in the 60 s, whatever the jitter (instead of
/// ~44,000: one per request that needed a token). Requests before 16 s are all served with
/// the still-valid token; every later one fails fast with `SourceUnavailable` and a
/// `retry_at`. The endpoint is back at 60 s; the next probe, at most one cooldown later
/// (before 88 s), closes the circuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_second_outage_under_load_follows_the_backoff_schedule() {
    let s = setup().await;
    s.server.set_token_lifetime(Duration::from_secs(16));
    let client = s.client(OutageConfig::default());
    let start = s.clock.now();
    client.get("/api/warm").send::<Value>().await.unwrap();
    assert_eq!(s.calls(), 1, "the token before the outage");
    let before = s.calls();
    s.server.fail_next_token_requests(1_000_000, Fault::Status(503));

    let at = |ms: u64| start + Duration::from_millis(ms);
    let (mut served, mut failed_fast, mut failed_by_the_endpoint) = (0usize, 0usize, 0usize);
    let mut first_failure: Option<SystemTime> = None;
    for step in 1..=6_000u64 {
        let now_ms = step * 10;
        s.clock.set(at(now_ms));
        let results = join_all((0..10).map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("/api/load").send::<Value>().await })
        }))
        .await;
        for result in results {
            match result.unwrap() {
                Ok(response) => {
                    assert_eq!(response.status, 200);
                    assert!(now_ms < 16_000, "served at {now_ms} ms with an expired token?");
                    served += 1;
                }
                Err(err) => {
                    assert!(
                        now_ms >= 16_000,
                        "a request with a valid token failed at {now_ms} ms: {err}"
                    );
                    let failure = err.auth_failure();
                    // The requests waiting on a failing fetch get its error; everyone else is
                    // refused without a call.
                    if failure == Some(AuthFailure::SourceUnavailable) {
                        let retry_at = err.retry_at().expect("a fail-fast error says until when");
                        assert!(retry_at > at(now_ms), "{err}");
                        failed_fast += 1;
                    } else {
                        assert_eq!(failure, Some(AuthFailure::TokenUnavailable), "{err}");
                        assert_eq!(err.status().map(|s| s.as_u16()), Some(503), "{err}");
                        failed_by_the_endpoint += 1;
                    }
                    first_failure.get_or_insert(at(now_ms));
                }
            }
        }
    }
    assert_eq!(
        s.calls() - before,
        6,
        "the endpoint sees the backoff schedule's 6 calls in 60 s"
    );
    // Requests at 10 ms … 15,990 ms: 1,599 steps of 10.
    assert_eq!(
        served, 15_990,
        "every request while the token was valid was served"
    );
    assert_eq!(served + failed_fast + failed_by_the_endpoint, 60_000);
    assert!(
        (4..=40).contains(&failed_by_the_endpoint),
        "only the requests waiting on one of the 4 failing needed fetches (calls 3–6; 10 \
         requests per step) saw the 503: {failed_by_the_endpoint}"
    );
    assert_eq!(
        first_failure,
        Some(at(16_000)),
        "failures start when the token expires"
    );

    // The endpoint recovers at 60 s: within one cooldown a probe closes the circuit.
    s.server.clear_faults();
    let mut recovered_at = None;
    for step in 1..=3_000u64 {
        let now = at(60_000 + step * 10);
        s.clock.set(now);
        if client.get("/api/after").send::<Value>().await.is_ok() {
            recovered_at = Some(now);
            break;
        }
    }
    let recovered_at = recovered_at.expect("recovered within the cooldown");
    assert!(
        recovered_at <= at(60_000) + tokenkit_core::defaults::OUTAGE_COOLDOWN,
        "closed within one cooldown"
    );
    assert_eq!(s.calls() - before, 7, "one probe closed it");
    // Closed: the next requests use the new token without another call.
    for _ in 0..10 {
        client.get("/api/after").send::<Value>().await.unwrap();
    }
    assert_eq!(s.calls() - before, 7);
}

/// `Retry-After` on a 503 or 429 from the token endpoint: no call before it, for any request.
#[tokio::test]
async fn retry_after_from_the_token_endpoint_is_honoured_by_every_request() {
    for status in [503, 429] {
        let s = setup().await;
        let client = s.client(OutageConfig::default());
        s.server
            .fail_next_token_requests(1, Fault::RetryAfter(status, "20".to_owned()));
        let err = client.get("/api/a").send::<Value>().await.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(20)), "{err}");
        assert_eq!(s.calls(), 1, "not retried inside the fetch either");
        let start = s.clock.now();
        for secs in [1, 5, 19] {
            s.clock.set(start + Duration::from_secs(secs));
            let err = client.get("/api/a").send::<Value>().await.unwrap_err();
            assert_eq!(err.auth_failure(), Some(AuthFailure::SourceUnavailable), "{err}");
            assert_eq!(err.retry_at(), Some(start + Duration::from_secs(20)));
        }
        assert_eq!(s.calls(), 1, "{status}: no call before the server's Retry-After");
        s.clock.set(start + Duration::from_secs(20));
        client.get("/api/a").send::<Value>().await.unwrap();
        assert_eq!(s.calls(), 2);
    }
}

/// A refused client secret (`invalid_client`) is not retried by every new request.
#[tokio::test]
async fn invalid_client_backs_off_instead_of_being_retried_by_every_request() {
    let s = setup().await;
    let config = OAuth2Config::new(s.server.oauth_token_url(), "client-1")
        .client_secret("wrong")
        .attempts(1);
    let client = tokenkit_reqwest::builder(s.server.url())
        .clock(s.clock.clone())
        .oauth2_client_credentials(config)
        .build()
        .unwrap();
    let first = client.get("/api/a").send::<Value>().await.unwrap_err();
    assert!(first.is_invalid_client(), "{first}");
    for _ in 0..100 {
        let err = client.get("/api/a").send::<Value>().await.unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::SourceUnavailable));
        assert!(
            err.to_string().contains("invalid_client"),
            "names the last failure: {err}"
        );
    }
    assert_eq!(s.calls(), 1, "100 requests, no new call within the backoff");
}

/// `OutageConfig::disabled()`: every request that needs a token calls the source.
#[tokio::test]
async fn disabled_outage_handling_calls_the_source_every_time() {
    let s = setup().await;
    let client = s.client(OutageConfig::disabled());
    s.server.fail_next_token_requests(5, Fault::Status(503));
    for _ in 0..5 {
        assert!(client.get("/api/a").send::<Value>().await.is_err());
    }
    client.get("/api/a").send::<Value>().await.unwrap();
    assert_eq!(s.calls(), 6);
}
