//! The process-wide default client ([`api`] and [`set_config`]).
//!
//! [`set_config`] builds and installs the default client; [`api()`] is a handle that resolves
//! the installed client on every call, so a configuration change is visible at once, and all
//! code using the default client shares its one rotation state (one refresh at a time per
//! session). This is the only global state in tokenkit; any number of independent clients
//! can be built besides it.
//!
//! ```
//! # use tokenkit_core::{http, transport_fn, Client};
//! # use bytes::Bytes;
//! # let transport = transport_fn(|_req: http::Request<Bytes>| async { Ok(http::Response::new(Bytes::from("{}"))) });
//! tokenkit_core::set_config(Client::builder("https://api.example.com").transport(transport).no_timeout())?;
//! let request = tokenkit_core::api().get("/me");
//! # Ok::<(), tokenkit_core::Error>(())
//! ```

use std::sync::{PoisonError, RwLock};

use http::Method;

use super::{Client, ClientBuilder, RequestBuilder};
use crate::error::Error;

static DEFAULT: RwLock<Option<Client>> = RwLock::new(None);

/// Builds `builder` and installs it as the default client, replacing any previous one.
/// Requests started afterwards through [`api()`] use it; a failed build leaves the previous
/// client in place.
pub fn set_config(builder: ClientBuilder) -> Result<(), Error> {
    set_default_client(builder.build()?);
    Ok(())
}

/// Installs an already built client as the default client.
pub fn set_default_client(client: Client) {
    *DEFAULT.write().unwrap_or_else(PoisonError::into_inner) = Some(client);
}

/// The handle on the default client.
pub fn api() -> Api {
    Api
}

/// A handle on the default client; every call uses the client installed at that moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Api;

impl Api {
    /// The current default client.
    pub fn client(&self) -> Result<Client, Error> {
        DEFAULT
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Error::config("no default client: call tokenkit_core::set_config(..) first"))
    }

    /// A request with any method on the default client. Without a default client, sending it
    /// fails with a configuration error.
    pub fn request(&self, method: Method, target: impl Into<String>) -> RequestBuilder {
        match self.client() {
            Ok(client) => client.request(method, target),
            Err(err) => RequestBuilder::failed(err, method, target.into()),
        }
    }

    /// A GET request on the default client.
    pub fn get(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::GET, target)
    }

    /// A POST request on the default client.
    pub fn post(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::POST, target)
    }

    /// A PUT request on the default client.
    pub fn put(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::PUT, target)
    }

    /// A PATCH request on the default client.
    pub fn patch(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::PATCH, target)
    }

    /// A DELETE request on the default client.
    pub fn delete(&self, target: impl Into<String>) -> RequestBuilder {
        self.request(Method::DELETE, target)
    }
}
