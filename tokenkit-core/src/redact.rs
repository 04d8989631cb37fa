//! Keeping secrets out of `Debug` output, and out of text a server sends back.

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

/// The longest server-supplied text kept in an error (in characters).
const MAX_SERVER_TEXT: usize = 200;

/// Server-supplied text (an OAuth `error_description`, say) made fit for an error message, a
/// log line or an event: every secret the client knows is replaced by `[redacted]` (servers
/// have been seen echoing the refresh token back), control and invisible formatting
/// characters (CR/LF included, so no log line can be forged) become spaces, and the text is
/// capped at 200 characters.
pub(crate) fn server_text(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    let mut out: String = text
        .chars()
        .map(|c| if is_unsafe_char(c) { ' ' } else { c })
        .take(MAX_SERVER_TEXT)
        .collect();
    if text.chars().count() > MAX_SERVER_TEXT {
        out.push('…');
    }
    out
}

/// Control characters, and the invisible ones that reorder or hide text.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
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

    #[test]
    fn server_text_is_filtered() {
        let echoed = "refresh token rt-SECRET-123 is invalid\r\nlevel=ERROR forged=line\u{202E}";
        let text = server_text(echoed, &["rt-SECRET-123", "", "abc"]);
        assert_eq!(
            text,
            "refresh token [redacted] is invalid  level=ERROR forged=line "
        );
        let long = "x".repeat(10_000);
        assert_eq!(server_text(&long, &[]).chars().count(), MAX_SERVER_TEXT + 1);
        assert_eq!(server_text("naïve ✓", &[]), "naïve ✓");
    }
}
