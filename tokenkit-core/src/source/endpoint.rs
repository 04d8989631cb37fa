//! Endpoint mode: the login, refresh and logout endpoints of your API.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde_json::{Map, Value};
use url::Url;

use super::parse::{parse_token_response, FieldMapping};
use super::{FetchRequest, TokenSource};
use crate::context::{Context, HeaderResolver, Operation};
use crate::error::{AuthFailure, Error, ErrorKind};
use crate::runtime::Sleep;
use crate::token::TokenRecord;
use crate::transport::{send_with_timeout, Transport};
use crate::urls;

/// How auth requests encode their bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthContentType {
    /// `application/json` (default).
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// A custom response parser: `(body, now) -> record`.
pub(crate) type ParseFn = Arc<dyn Fn(&Value, SystemTime) -> Result<TokenRecord, Error> + Send + Sync>;

/// The endpoints and encoding of endpoint mode.
#[derive(Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Login path (POST), relative to the base URL.
    pub login: String,
    /// Refresh path (POST).
    pub refresh: String,
    /// Logout path (POST), if the API has one.
    pub logout: Option<String>,
    /// Body encoding of auth requests.
    pub content_type: AuthContentType,
    /// Extra headers of login, refresh and logout requests.
    pub headers: HeaderMap,
    /// Fields merged into every login body.
    pub login_data: Map<String, Value>,
    /// Query parameters of every login request.
    pub login_params: Vec<(String, String)>,
    /// Fields merged into every refresh body.
    pub refresh_data: Map<String, Value>,
    /// Query parameters of every refresh request.
    pub refresh_params: Vec<(String, String)>,
    /// The refresh token's field in the refresh body (default `refreshToken`).
    pub refresh_request_field: String,
    /// Login timeout (default 30 s).
    pub login_timeout: Duration,
    /// Refresh timeout (default 30 s).
    pub refresh_timeout: Duration,
    /// Logout timeout (default 10 s).
    pub logout_timeout: Duration,
    /// Whether the logout call also sends the refresh token in a body (`{<refresh field>:
    /// token}`, encoded as the other auth bodies). Default off: the logout call carries the
    /// access token in the auth header only, with no body.
    pub logout_body: bool,
    /// Field-name overrides for responses.
    pub fields: FieldMapping,
    pub(crate) parse_login: Option<ParseFn>,
    pub(crate) parse_refresh: Option<ParseFn>,
    pub(crate) error: Option<Error>,
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("login", &self.login)
            .field("refresh", &self.refresh)
            .field("logout", &self.logout)
            .field("content_type", &self.content_type)
            .field("headers", &crate::redact::RedactedHeaders(&self.headers))
            .field("refresh_request_field", &self.refresh_request_field)
            .finish_non_exhaustive()
    }
}

impl EndpointConfig {
    /// Login and refresh paths; everything else at its default.
    pub fn new(login: impl Into<String>, refresh: impl Into<String>) -> Self {
        Self {
            login: login.into(),
            refresh: refresh.into(),
            logout: None,
            content_type: AuthContentType::Json,
            headers: HeaderMap::new(),
            login_data: Map::new(),
            login_params: Vec::new(),
            refresh_data: Map::new(),
            refresh_params: Vec::new(),
            refresh_request_field: crate::defaults::REFRESH_REQUEST_FIELD.to_owned(),
            login_timeout: crate::defaults::AUTH_TIMEOUT,
            refresh_timeout: crate::defaults::AUTH_TIMEOUT,
            logout_timeout: crate::defaults::LOGOUT_TIMEOUT,
            logout_body: false,
            fields: FieldMapping::default(),
            parse_login: None,
            parse_refresh: None,
            error: None,
        }
    }

    /// Sets the logout path.
    pub fn logout(mut self, path: impl Into<String>) -> Self {
        self.logout = Some(path.into());
        self
    }

    /// Makes the logout call send the refresh token in a body too (see
    /// [`logout_body`](Self::logout_body)).
    pub fn logout_with_refresh_token(mut self) -> Self {
        self.logout_body = true;
        self
    }

    /// Sends auth bodies form-encoded.
    pub fn form(mut self) -> Self {
        self.content_type = AuthContentType::Form;
        self
    }

