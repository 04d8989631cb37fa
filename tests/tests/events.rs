//! One test per [`Event`] variant: it fires once, at its moment, with its data; the same
//! moment is a `tracing` event (target `tokenkit_core::events`, at the documented level)
//! inside the matching span, and a metric in a test recorder.
//!
//! Each test runs on one thread (a current-thread runtime) with a thread-local subscriber and
//! a thread-local metrics recorder, so the tests of this binary do not see each other.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    AuthFailure, Client, ClientBuilder, CookieConfig, CookieStore, EndpointConfig, Error, Event,
    LoginOptions, MemoryStore, RefreshOptions, StandardPolicy, TokenRecord, TokenStore,
};
use tokenkit_tests::{token_provider, AuthServer, Browser, Fault, ResourceMode};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// What a handler saw: the variant's name and its `Debug`.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Seen {
    fn wire(&self, builder: ClientBuilder) -> ClientBuilder {
        let seen = self.clone();
        builder.on_event(move |event: &Event<'_>| {
            let data = match event {
                // The data each variant carries, checked below.
                Event::Refreshed {
                    tokens,
                    reason,
                    expires_in,
                    ..
                } => format!(
                    "reason={reason:?} expires_in={expires_in:?} access={}",
                    tokens.access_token.is_some()
                ),
                Event::LoggedIn {
                    tokens,
                    response,
                    context,
                } => format!(
                    "refresh={} user={} ctx={}",
                    tokens.refresh_token.is_some(),
                    response["user"]["name"],
                    context.is_some()
                ),
                other => format!("{other:?}"),
            };
            seen.0.lock().unwrap().push((event.name().to_owned(), data));
        })
    }

    fn named(&self, name: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

type FieldMap = BTreeMap<String, String>;

/// A captured `tracing` event or span.
#[derive(Debug, Clone)]
struct Captured {
    target: String,
    level: tracing::Level,
    /// The names of the spans the event is inside, outermost first.
    scope: Vec<String>,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Captured>>>,
    /// Closed spans: name → fields as last recorded.
    spans: Arc<Mutex<Vec<(String, FieldMap)>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct SpanFields(BTreeMap<String, String>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut Fields(&mut fields.0));
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let scope = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|s| s.name().to_owned()).collect())
            .unwrap_or_default();
        self.events.lock().unwrap().push(Captured {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            scope,
            fields,
        });
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let fields = span
                .extensions()
                .get::<SpanFields>()
                .map(|f| f.0.clone())
                .unwrap_or_default();
            self.spans.lock().unwrap().push((span.name().to_owned(), fields));
        }
    }
}

impl Capture {
    /// The `tracing` events tokenkit emitted for event `name`.
    fn events_named(&self, name: &str) -> Vec<Captured> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.fields.get("event").map(String::as_str) == Some(name))
            .cloned()
            .collect()
    }

    fn spans_named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

/// The metrics recorded: `name{label=value,…}` → value (counters) or sample count
/// (histograms).
fn metrics(snapshotter: &Snapshotter) -> BTreeMap<String, u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let value = match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => n,
                (MetricKind::Histogram, DebugValue::Histogram(samples)) => samples.len() as u64,
                _ => 0,
            };
            (name, value)
        })
        .collect()
}

/// Runs `test` on a current-thread runtime with a capturing subscriber and a local metrics
/// recorder; returns what they captured.
fn observe<F, Fut>(test: F) -> (Capture, BTreeMap<String, u64>)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || runtime.block_on(test()))
    });
    (capture, metrics(&snapshotter))
}

fn provider_builder(server: &AuthServer, clock: &ManualClock, seen: &Seen) -> ClientBuilder {
    seen.wire(
        tokenkit_reqwest::builder(server.url())
            .clock(clock.clone())
            .provider(token_provider(server.token_url()))
            .policy(StandardPolicy::provider().jitter_percent(0)),
    )
}

fn session_client(server: &AuthServer, clock: &ManualClock, seen: &Seen) -> Client {
    seen.wire(
        tokenkit_reqwest::builder(server.url())
            .clock(clock.clone())
            .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"))
            .store(CookieStore::new(CookieConfig::new().secure(false)))
            .policy(StandardPolicy::default().jitter_percent(0)),
    )
    .build()
    .unwrap()
}

async fn start(clock: &ManualClock) -> AuthServer {
    AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap()
}

fn assert_one_trace(capture: &Capture, name: &str, level: tracing::Level) -> Captured {
    let traced = capture.events_named(name);
    assert_eq!(traced.len(), 1, "one tracing event for {name}: {traced:?}");
    let event = traced[0].clone();
    assert_eq!(event.target, "tokenkit_core::events", "module-path target");
    assert_eq!(event.level, level, "{name}");
    event
}

