//! Reading token responses: field auto-detection, [`FieldMapping`] overrides, expiry as an
//! absolute unix time or a relative lifetime, and the session payload.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::Error;
use crate::token::{jwt_claims, AccessToken, RefreshToken, TokenRecord};

/// Overrides the field names read from token responses. A set name is the only one looked at
/// for that value; dots address nested fields (`"data.tokens.access"`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FieldMapping {
    /// The access token's field.
    pub access_token: Option<String>,
    /// The refresh token's field.
    pub refresh_token: Option<String>,
    /// The absolute expiry's field (unix seconds).
    pub expires_at: Option<String>,
    /// The relative expiry's field (seconds).
    pub expires_in: Option<String>,
    /// The token type's field.
    pub token_type: Option<String>,
    /// The session payload's field.
    pub session_payload: Option<String>,
}

impl FieldMapping {
    /// No overrides: auto-detect everything.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the access token's field.
    pub fn access_token(mut self, field: impl Into<String>) -> Self {
        self.access_token = Some(field.into());
        self
    }
    /// Sets the refresh token's field.
    pub fn refresh_token(mut self, field: impl Into<String>) -> Self {
        self.refresh_token = Some(field.into());
        self
    }
    /// Sets the absolute expiry's field.
    pub fn expires_at(mut self, field: impl Into<String>) -> Self {
        self.expires_at = Some(field.into());
        self
    }
    /// Sets the relative expiry's field.
    pub fn expires_in(mut self, field: impl Into<String>) -> Self {
        self.expires_in = Some(field.into());
        self
    }
    /// Sets the token type's field.
    pub fn token_type(mut self, field: impl Into<String>) -> Self {
        self.token_type = Some(field.into());
        self
    }
    /// Sets the session payload's field.
    pub fn session_payload(mut self, field: impl Into<String>) -> Self {
        self.session_payload = Some(field.into());
        self
    }
}

fn lookup<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(body, |value, key| value.get(key))
        .filter(|v| !v.is_null())
}

/// The first present field: the mapped one alone, or the first candidate.
fn find<'a>(
    body: &'a Value,
    mapped: Option<&'a str>,
    candidates: &[&'a str],
) -> Option<(&'a str, &'a Value)> {
    match mapped {
        Some(name) => lookup(body, name).map(|v| (name, v)),
        None => candidates
            .iter()
            .find_map(|name| lookup(body, name).map(|v| (*name, v))),
    }
}

fn as_string(field: &str, value: &Value) -> Result<String, Error> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_token(format!("field {field:?} is not a string")))
}

fn as_seconds(field: &str, value: &Value) -> Result<f64, Error> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    number
        .filter(|n| n.is_finite())
        .ok_or_else(|| Error::invalid_token(format!("field {field:?} is not a number")))
}

fn lifetime(field: &str, secs: f64) -> Result<Duration, Error> {
    if secs <= 0.0 {
        return Err(Error::invalid_token(format!(
            "field {field:?} must be a positive lifetime, got {secs}"
        )));
    }
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|lifetime| *lifetime <= crate::defaults::MAX_TOKEN_LIFETIME)
        .ok_or_else(|| Error::invalid_token(format!("field {field:?} is an absurd lifetime ({secs}s)")))
}

/// An absolute unix time in seconds (or milliseconds, when the value is too large to be
/// seconds before the year 5000) as a lifetime from `now`.
fn until(field: &str, unix: f64, now: SystemTime) -> Result<Duration, Error> {
    let secs = if unix > 95_617_584_000.0 {
        unix / 1000.0
    } else {
        unix
    };
    if secs <= 0.0 {
        return Err(Error::invalid_token(format!(
            "field {field:?} is not a valid time"
        )));
    }
    // Bounded before any arithmetic: `1e300` or `1.5e22` is a typed error, never a panic.
    let at = Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|since_epoch| UNIX_EPOCH.checked_add(since_epoch))
        .ok_or_else(|| Error::invalid_token(format!("field {field:?} is an absurd time ({secs})")))?;
    let remaining = at.duration_since(now).map_err(|_| {
        Error::invalid_token(format!(
            "field {field:?} is in the past: the token is already expired"
        ))
    })?;
    lifetime(field, remaining.as_secs_f64())
}

