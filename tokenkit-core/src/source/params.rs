//! The parameters a token is asked for with: scope, audience, resource indicators.

use std::fmt;

/// What a token is for: the scopes, the audience and the resource indicators (RFC 8707) a
/// token request asks for. A request that names parameters
/// ([`RequestBuilder::token_params`](crate::RequestBuilder::token_params)) gets a token
/// fetched with exactly these — each combination has its own cached token and its own single
/// flight, and a token is never served to a request that asked for different parameters.
///
/// Scopes are a set (RFC 6749 §3.3): their order does not matter, `read write` and `write
/// read` share one token. A field left unset inherits the client's configuration
/// ([`OAuth2Config::scope`](crate::OAuth2Config::scope), …); a set field replaces it.
///
/// ```
/// use tokenkit_core::TokenParams;
///
/// let a = TokenParams::new().scope("orders:read").scope("orders:write").audience("https://orders");
/// let b = TokenParams::new().scope("orders:write").scope("orders:read").audience("https://orders");
/// assert_eq!(a, b, "one token for both");
/// assert_ne!(a, TokenParams::new().scope("orders:read").audience("https://orders"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenParams {
    /// The scopes, sorted and without duplicates.
    scopes: Vec<String>,
    /// The `audience` parameter.
    audience: Option<String>,
    /// The `resource` parameters (RFC 8707), sorted and without duplicates.
    resources: Vec<String>,
}

impl fmt::Debug for TokenParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenParams")
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("resources", &self.resources)
            .finish()
    }
}

fn insert_sorted(list: &mut Vec<String>, item: String) {
    if let Err(at) = list.binary_search(&item) {
        list.insert(at, item);
    }
}

impl TokenParams {
    /// No parameters (everything inherited from the client's configuration).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a scope. Several scopes may also be given space-separated.
    pub fn scope(mut self, scope: impl AsRef<str>) -> Self {
        for scope in scope.as_ref().split(' ').filter(|s| !s.is_empty()) {
            insert_sorted(&mut self.scopes, scope.to_owned());
        }
        self
    }

    /// Sets the audience.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Adds a resource indicator (RFC 8707).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        insert_sorted(&mut self.resources, resource.into());
        self
    }

    /// The scopes, sorted.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The audience, if set.
    pub fn audience_value(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// The resource indicators, sorted.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.audience.is_none() && self.resources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn scopes_and_resources_are_sets() {
        let a = TokenParams::new()
            .scope("b a")
            .scope("a")
            .resource("https://r/2")
            .resource("https://r/1");
        assert_eq!(a.scopes(), ["a", "b"]);
        assert_eq!(a.resources(), ["https://r/1", "https://r/2"]);
        let b = TokenParams::new()
            .scope("a")
            .scope("b")
            .resource("https://r/1")
            .resource("https://r/2");
        assert_eq!(a, b);
        let set: HashSet<TokenParams> = [a, b, TokenParams::new().audience("x")].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(TokenParams::new().scope("  ").is_empty());
        assert_ne!(TokenParams::new().audience("a"), TokenParams::new().resource("a"));
    }
}
