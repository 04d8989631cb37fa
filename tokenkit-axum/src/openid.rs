//! The sign-in routes (feature `openid`): the backend-for-frontend side of the authorization
//! code flow, as an axum [`Router`] to merge under [`TokenKitLayer`](crate::TokenKitLayer).

use axum::extract::{Query, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use serde::Deserialize;
use tokenkit_core::{AuthFailure, Client, ErrorKind};

/// Where the sign-in routes live and where they send the browser.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenIdRoutes {
    /// `GET`: starts a sign-in (`?return_to=/path`, same-origin paths only). Default
    /// `/auth/sign-in`.
    pub sign_in: String,
    /// `GET`: the provider's redirect back (the client's `redirect_uri` must point here).
    /// Default `/auth/callback`.
    pub callback: String,
    /// `POST`: signs out (a `POST`, so no other site can sign users out with a link).
    /// Default `/auth/sign-out`.
    pub sign_out: String,
    /// Where the browser goes after signing in, when the sign-in named no return path.
    /// Default `/`.
    pub after_sign_in: String,
    /// Where the browser goes after a refused sign-in (the reason is logged, not shown).
    /// Default `/?sign_in=failed`.
    pub after_failure: String,
    /// Where the browser goes after signing out, when the provider does not take it
    /// (no RP-initiated logout configured). Default `/`.
    pub after_sign_out: String,
}

impl Default for OpenIdRoutes {
    fn default() -> Self {
        Self {
            sign_in: "/auth/sign-in".to_owned(),
            callback: "/auth/callback".to_owned(),
            sign_out: "/auth/sign-out".to_owned(),
            after_sign_in: "/".to_owned(),
            after_failure: "/?sign_in=failed".to_owned(),
            after_sign_out: "/".to_owned(),
        }
    }
}

impl OpenIdRoutes {
    /// The default paths.
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Clone)]
struct Routes {
    client: Client,
    paths: OpenIdRoutes,
}

#[derive(Deserialize)]
struct SignInQuery {
    return_to: Option<String>,
}

/// The sign-in, callback and sign-out routes for `client` (built with
/// `ClientBuilder::openid`), at `paths`. Merge them into the app's router inside
/// [`TokenKitLayer`](crate::TokenKitLayer), which carries their cookies:
///
/// ```no_run
/// use axum::Router;
/// use tokenkit_axum::{openid_router, OpenIdRoutes, TokenKitLayer};
///
/// # fn app(client: tokenkit_core::Client) -> Router {
/// Router::new()
///     .merge(openid_router(client.clone(), OpenIdRoutes::new()))
///     .layer(TokenKitLayer::new(client))
/// # }
/// ```
pub fn openid_router<S: Clone + Send + Sync + 'static>(client: Client, paths: OpenIdRoutes) -> Router<S> {
    let routes = Routes {
        client,
        paths: paths.clone(),
    };
    Router::new()
        .route(&paths.sign_in, get(sign_in))
        .route(&paths.callback, get(callback))
        .route(&paths.sign_out, post(sign_out))
        .with_state(routes)
}

async fn sign_in(State(routes): State<Routes>, Query(query): Query<SignInQuery>) -> Response {
    match routes.client.begin_sign_in(query.return_to.as_deref()).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(err) if err.kind() == ErrorKind::Config && query.return_to.is_some() => (
            StatusCode::BAD_REQUEST,
            "the return path must be a same-origin path",
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "could not start a sign-in");
            (StatusCode::BAD_GATEWAY, "the sign-in could not start").into_response()
        }
    }
}

async fn callback(State(routes): State<Routes>, RawQuery(query): RawQuery) -> Response {
    match routes
        .client
        .finish_sign_in(query.as_deref().unwrap_or_default())
        .await
    {
        Ok(signed_in) => {
            let to = signed_in.return_to.unwrap_or(routes.paths.after_sign_in);
            Redirect::to(&to).into_response()
        }
        Err(err) => {
            if err.auth_failure() == Some(AuthFailure::SignInRefused) {
                tracing::warn!(error = %err, "a sign-in was refused");
            } else {
                tracing::error!(error = %err, "a sign-in failed");
            }
            Redirect::to(&routes.paths.after_failure).into_response()
        }
    }
}

async fn sign_out(State(routes): State<Routes>) -> Response {
    match routes.client.sign_out().await {
        Ok(Some(end_session)) => Redirect::to(&end_session).into_response(),
        Ok(None) => Redirect::to(&routes.paths.after_sign_out).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "sign-out failed");
            Redirect::to(&routes.paths.after_sign_out).into_response()
        }
    }
}