/// Parses a token response body into a record obtained at `now`.
///
/// Fields are found by `fields` or auto-detected (first match wins, in the orders of the
/// `*_FIELDS` constants). Expiry: an absolute time wins over a lifetime; without either, a
/// JWT access token's `exp` claim is used; otherwise the token does not expire until
/// rejected. The session payload is the payload field, else the access token's JWT claims.
pub(crate) fn parse_token_response(
    body: &Value,
    fields: &FieldMapping,
    now: SystemTime,
) -> Result<TokenRecord, Error> {
    if !body.is_object() {
        return Err(Error::invalid_token("the token response is not a JSON object"));
    }
    let (field, value) = find(
        body,
        fields.access_token.as_deref(),
        crate::defaults::ACCESS_TOKEN_FIELDS,
    )
    .ok_or_else(|| {
        let looked_for = match &fields.access_token {
            Some(name) => name.clone(),
            None => crate::defaults::ACCESS_TOKEN_FIELDS.join(", "),
        };
        Error::invalid_token(format!(
            "the token response has no access token (looked for {looked_for})"
        ))
    })?;
    let access = as_string(field, value)?;
    let mut record = TokenRecord::new(AccessToken::new(access.clone()), now);

    if let Some((field, value)) = find(
        body,
        fields.refresh_token.as_deref(),
        crate::defaults::REFRESH_TOKEN_FIELDS,
    ) {
        record.refresh_token = Some(RefreshToken::new(as_string(field, value)?));
    }
    if let Some((field, value)) = find(
        body,
        fields.token_type.as_deref(),
        crate::defaults::TOKEN_TYPE_FIELDS,
    ) {
        record.token_type = Some(as_string(field, value)?);
    }
    let claims = jwt_claims(&access);
    let expires_in = if let Some((field, value)) = find(
        body,
        fields.expires_at.as_deref(),
        crate::defaults::EXPIRES_AT_FIELDS,
    ) {
        Some(until(field, as_seconds(field, value)?, now)?)
    } else if let Some((field, value)) = find(
        body,
        fields.expires_in.as_deref(),
        crate::defaults::EXPIRES_IN_FIELDS,
    ) {
        Some(lifetime(field, as_seconds(field, value)?)?)
    } else if let Some(exp) = claims.as_ref().and_then(|c| c.get("exp")) {
        Some(until("exp (JWT claim)", as_seconds("exp", exp)?, now)?)
    } else {
        None
    };
    if let Some(lifetime) = expires_in {
        record = record.with_expires_in(lifetime)?;
    }
    if let Some((field, value)) = find(body, None, crate::defaults::REFRESH_EXPIRES_IN_FIELDS) {
        let refresh_lifetime = lifetime(field, as_seconds(field, value)?)?;
        record.refresh_expires_at = now.checked_add(refresh_lifetime);
    }
    record.payload = match find(
        body,
        fields.session_payload.as_deref(),
        crate::defaults::PAYLOAD_FIELDS,
    ) {
        Some((_, payload)) => Some(payload.clone()),
        None => claims,
    };
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn parse(body: Value) -> Result<TokenRecord, Error> {
        parse_token_response(&body, &FieldMapping::new(), now())
    }

    #[test]
    fn detects_fields_in_order() {
        let r = parse(
            json!({"token": "b", "accessToken": "a", "refresh": "r2", "refreshToken": "r1",
                             "expiresIn": 60, "tokenType": "Bearer", "user": {"id": 7}}),
        )
        .unwrap();
        assert_eq!(r.access_token.unwrap().secret(), "a");
        assert_eq!(r.refresh_token.unwrap().secret(), "r1");
        assert_eq!(r.expires_at, Some(now() + Duration::from_secs(60)));
        assert_eq!(r.token_type.as_deref(), Some("Bearer"));
        assert_eq!(r.payload, Some(json!({"id": 7})));
    }

    #[test]
    fn absolute_expiry_wins_and_accepts_milliseconds() {
        let secs = 1_800_000_000u64 + 120;
        let r = parse(json!({"jwt": "a", "expires_at": secs, "ttl": 5})).unwrap();
        assert_eq!(r.expires_at, Some(now() + Duration::from_secs(120)));
        let r = parse(json!({"jwt": "a", "exp": secs * 1000})).unwrap();
        assert_eq!(r.expires_at, Some(now() + Duration::from_secs(120)));
        let r = parse(json!({"jwt": "a", "expires_in": "90"})).unwrap();
        assert_eq!(r.lifetime(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn jwt_claims_give_expiry_and_payload() {
        // claims: {"sub":"u1","exp":1800000300}
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSIsImV4cCI6MTgwMDAwMDMwMH0.c2ln";
        let r = parse(json!({"access_token": token})).unwrap();
        assert_eq!(r.lifetime(), Some(Duration::from_secs(300)));
        assert_eq!(r.payload.unwrap()["sub"], "u1");
    }

    #[test]
    fn mapping_overrides_names_and_reads_nested_fields() {
        let fields = FieldMapping::new()
            .access_token("data.auth.tok")
            .refresh_token("data.auth.ref")
            .expires_in("data.auth.life")
            .session_payload("me");
        let body = json!({"access_token": "ignored", "data": {"auth": {"tok": "t", "ref": "r", "life": 30}}, "me": "x"});
        let r = parse_token_response(&body, &fields, now()).unwrap();
        assert_eq!(r.access_token.as_ref().unwrap().secret(), "t");
        assert_eq!(r.refresh_token.as_ref().unwrap().secret(), "r");
        assert_eq!(r.lifetime(), Some(Duration::from_secs(30)));
        assert_eq!(r.payload, Some(json!("x")));
        let err = parse_token_response(&json!({"access_token": "t"}), &fields, now()).unwrap_err();
        assert!(err.message().contains("data.auth.tok"), "{err}");
    }

    #[test]
    fn bad_responses_are_typed_errors() {
        for body in [
            json!([1, 2]),
            json!("token"),
            json!({}),
            json!({"access_token": 5}),
            json!({"access_token": null}),
            json!({"access_token": "a", "expires_in": -1}),
            json!({"access_token": "a", "expires_in": 0}),
            json!({"access_token": "a", "expires_in": 1e300}),
            json!({"access_token": "a", "expires_in": "soon"}),
            json!({"access_token": "a", "expires_at": 1000}),
            json!({"access_token": "a", "refresh_token": ["x"]}),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidToken, "{body}");
        }
        let err = parse(json!({"nope": 1})).unwrap_err();
        assert!(
            err.message().contains("access_token, accessToken, token"),
            "{err}"
        );
    }

    /// A JWT with `claims` (unsigned; only the claims are read).
    fn jwt(claims: Value) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            b64.encode(r#"{"alg":"none"}"#),
            b64.encode(claims.to_string())
        )
    }

    #[test]
    fn huge_and_non_finite_times_are_typed_errors_not_panics() {
        let bodies = [
            json!({"access_token": "a", "expires_at": 1e300}),
            json!({"access_token": "a", "expires_at": 1.5e22}),
            json!({"access_token": "a", "expires_at": "1e300"}),
            json!({"access_token": "a", "expires_at": "inf"}),
            json!({"access_token": "a", "expires_at": "NaN"}),
            json!({"access_token": "a", "expiresAt": 9.3e21}),
            json!({"access_token": "a", "expires_in": 1e300}),
            json!({"access_token": "a", "expires_in": "1e19"}),
            json!({"access_token": "a", "expires_in": u64::MAX}),
            json!({"access_token": "a", "refresh_expires_in": 1e300}),
            json!({"access_token": jwt(json!({"exp": 1e25}))}),
            json!({"access_token": jwt(json!({"exp": 1e300}))}),
            json!({"access_token": jwt(json!({"exp": "9.9e21"}))}),
            json!({"access_token": jwt(json!({"exp": -1e300}))}),
        ];
        for body in bodies {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidToken, "{body}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::hash_map(
                    prop::sample::select(vec![
                        "access_token",
                        "accessToken",
                        "token",
                        "refresh_token",
                        "refresh",
                        "exp",
                        "expires_in",
                        "ttl",
                        "expiresAt",
                        "token_type",
                        "user",
                        "data",
                        "x",
                    ]),
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_any_json(body in json_value()) {
            let _ = parse_token_response(&body, &FieldMapping::new(), now());
        }

        #[test]
        fn round_trips_generated_responses(
            access in "[A-Za-z0-9._~+/-]{1,40}",
            refresh in proptest::option::of("[A-Za-z0-9._~-]{1,40}"),
            lifetime in 1u64..10_000_000,
            access_field in prop::sample::select(crate::defaults::ACCESS_TOKEN_FIELDS.to_vec()),
            refresh_field in prop::sample::select(crate::defaults::REFRESH_TOKEN_FIELDS.to_vec()),
            expiry_field in prop::sample::select(crate::defaults::EXPIRES_IN_FIELDS.to_vec()),
        ) {
            let mut body = serde_json::Map::new();
            body.insert(access_field.to_owned(), json!(access));
            if let Some(r) = &refresh {
                body.insert(refresh_field.to_owned(), json!(r));
            }
            body.insert(expiry_field.to_owned(), json!(lifetime));
            let r = parse(Value::Object(body)).unwrap();
            prop_assert_eq!(r.access_token.as_ref().unwrap().secret(), access.as_str());
            prop_assert_eq!(r.refresh_token.as_ref().map(|t| t.secret().to_owned()), refresh);
            prop_assert_eq!(r.lifetime(), Some(Duration::from_secs(lifetime)));
        }
    }
}