#[test]
fn refreshed_fires_once_with_its_reason_inside_a_refresh_span() {
    let seen = Seen::default();
    let (capture, metrics) = observe(|| async {
        let clock = ManualClock::default();
        let server = start(&clock).await;
        let client = provider_builder(&server, &clock, &seen).build().unwrap();
        client.get("/api/a").send::<Value>().await.unwrap();
        client.get("/api/a").send::<Value>().await.unwrap();
    });
    assert_eq!(
        seen.named("refreshed"),
        ["reason=Needed expires_in=Some(3600s) access=true"]
    );
    let traced = assert_one_trace(&capture, "refreshed", tracing::Level::INFO);
    assert_eq!(traced.fields["reason"], "needed");
    assert_eq!(traced.scope, ["request", "refresh"], "inside the refresh span");
    let refresh = capture.spans_named("refresh");
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0]["reason"], "needed");
    assert_eq!(refresh[0]["outcome"], "ok");
    let requests = capture.spans_named("request");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["method"], "GET");
    assert_eq!(requests[0]["host"], "127.0.0.1");
    assert_eq!(requests[0]["attempt"], "1");
    assert_eq!(requests[0]["outcome"], "200");
    assert_eq!(
        metrics["tokenkit_token_fetches_total{outcome=ok,reason=needed}"],
        1
    );
    assert_eq!(metrics["tokenkit_refresh_duration_seconds{reason=needed}"], 1);
    assert!(metrics["tokenkit_flight_wait_seconds{}"] >= 1);
}

#[test]
fn refresh_failed_and_the_failure_threshold_fire_at_their_moments() {
    let seen = Seen::default();
    let (capture, metrics) = observe(|| async {
        let clock = ManualClock::default();
        let server = start(&clock).await;
        let client = provider_builder(&server, &clock, &seen)
            .token_try_threshold(2)
            .build()
            .unwrap();
        server.fail_next_token_requests(3, Fault::Status(500));
        for _ in 0..3 {
            let err = client.get("/api/a").send::<Value>().await.unwrap_err();
            assert!(err.status().is_some() || err.auth_failure().is_some(), "{err}");
            clock.advance(std::time::Duration::from_secs(10)); // past the outage backoff
        }
    });
    let failed = seen.named("refresh_failed");
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[0].contains("reason: Needed") && failed[0].contains("consecutive_failures: 1"));
    assert!(failed[2].contains("consecutive_failures: 3"));
    assert_eq!(
        seen.named("failure_threshold"),
        ["failure_threshold { consecutive_failures: 2, .. }"],
        "once, at the 2nd failure"
    );
    assert_eq!(capture.events_named("refresh_failed").len(), 3);
    assert_eq!(
        capture.events_named("refresh_failed")[0].level,
        tracing::Level::WARN
    );
    assert_one_trace(&capture, "failure_threshold", tracing::Level::WARN);
    assert!(capture
        .spans_named("refresh")
        .iter()
        .all(|span| span["outcome"] == "error"));
    assert_eq!(
        metrics["tokenkit_token_fetches_total{outcome=error,reason=needed}"],
        3
    );
}

#[test]
fn rejected_and_recovery_try_fire_once_per_replay_at_debug() {
    let seen = Seen::default();
    let (capture, metrics) = observe(|| async {
        let clock = ManualClock::default();
        let server = start(&clock).await;
        let client = provider_builder(&server, &clock, &seen).build().unwrap();
        client.get("/api/a").send::<Value>().await.unwrap();
        server.revoke_all();
        client.get("/api/a").send::<Value>().await.unwrap();
    });
    assert_eq!(
        seen.named("rejected"),
        ["rejected { method: GET, status: 401, .. }"]
    );
    assert_eq!(
        seen.named("recovery_try"),
        ["recovery_try { attempt: 1, max: 5, .. }"]
    );
    assert_eq!(seen.named("refreshed").len(), 2);
    assert!(seen.named("refreshed")[1].starts_with("reason=Rejected"));
    let rejected = assert_one_trace(&capture, "rejected", tracing::Level::DEBUG);
    assert_eq!(rejected.scope, ["request"]);
    assert_one_trace(&capture, "recovery_try", tracing::Level::DEBUG);
    // A recovered rejection is routine: nothing at WARN or above.
    let loud: Vec<_> = capture
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.level <= tracing::Level::WARN)
        .cloned()
        .collect();
    assert!(loud.is_empty(), "{loud:?}");
    assert_eq!(metrics["tokenkit_recoveries_total{outcome=replayed}"], 1);
    assert_eq!(
        metrics["tokenkit_token_fetches_total{outcome=ok,reason=rejected}"],
        1
    );
}

#[test]
fn recovery_aborted_fires_once_when_the_tries_run_out() {
    let seen = Seen::default();
    let (capture, metrics) = observe(|| async {
        let clock = ManualClock::default();
        let server = start(&clock).await;
        let client = seen
            .wire(
                tokenkit_reqwest::builder(server.url())
                    .clock(clock.clone())
                    .provider(token_provider(server.token_url()))
                    .max_recovery_tries(1),
            )
            .build()
            .unwrap();
        server.set_resource_mode(ResourceMode::AlwaysUnauthorized);
        let err = client.get("/api/a").send::<Value>().await.unwrap_err();
        assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    });
    assert_eq!(
        seen.named("recovery_aborted"),
        ["recovery_aborted { attempts: 1, status: 401, .. }"]
    );
    assert_eq!(
        seen.named("rejected").len(),
        2,
        "the first answer and the replay's"
    );
    assert_one_trace(&capture, "recovery_aborted", tracing::Level::WARN);
    assert_eq!(metrics["tokenkit_recoveries_total{outcome=aborted}"], 1);
    assert_eq!(metrics["tokenkit_recoveries_total{outcome=replayed}"], 1);
    let request = &capture.spans_named("request")[0];
    assert!(
        request["outcome"].starts_with("authentication failed"),
        "{request:?}"
    );
}

