//! Client features of session and provider mode alike: interceptors, dynamic headers, retry,
//! and a custom context provider — through reqwest against the test auth server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    AuthFailure, Backoff, Client, ClientBuilder, Context, CookieConfig, CookieStore, EndpointConfig, Error,
    ErrorKind, FnContextProvider, LoginOptions, ProvidedToken, RetryConfig, Runtime, StandardPolicy,
};
use tokenkit_tests::{token_provider, AuthServer, Browser, Fault, RecordingSleep};

async fn server(clock: &ManualClock) -> AuthServer {
    AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap()
}

/// A provider-mode client whose backoff sleeps are recorded, not waited for.
fn recorded(server: &AuthServer, clock: &ManualClock, sleep: RecordingSleep) -> ClientBuilder {
    tokenkit_reqwest::builder(server.url())
        .runtime(
            Runtime::new()
                .with_sleep(sleep)
                .with_spawn(tokenkit_tokio::TokioSpawn),
        )
        .clock(clock.clone())
        .no_timeout()
        .provider(token_provider(server.token_url()))
}

async fn tag_request(
    mut req: http::Request<Bytes>,
    ctx: Option<Context>,
) -> Result<http::Request<Bytes>, Error> {
    let n = ctx.and_then(|c| c.get::<Arc<Mutex<u32>>>()).map(|count| {
        let mut count = count.lock().unwrap();
        *count += 1;
        *count
    });
    let seen = req.headers().contains_key("authorization");
    req.headers_mut().insert(
        "x-first",
        HeaderValue::from_str(&format!("{n:?} auth={seen}")).unwrap(),
    );
    Ok(req)
}

#[tokio::test]
async fn interceptors_run_in_order_with_the_context_and_again_on_replay() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&errors);
    let client = recorded(&s, &clock, RecordingSleep::new())
        .request_interceptor(tag_request)
        .request_interceptor(|mut req: http::Request<Bytes>, _ctx| async move {
            let first = req.headers().get("x-first").cloned();
            req.headers_mut()
                .insert("x-second", first.unwrap_or(HeaderValue::from_static("missing")));
            Ok(req)
        })
        .response_interceptor(|mut resp: http::Response<Bytes>, _ctx| async move {
            let mut body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
            body["intercepted"] = json!(true);
            *resp.body_mut() = Bytes::from(body.to_string());
            Ok(resp)
        })
        .error_interceptor(move |err: Error, ctx: Option<Context>| {
            seen.lock()
                .unwrap()
                .push(format!("{:?} ctx={}", err.kind(), ctx.is_some()));
            async {}
        })
        .build()
        .unwrap();
    let ctx = Context::new();
    ctx.insert(Arc::new(Mutex::new(0u32)));
    client
        .get("/api/warmup")
        .context(ctx.clone())
        .send::<Value>()
        .await
        .unwrap();
    s.revoke_all();
    let resp = client
        .get("/api/x")
        .context(ctx.clone())
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(
        resp.data["intercepted"], true,
        "response interceptor rewrote the body"
    );
    let sent: Vec<_> = s.log().into_iter().filter(|r| r.path == "/api/x").collect();
    assert_eq!(sent.len(), 2, "rejected, then replayed");
    assert_eq!(
        sent[0].headers["x-first"], "Some(2) auth=true",
        "after token injection, with the context"
    );
    assert_eq!(
        sent[1].headers["x-first"], "Some(3) auth=true",
        "run again on the replay"
    );
    assert_eq!(
        sent[1].headers["x-second"], sent[1].headers["x-first"],
        "in order"
    );

    // Error interceptors see typed errors, a failure to obtain a token included.
    s.fail_next_resource_requests(1, Fault::Status(404));
    let err = client
        .get("/api/y")
        .context(ctx.clone())
        .send::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    clock.advance(Duration::from_secs(7200));
    s.fail_next_token_requests(1, Fault::Status(500));
    let err = client.get("/api/z").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::TokenUnavailable));
    clock.advance(tokenkit_core::defaults::OUTAGE_FIRST_DELAY); // past the outage backoff
                                                                // (The response interceptor turns any body into a JSON object; an array is expected.)
    let err = client.get("/api/w").send::<Vec<u32>>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(
        *errors.lock().unwrap(),
        [
            "Status ctx=true",
            "Auth(TokenUnavailable) ctx=false",
            "Decode ctx=false"
        ]
    );
}

#[tokio::test]
async fn a_failing_request_interceptor_aborts_the_request() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let client = recorded(&s, &clock, RecordingSleep::new())
        .request_interceptor(|_req: http::Request<Bytes>, _ctx| async {
            Err(Error::new(ErrorKind::Config, "blocked by policy"))
        })
        .build()
        .unwrap();
    let err = client.get("/api/x").send::<Value>().await.unwrap_err();
    assert_eq!(err.message(), "blocked by policy");
    assert_eq!(s.count("/api/x"), 0);
}

