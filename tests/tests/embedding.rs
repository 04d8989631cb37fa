//! Embedding tokenkit into stacks that already exist: a tower Layer over a hyper-util client,
//! a reqwest-middleware chain, and a hand-written Transport.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokenkit_core::{AuthFailure, Client, Transport, TransportError};
use tokenkit_reqwest::middleware::TokenMiddleware;
use tokenkit_reqwest::ReqwestTransport;
use tokenkit_tests::{token_provider, AuthServer};
use tokenkit_tower::AuthLayer;
use tower::{Layer, ServiceExt};

fn client(server: &AuthServer) -> Client {
    tokenkit_reqwest::builder(server.url())
        .provider(token_provider(server.token_url()))
        .build()
        .unwrap()
}

fn body_json(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test]
async fn a_tower_layer_over_a_hyper_client_injects_tokens_and_recovers() {
    let server = AuthServer::start().await.unwrap();
    let other = AuthServer::start().await.unwrap();
    let tokens = client(&server);
    let hyper: HyperClient<_, Full<Bytes>> = HyperClient::builder(TokioExecutor::new()).build_http();
    let service = AuthLayer::new(tokens.clone()).layer(hyper);

    let call = |uri: String| {
        let service = service.clone();
        async move {
            let request = http::Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            let response = service.oneshot(request).await.unwrap();
            let status = response.status();
            (status, response.into_body().collect().await.unwrap().to_bytes())
        }
    };
    let (status, body) = call(format!("{}/api/a", server.url())).await;
    assert_eq!(status, 200);
    assert_eq!(body_json(&body)["token_id"], 1);
    // The layer and the client share one rotation state.
    assert_eq!(
        tokens
            .token()
            .await
            .unwrap()
            .access_token
            .as_ref()
            .unwrap()
            .secret()
            .len(),
        25
    );
    assert_eq!(server.token_requests(), 1);

    server.revoke_all();
    let (status, body) = call(format!("{}/api/b", server.url())).await;
    assert_eq!(status, 200, "recovered through the inner service");
    assert_eq!(body_json(&body)["token_id"], 2);
    assert_eq!(server.count("/api/b"), 2);

    // Another origin: no token. Non-2xx responses are passed through, not turned into errors.
    let (status, body) = call(format!("{}/public/x", other.url())).await;
    assert_eq!(status, 200);
    assert_eq!(body_json(&body)["authorization_present"], false);
    let (status, _) = call(format!("{}/nope", server.url())).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_reqwest_middleware_chain_gets_tokens_and_recovery() {
    let server = AuthServer::start().await.unwrap();
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    let chain = reqwest_middleware::ClientBuilder::new(tokenkit_reqwest::client_builder().build().unwrap())
        .with(TokenMiddleware::new(client(&server)))
        .with(SeeAuth(recorder))
        .build();
    let response = chain.get(format!("{}/api/a", server.url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["token_id"], 1);

    server.revoke_all();
    let response = chain
        .post(format!("{}/api/b", server.url()))
        .body("payload")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["token_id"].as_u64(), body["body"].as_str()),
        (Some(2), Some("payload")),
        "replayed with its body"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("Bearer t".to_owned()); 3],
        "the later middleware saw every attempt"
    );
    assert_eq!(server.token_requests(), 2);
}

/// A later middleware of the chain, recording the Authorization scheme of each attempt.
struct SeeAuth(Arc<Mutex<Vec<Option<String>>>>);

#[async_trait]
impl reqwest_middleware::Middleware for SeeAuth {
    async fn handle(
        &self,
        req: reqwest::Request,
        ext: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap()[..8].to_owned());
        self.0.lock().unwrap().push(auth);
        next.run(req, ext).await
    }
}

/// A hand-written transport that records what it sends and delegates to reqwest.
#[derive(Debug, Default)]
struct Recording {
    inner: ReqwestTransport,
    sent: Mutex<Vec<String>>,
}

#[async_trait]
impl Transport for Recording {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        self.sent
            .lock()
            .unwrap()
            .push(format!("{} {}", request.method(), request.uri().path()));
        self.inner.send(request).await
    }
}

