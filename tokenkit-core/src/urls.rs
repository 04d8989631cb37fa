//! Joining request targets onto the base URL, and the origin check for token injection.
//!
//! The common target — a relative path (and query) of plain characters — is joined onto the
//! base's pre-parsed parts into an `http::Uri` without a URL parse: [`BaseParts`]. Anything
//! else (an absolute URL, dot segments, percent-escapes, backslashes, characters a URL parser
//! would rewrite) takes the full parse, and the origin check, as before.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
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

/// The parts of a base URL a plain relative target joins onto without a parse.
#[derive(Debug, Clone)]
pub(crate) struct BaseParts {
    /// Unique in the process: keys the joins this thread remembers.
    id: u64,
    scheme: Scheme,
    authority: Authority,
    /// The base path without its trailing `/` (`""` for the root).
    prefix: String,
}

impl BaseParts {
    /// The parts of `base`, or `None` when the fast join would not match the full one (a
    /// base with a query, a fragment or credentials).
    pub(crate) fn new(base: &Url) -> Option<Self> {
        if base.query().is_some()
            || base.fragment().is_some()
            || base.has_authority() && (!base.username().is_empty() || base.password().is_some())
        {
            return None;
        }
        let authority = match base.port() {
            Some(port) => format!("{}:{port}", base.host_str()?),
            None => base.host_str()?.to_owned(),
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Some(Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            scheme: Scheme::try_from(base.scheme()).ok()?,
            authority: Authority::try_from(authority).ok()?,
            prefix: base.path().trim_end_matches('/').to_owned(),
        })
    }

    /// [`join`](Self::join), remembering the last few joins of this thread: an API client
    /// sends the same few targets again and again.
    fn join_remembered(&self, target: &str, extra_query: &str) -> Option<Uri> {
        type Joined = (u64, String, String, Uri);
        thread_local! {
            static RECENT: std::cell::RefCell<std::collections::VecDeque<Joined>> =
                const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
        }
        let seen = RECENT.with(|recent| {
            let recent = recent.try_borrow().ok()?;
            recent
                .iter()
                .find(|(id, t, q, _)| *id == self.id && t == target && q == extra_query)
                .map(|(.., uri)| uri.clone())
        });
        if seen.is_some() {
            return seen;
        }
        let uri = self.join(target, extra_query)?;
        RECENT.with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                if recent.len() >= 8 {
                    recent.pop_back();
                }
                recent.push_front((self.id, target.to_owned(), extra_query.to_owned(), uri.clone()));
            }
        });
        Some(uri)
    }

    /// The URI of `target` (plus `extra_query`) when both are plain enough to join without a
    /// parse; `None` sends the caller to the full resolution. One pass over the bytes.
    fn join(&self, target: &str, extra_query: &str) -> Option<Uri> {
        let (path, query) = match memchr(b'?', target.as_bytes()) {
            Some(at) => (&target[..at], Some(&target[at + 1..])),
            None => (target, None),
        };
        let rel = path.trim_start_matches('/');
        if rel.is_empty()
            || !plain_path(rel.as_bytes())
            || !query.unwrap_or_default().bytes().all(plain_query_byte)
            || !extra_query.bytes().all(plain_query_byte)
        {
            return None;
        }
        let query = query.map(|q| q.trim_matches('&')).filter(|q| !q.is_empty());
        let extra = Some(extra_query.trim_matches('&')).filter(|q| !q.is_empty());
        let mut text =
            String::with_capacity(self.prefix.len() + rel.len() + target.len() + extra_query.len() + 3);
        text.push_str(&self.prefix);
        text.push('/');
        text.push_str(rel);
        let mut separator = '?';
        for part in [query, extra].into_iter().flatten() {
            text.push(separator);
            text.push_str(part);
            separator = '&';
        }
        let path_and_query = PathAndQuery::from_maybe_shared(Bytes::from(text)).ok()?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).ok()
    }
}

/// A byte-class table: `table[b]` says whether `b` is one of `extra` or an ASCII letter or
/// digit (when `alphanumeric`), or any printable ASCII character but those in `extra`.
const fn byte_class(extra: &[u8], printable_except: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = if printable_except {
            byte >= 0x21 && byte <= 0x7e
        } else {
            byte.is_ascii_alphanumeric()
        };
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = !printable_except;
        i += 1;
    }
    table
}

/// Path characters a URL parser keeps as they are (no `%`: escapes of dots are dot segments).
const PLAIN_PATH: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:@/", false);

/// Query characters a URL parser keeps as they are.
const PLAIN_QUERY: [bool; 256] = byte_class(b"\"#<>'`{}|\\^[]", true);

fn plain_query_byte(b: u8) -> bool {
    PLAIN_QUERY[usize::from(b)]
}

