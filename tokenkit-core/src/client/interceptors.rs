//! Interceptors: async hooks around every request, in the order they were added, each given
//! the request's context.
//!
//! - request interceptors may rewrite the outgoing request; they run on every attempt
//!   (retries and replays after a refresh included), after the token is injected;
//! - response interceptors may rewrite the final response before it is decoded;
//! - error interceptors observe the final typed error (a failure to obtain a token included).
//!
//! Async closures work directly; they take the request (or response, or error) and the
//! context by value and hand the request or response back:
//!
//! ```
//! use tokenkit_core::{http, Client};
//!
//! let builder = Client::builder("https://api.example.com")
//!     .request_interceptor(|mut req: http::Request<bytes::Bytes>, _ctx| async move {
//!         req.headers_mut().insert("x-custom", http::HeaderValue::from_static("value"));
//!         Ok(req)
//!     });
//! ```

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::context::Context;
use crate::error::Error;

/// Rewrites an outgoing request. An error aborts the request.
#[async_trait]
pub trait RequestInterceptor: Send + Sync {
    /// Inspects or rewrites `request`.
    async fn intercept(
        &self,
        request: http::Request<Bytes>,
        ctx: Option<Context>,
    ) -> Result<http::Request<Bytes>, Error>;
}

/// Rewrites the final response. An error fails the request.
#[async_trait]
pub trait ResponseInterceptor: Send + Sync {
    /// Inspects or rewrites `response`.
    async fn intercept(
        &self,
        response: http::Response<Bytes>,
        ctx: Option<Context>,
    ) -> Result<http::Response<Bytes>, Error>;
}

/// Observes the final error of a request.
#[async_trait]
pub trait ErrorInterceptor: Send + Sync {
    /// Observes `error`.
    async fn observe(&self, error: Error, ctx: Option<Context>);
}

#[async_trait]
impl<F, Fut> RequestInterceptor for F
where
    F: Fn(http::Request<Bytes>, Option<Context>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<http::Request<Bytes>, Error>> + Send,
{
    async fn intercept(
        &self,
        request: http::Request<Bytes>,
        ctx: Option<Context>,
    ) -> Result<http::Request<Bytes>, Error> {
        self(request, ctx).await
    }
}

#[async_trait]
impl<F, Fut> ResponseInterceptor for F
where
    F: Fn(http::Response<Bytes>, Option<Context>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<http::Response<Bytes>, Error>> + Send,
{
    async fn intercept(
        &self,
        response: http::Response<Bytes>,
        ctx: Option<Context>,
    ) -> Result<http::Response<Bytes>, Error> {
        self(response, ctx).await
    }
}

#[async_trait]
impl<F, Fut> ErrorInterceptor for F
where
    F: Fn(Error, Option<Context>) -> Fut + Send + Sync,
    Fut: Future<Output = ()> + Send,
{
    async fn observe(&self, error: Error, ctx: Option<Context>) {
        self(error, ctx).await
    }
}

/// The interceptors of a client.
#[derive(Clone, Default)]
pub(crate) struct Interceptors {
    pub(crate) request: Vec<Arc<dyn RequestInterceptor>>,
    pub(crate) response: Vec<Arc<dyn ResponseInterceptor>>,
    pub(crate) error: Vec<Arc<dyn ErrorInterceptor>>,
}

impl Interceptors {
    /// Runs the request interceptors in order.
    pub(crate) async fn intercept_request(
        &self,
        mut request: http::Request<bytes::Bytes>,
        ctx: Option<&Context>,
    ) -> Result<http::Request<bytes::Bytes>, Error> {
        for interceptor in &self.request {
            request = interceptor.intercept(request, ctx.cloned()).await?;
        }
        Ok(request)
    }

    /// Runs the response interceptors in order.
    pub(crate) async fn intercept_response(
        &self,
        mut response: http::Response<bytes::Bytes>,
        ctx: Option<&Context>,
    ) -> Result<http::Response<bytes::Bytes>, Error> {
        for interceptor in &self.response {
            response = interceptor.intercept(response, ctx.cloned()).await?;
        }
        Ok(response)
    }
}

impl std::fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptors")
            .field("request", &self.request.len())
            .field("response", &self.response.len())
            .field("error", &self.error.len())
            .finish()
    }
}
