//! # tokenkit-axum
//!
//! tokenkit for Rust web servers. [`TokenKitLayer`] is a tower
//! `Layer` (for axum or any tower-based server) that, for each incoming request:
//!
//! 1. builds a [`Context`] from the request's `Cookie` header;
//! 2. runs the rest of the stack inside it (through the client's context provider), so a
//!    handler calls `client.get(..)` with no context argument;
//! 3. before the handler, makes the session fresh (refreshing it if due; errors are logged,
//!    never thrown) and hands the handler a [`Session`] (extractor);
//! 4. after the handler, appends the context's `Set-Cookie` changes (new tokens after a login
//!    or a rotation, removals after a logout) to the response.
//!
//! It works with any [`Client`] — build one with `.endpoints(..)` and a `CookieStore`.
//!
//! With the `openid` feature, `openid_router` adds the routes of a sign-in through an OpenID
//! provider (authorization code + PKCE, the ID token verified; see
//! `tokenkit_core::ClientBuilder::openid`): sign-in, callback and sign-out, to merge inside
//! the layer.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tokenkit_axum::{Session, TokenKitLayer};
//!
//! # fn app(client: tokenkit_core::Client) -> Router {
//! async fn me(session: Session) -> String {
//!     format!("authenticated: {}", session.authenticated)
//! }
//! Router::new().route("/me", get(me)).layer(TokenKitLayer::new(client))
//! # }
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "openid")]
mod openid;
#[cfg(feature = "openid")]
pub use openid::{openid_router, OpenIdRoutes};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use axum_core::extract::FromRequestParts;
use axum_core::response::IntoResponse;
use http::header::SET_COOKIE;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tokenkit_core::{Client, Context, TokenRecord};
use tower_layer::Layer;
use tower_service::Service;

/// What a handler knows of the current user's session (as ensured before the handler ran).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Session {
    /// Whether the request carries a usable session.
    pub authenticated: bool,
    /// The session payload (a login response field, or the access token's JWT claims).
    pub payload: Option<serde_json::Value>,
    /// When the access token expires.
    pub expires_at: Option<SystemTime>,
}

impl Session {
    fn from_record(record: &TokenRecord) -> Self {
        Self {
            authenticated: record.access_token.is_some(),
            payload: record.payload.clone(),
            expires_at: record.expires_at,
        }
    }
}

/// The rejection of the [`Session`] extractor on a route [`TokenKitLayer`] does not cover: a
/// server error (500) saying so, as axum's `Extension` does for a missing extension. A
/// handler outside the layer has no session to read, and answering "signed out" would hide
/// the mistake.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MissingSessionLayer;

impl MissingSessionLayer {
    const MESSAGE: &'static str = "the Session extractor needs tokenkit_axum::TokenKitLayer on this route \
                                   (add it with .layer(TokenKitLayer::new(client)) around the route)";
}

impl std::fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> axum_core::response::Response {
        tracing::error!("{}", Self::MESSAGE);
        (StatusCode::INTERNAL_SERVER_ERROR, Self::MESSAGE).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

/// Binds a tokenkit session to every request; see the crate docs.
#[derive(Debug, Clone)]
pub struct TokenKitLayer {
    client: Client,
}

impl TokenKitLayer {
    /// A layer for `client` (any client: not only the default one).
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl<S> Layer<S> for TokenKitLayer {
    type Service = TokenKitService<S>;

    fn layer(&self, inner: S) -> TokenKitService<S> {
        TokenKitService {
            inner,
            client: self.client.clone(),
        }
    }
}

/// The service made by [`TokenKitLayer`].
#[derive(Debug, Clone)]
pub struct TokenKitService<S> {
    inner: S,
    client: Client,
}

impl<S, B, ResBody> Service<Request<B>> for TokenKitService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = self.client.clone();
        let ctx = Context::from_headers(request.headers());
        Box::pin(async move {
            let scoped = client.scope(ctx.clone(), async {
                let session = match client.ensure().await {
                    Ok(Some(record)) => Session::from_record(&record),
                    Ok(None) => Session::default(),
                    Err(err) => {
                        // A failed refresh is logged, and the request proceeds signed out
                        // (an invalid session has been cleared; its cookies are expired below).
                        tracing::warn!(error = %err, "could not ensure the session");
                        Session::default()
                    }
                };
                request.extensions_mut().insert(session);
                inner.call(request).await
            });
            let mut response = match scoped.await {
                Ok(result) => result?,
                Err(err) => {
                    tracing::error!(error = %err, "the request could not be bound to its context");
                    let mut response = Response::new(ResBody::default());
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response
                }
            };
            for value in ctx.set_cookie_headers() {
                response.headers_mut().append(SET_COOKIE, value);
            }
            Ok(response)
        })
    }
}