#[tokio::test]
async fn resolve_headers_adds_dynamic_headers_per_operation() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let client = tokenkit_reqwest::builder(s.url())
        .clock(clock.clone())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh").logout("/auth/logout"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .resolve_headers(|ctx, op| {
            let mut headers = HeaderMap::new();
            let tenant = ctx.and_then(|c| c.cookie("tenant")).unwrap_or_default();
            headers.insert(
                "x-op",
                HeaderValue::from_str(&format!("{op:?}:{tenant}")).unwrap(),
            );
            headers
        })
        .build()
        .unwrap();
    let browser = Browser::new();
    browser.restore([("tenant".to_owned(), "lynx".to_owned())].into());
    let creds = json!({"username": "alice", "password": "wonderland"});
    browser
        .visit(client.login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    browser
        .visit(client.get("/api/me").send::<Value>())
        .await
        .0
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    browser
        .visit(client.get("/api/me").send::<Value>())
        .await
        .0
        .unwrap();
    browser.visit(client.logout()).await.0.unwrap();
    let ops: Vec<(String, String)> = s
        .log()
        .into_iter()
        .map(|r| (r.path, r.headers["x-op"].to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        ops,
        [
            ("/auth/login".into(), "Login:lynx".into()),
            ("/api/me".into(), "Request:lynx".into()),
            ("/auth/refresh".into(), "Refresh:lynx".into()),
            ("/api/me".into(), "Request:lynx".into()),
            ("/auth/logout".into(), "Logout:lynx".into()),
        ]
    );
}

#[tokio::test]
async fn retries_idempotent_requests_with_exponential_backoff() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let sleep = RecordingSleep::new();
    let client = recorded(&s, &clock, sleep.clone())
        .retry(RetryConfig::new().jitter(false))
        .build()
        .unwrap();
    s.fail_next_resource_requests(2, Fault::Status(503));
    let resp = client.get("/api/x").send::<Value>().await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(s.count("/api/x"), 3);
    assert_eq!(sleep.slept(), [Duration::from_secs(1), Duration::from_secs(2)]);

    // Exhausted: the third failure is returned.
    s.fail_next_resource_requests(3, Fault::Status(502));
    let err = client.get("/api/y").send::<Value>().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY));
    assert_eq!(s.count("/api/y"), 3);
    // Not retryable: 404 once.
    s.fail_next_resource_requests(1, Fault::Status(404));
    assert!(client.get("/api/z").send::<Value>().await.is_err());
    assert_eq!(s.count("/api/z"), 1);
}

#[tokio::test]
async fn linear_backoff_jitter_and_retry_after() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let sleep = RecordingSleep::new();
    let retry = RetryConfig::new()
        .backoff(Backoff::Linear)
        .delay(Duration::from_millis(100))
        .jitter(false);
    let client = recorded(&s, &clock, sleep.clone()).retry(retry).build().unwrap();
    s.fail_next_resource_requests(2, Fault::Status(500));
    client.get("/api/a").send::<Value>().await.unwrap();
    assert_eq!(
        sleep.slept(),
        [Duration::from_millis(100), Duration::from_millis(200)]
    );

    let sleep = RecordingSleep::new();
    let client = recorded(&s, &clock, sleep.clone()).build().unwrap();
    s.fail_next_resource_requests(1, Fault::RetryAfter(429, "7".into()));
    client.get("/api/b").send::<Value>().await.unwrap();
    assert_eq!(
        sleep.slept(),
        [Duration::from_secs(7)],
        "Retry-After wins over backoff"
    );

    s.fail_next_resource_requests(2, Fault::Status(503));
    client.get("/api/c").send::<Value>().await.unwrap();
    let jittered = &sleep.slept()[1..];
    assert!(
        jittered[0] >= Duration::from_millis(500) && jittered[0] <= Duration::from_secs(1),
        "{jittered:?}"
    );
    assert!(
        jittered[1] >= Duration::from_secs(1) && jittered[1] <= Duration::from_secs(2),
        "{jittered:?}"
    );
}

#[tokio::test]
async fn post_and_patch_are_not_retried_unless_opted_in() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let client = recorded(&s, &clock, RecordingSleep::new()).build().unwrap();
    for (method, path) in [
        (http::Method::POST, "/api/post"),
        (http::Method::PATCH, "/api/patch"),
    ] {
        s.fail_next_resource_requests(1, Fault::Status(503));
        let err = client
            .request(method, path)
            .json(&json!({}))
            .send::<Value>()
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(s.count(path), 1, "{path}: not retried");
    }
    s.fail_next_resource_requests(1, Fault::Status(503));
    let resp = client
        .post("/api/opt-in")
        .retry(RetryConfig::new().retry_non_idempotent(true))
        .json(&json!({}))
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(s.count("/api/opt-in"), 2);
}

