//! Session operations of endpoint mode: login, logout, clear, and reading or refreshing the
//! session of the current context.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::{ApiResponse, Auth, Client};
use crate::context::{Context, Operation};
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::events::Event;
use crate::policy::Freshness;
use crate::source::endpoint::{describe, AuthCall, EndpointSource};
use crate::source::oauth2::OAuth2Source;
use crate::source::RefreshHints;
use crate::token::TokenRecord;

/// Per-call options of [`Client::login`].
#[derive(Clone, Default)]
#[must_use]
pub struct LoginOptions {
    headers: HeaderMap,
    data: Option<Value>,
    params: Vec<(String, String)>,
    timeout: Option<Duration>,
    error: Option<Error>,
}

impl fmt::Debug for LoginOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginOptions")
            .field("headers", &crate::redact::RedactedHeaders(&self.headers))
            .field(
                "params",
                &self.params.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LoginOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header to this login request.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        crate::header::append(&mut self.headers, &mut self.error, name, value);
        self
    }

    /// Extra body fields for this login (a JSON object), merged last.
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Adds a query parameter to this login request.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// Overrides the login timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Per-call options of [`Client::refresh_session`].
#[derive(Clone, Default)]
#[must_use]
pub struct RefreshOptions {
    headers: HeaderMap,
    data: Option<Value>,
    error: Option<Error>,
}