    /// Sets the body encoding.
    pub fn content_type(mut self, content_type: AuthContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// Adds a header to every auth request.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        http::HeaderName: TryFrom<K>,
        <http::HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        http::HeaderValue: TryFrom<V>,
        <http::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        crate::header::append(&mut self.headers, &mut self.error, name, value);
        self
    }

    fn object(&mut self, what: &str, value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => {
                self.error
                    .get_or_insert(Error::config(format!("{what} must be a JSON object")));
                Map::new()
            }
        }
    }

    /// Fields merged into every login body (a JSON object).
    pub fn login_data(mut self, data: Value) -> Self {
        self.login_data = self.object("login_data", data);
        self
    }

    /// Fields merged into every refresh body (a JSON object).
    pub fn refresh_data(mut self, data: Value) -> Self {
        self.refresh_data = self.object("refresh_data", data);
        self
    }

    /// Adds a query parameter to every login request.
    pub fn login_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.login_params.push((name.into(), value.into()));
        self
    }

    /// Adds a query parameter to every refresh request.
    pub fn refresh_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.refresh_params.push((name.into(), value.into()));
        self
    }

    /// The refresh token's field in the refresh body.
    pub fn refresh_request_field(mut self, field: impl Into<String>) -> Self {
        self.refresh_request_field = field.into();
        self
    }

    /// Sets the login and refresh timeouts.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.login_timeout = timeout;
        self.refresh_timeout = timeout;
        self
    }

    /// Sets the logout timeout.
    pub fn logout_timeout(mut self, timeout: Duration) -> Self {
        self.logout_timeout = timeout;
        self
    }

    /// Overrides response field names.
    pub fn fields(mut self, fields: FieldMapping) -> Self {
        self.fields = fields;
        self
    }

    /// Replaces the parsing of login responses.
    pub fn parse_login(
        mut self,
        parse: impl Fn(&Value, SystemTime) -> Result<TokenRecord, Error> + Send + Sync + 'static,
    ) -> Self {
        self.parse_login = Some(Arc::new(parse));
        self
    }

    /// Replaces the parsing of refresh responses.
    pub fn parse_refresh(
        mut self,
        parse: impl Fn(&Value, SystemTime) -> Result<TokenRecord, Error> + Send + Sync + 'static,
    ) -> Self {
        self.parse_refresh = Some(Arc::new(parse));
        self
    }
}

/// One auth call's inputs.
pub(crate) struct AuthCall<'a> {
    pub(crate) operation: Operation,
    pub(crate) ctx: Option<&'a Context>,
    pub(crate) path: &'a str,
    /// `None`: no body and no `Content-Type` (a logout carrying only the token header).
    pub(crate) body: Option<Map<String, Value>>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) timeout: Duration,
}

/// The endpoint source: refreshes through the refresh endpoint; also serves login and logout.
pub(crate) struct EndpointSource {
    pub(crate) config: EndpointConfig,
    transport: Arc<dyn Transport>,
    base: Url,
    sleep: Option<Arc<dyn Sleep>>,
    resolver: Option<HeaderResolver>,
}

impl fmt::Debug for EndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A response's OAuth-style error code, if it has one (never a secret; the body stays aside).
pub(crate) fn error_code(body: &Bytes) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let code = value.get("error")?.as_str()?;
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_graphic())).then(|| code.to_owned())
}

/// The message of an auth endpoint's refusal: who refused and the body's `error` code. The
/// status is not repeated here: the error carries it and prints it.
pub(crate) fn describe(what: &str, body: &Bytes) -> String {
    match error_code(body) {
        Some(code) => format!("{what}: {code}"),
        None => what.to_owned(),
    }
}

