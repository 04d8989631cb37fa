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

mod client;
mod context;
pub mod defaults;
mod error;
mod events;
mod header;
mod metrics;
mod policy;
mod redact;
mod rotation;
mod runtime;
mod source;
mod store;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod token;
mod transport;
mod urls;

pub use async_trait::async_trait;
pub use cookie;
pub use http;

pub use client::{
    api, set_config, set_default_client, Api, ApiResponse, AuthOverride, Backoff, Client, ClientBuilder,
    ErrorInterceptor, LoginOptions, RefreshOptions, RequestBuilder, RequestInterceptor, ResponseInterceptor,
    RetryConfig,
};
pub use context::{
    run_with_context, Context, ContextProvider, FnContextProvider, Operation, TaskContextProvider,
};
pub use error::{AuthFailure, Error, ErrorKind, OAuthError};
pub use events::Event;
pub use policy::{parse_duration, Freshness, RefreshPolicy, StandardPolicy};
pub use rotation::{Coordinator, InProcessCoordinator, Lease, Role, RotationStats, SessionKey, SessionKind};
pub use runtime::{BoxFuture, Clock, Runtime, Sleep, Spawn, SpawnError, SystemClock};
pub use source::{
    AuthContentType, ClientAuth, ClientSecret, EndpointConfig, FetchReason, FetchRequest, FieldMapping,
    OAuth2Config, ProvidedToken, TokenSource,
};
pub use store::{
    CookieConfig, CookieStore, MemorySessionBackend, MemoryStore, SessionBackend, SessionId, SessionStore,
    StoreScope, TokenStore,
};
pub use token::{AccessToken, RefreshToken, TokenRecord};
pub use transport::{transport_fn, Transport, TransportError, TransportErrorKind};