/// Header values print redacted where they carry credentials; the data is not printed.
impl fmt::Debug for RefreshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshOptions")
            .field("headers", &crate::redact::RedactedHeaders(&self.headers))
            .field("data", &self.data.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl RefreshOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header to the refresh request.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        crate::header::append(&mut self.headers, &mut self.error, name, value);
        self
    }

    /// Extra body fields for the refresh (a JSON object).
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl Client {
    fn endpoint_auth(&self) -> Result<(&Auth, &Arc<EndpointSource>), Error> {
        let auth = self.auth()?;
        let endpoint = auth
            .endpoint
            .as_ref()
            .ok_or_else(|| Error::config("this operation needs endpoint mode or OAuth password mode: configure .endpoints(..) or .oauth2_password(..)"))?;
        Ok((auth, endpoint))
    }

    fn current_context(&self) -> Option<Context> {
        self.inner.context_provider.current()
    }

    /// Logs in: POSTs `credentials` (merged over `login_data` and the options' data: the
    /// credentials win) to the login endpoint, parses the tokens, stores them in the current session and returns them.
    ///
    /// Fires `on_login(bundle, body, ctx)` or `on_error(err, ctx)` (client-wide, then the
    /// options'). A 401/403 answer is an [`AuthFailure::Rejected`] error.
    pub async fn login<C: Serialize + ?Sized>(
        &self,
        credentials: &C,
        options: LoginOptions,
    ) -> Result<ApiResponse<TokenRecord>, Error> {
        let ctx = self.current_context();
        let result = self.login_inner(credentials, &options, ctx.as_ref()).await;
        if let Ok(auth) = self.auth() {
            let context = ctx.as_ref();
            auth.manager.events().emit(match &result {
                Ok((response, body)) => Event::LoggedIn {
                    tokens: &response.data,
                    response: body,
                    context,
                },
                Err(error) => Event::LoginFailed { error, context },
            });
        }
        result.map(|(response, _)| response)
    }

    async fn login_inner<C: Serialize + ?Sized>(
        &self,
        credentials: &C,
        options: &LoginOptions,
        ctx: Option<&Context>,
    ) -> Result<(ApiResponse<TokenRecord>, Value), Error> {
        if let Some(err) = &options.error {
            return Err(err.clone());
        }
        let auth = self.auth()?;
        if let Some(oauth) = &auth.oauth {
            return self.oauth_login(auth, oauth, credentials, options, ctx).await;
        }
        let (auth, endpoint) = self.endpoint_auth()?;
        let credentials = serde_json::to_value(credentials)
            .map_err(|e| Error::config(format!("credentials could not be encoded: {e}")))?;
        let body = endpoint.login_body(credentials, options.data.clone())?;
        let mut params = endpoint.config.login_params.clone();
        params.extend(options.params.iter().cloned());
        let (url, response) = endpoint
            .post(AuthCall {
                operation: Operation::Login,
                ctx,
                path: &endpoint.config.login,
                body: Some(body),
                headers: &options.headers,
                params,
                timeout: options.timeout.unwrap_or(endpoint.config.login_timeout),
            })
            .await?;
        let (parts, bytes) = response.into_parts();
        if !parts.status.is_success() {
            let kind = match parts.status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth(AuthFailure::Rejected),
                _ => ErrorKind::Status,
            };
            let message = describe("the login endpoint refused", &bytes);
            return Err(Error::new(kind, message).with_response(parts.status, bytes));
        }
        let json = EndpointSource::json_body("login", parts.status, &bytes)?;
        let record = endpoint.parse_login(&json, auth.manager.now())?;
        record.validate()?;
        let record = Arc::new(record);
        auth.manager.store().save(ctx, Arc::clone(&record), None).await?;
        let response = ApiResponse {
            data: (*record).clone(),
            status: parts.status,
            headers: parts.headers,
            url: crate::urls::to_uri(&url)?,
        };
        Ok((response, json))
    }

    /// The password grant: `credentials` hold `username` and `password`; other fields and the
    /// options' data become extra form parameters.
    async fn oauth_login<C: Serialize + ?Sized>(
        &self,
        auth: &Auth,
        oauth: &Arc<OAuth2Source>,
        credentials: &C,
        options: &LoginOptions,
        ctx: Option<&Context>,
    ) -> Result<(ApiResponse<TokenRecord>, Value), Error> {
        let credentials = match serde_json::to_value(credentials) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(Error::config(
                    "credentials must serialize to an object with username and password",
                ))
            }
        };
        // The options' data, then the credentials (which win).
        let mut fields = match &options.data {
            Some(Value::Object(data)) => data.clone(),
            _ => serde_json::Map::new(),
        };
        fields.extend(credentials);
        let take = |fields: &mut serde_json::Map<String, Value>, key: &str| match fields.remove(key) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(Error::config(format!(
                "credentials need a string {key:?} for the password grant"
            ))),
        };
        let username = take(&mut fields, "username")?;
        let password = take(&mut fields, "password")?;
        let extra = fields
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
            .collect();
        let (record, body) = oauth
            .password(&username, &password, extra, auth.manager.now())
            .await?;
        record.validate()?;
        let record = Arc::new(record);
        auth.manager.store().save(ctx, Arc::clone(&record), None).await?;
        let url = crate::urls::resolve(&self.inner.base, &oauth.config.token_url, "")?;
        Ok((
            ApiResponse {
                data: (*record).clone(),
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                url: crate::urls::to_uri(&url)?,
            },
            body,
        ))
    }

    /// Logs out: POSTs to the logout endpoint (when configured) with the access token in the
    /// auth header and no body (the refresh token goes in a body with
    /// [`EndpointConfig::logout_with_refresh_token`](crate::EndpointConfig::logout_with_refresh_token))
    /// — or, in OAuth mode, revokes the tokens at the revocation endpoint (RFC 7009) — then
    /// clears the session, even when that call fails, in which case its error is returned
    /// after clearing.
    pub async fn logout(&self) -> Result<(), Error> {
        let auth = self.auth()?;
        if let Some(oauth) = &auth.oauth {
            let ctx = self.current_context();
            let store = auth.manager.store();
            let remote = match store.load(ctx.as_ref()).await? {
                Some(record) => oauth.revoke(&record).await,
                None => Ok(()),
            };
            store.clear(ctx.as_ref()).await?;
            if let Err(err) = &remote {
                tracing::warn!(error = %err, "token revocation failed; local session cleared");
            }
            return remote;
        }
        let (auth, endpoint) = self.endpoint_auth()?;
        let ctx = self.current_context();
        let store = auth.manager.store();
        let record = store.load(ctx.as_ref()).await?;
        let remote = match (&endpoint.config.logout, &record) {
            (Some(path), Some(record)) => {
                let mut headers = HeaderMap::new();
                if record.access_token.is_some() {
                    headers.insert(auth.header_name.clone(), auth.header_value(record)?);
                }
                // The token header only, unless the refresh token is asked for in a body.
                let body = endpoint.config.logout_body.then(|| {
                    let mut body = serde_json::Map::new();
                    if let Some(refresh) = &record.refresh_token {
                        body.insert(
                            endpoint.config.refresh_request_field.clone(),
                            Value::String(refresh.secret().to_owned()),
                        );
                    }
                    body
                });
                let call = endpoint
                    .post(AuthCall {
                        operation: Operation::Logout,
                        ctx: ctx.as_ref(),
                        path,
                        body,
                        headers: &headers,
                        params: Vec::new(),
                        timeout: endpoint.config.logout_timeout,
                    })
                    .await;
                match call {
                    Ok((_, response)) if response.status().is_success() => Ok(()),
                    Ok((_, response)) => {
                        let (parts, bytes) = response.into_parts();
                        let message = describe("the logout endpoint refused", &bytes);
                        Err(Error::new(ErrorKind::Status, message).with_response(parts.status, bytes))
                    }
                    Err(err) => Err(err),
                }
            }
            _ => Ok(()),
        };
        store.clear(ctx.as_ref()).await?;
        if let Err(err) = &remote {
            tracing::warn!(error = %err, "logout call failed; local session cleared");
        }
        remote
    }

    /// Puts tokens obtained elsewhere (your own sign-in flow, a token exchange…) into the
    /// current session, replacing what it held; from then on they are injected and rotated
    /// like a login's. The record is checked first (at least one token, nothing a header
    /// cannot carry); no event fires and no endpoint is called. Returns the stored record.
    ///
    /// ```no_run
    /// # async fn f(client: tokenkit_core::Client) -> Result<(), tokenkit_core::Error> {
    /// use std::time::{Duration, SystemTime};
    /// use tokenkit_core::{AccessToken, RefreshToken, TokenRecord};
    /// let record = TokenRecord::new(AccessToken::new("eyJ…"), SystemTime::now())
    ///     .with_refresh_token(RefreshToken::new("8xLOxBtZp8"))
    ///     .with_expires_in(Duration::from_secs(3600))?;
    /// client.set_session(record).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_session(&self, record: TokenRecord) -> Result<Arc<TokenRecord>, Error> {
        let auth = self.auth()?;
        record.validate()?;
        let ctx = self.current_context();
        let store = auth.manager.store();
        let current = store.load(ctx.as_ref()).await?;
        let record = Arc::new(record);
        store
            .save(ctx.as_ref(), Arc::clone(&record), current.as_deref())
            .await?;
        Ok(record)
    }

    /// Clears the current session without calling the logout endpoint.
    pub async fn clear(&self) -> Result<(), Error> {
        let auth = self.auth()?;
        let ctx = self.current_context();
        auth.manager.store().clear(ctx.as_ref()).await
    }

    /// The current session's record as stored: no refresh, no change to the session.
    pub async fn session(&self) -> Result<Option<Arc<TokenRecord>>, Error> {
        let auth = self.auth()?;
        let ctx = self.current_context();
        auth.manager.store().load(ctx.as_ref()).await
    }

    /// Whether the current session can make authenticated requests: it holds a valid access
    /// token, or a refresh token to get one. Changes nothing.
    pub async fn is_authenticated(&self) -> Result<bool, Error> {
        let auth = self.auth()?;
        let record = self.session().await?;
        let fresh = auth
            .manager
            .policy()
            .freshness(record.as_deref(), auth.manager.now());
        Ok(matches!(fresh, Freshness::Fresh | Freshness::Stale)
            || record.is_some_and(|r| r.refresh_token.is_some()))
    }

    /// Makes the current session fresh: refreshes when the token is missing, expired or due.
    /// Returns the record, or `None` when there is no session (not logged in).
    pub async fn ensure(&self) -> Result<Option<Arc<TokenRecord>>, Error> {
        let auth = self.auth()?;
        let ctx = self.current_context();
        match auth.manager.token(ctx.as_ref(), &RefreshHints::default()).await {
            Ok(record) => Ok(Some(record)),
            Err(err) if err.auth_failure() == Some(AuthFailure::NoSession) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Refreshes the current session now, whatever its freshness.
    pub async fn refresh_session(&self, options: RefreshOptions) -> Result<Arc<TokenRecord>, Error> {
        if let Some(err) = options.error {
            return Err(err);
        }
        let auth = self.auth()?;
        let ctx = self.current_context();
        let hints = RefreshHints::new(&options.headers, options.data);
        auth.manager.force_refresh(ctx.as_ref(), &hints).await
    }
}