#[tokio::test]
async fn a_hand_written_transport_carries_the_whole_flow() {
    let server = AuthServer::start().await.unwrap();
    let recording = Arc::new(Recording::default());
    let client = Client::builder(server.url())
        .transport(recording.clone())
        .runtime(tokenkit_tokio::runtime())
        .provider(token_provider(server.token_url()))
        .build()
        .unwrap();
    client.get("/api/a").send::<Value>().await.unwrap();
    server.revoke_all();
    client.get("/api/b").send::<Value>().await.unwrap();
    assert_eq!(
        *recording.sent.lock().unwrap(),
        ["GET /api/a", "GET /api/b", "GET /api/b"]
    );
    // A transport failure is a typed error.
    let failing = Client::builder(server.url())
        .transport(tokenkit_core::transport_fn(|_req: http::Request<Bytes>| async {
            Err(TransportError::new(
                tokenkit_core::TransportErrorKind::Other,
                "no route",
            ))
        }))
        .runtime(tokenkit_tokio::runtime())
        .retry(tokenkit_core::RetryConfig::none())
        .provider(token_provider(server.token_url()))
        .build()
        .unwrap();
    let err = failing.get("/api/a").send::<Value>().await.unwrap_err();
    assert!(err.is_transport());
    assert_ne!(
        err.auth_failure(),
        Some(AuthFailure::TokenUnavailable),
        "the token came from the provider"
    );
}

/// reqwest-retry allowing 2 retries, outside; tokenkit inside.
fn retrying_chain(tokens: Client) -> reqwest_middleware::ClientWithMiddleware {
    use reqwest_retry::policies::ExponentialBackoff;
    use reqwest_retry::RetryTransientMiddleware;
    let policy = ExponentialBackoff::builder()
        .retry_bounds(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(2),
        )
        .build_with_max_retries(2);
    reqwest_middleware::ClientBuilder::new(tokenkit_reqwest::client_builder().build().unwrap())
        .with(RetryTransientMiddleware::new_with_policy(policy))
        .with(TokenMiddleware::new(tokens))
        .build()
}

#[tokio::test]
async fn behind_reqwest_retry_a_persistent_503_costs_three_wire_attempts_not_nine() {
    let server = AuthServer::start().await.unwrap();
    let other = AuthServer::start().await.unwrap();
    // The client's own retry (3 attempts by default) must not apply in the embedded form.
    let chain = retrying_chain(client(&server));
    server.fail_next_resource_requests(100, tokenkit_tests::Fault::Status(503));
    let response = chain.get(format!("{}/api/a", server.url())).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        server.count("/api/a"),
        3,
        "1 + reqwest-retry's 2, none of tokenkit's"
    );

    // Another origin, which carries no token: tokenkit adds no attempts either.
    other.fail_next_resource_requests(100, tokenkit_tests::Fault::Status(503));
    let response = chain.get(format!("{}/api/b", other.url())).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(other.count("/api/b"), 3);
    assert!(other.log().iter().all(|r| r.authorization.is_none()));

    // Opting in brings tokenkit's retries back (3 of its attempts per outer attempt).
    let opted = reqwest_middleware::ClientBuilder::new(tokenkit_reqwest::client_builder().build().unwrap())
        .with(
            TokenMiddleware::new(client(&server)).retry(
                tokenkit_core::RetryConfig::new()
                    .attempts(2)
                    .delay(std::time::Duration::from_millis(1)),
            ),
        )
        .build();
    server.clear_log();
    let response = opted.get(format!("{}/api/c", server.url())).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.count("/api/c"), 2, "tokenkit's own 2 attempts");
}

