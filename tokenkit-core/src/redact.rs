//! Keeping secrets out of `Debug` output.

use std::fmt;

use http::header::{HeaderMap, HeaderName};

/// Whether `name` carries credentials.
pub(crate) fn is_sensitive_header(name: &HeaderName) -> bool {
    crate::defaults::SENSITIVE_HEADERS.contains(&name.as_str())
}

/// A `Debug` view of headers with credential values replaced by `[redacted]` (by name, or
/// because the value is marked sensitive).
pub(crate) struct RedactedHeaders<'a>(pub &'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive_header(name) || value.is_sensitive() {
                map.entry(name, &"[redacted]");
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_are_redacted() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
        headers.insert("x-api-key", HeaderValue::from_static("s3cr3t"));
        let mut custom = HeaderValue::from_static("s3cr3t");
        custom.set_sensitive(true);
        headers.insert("x-custom", custom);
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let text = format!("{:?}", RedactedHeaders(&headers));
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("application/json"));
    }
}
