//! The example app's routes: a login form, a page showing data fetched from the upstream API
//! through tokenkit, and logout. Shared with the integration tests (`#[path]` include).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokenkit_axum::{Session, TokenKitLayer};
use tokenkit_core::{Client, LoginOptions};

/// The app around `client` (an endpoint-mode client with a cookie store).
pub(crate) fn router(client: Client) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .with_state(client.clone())
        .layer(TokenKitLayer::new(client))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>tokenkit demo</title></head><body>{body}\
         <p>Cookies visible to JavaScript: <code id=\"js-cookies\"></code></p>\
         <script>document.getElementById('js-cookies').textContent = document.cookie || '(none)';</script>\
         </body></html>"
    ))
}

fn login_form(message: &str) -> Html<String> {
    page(&format!(
        "<h1>Sign in</h1><p id=\"message\">{message}</p>\
         <form method=\"post\" action=\"/login\">\
         <input name=\"username\" value=\"alice\"> <input name=\"password\" type=\"password\" value=\"wonderland\">\
         <button id=\"login\" type=\"submit\">Sign in</button></form>"
    ))
}

async fn home(State(client): State<Client>, session: Session) -> Response {
    if !session.authenticated {
        return login_form("Please sign in.").into_response();
    }
    // No context argument: the layer bound this request's session.
    match client.get("/api/me").send::<Value>().await {
        Ok(me) => page(&format!(
            "<h1 id=\"hello\">Hello, {}</h1><p id=\"token\">Upstream data served with token #{}</p>\
             <p id=\"session-user\">The session says you are {}.</p>\
             <form method=\"post\" action=\"/logout\"><button id=\"logout\" type=\"submit\">Sign out</button></form>",
            me.data["user"].as_str().unwrap_or("?"),
            me.data["token_id"],
            // The session's payload (the login's user object), on every request.
            session
                .payload
                .as_ref()
                .and_then(|user| user["name"].as_str())
                .unwrap_or("?"),
        ))
        .into_response(),
        // The session ended (rejected, not refreshable): its cookies are being expired.
        Err(err) if err.is_auth() => login_form("Your session has ended; please sign in again.").into_response(),
        Err(err) => (StatusCode::BAD_GATEWAY, page(&format!("<p id=\"error\">Upstream error: {err}</p>"))).into_response(),
    }
}

async fn login(State(client): State<Client>, Form(form): Form<Credentials>) -> Response {
    let credentials = json!({"username": form.username, "password": form.password});
    match client.login(&credentials, LoginOptions::new()).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(err) if err.is_auth() => (
            StatusCode::UNAUTHORIZED,
            login_form("Wrong username or password."),
        )
            .into_response(),
        Err(err) => (
            StatusCode::BAD_GATEWAY,
            login_form(&format!("Login failed: {err}")),
        )
            .into_response(),
    }
}

async fn logout(State(client): State<Client>) -> Redirect {
    if let Err(err) = client.logout().await {
        tracing::warn!(error = %err, "logout call failed; session cleared anyway");
    }
    Redirect::to("/")
}

/// The app in its OpenID mode around `client` (built with `ClientBuilder::openid`): sign-in
/// through the provider and back, the session's user (the ID token's claims) on every page,
/// sign-out at the provider too.
#[allow(dead_code)] // each includer uses one of the two modes
pub(crate) fn openid_app(client: Client) -> Router {
    Router::new()
        .route("/", get(openid_home))
        .merge(tokenkit_axum::openid_router(
            client.clone(),
            tokenkit_axum::OpenIdRoutes::new(),
        ))
        .layer(TokenKitLayer::new(client))
}

async fn openid_home(session: Session) -> Html<String> {
    let name = session
        .payload
        .as_ref()
        .and_then(|claims| claims["name"].as_str());
    match name {
        Some(name) if session.authenticated => page(&format!(
            "<h1 id=\"hello\">Hello, {name}</h1><p>Signed in through your identity provider; \
             the session's tokens rotate in HttpOnly cookies.</p>\
             <form method=\"post\" action=\"/auth/sign-out\"><button id=\"logout\" type=\"submit\">Sign out</button></form>"
        )),
        _ => page(
            "<h1>Sign in</h1><p id=\"message\">Please sign in.</p>\
             <p><a id=\"sign-in\" href=\"/auth/sign-in\">Sign in with your identity provider</a></p>",
        ),
    }
}