#[tokio::test]
async fn network_errors_and_timeouts_are_retried() {
    let clock = ManualClock::default();
    let sleep = RecordingSleep::new();
    let client = tokenkit_reqwest::builder("http://127.0.0.1:9")
        .runtime(Runtime::new().with_sleep(sleep.clone()))
        .no_timeout()
        .build()
        .unwrap();
    let err = client.get("/x").send_bytes().await.unwrap_err();
    assert!(err.is_connect());
    assert_eq!(sleep.slept().len(), 2, "3 attempts");

    let s = server(&clock).await;
    let client = tokenkit_reqwest::builder(s.url())
        .clock(clock.clone())
        .provider(token_provider(s.token_url()))
        .timeout(Duration::from_millis(300))
        .retry(RetryConfig::new().delay(Duration::from_millis(1)))
        .build()
        .unwrap();
    s.fail_next_resource_requests(1, Fault::Delay(Duration::from_secs(5)));
    client.get("/api/slow").send::<Value>().await.unwrap();
    assert_eq!(s.count("/api/slow"), 2, "timed out once, then succeeded");
}

#[tokio::test]
async fn a_failing_refresh_endpoint_is_called_once_per_request_not_once_per_retry() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let client = tokenkit_reqwest::builder(s.url())
        .clock(clock.clone())
        .retry(RetryConfig::new().delay(Duration::from_millis(1)))
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .build()
        .unwrap();
    let browser = Browser::new();
    let creds = json!({"username": "bob", "password": "builder"});
    browser
        .visit(client.login(&creds, LoginOptions::new()))
        .await
        .0
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    s.fail_next_refresh_requests(5, Fault::Status(503));
    let (result, _) = browser.visit(client.get("/api/me").send::<Value>()).await;
    assert_eq!(
        result.unwrap_err().auth_failure(),
        Some(AuthFailure::TokenUnavailable)
    );
    assert_eq!(s.count("/auth/refresh"), 1);
    assert_eq!(s.count("/api/me"), 0);
}

#[tokio::test]
async fn dropping_a_request_cancels_it() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let sleep = RecordingSleep::never();
    let client = recorded(&s, &clock, sleep.clone()).build().unwrap();
    s.fail_next_resource_requests(1, Fault::Status(503));
    let request = tokio::spawn({
        let client = client.clone();
        async move { client.get("/api/x").send::<Value>().await }
    });
    // Wait until the request is backing off after its first attempt, then drop it.
    for _ in 0..500 {
        if !sleep.slept().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(sleep.slept().len(), 1);
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(s.count("/api/x"), 1, "no attempt after the caller went away");
}

#[tokio::test]
async fn a_custom_context_provider_from_get_set_run_functions() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let slot: Arc<Mutex<Option<Context>>> = Arc::default();
    let (get, set) = (Arc::clone(&slot), Arc::clone(&slot));
    let provider = FnContextProvider::new(
        move || get.lock().unwrap().clone(),
        move |ctx| *set.lock().unwrap() = Some(ctx),
        |ctx, fut| Box::pin(tokenkit_core::run_with_context(ctx, fut)),
    );
    let client = tokenkit_reqwest::builder(s.url())
        .clock(clock.clone())
        .context_provider(provider.clone())
        .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
        .store(CookieStore::new(CookieConfig::new().secure(false)))
        .policy(StandardPolicy::default())
        .build()
        .unwrap();
    let ctx = Context::new();
    tokenkit_core::ContextProvider::enter(&provider, ctx.clone()).unwrap();
    client
        .login(
            &json!({"username": "alice", "password": "wonderland"}),
            LoginOptions::new(),
        )
        .await
        .unwrap();
    assert!(
        ctx.cookie("access_token").is_some(),
        "the provider's context received the cookies"
    );
    let resp = client.get("/api/me").send::<Value>().await.unwrap();
    assert_eq!(resp.data["user"], "alice");
}

#[tokio::test]
async fn provider_mode_clients_work_without_any_context() {
    let clock = ManualClock::default();
    let s = server(&clock).await;
    let client: Client = tokenkit_reqwest::builder(s.url())
        .provider(|| async { Ok::<_, std::io::Error>(ProvidedToken::new("static-but-unknown", 60)) })
        .retry(RetryConfig::none())
        .build()
        .unwrap();
    // No context bound, memory store: the token is fetched and sent (the server rejects it).
    let err = client.get("/api/x").send::<Value>().await.unwrap_err();
    assert_eq!(err.auth_failure(), Some(AuthFailure::RecoveryExhausted));
    assert!(s.log()[0].authorization.as_deref() == Some("Bearer static-but-unknown"));
}