/// Whether a relative path (no leading `/`) is all plain characters and has no dot segment
/// (`.` or `..`), which a URL parser would remove.
fn plain_path(rel: &[u8]) -> bool {
    let mut segment_start = 0;
    for (i, &b) in rel.iter().enumerate() {
        if !PLAIN_PATH[usize::from(b)] {
            return false;
        }
        if b == b'/' {
            if is_dot_segment(&rel[segment_start..i]) {
                return false;
            }
            segment_start = i + 1;
        }
    }
    !is_dot_segment(&rel[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Turns request URIs into [`url::Url`]s for transports that take one (reqwest), parsing each
/// origin once and remembering the last few URIs each thread converted.
///
/// A full URL parse is expensive for what it does here: the host goes through IDNA
/// processing on every request (about 6,400 instructions for `http://127.0.0.1:8080/x`,
/// measured under callgrind). A URI whose path and query are plain characters (nothing a URL
/// parser would rewrite: no escapes, no dot segments) is built instead from its origin,
/// parsed once and cached (up to 16 origins), with the path and query set on a copy — the
/// same URL a parse gives; anything else is parsed in full.
///
/// ```
/// let urls = tokenkit_core::OriginCache::new();
/// let uri: tokenkit_core::http::Uri = "http://127.0.0.1:8080/api/things?page=2".parse().unwrap();
/// assert_eq!(urls.url(&uri).unwrap().as_str(), "http://127.0.0.1:8080/api/things?page=2");
/// ```
#[derive(Debug, Default)]
pub struct OriginCache {
    origins: std::sync::Mutex<Vec<(String, Url)>>,
}

/// Whether two URIs are written the same (stricter and cheaper than `Uri`'s equality, which
/// compares the authority without case). Clones of one URI share their text: compared by
/// address first.
fn same_text(a: &Uri, b: &Uri) -> bool {
    fn same(a: Option<&str>, b: Option<&str>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b,
            (None, None) => true,
            _ => false,
        }
    }
    same(
        a.path_and_query().map(PathAndQuery::as_str),
        b.path_and_query().map(PathAndQuery::as_str),
    ) && same(
        a.authority().map(Authority::as_str),
        b.authority().map(Authority::as_str),
    ) && a.scheme_str() == b.scheme_str()
}

/// How many origins an [`OriginCache`] keeps.
const ORIGINS_KEPT: usize = 16;

/// How many converted URIs each thread keeps.
const RECENT_KEPT: usize = 8;

impl OriginCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The URL of an absolute URI.
    pub fn url(&self, uri: &Uri) -> Result<Url, url::ParseError> {
        // The URIs this thread converted last: an API client calls the same few endpoints.
        thread_local! {
            static RECENT: std::cell::RefCell<std::collections::VecDeque<(Uri, Url)>> =
                const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
        }
        let recent = RECENT.with(|recent| {
            let recent = recent.try_borrow().ok()?;
            recent
                .iter()
                .find(|(seen, _)| same_text(seen, uri))
                .map(|(_, url)| url.clone())
        });
        if let Some(url) = recent {
            return Ok(url);
        }
        let url = self.convert(uri)?;
        RECENT.with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                if recent.len() >= RECENT_KEPT {
                    recent.pop_back();
                }
                recent.push_front((uri.clone(), url.clone()));
            }
        });
        Ok(url)
    }

    fn convert(&self, uri: &Uri) -> Result<Url, url::ParseError> {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(url::ParseError::RelativeUrlWithoutBase);
        };
        let path = uri.path();
        let query = uri.query();
        let plain = path
            .strip_prefix('/')
            .is_some_and(|rel| plain_path(rel.as_bytes()))
            && query.is_none_or(|q| q.bytes().all(plain_query_byte));
        if plain {
            if let Some(mut url) = self.origin(scheme, authority.as_str()) {
                url.set_path(path);
                url.set_query(query);
                return Ok(url);
            }
        }
        let mut text = String::with_capacity(scheme.len() + 3 + authority.as_str().len() + path.len() + 64);
        text.push_str(scheme);
        text.push_str("://");
        text.push_str(authority.as_str());
        text.push_str(uri.path_and_query().map_or("/", |pq| pq.as_str()));
        Url::parse(&text)
    }

    /// A copy of the parsed origin `scheme://authority/`, parsing it on first use.
    fn origin(&self, scheme: &str, authority: &str) -> Option<Url> {
        let mut origins = self
            .origins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = |key: &str| {
            key.len() == scheme.len() + 3 + authority.len()
                && key.starts_with(scheme)
                && key[scheme.len()..].starts_with("://")
                && key.ends_with(authority)
        };
        if let Some((_, url)) = origins.iter().find(|(key, _)| same(key)) {
            return Some(url.clone());
        }
        let key = format!("{scheme}://{authority}");
        let url = Url::parse(&key).ok()?;
        if origins.len() >= ORIGINS_KEPT {
            origins.remove(0);
        }
        origins.push((key, url.clone()));
        Some(url)
    }
}

/// A request target resolved to a URI, and whether it has the base URL's origin (only then
/// may it carry the token).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) uri: Uri,
    pub(crate) same_origin: bool,
}