fn form_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl EndpointSource {
    pub(crate) fn new(
        config: EndpointConfig,
        transport: Arc<dyn Transport>,
        base: Url,
        sleep: Option<Arc<dyn Sleep>>,
        resolver: Option<HeaderResolver>,
    ) -> Self {
        Self {
            config,
            transport,
            base,
            sleep,
            resolver,
        }
    }

    /// POSTs one auth call and returns the URL and the buffered response.
    pub(crate) async fn post(&self, call: AuthCall<'_>) -> Result<(Url, http::Response<Bytes>), Error> {
        let query = serde_urlencoded::to_string(&call.params)
            .map_err(|e| Error::config(format!("auth query parameters could not be encoded: {e}")))?;
        let url = urls::resolve(&self.base, call.path, &query)?;
        let (body, content_type) = match (call.body, self.config.content_type) {
            (None, _) => (Vec::new(), None),
            (Some(body), AuthContentType::Json) => (
                serde_json::to_vec(&Value::Object(body))
                    .map_err(|e| Error::decode(format!("auth body could not be encoded: {e}")))?,
                Some("application/json"),
            ),
            (Some(body), AuthContentType::Form) => {
                let pairs: Vec<(String, String)> =
                    body.iter().map(|(k, v)| (k.clone(), form_value(v))).collect();
                (
                    serde_urlencoded::to_string(&pairs)
                        .map_err(|e| Error::decode(format!("auth body could not be encoded: {e}")))?
                        .into_bytes(),
                    Some("application/x-www-form-urlencoded"),
                )
            }
        };
        let mut request = http::Request::new(Bytes::from(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = http::Uri::try_from(url.as_str())
            .map_err(|e| Error::new(ErrorKind::Url, format!("URL is not a valid URI: {e}")))?;
        let headers = request.headers_mut();
        headers.extend(self.config.headers.clone());
        if let Some(resolve) = &self.resolver {
            for (name, value) in resolve(call.ctx, call.operation) {
                if let Some(name) = name {
                    headers.insert(name, value);
                }
            }
        }
        for (name, value) in call.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = send_with_timeout(
            &*self.transport,
            self.sleep.as_deref(),
            request,
            Some(call.timeout),
        )
        .await?;
        Ok((url, response))
    }

    /// Parses a 2xx auth response body as JSON.
    pub(crate) fn json_body(what: &str, status: StatusCode, body: &Bytes) -> Result<Value, Error> {
        serde_json::from_slice(body).map_err(|_| {
            Error::invalid_token(format!("the {what} response is not JSON"))
                .with_response(status, body.clone())
        })
    }

    /// The login body: `login_data`, then per-call data, then the credentials (which win).
    pub(crate) fn login_body(
        &self,
        credentials: Value,
        data: Option<Value>,
    ) -> Result<Map<String, Value>, Error> {
        let mut body = self.config.login_data.clone();
        for (what, value) in [("login data", data), ("credentials", Some(credentials))] {
            match value {
                Some(Value::Object(map)) => body.extend(map),
                Some(Value::Null) | None => {}
                Some(_) => return Err(Error::config(format!("{what} must serialize to a JSON object"))),
            }
        }
        Ok(body)
    }

    /// Parses a login response.
    pub(crate) fn parse_login(&self, body: &Value, now: SystemTime) -> Result<TokenRecord, Error> {
        match &self.config.parse_login {
            Some(parse) => parse(body, now),
            None => parse_token_response(body, &self.config.fields, now),
        }
    }
}

#[async_trait]
impl TokenSource for EndpointSource {
    async fn fetch(&self, request: FetchRequest) -> Result<TokenRecord, Error> {
        let refresh_token = super::refresh_token_of(&request)?;
        let mut body = self.config.refresh_data.clone();
        if let Some(Value::Object(data)) = request.data {
            body.extend(data);
        }
        body.insert(
            self.config.refresh_request_field.clone(),
            Value::String(refresh_token.secret().to_owned()),
        );
        let (_, response) = self
            .post(AuthCall {
                operation: Operation::Refresh,
                ctx: request.context.as_ref(),
                path: &self.config.refresh,
                body: Some(body),
                headers: &request.headers,
                params: self.config.refresh_params.clone(),
                timeout: self.config.refresh_timeout,
            })
            .await?;
        let (parts, bytes) = response.into_parts();
        if !parts.status.is_success() {
            let kind = match parts.status {
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    AuthFailure::SessionInvalid
                }
                _ => AuthFailure::TokenUnavailable,
            };
            let message = describe("the refresh endpoint refused", &bytes);
            return Err(Error::new(ErrorKind::Auth(kind), message).with_response(parts.status, bytes));
        }
        let json = Self::json_body("refresh", parts.status, &bytes)?;
        match &self.config.parse_refresh {
            Some(parse) => parse(&json, request.now),
            None => parse_token_response(&json, &self.config.fields, request.now),
        }
    }
}
