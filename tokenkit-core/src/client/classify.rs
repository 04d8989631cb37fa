//! What to do after one attempt of a request: a pure classifier, in the manner of tower's
//! retry policy. The request loop (`request.rs`) only executes its answer.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};

use super::retry::RetryConfig;
use crate::error::Error;
use crate::policy::RefreshPolicy;

/// How one attempt ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    /// The transport failed (no response).
    Failed(&'a Error),
    /// A response arrived.
    Answered {
        status: StatusCode,
        headers: &'a HeaderMap,
    },
}

/// Where the request stands when the attempt ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress<'a> {
    pub(crate) method: &'a Method,
    /// This attempt's number, from 1 (recoveries do not count as attempts).
    pub(crate) attempt: u32,
    /// Replays with a new token made so far.
    pub(crate) recoveries: u32,
    /// Whether the request carried a token (only then can a rejection be recovered).
    pub(crate) authenticated: bool,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Hand the response on as it is (a success, or a final non-2xx).
    Done,
    /// Send the same request again after this pause.
    RetryAfter(Duration),
    /// Get a new token and replay.
    Recover,
    /// The token keeps being rejected: stop with the rejection.
    GiveUp,
    /// Return the transport error.
    Fail,
}

/// Decides the next step. `now` reads `Retry-After` dates and `unit` draws the jitter (in
/// `[0, 1)`); both are asked for only when a retry is decided (the common path reads no clock
/// and draws nothing), and both are arguments, so the function stays pure.
pub(crate) fn classify(
    outcome: Outcome<'_>,
    progress: Progress<'_>,
    retry: &RetryConfig,
    policy: Option<&dyn RefreshPolicy>,
    now: impl FnOnce() -> SystemTime,
    unit: impl FnOnce() -> f64,
) -> Next {
    let Progress {
        method,
        attempt,
        recoveries,
        authenticated,
    } = progress;
    match outcome {
        Outcome::Failed(error) if retry.retries_error(method, attempt, error) => {
            Next::RetryAfter(retry.delay_after(attempt, None, now(), unit()))
        }
        Outcome::Failed(_) => Next::Fail,
        Outcome::Answered { status, headers } if retry.retries_status(method, attempt, status) => {
            Next::RetryAfter(retry.delay_after(attempt, Some(headers), now(), unit()))
        }
        Outcome::Answered { status, headers } => match policy {
            Some(policy) if authenticated && policy.is_rejection(status) => {
                // A token that lacks a scope is not refreshed: a new one would lack it too.
                // (Read only on a rejection: the hot path never looks at the header.)
                if insufficient_scope(headers).is_some() {
                    Next::Done
                } else if recoveries < policy.max_recovery_tries() {
                    Next::Recover
                } else {
                    Next::GiveUp
                }
            }
            _ => Next::Done,
        },
    }
}

/// The scope a `WWW-Authenticate: Bearer` challenge with `error="insufficient_scope"` asks for
/// (RFC 6750 §3): `Some("")` when it names none, `None` without such a challenge.
pub(crate) fn insufficient_scope(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|challenge| {
            let params = challenge_params(challenge, "bearer")?;
            let error = params.iter().find(|(k, _)| k == "error")?;
            (error.1 == "insufficient_scope").then(|| {
                params
                    .iter()
                    .find(|(k, _)| k == "scope")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
        })
}

/// The `name=value` parameters of challenge `scheme` (case-insensitive) in a
/// `WWW-Authenticate` value; values quoted or not, names lowercased. `None` when the value is
/// another scheme's.
fn challenge_params(value: &str, scheme: &str) -> Option<Vec<(String, String)>> {
    let value = value.trim_start();
    let (name, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !name.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                // Up to the closing quote, honouring backslash escapes.
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((at, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                out.push(escaped);
                            }
                        }
                        '"' => {
                            end = at + 1;
                            break;
                        }
                        c => out.push(c),
                    }
                }
                (out, quoted.get(end..).unwrap_or_default())
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            }
        };
        params.push((key, value));
        rest = tail.trim_start().trim_start_matches(',').trim_start();
        if params.len() > 32 {
            break;
        }
    }
    Some(params)
}

