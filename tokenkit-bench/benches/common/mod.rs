//! What the core hot-path benchmarks share: a client over a no-op transport.

use bytes::Bytes;
use tokenkit_core::{transport_fn, Client, ProvidedToken, RetryConfig};

/// A client whose transport answers `{}` at once; with a provider-mode token when `with_auth`.
pub(crate) fn client(with_auth: bool) -> Client {
    let transport = transport_fn(|_req: http::Request<Bytes>| async {
        Ok(http::Response::new(Bytes::from_static(b"{}")))
    });
    let builder = Client::builder("http://api.example")
        .transport(transport)
        .no_timeout()
        .retry(RetryConfig::none());
    let builder = if with_auth {
        builder.provider(|| async {
            Ok::<_, std::io::Error>(ProvidedToken::new(
                "a-realistic-token-value-of-some-length-0123456789",
                3600,
            ))
        })
    } else {
        builder
    };
    builder.build().unwrap()
}
