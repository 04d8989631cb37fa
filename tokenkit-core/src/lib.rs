//! # tokenkit-core
//!
//! Authenticated API calls without the bookkeeping: tokenkit obtains access tokens, injects
//! them, refreshes them before they expire and after the server rejects them, de-duplicates
//! concurrent refreshes, and keeps them in a store.
//!
//! This crate holds all of the behaviour and depends on no HTTP client and no async runtime.
//! An adapter crate (`tokenkit-reqwest`, …) supplies the [`Transport`] and the runtime hooks;
//! anything else can be plugged in through the four seams: [`Transport`], [`TokenStore`],
//! [`ContextProvider`] and [`RefreshPolicy`].
//!
//! ```
//! use tokenkit_core::{http, transport_fn, Client, ProvidedToken};
//! use bytes::Bytes;
//!
//! # futures_executor::block_on(async {
//! // Any transport works; here, a closure that checks the token and answers in-process.
//! let transport = transport_fn(|req: http::Request<Bytes>| async move {
//!     let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok());
//!     let body = if auth == Some("Bearer t-1") { r#"{"hello":"world"}"# } else { "{}" };
//!     Ok(http::Response::new(Bytes::from(body)))
//! });
//! let client = Client::builder("https://api.example.com")
//!     .transport(transport)
//!     .no_timeout() // with an adapter's builder() the runtime hooks enable timeouts
//!     .provider(|| async { Ok::<_, std::io::Error>(ProvidedToken::new("t-1", 3600)) })
//!     .build()?;
//! let response = client.get("/greeting").send::<serde_json::Value>().await?;
//! assert_eq!(response.data["hello"], "world");
//! # Ok::<(), tokenkit_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! What tokenkit never does: send a token to an origin other than the base URL's, print a
//! token in `Debug`, `Display`, errors or logs (unless `add_token_to_logs` is set), or turn off
//! TLS verification.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client;
pub mod context;
pub mod error;
pub mod events;
mod header;
pub mod policy;
pub mod redact;
pub mod rotation;
pub mod runtime;
pub mod source;
pub mod store;
pub mod token;
pub mod transport;
mod urls;

pub use async_trait::async_trait;
pub use http;

pub use client::{
    api, set_config, set_default_client, Api, ApiResponse, AuthOverride, Backoff, Client, ClientBuilder,
    LoginOptions, RefreshOptions, RequestBuilder, RetryConfig, DEFAULT_TIMEOUT,
};
pub use context::{
    current_context, run_with_context, Context, ContextProvider, FnContextProvider, HeaderResolver,
    Operation, TaskContextProvider,
};
pub use cookie;
pub use error::{AuthFailure, Error, ErrorKind, OAuthError};
pub use events::DEFAULT_TOKEN_TRY_THRESHOLD;
pub use policy::{
    parse_duration, Freshness, RefreshPolicy, StandardPolicy, DEFAULT_CLOCK_SKEW, DEFAULT_GRACE_WINDOW,
    DEFAULT_MAX_RECOVERY_TRIES, DEFAULT_MIN_INTERVAL, DEFAULT_REFRESH_BEFORE, DEFAULT_REFRESH_BUFFER,
};
pub use rotation::{Coordinator, InProcessCoordinator, RotationStats, SessionKey};
pub use runtime::{Clock, Runtime, Sleep, Spawn, SystemClock};
pub use source::{
    AuthContentType, ClientAuth, ClientSecret, EndpointConfig, FetchReason, FetchRequest, FieldMapping,
    OAuth2Config, ProvidedToken, ProviderSource, RefreshHints, TokenSource,
};
pub use store::{
    CookieConfig, CookieStore, MemorySessionBackend, MemoryStore, SessionBackend, SessionId, SessionStore,
    StoreScope, TokenStore,
};
pub use token::{AccessToken, RefreshToken, TokenBundle, TokenRecord};
pub use transport::{transport_fn, Transport, TransportError, TransportErrorKind};
