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
    let chain = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
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
