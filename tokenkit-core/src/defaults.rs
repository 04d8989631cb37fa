//! Every default and limit of tokenkit, in one place.
//!
//! The builders document which setting each constant is the default of; the values here are
//! what you get when you set nothing.

use std::time::Duration;

// Requests

/// Default timeout of a request (and of a token fetch).
pub const TIMEOUT: Duration = Duration::from_secs(30);

// Refresh policy

/// Default proactive window of session mode: refresh 5 minutes before expiry.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// Default allowance for clock differences between client and server.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Default minimum time between two proactive refreshes of one session.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// Default proactive window of provider mode (`refresh_buffer`).
pub const REFRESH_BUFFER: Duration = Duration::from_secs(10);

/// Default number of recoveries (new token + replay) after a rejected response.
pub const MAX_RECOVERY_TRIES: u32 = 5;

/// Default pause after a failed proactive refresh before the next proactive attempt (the
/// still-valid token is used meanwhile), so a failing token endpoint is not called on every
/// request of the proactive window.
pub const PROACTIVE_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Default grace window: for this long after a rotation, requests still presenting the old
/// refresh token get the new tokens instead of rotating again.
pub const GRACE_WINDOW: Duration = Duration::from_secs(5);

/// Default jitter, as a fraction of the proactive window, added to spread refreshes of many
/// clients holding tokens with the same expiry.
pub const JITTER_PERCENT: u8 = 10;

// Retries

/// Default total attempts (the first try included).
pub const RETRY_ATTEMPTS: u32 = 3;

/// Default first backoff delay.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Default cap on one backoff delay (and on a server's `Retry-After`).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Statuses retried by default.
pub const RETRY_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

// Events

/// The default number of consecutive token fetch failures between two
/// [`Event::FailureThreshold`](crate::Event::FailureThreshold)s.
pub const TOKEN_TRY_THRESHOLD: u64 = 10;

// Outages of the token source (OutageConfig)

/// Default pause after the first failed token fetch (doubling per failure, jittered).
pub const OUTAGE_FIRST_DELAY: Duration = Duration::from_secs(1);

/// Default longest pause between failed token fetches, and cap on a `Retry-After`.
pub const OUTAGE_MAX_DELAY: Duration = Duration::from_secs(30);

/// Default number of failed token fetches in a row that open the circuit.
pub const OUTAGE_OPEN_AFTER: u32 = 5;

/// Default time an open circuit stays open before one probe.
pub const OUTAGE_COOLDOWN: Duration = Duration::from_secs(30);

// Endpoint mode

/// Default timeout of login and refresh calls.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Default timeout of the logout call.
pub const LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default name of the refresh token's field in the refresh request.
pub const REFRESH_REQUEST_FIELD: &str = "refreshToken";

// OAuth 2.0

/// Lifetime assumed for a token response without `expires_in` (RFC 6749 makes it optional).
pub const OAUTH_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Default attempts at the token endpoint (the first included); only 5xx and network errors
/// are retried, never a 4xx.
pub const TOKEN_ENDPOINT_ATTEMPTS: u32 = 3;

/// Default first delay between token endpoint attempts (doubling each time).
pub const TOKEN_ENDPOINT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How many parameter combinations ([`TokenParams`](crate::TokenParams)) a client keeps a
/// token for; past it, the least recently used combination's token is dropped.
pub const TOKEN_PARAMS_CACHE: usize = 256;

// Token response fields (first match wins)

/// Access-token field names, in detection order.
pub const ACCESS_TOKEN_FIELDS: &[&str] = &[
    "access_token",
    "accessToken",
    "token",
    "jwt",
    "id_token",
    "idToken",
];

/// Refresh-token field names, in detection order.
pub const REFRESH_TOKEN_FIELDS: &[&str] = &["refresh_token", "refreshToken", "refresh"];

/// Absolute-expiry field names (unix seconds), in detection order.
pub const EXPIRES_AT_FIELDS: &[&str] = &["expires_at", "expiresAt", "exp", "expiry"];

/// Relative-expiry field names (seconds), in detection order.
pub const EXPIRES_IN_FIELDS: &[&str] = &["expires_in", "expiresIn", "ttl"];

/// Token-type field names, in detection order.
pub const TOKEN_TYPE_FIELDS: &[&str] = &["token_type", "tokenType"];

/// Session-payload field names, in detection order.
pub const PAYLOAD_FIELDS: &[&str] = &["user", "profile", "account", "data"];

/// Refresh-token lifetime field names (seconds), in detection order.
pub const REFRESH_EXPIRES_IN_FIELDS: &[&str] = &[
    "refresh_expires_in",
    "refreshExpiresIn",
    "refresh_token_expires_in",
];

/// How long a sign-in through an OpenID provider may take between leaving for the provider and
/// coming back.
pub const SIGN_IN_LIFETIME: Duration = Duration::from_secs(600);

/// The clock skew tolerated on an ID token's `exp` and `iat`.
pub const ID_TOKEN_SKEW: Duration = Duration::from_secs(60);

/// The shortest pause between two fetches of an OpenID provider's keys when an ID token names a
/// key tokenkit does not know (a rotation): a flood of forged key ids cannot make it fetch more.
pub const JWKS_REFETCH_PAUSE: Duration = Duration::from_secs(10);

/// How long a provider's discovered metadata is used before it is fetched again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

// Cookies

/// The largest cookie browsers are required to keep; larger ones are refused with an error.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Cookie lifetime when the refresh token's lifetime is unknown.
pub const COOKIE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The cookie holding the session payload (the base64url of its JSON) beside the five token
/// cookies, before the prefix. Not written when the payload is the access token's own JWT
/// claims (they are read from the token).
pub const PAYLOAD_COOKIE: &str = "session_payload";

/// The one cookie of an encrypted cookie store, before the prefix: the whole record (tokens,
/// times, type, payload), sealed.
pub const SEALED_COOKIE: &str = "session";

/// The five cookie names, before the prefix.
pub const COOKIE_NAMES: [&str; 5] = [
    "access_token",
    "refresh_token",
    "access_expires_at",
    "last_refresh_at",
    "token_type",
];

// Limits

/// The largest lifetime tokenkit accepts for a token (100 years); anything beyond is treated
/// as a malformed response rather than silently overflowing time arithmetic.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

// Redaction

/// Header names whose values are credentials; always printed as `[redacted]`.
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];
