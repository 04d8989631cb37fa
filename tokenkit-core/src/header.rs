//! Building headers from user input, with typed errors and credentials marked sensitive.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::Error;
use crate::redact::is_sensitive_header;
use std::time::{Duration, SystemTime};

/// Parses a header name and value; credential headers are marked sensitive. The value is never
/// echoed in the error: it may be a credential.
pub(crate) fn header_pair<K, V>(name: K, value: V) -> Result<(HeaderName, HeaderValue), Error>
where
    HeaderName: TryFrom<K>,
    <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
    HeaderValue: TryFrom<V>,
    <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
{
    let name = HeaderName::try_from(name).map_err(|e| {
        let e: http::Error = e.into();
        Error::config(format!("invalid header name: {e}"))
    })?;
    let mut value = HeaderValue::try_from(value).map_err(|e| {
        let e: http::Error = e.into();
        // The value itself is not echoed: it may be a credential.
        Error::config(format!("invalid value for header {name}: {e}"))
    })?;
    if is_sensitive_header(&name) {
        value.set_sensitive(true);
    }
    Ok((name, value))
}

/// Appends a header built from user input to `headers`, or keeps the first error in `error`
/// for the builder's final call to report: every `header(..)` setter of the API does this.
pub(crate) fn append<K, V>(headers: &mut HeaderMap, error: &mut Option<Error>, name: K, value: V)
where
    HeaderName: TryFrom<K>,
    <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
    HeaderValue: TryFrom<V>,
    <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
{
    match header_pair(name, value) {
        Ok((name, value)) => {
            headers.append(name, value);
        }
        Err(err) => {
            error.get_or_insert(err);
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}