#[tokio::test]
async fn behind_reqwest_retry_a_revoked_token_costs_one_recovery() {
    let server = AuthServer::start().await.unwrap();
    let chain = retrying_chain(client(&server));
    let response = chain.get(format!("{}/api/a", server.url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.revoke_all();
    server.clear_log();
    let response = chain.get(format!("{}/api/a", server.url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.count("/api/a"), 2, "the rejected call and one replay");
    assert_eq!(server.token_requests(), 1, "one new token since the revocation");
}

#[tokio::test]
async fn the_tower_layer_retries_nothing_by_default_and_forwards_readiness() {
    use std::task::Poll;
    let server = AuthServer::start().await.unwrap();
    let hyper: HyperClient<_, Full<Bytes>> = HyperClient::builder(TokioExecutor::new()).build_http();
    let service = AuthLayer::new(client(&server)).layer(hyper);
    server.fail_next_resource_requests(100, tokenkit_tests::Fault::Status(503));
    let request = http::Request::get(format!("{}/api/a", server.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.count("/api/a"), 1);

    // Readiness and errors of the inner service pass through poll_ready.
    let gate = Arc::new(Mutex::new(Poll::Pending));
    let mut gated = AuthLayer::new(client(&server)).layer(Gated(Arc::clone(&gate)));
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    type Req = http::Request<Full<Bytes>>;
    assert!(tower::Service::<Req>::poll_ready(&mut gated, &mut cx).is_pending());
    *gate.lock().unwrap() = Poll::Ready(Err("inner failure"));
    match tower::Service::<Req>::poll_ready(&mut gated, &mut cx) {
        Poll::Ready(Err(err)) => assert!(err.is_transport(), "{err}"),
        _ => panic!("the inner error passes through"),
    }
    *gate.lock().unwrap() = Poll::Ready(Ok(()));
    assert!(tower::Service::<Req>::poll_ready(&mut gated, &mut cx).is_ready());
}

/// A service whose readiness a test sets.
#[derive(Clone)]
struct Gated(Arc<Mutex<std::task::Poll<Result<(), &'static str>>>>);

impl tower::Service<http::Request<Full<Bytes>>> for Gated {
    type Response = http::Response<Full<Bytes>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.lock().unwrap().map(|r| r.map_err(Into::into))
    }

    fn call(&mut self, _: http::Request<Full<Bytes>>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(Full::new(Bytes::new()))))
    }
}

#[tokio::test]
async fn a_reqwest_client_that_follows_redirects_is_refused_not_trusted() {
    let server = AuthServer::start().await.unwrap();
    let other = AuthServer::start().await.unwrap();
    let target = serde_urlencoded::to_string([("to", format!("{}/public/x", other.url()))]).unwrap();
    let following = reqwest::Client::new(); // reqwest's default policy follows redirects
    let client = tokenkit_reqwest::with_client(server.url(), following.clone())
        .provider(token_provider(server.token_url()))
        .build()
        .unwrap();
    let err = client
        .get(format!("/redirect/302?{target}"))
        .send::<Value>()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err}");
    let chain = reqwest_middleware::ClientBuilder::new(following)
        .with(TokenMiddleware::new(client.clone()))
        .build();
    let err = chain
        .get(format!("{}/redirect/302?{target}", server.url()))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("redirect") || format!("{err:?}").contains("redirect"),
        "{err:?}"
    );
    // The authorization header is stripped by reqwest itself across origins.
    assert!(other.log().iter().all(|r| r.authorization.is_none()));
}

#[tokio::test]
async fn an_isahc_client_configured_to_follow_redirects_follows_none_for_tokenkit() {
    use tokenkit_isahc::isahc::config::{Configurable, RedirectPolicy};
    let server = AuthServer::start().await.unwrap();
    let other = AuthServer::start().await.unwrap();
    let following = tokenkit_isahc::isahc::HttpClient::builder()
        .redirect_policy(RedirectPolicy::Follow)
        .build()
        .unwrap();
    let client = Client::builder(server.url())
        .transport(tokenkit_isahc::IsahcTransport::from(following))
        .runtime(tokenkit_isahc::runtime())
        .provider(token_provider(server.token_url()))
        .header_name("x-api-key")
        .format_token(|token, _| token.to_owned())
        .build()
        .unwrap();
    let target = serde_urlencoded::to_string([("to", format!("{}/public/x", other.url()))]).unwrap();
    let err = client
        .get(format!("/redirect/307?{target}"))
        .send::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(307));
    assert!(other.log().is_empty(), "nothing followed the redirect");
}