/// A jitter draw in `[0, 1)` for retry `attempt`: randomly seeded per process, never from a
/// clock.
pub(crate) fn jitter_draw(attempt: u32) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::policy::StandardPolicy;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    const NOW: SystemTime = UNIX_EPOCH;

    fn challenge(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn insufficient_scope_challenges_are_read() {
        let cases: [(&[&str], Option<&str>); 10] = [
            (
                &[r#"Bearer error="insufficient_scope", scope="admin read""#],
                Some("admin read"),
            ),
            (
                &[r#"Bearer realm="api",error=insufficient_scope,scope=admin"#],
                Some("admin"),
            ),
            // Parameter names are case-insensitive (RFC 7235 §2.1).
            (&[r#"bearer ERROR="insufficient_scope""#], Some("")),
            (&[r#"BEARER error="insufficient_scope""#], Some("")),
            (
                &[r#"Bearer error="insufficient_scope", scope="a\"b""#],
                Some("a\"b"),
            ),
            (&[r#"Bearer error="invalid_token""#], None),
            (&[r#"DPoP error="insufficient_scope""#], None),
            (
                &[
                    r#"Basic realm="x""#,
                    r#"Bearer error="insufficient_scope", scope="x""#,
                ],
                Some("x"),
            ),
            (&["Bearer ===,,,=\"", "Bearer", ""], None),
            (&[r#"Bearer error="insufficient_scope"#], Some("")),
        ];
        for (values, expected) in cases {
            assert_eq!(
                insufficient_scope(&challenge(values)).as_deref(),
                expected,
                "{values:?}"
            );
        }
        let long = format!("Bearer {}", "a=b, ".repeat(10_000));
        assert_eq!(insufficient_scope(&challenge(&[&long])), None);
    }

    #[test]
    fn an_insufficient_scope_is_never_recovered() {
        let policy = StandardPolicy::default();
        let after_401 = |value: &str| {
            let headers = challenge(&[value]);
            let outcome = Outcome::Answered {
                status: StatusCode::UNAUTHORIZED,
                headers: &headers,
            };
            let progress = progress(&Method::GET, 1, 0);
            classify(
                outcome,
                progress,
                &RetryConfig::none(),
                Some(&policy),
                || NOW,
                || 0.5,
            )
        };
        assert_eq!(
            after_401(r#"Bearer error="insufficient_scope", scope="admin""#),
            Next::Done
        );
        assert_eq!(after_401(r#"Bearer error="invalid_token""#), Next::Recover);
    }

    fn progress(method: &Method, attempt: u32, recoveries: u32) -> Progress<'_> {
        Progress {
            method,
            attempt,
            recoveries,
            authenticated: true,
        }
    }

    fn answered(status: u16, headers: &HeaderMap) -> Outcome<'_> {
        Outcome::Answered {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
        }
    }

    #[test]
    fn the_steps_of_a_request() {
        let (retry, policy, none) = (
            RetryConfig::default().jitter(false),
            StandardPolicy::default(),
            HeaderMap::new(),
        );
        let get = Method::GET;
        let run = |outcome, progress| classify(outcome, progress, &retry, Some(&policy), || NOW, || 0.0);
        assert_eq!(run(answered(200, &none), progress(&get, 1, 0)), Next::Done);
        assert_eq!(run(answered(404, &none), progress(&get, 1, 0)), Next::Done);
        assert_eq!(
            run(answered(503, &none), progress(&get, 1, 0)),
            Next::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            run(answered(503, &none), progress(&get, 3, 0)),
            Next::Done,
            "attempts exhausted: the 503 is the answer"
        );
        assert_eq!(run(answered(401, &none), progress(&get, 1, 0)), Next::Recover);
        assert_eq!(run(answered(401, &none), progress(&get, 1, 5)), Next::GiveUp);
        let anonymous = Progress {
            authenticated: false,
            ..progress(&get, 1, 0)
        };
        assert_eq!(
            run(answered(401, &none), anonymous),
            Next::Done,
            "no token: nothing to recover"
        );
        let refused = Error::new(ErrorKind::Connect, "refused");
        assert_eq!(
            run(Outcome::Failed(&refused), progress(&get, 1, 0)),
            Next::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            run(Outcome::Failed(&refused), progress(&Method::POST, 1, 0)),
            Next::Fail,
            "a POST may have been applied"
        );
        let mut later = HeaderMap::new();
        later.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            run(answered(429, &later), progress(&get, 1, 0)),
            Next::RetryAfter(Duration::from_secs(7))
        );
    }

    #[test]
    fn the_policy_decides_what_a_rejection_is() {
        let retry = RetryConfig::none();
        let policy = StandardPolicy::default().refresh_on_status([StatusCode::FORBIDDEN]);
        let none = HeaderMap::new();
        let get = Method::GET;
        let run = |status| {
            classify(
                answered(status, &none),
                progress(&get, 1, 0),
                &retry,
                Some(&policy),
                || NOW,
                || 0.0,
            )
        };
        assert_eq!(run(403), Next::Recover);
        assert_eq!(run(401), Next::Done);
    }

    proptest! {
        /// Whatever happens, the loop ends: every retry uses up an attempt and every recovery
        /// a try, and a pause never exceeds the configured cap.
        #[test]
        fn the_driver_always_terminates(
            statuses in proptest::collection::vec(prop_oneof![Just(200u16), Just(401), Just(403), Just(429), Just(500), Just(503)], 1..64),
            attempts in 1u32..6,
            tries in 0u32..6,
            unit in 0.0f64..1.0,
        ) {
            let retry = RetryConfig::default().attempts(attempts);
            let policy = StandardPolicy::default().max_recovery_tries(tries);
            let (get, none) = (Method::GET, HeaderMap::new());
            let (mut attempt, mut recoveries, mut steps) = (1u32, 0u32, 0usize);
            for status in statuses.iter().cycle() {
                steps += 1;
                prop_assert!(steps <= (attempts as usize) * (tries as usize + 1) + 1);
                match classify(answered(*status, &none), progress(&get, attempt, recoveries), &retry, Some(&policy), || NOW, || unit) {
                    Next::RetryAfter(pause) => {
                        prop_assert!(pause <= crate::defaults::MAX_RETRY_DELAY);
                        attempt += 1;
                    }
                    Next::Recover => recoveries += 1,
                    Next::Done | Next::GiveUp | Next::Fail => break,
                }
            }
        }
    }
}
