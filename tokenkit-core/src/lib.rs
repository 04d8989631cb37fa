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
//! ## What you will name
//!
//! For the common cases: [`Client`] and its [`ClientBuilder`] (one token mode:
//! [`provider`](ClientBuilder::provider), [`endpoints`](ClientBuilder::endpoints) with an
//! [`EndpointConfig`], [`oauth2_client_credentials`](ClientBuilder::oauth2_client_credentials) /
//! [`oauth2_password`](ClientBuilder::oauth2_password) with an [`OAuth2Config`]), the
//! [`ProvidedToken`] a provider returns, [`ApiResponse`] and [`Error`] (with [`ErrorKind`] and
//! [`AuthFailure`]), the lifecycle [`Event`], [`LoginOptions`], [`RetryConfig`],
//! [`StandardPolicy`], the stores ([`MemoryStore`], [`CookieStore`] with [`CookieConfig`],
//! [`SessionStore`]) and the per-request [`Context`]. Every default is a constant in
//! [`defaults`]. The rest are seams for implementers: [`Transport`], [`TokenStore`],
//! [`SessionBackend`], [`TokenSource`], [`RefreshPolicy`], [`Coordinator`],
//! [`ContextProvider`] and the runtime hooks [`Clock`], [`Sleep`], [`Spawn`].
//!
//! ## Observability
//!
//! Each lifecycle moment is one [`Event`] (to [`ClientBuilder::on_event`] handlers), one
//! `tracing` event (target `tokenkit_core::events`; a rejection that is recovered is DEBUG,
//! what needs a look is WARN), inside a `request` span (method, host, attempt, outcome) and,
//! for token fetches, a `refresh` span (reason, outcome): `RUST_LOG=tokenkit_core=debug`
//! shows them. With the `metrics` feature the same moments feed the `metrics` facade:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tokenkit_token_fetches_total` | counter | `reason` (`needed`, `proactive`, `rejected`, `forced`), `outcome` (`ok`, `error`) |
//! | `tokenkit_refresh_duration_seconds` | histogram | `reason` |
//! | `tokenkit_recoveries_total` | counter | `outcome` (`replayed`, `aborted`) |
//! | `tokenkit_flight_wait_seconds` | histogram | — (time a request waited for a refresh) |
//! | `tokenkit_store_conflicts_total` | counter | — (compare-and-swap writes lost to another writer) |
//! | `tokenkit_sessions_invalidated_total` | counter | — |
//! | `tokenkit_logins_total` | counter | `outcome` |
//!
//! ## Features
//!
//! - `metrics`: the metrics above, through the `metrics` facade crate.
//! - `test-util`: the `testing` module — a manual clock and the coordinator contract tests.
//!
//! Coming from astro-tokenkit or axios-token-manager? [`migrating`] maps their options.
//!
//! ## What tokenkit never does
//!
//! Send a token to an origin other than the base URL's, let a credential follow a redirect,
//! print a token in `Debug`, `Display`, errors, events or logs (unless
//! [`add_token_to_logs`](ClientBuilder::add_token_to_logs) is set, for log messages), or turn
//! off TLS verification. Text a server sends back (an OAuth `error_description`) is filtered
//! before it reaches an error, an event or a log: known secrets redacted, control characters
//! removed, length capped.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod context;
mod deadline;
pub mod defaults;
mod encryption;
#[doc = include_str!("../docs/migrating.md")]
pub mod migrating {}
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

#[cfg(feature = "openid")]
pub use client::openid::{is_safe_return_path, OpenIdConfig, SignedIn};
pub use client::{
    api, set_config, set_default_client, Api, ApiResponse, AuthOverride, Backoff, Client, ClientBuilder,
    ErrorInterceptor, LoginOptions, RefreshOptions, RequestBuilder, RequestInterceptor, ResponseInterceptor,
    RetryConfig,
};
pub use context::{
    run_with_context, Context, ContextProvider, FnContextProvider, Operation, TaskContextProvider,
};
pub use deadline::Deadline;
pub use encryption::Encryption;
pub use error::{AuthFailure, Error, ErrorKind, OAuthError};
pub use events::Event;
pub use policy::{parse_duration, ExpiryRule, Freshness, RefreshPolicy, StandardPolicy};
pub use rotation::{
    Coordinator, InProcessCoordinator, Lease, OutageConfig, Role, RotationStats, SessionKey, SessionKind,
};
pub use runtime::{BoxFuture, Clock, Runtime, Sleep, Spawn, SpawnError, SystemClock, Timeout};
pub use source::discovery::{Discovery, ProviderMetadata};
#[cfg(feature = "jose")]
pub use source::{AssertionFile, AssertionSource, SigningAlgorithm, SigningKey};
pub use source::{
    AuthContentType, ClientAuth, ClientSecret, EndpointConfig, FetchReason, FetchRequest, FieldMapping,
    OAuth2Config, ProvidedToken, TokenParams, TokenSource,
};
pub use store::{
    CookieConfig, CookieStore, MemorySessionBackend, MemoryStore, SessionBackend, SessionId, SessionStore,
    StoreScope, TokenStore,
};
pub use token::{AccessToken, RefreshToken, TokenRecord};
pub use transport::{transport_fn, Transport, TransportError, TransportErrorKind};
pub use urls::OriginCache;