#[test]
fn logged_in_and_login_failed_fire_once_with_their_data() {
    let seen = Seen::default();
    let (capture, metrics) = observe(|| async {
        let clock = ManualClock::default();
        let server = start(&clock).await;
        let client = session_client(&server, &clock, &seen);
        let browser = Browser::new();
        let wrong = json!({"username": "alice", "password": "wrong"});
        let (result, _) = browser.visit(client.login(&wrong, LoginOptions::new())).await;
        assert!(result.is_err());
        let right = json!({"username": "alice", "password": "wonderland"});
        let (result, _) = browser.visit(client.login(&right, LoginOptions::new())).await;
        result.unwrap();
    });
    assert_eq!(seen.named("logged_in"), ["refresh=true user=\"alice\" ctx=true"]);
    let failed = seen.named("login_failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].contains("Rejected") && failed[0].contains("context: Some("),
        "{failed:?}"
    );
    assert_one_trace(&capture, "logged_in", tracing::Level::INFO);
    assert_one_trace(&capture, "login_failed", tracing::Level::WARN);
    assert_eq!(metrics["tokenkit_logins_total{outcome=ok}"], 1);
    assert_eq!(metrics["tokenkit_logins_total{outcome=error}"], 1);
}

#[test]
fn session_invalid_fires_once_when_the_refresh_token_is_refused() {
    let seen = Seen::default();
    let (capture, metrics) = observe(|| async {
        let clock = ManualClock::default();
        let server = start(&clock).await;
        let client = session_client(&server, &clock, &seen);
        let browser = Browser::new();
        let right = json!({"username": "alice", "password": "wonderland"});
        browser
            .visit(client.login(&right, LoginOptions::new()))
            .await
            .0
            .unwrap();
        server.fail_next_refresh_requests(1, Fault::Status(401));
        let (result, _) = browser.visit(client.refresh_session(RefreshOptions::new())).await;
        assert_eq!(
            result.unwrap_err().auth_failure(),
            Some(AuthFailure::SessionInvalid)
        );
    });
    let invalid = seen.named("session_invalid");
    assert_eq!(invalid.len(), 1);
    assert!(invalid[0].contains("context: Some("), "{invalid:?}");
    assert_eq!(seen.named("refresh_failed").len(), 1, "the refused refresh");
    assert_one_trace(&capture, "session_invalid", tracing::Level::INFO);
    assert_eq!(metrics["tokenkit_sessions_invalidated_total{}"], 1);
    assert_eq!(
        metrics["tokenkit_token_fetches_total{outcome=error,reason=forced}"],
        1
    );
}

/// A store that loses its first compare-and-swap: another writer stores a newer record just
/// before the write lands.
#[derive(Debug, Default)]
struct LosesFirstWrite {
    inner: MemoryStore,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl TokenStore for LosesFirstWrite {
    async fn load(&self, ctx: Option<&tokenkit_core::Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        self.inner.load(ctx).await
    }
    async fn save(
        &self,
        ctx: Option<&tokenkit_core::Context>,
        record: Arc<TokenRecord>,
        replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        if !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let winner = TokenRecord::new(tokenkit_core::AccessToken::new("winner"), record.obtained_at);
            self.inner.save(ctx, Arc::new(winner), None).await?;
            return Err(Error::new(
                tokenkit_core::ErrorKind::StoreConflict,
                "lost the race",
            ));
        }
        self.inner.save(ctx, record, replaces).await
    }
    async fn clear(&self, ctx: Option<&tokenkit_core::Context>) -> Result<(), Error> {
        self.inner.clear(ctx).await
    }
    fn scope(&self) -> tokenkit_core::StoreScope {
        tokenkit_core::StoreScope::Process
    }
}

#[test]
fn a_lost_compare_and_swap_is_counted_and_the_winner_adopted() {
    let seen = Seen::default();
    let (_, metrics) = observe(|| async {
        let clock = ManualClock::default();
        let server = start(&clock).await;
        let client = provider_builder(&server, &clock, &seen)
            .store(LosesFirstWrite::default())
            .build()
            .unwrap();
        let record = client.token().await.unwrap();
        assert_eq!(record.access_token.as_ref().unwrap().secret(), "winner");
    });
    assert_eq!(metrics["tokenkit_store_conflicts_total{}"], 1);
    assert!(
        seen.named("refreshed").is_empty(),
        "the winner's tokens were not ours to report"
    );
}