/// Resolves `target` (plus `extra_query`) against `base` into the request URI: through the
/// pre-parsed `parts` when the target is plain, else by the full resolution and origin check
/// of [`resolve`].
pub(crate) fn request_uri(
    base: &Url,
    parts: Option<&BaseParts>,
    target: &str,
    extra_query: &str,
) -> Result<Resolved, Error> {
    // A `#` is not a plain character: such targets take the full resolution.
    if !is_absolute(target) {
        if let Some(uri) = parts.and_then(|parts| parts.join_remembered(target, extra_query)) {
            return Ok(Resolved {
                uri,
                same_origin: true,
            });
        }
    }
    let url = resolve(base, target, extra_query)?;
    let uri = to_uri(&url)?;
    Ok(Resolved {
        uri,
        same_origin: same_origin(&url, base),
    })
}

/// `url` as an `http::Uri`.
pub(crate) fn to_uri(url: &Url) -> Result<Uri, Error> {
    Uri::try_from(url.as_str())
        .map_err(|e| Error::new(ErrorKind::Url, format!("URL is not a valid URI: {e}")))
}

fn is_absolute(target: &str) -> bool {
    let starts_with = |prefix: &str| {
        target
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    starts_with("http://") || starts_with("https://")
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

    #[test]
    fn the_origin_cache_builds_what_a_parse_gives() {
        let cache = OriginCache::new();
        let uris = [
            "http://127.0.0.1:8080/api/things",
            "http://127.0.0.1:8080/api/things?page=2&x=a%20b",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080",
            "https://API.Example.com/a/b/../c?q",
            "https://api.example.com:443/a/./b",
            "https://api.example.com/%7Euser/caf%C3%A9?x=%41",
            "http://user:pw@h.example/p;x=1,y@z:w~!$&'()*+=",
            "http://[::1]:9/v1//double",
            "http://h.example/a?q='x'&y={z}",
            "http://xn--caf-dma.example/p",
            "http://h.example/a%2e%2E/b",
        ];
        for _ in 0..2 {
            for text in uris {
                let uri: Uri = text.parse().unwrap();
                let expected = Url::parse(&uri.to_string()).unwrap();
                assert_eq!(cache.url(&uri).unwrap(), expected, "{text}");
            }
        }
        let relative: Uri = "/only/a/path".parse().unwrap();
        assert!(cache.url(&relative).is_err());
        // More origins than it keeps: still right, and bounded.
        for port in 1..40 {
            let uri: Uri = format!("http://127.0.0.1:{port}/x").parse().unwrap();
            assert_eq!(cache.url(&uri).unwrap().port(), Some(port));
        }
        assert!(cache.origins.lock().unwrap().len() <= ORIGINS_KEPT);
    }

    #[test]
    fn byte_tables_match_their_definitions() {
        for b in 0..=255u8 {
            let path = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
            let query = (0x21..=0x7e).contains(&b) && !b"\"#<>'`{}|\\^[]".contains(&b);
            assert_eq!(PLAIN_PATH[usize::from(b)], path, "path byte {b:#04x}");
            assert_eq!(PLAIN_QUERY[usize::from(b)], query, "query byte {b:#04x}");
        }
        assert!(plain_path(b"a/b.c/..d/.e"));
        assert!(!plain_path(b"a/../b") && !plain_path(b"a/..") && !plain_path(b"./a") && !plain_path(b"."));
        assert!(
            is_absolute("HTTPS://x")
                && is_absolute("http://")
                && !is_absolute("/http://x")
                && !is_absolute("htt")
        );
    }

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

    /// The fast join gives exactly the URI the full resolution gives, for plain targets and
    /// for the tricky ones it hands over.
    #[test]
    fn the_fast_join_matches_the_full_resolution() {
        let bases = [
            "http://h",
            "http://h/",
            "http://h/api",
            "http://h/api/",
            "https://H.example:8443/v1//",
            "http://127.0.0.1:9/x",
            "http://[::1]:8080/p",
        ];
        let targets = [
            "/users",
            "users",
            "//users",
            "/users/",
            "/a/b/c",
            "/u?a=1",
            "/u?a=1&&",
            "/u?",
            "/u?a=b c",
            "/u?x=\"q\"",
            "/a/./b",
            "/a/../b",
            "/..",
            "/%2e%2e/x",
            "/a%20b",
            "/a b",
            "/a\\b",
            "/ü",
            "/@evil.example",
            "/:8080",
            "//evil.example/x",
            "/x#frag",
            "/x?y#z",
            "",
            "/",
            "?only=query",
            "/x?a=1&b=<2>",
        ];
        for base in bases {
            let url = parse_base(base).unwrap();
            let parts = BaseParts::new(&url);
            // Twice each: the second time from the joins this thread remembers.
            for target in targets.iter().flat_map(|t| [*t, *t]) {
                for extra in ["", "k=v", "&k=v&"] {
                    let full = resolve(&url, target, extra).map(|u| u.to_string());
                    let fast = request_uri(&url, parts.as_ref(), target, extra)
                        .map(|r| (r.uri.to_string(), r.same_origin));
                    match (full, fast) {
                        (Ok(full), Ok((fast, same))) => {
                            assert_eq!(fast, full, "{base} + {target:?} + {extra:?}");
                            assert!(same, "{base} + {target:?}");
                        }
                        (Err(_), Err(_)) => {}
                        (full, fast) => panic!("{base} + {target:?}: {full:?} vs {fast:?}"),
                    }
                }
            }
        }
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
