//! One replica of a web app, run as its own OS process by the fleet tests and example: a
//! tokenkit client whose sessions (or shared service token) live in Redis, and whose
//! refreshes are coordinated through Redis with the other replicas.
//!
//! Environment: `TOKENKIT_AUTH_URL` (the auth server), `TOKENKIT_REDIS_URL`, `TOKENKIT_MODE`
//! (`session`: users sign in, tokens rotate per session; `service`: one client-credentials
//! token for the fleet), optionally `TOKENKIT_FETCH_TIMEOUT_MS`. It listens on a free loopback
//! port and prints `listening <port>`.
//!
//! Routes: `POST /login` (JSON credentials, sets the session cookie), `GET /me` (the upstream
//! `/api/me` with the user's token), `GET /call` (the upstream `/api/x` with the service
//! token), `GET /session` (a digest of the stored tokens), `POST /advance/{secs}` (moves this
//! replica's clock: the tests move every clock of the fleet together).

use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{run_with_context, Client, Context, EndpointConfig, LoginOptions, StandardPolicy};
use tokenkit_redis::{RedisCoordinator, RedisSessionStore, RedisTokenSlot};

#[derive(Clone)]
struct App {
    client: Client,
    clock: ManualClock,
}

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) => value,
        Err(_) => panic!("{name} is not set"),
    }
}

/// Answers with `body`, carrying the context's cookie changes.
fn respond(ctx: &Context, status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    for cookie in ctx.set_cookie_headers() {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, cookie);
    }
    response
}

fn failure(ctx: &Context, err: &tokenkit_core::Error) -> Response {
    let status =
        StatusCode::from_u16(err.status().map_or(502, |s| s.as_u16())).unwrap_or(StatusCode::BAD_GATEWAY);
    respond(ctx, status, json!({"error": err.to_string()}))
}

async fn login(State(app): State<App>, headers: HeaderMap, Json(creds): Json<Value>) -> Response {
    let ctx = Context::from_headers(&headers);
    match run_with_context(ctx.clone(), app.client.login(&creds, LoginOptions::new())).await {
        Ok(_) => respond(&ctx, StatusCode::OK, json!({"ok": true})),
        Err(err) => failure(&ctx, &err),
    }
}

async fn upstream(app: &App, headers: &HeaderMap, path: &str) -> Response {
    let ctx = Context::from_headers(headers);
    match run_with_context(ctx.clone(), app.client.get(path).send::<Value>()).await {
        Ok(page) => respond(&ctx, StatusCode::OK, page.data),
        Err(err) => failure(&ctx, &err),
    }
}

async fn me(State(app): State<App>, headers: HeaderMap) -> Response {
    upstream(&app, &headers, "/api/me").await
}

async fn call(State(app): State<App>, headers: HeaderMap) -> Response {
    upstream(&app, &headers, "/api/x").await
}

async fn session(State(app): State<App>, headers: HeaderMap) -> Response {
    let ctx = Context::from_headers(&headers);
    let record = run_with_context(ctx.clone(), app.client.session()).await;
    let digest = record.ok().flatten().map(|record| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        record.access_token.as_ref().map(|t| t.secret()).hash(&mut hasher);
        record
            .refresh_token
            .as_ref()
            .map(|t| t.secret())
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    });
    respond(&ctx, StatusCode::OK, json!({"digest": digest}))
}

async fn advance(State(app): State<App>, Path(secs): Path<u64>) -> StatusCode {
    app.clock.advance(Duration::from_secs(secs));
    StatusCode::NO_CONTENT
}

/// Runs a replica configured by the environment (see the module docs) until the process ends.
/// Panics on a missing variable or an unusable configuration: it is a test process.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test process: a panic is a failed test
pub async fn run_from_env() {
    let (auth, redis, mode) = (
        env("TOKENKIT_AUTH_URL"),
        env("TOKENKIT_REDIS_URL"),
        env("TOKENKIT_MODE"),
    );
    let clock = ManualClock::default();
    let mut builder = tokenkit_reqwest::builder(&auth).clock(clock.clone());
    // The lease lasts the token-fetch timeout plus a margin: the fault tests shorten it.
    if let Some(ms) = std::env::var("TOKENKIT_FETCH_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.token_fetch_timeout(Some(Duration::from_millis(ms)));
    }
    let client = match mode.as_str() {
        "session" => builder
            .endpoints(EndpointConfig::new("/auth/login", "/auth/refresh"))
            .store(
                RedisSessionStore::connect(&redis)
                    .await
                    .unwrap()
                    .prefix("fleet")
                    .insecure_cookie_for_development(),
            )
            .coordinator(RedisCoordinator::connect(&redis).await.unwrap().prefix("fleet"))
            .policy(StandardPolicy::default().jitter_percent(0)),
        "service" => builder
            .provider(crate::token_provider(format!("{auth}/oauth/token")))
            .store(RedisTokenSlot::connect(&redis, "fleet-service").await.unwrap())
            .coordinator(
                RedisCoordinator::connect(&redis)
                    .await
                    .unwrap()
                    .prefix("fleet-service"),
            )
            .policy(StandardPolicy::provider().jitter_percent(0)),
        other => panic!("unknown TOKENKIT_MODE {other:?}"),
    }
    .build()
    .unwrap();
    let app = App { client, clock };
    let router = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/call", get(call))
        .route("/session", get(session))
        .route("/advance/{secs}", post(advance))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening {}", listener.local_addr().unwrap().port());
    axum::serve(listener, router).await.unwrap();
}
