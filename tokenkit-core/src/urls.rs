//! Joining request targets onto the base URL, and the origin check for token injection.

use url::Url;

use crate::error::{Error, ErrorKind};

/// Validates a base URL: absolute http(s) with a host.
pub(crate) fn parse_base(input: &str) -> Result<Url, Error> {
    let url = Url::parse(input.trim())
        .map_err(|e| Error::new(ErrorKind::Url, format!("invalid base URL {input:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::new(
            ErrorKind::Url,
            format!("base URL must use http or https, not {:?}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::new(ErrorKind::Url, "base URL has no host"));
    }
    Ok(url)
}

/// Resolves `target` against `base`: an absolute `http(s)://` URL is used as is; anything else
/// is a path appended to the base path with exactly one `/` between them. The query strings of
/// the base, the target and `extra_query` are all kept, once each, in that order.
pub(crate) fn resolve(base: &Url, target: &str, extra_query: &str) -> Result<Url, Error> {
    // The common case — a plain relative path, no query anywhere — in one allocation and one
    // parse.
    if extra_query.is_empty()
        && base.query().is_none()
        && base.fragment().is_none()
        && !target.contains(['?', '#'])
        && !is_absolute(target)
    {
        let rel = target.trim_start_matches('/');
        if !rel.is_empty() {
            let prefix = base.as_str().trim_end_matches('/');
            return Url::parse(&format!("{prefix}/{rel}"))
                .map_err(|e| Error::new(ErrorKind::Url, format!("invalid URL: {e}")));
        }
    }
    let mut url = if is_absolute(target) {
        Url::parse(target).map_err(|e| Error::new(ErrorKind::Url, format!("invalid URL: {e}")))?
    } else {
        let without_fragment = target.split('#').next().unwrap_or_default();
        let (path, query) = match without_fragment.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (without_fragment, None),
        };
        let mut url = base.clone();
        url.set_fragment(None);
        let base_path = base.path().trim_end_matches('/');
        let rel = path.trim_start_matches('/');
        let joined = if rel.is_empty() {
            if path.is_empty() {
                base.path().to_owned()
            } else {
                format!("{base_path}/")
            }
        } else {
            format!("{base_path}/{rel}")
        };
        url.set_path(&joined);
        let combined = join_queries(&[base.query().unwrap_or_default(), query.unwrap_or_default()]);
        url.set_query(non_empty(&combined));
        url
    };
    if !extra_query.is_empty() {
        let combined = join_queries(&[url.query().unwrap_or_default(), extra_query]);
        url.set_query(non_empty(&combined));
    }
    Ok(url)
}

fn is_absolute(target: &str) -> bool {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn join_queries(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|q| q.trim_matches('&'))
        .filter(|q| !q.is_empty())
        .collect::<Vec<_>>()
        .join("&")
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Whether `url` has the same origin (scheme, host, port) as `base`.
pub(crate) fn same_origin(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: &str, target: &str, extra: &str) -> String {
        resolve(&parse_base(base).unwrap(), target, extra)
            .unwrap()
            .to_string()
    }

    #[test]
    fn joins_without_double_slashes() {
        assert_eq!(r("http://h/api/", "/users", ""), "http://h/api/users");
        assert_eq!(r("http://h/api", "users", ""), "http://h/api/users");
        assert_eq!(r("http://h/api//", "//users", ""), "http://h/api/users");
        assert_eq!(r("http://h", "/users", ""), "http://h/users");
        assert_eq!(r("http://h/", "", ""), "http://h/");
        assert_eq!(r("http://h/api", "", ""), "http://h/api");
        assert_eq!(r("http://h/api", "/", ""), "http://h/api/");
    }

    #[test]
    fn queries_are_kept_once() {
        assert_eq!(r("http://h/api", "/u?a=1", ""), "http://h/api/u?a=1");
        assert_eq!(r("http://h/api", "/u?a=1", "b=2"), "http://h/api/u?a=1&b=2");
        assert_eq!(
            r("http://h/api?k=v", "/u?a=1", "b=2"),
            "http://h/api/u?k=v&a=1&b=2"
        );
        assert_eq!(r("http://h/api", "/u", "b=2"), "http://h/api/u?b=2");
        assert_eq!(r("http://h/api", "/u?", ""), "http://h/api/u");
        assert_eq!(r("http://h/api", "/u#frag", ""), "http://h/api/u");
    }

    #[test]
    fn absolute_targets_are_used_as_is() {
        assert_eq!(
            r("http://h/api", "https://other.example/x?q=1", "b=2"),
            "https://other.example/x?q=1&b=2"
        );
        assert_eq!(r("http://h/api", "HTTP://H/x", ""), "http://h/x");
    }

    #[test]
    fn bad_base_urls_are_typed_errors() {
        for bad in ["", "not a url", "ftp://h/", "mailto:a@b", "http://", "/relative"] {
            let err = parse_base(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Url, "{bad:?}");
        }
    }

    #[test]
    fn origin_check() {
        let base = parse_base("http://api.example:8080/v1").unwrap();
        assert!(same_origin(&resolve(&base, "/x", "").unwrap(), &base));
        assert!(same_origin(
            &Url::parse("http://API.example:8080/other").unwrap(),
            &base
        ));
        assert!(!same_origin(
            &Url::parse("http://api.example:8081/x").unwrap(),
            &base
        ));
        assert!(!same_origin(
            &Url::parse("https://api.example:8080/x").unwrap(),
            &base
        ));
        assert!(!same_origin(
            &Url::parse("http://evil.example:8080/x").unwrap(),
            &base
        ));
        let https = parse_base("https://api.example").unwrap();
        assert!(same_origin(
            &Url::parse("https://api.example:443/x").unwrap(),
            &https
        ));
    }
}
