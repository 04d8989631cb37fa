//! Per-user sessions in HttpOnly cookies.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cookie::{Cookie, SameSite};

use super::{StoreScope, TokenStore};
use crate::context::{no_context, Context};
use crate::encryption::Encryption;
use crate::error::{Error, ErrorKind};
use crate::token::{jwt_claims, AccessToken, RefreshToken, TokenRecord};
use std::sync::Arc;

/// How the token cookies are written. Cookies are always `HttpOnly`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CookieConfig {
    /// Prefix of the cookie names: `<prefix>_access_token`, or, for a prefix ending in `-`
    /// such as the browser prefixes `__Host-` and `__Secure-`, `<prefix>access_token`.
    pub prefix: Option<String>,
    /// The `Secure` attribute (default on; turn off only for plain-http development).
    pub secure: bool,
    /// The `SameSite` attribute (default `Lax`).
    pub same_site: SameSite,
    /// The `Domain` attribute (default none: host-only).
    pub domain: Option<String>,
    /// The `Path` attribute (default `/`).
    pub path: String,
    /// Seals the session into one encrypted, authenticated cookie (see
    /// [`encrypted`](Self::encrypted)); `None` (the default) keeps the tokens in plain cookies.
    pub encryption: Option<Encryption>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            prefix: None,
            secure: true,
            same_site: SameSite::Lax,
            domain: None,
            path: "/".to_owned(),
            encryption: None,
        }
    }
}

impl CookieConfig {
    /// The defaults: Secure, HttpOnly, SameSite=Lax, Path=/, no prefix, no domain.
    pub fn new() -> Self {
        Self::default()
    }
    /// Prefixes the cookie names (see [`prefix`](Self::prefix)). With `__Host-` the cookies
    /// must be `Secure`, on path `/` and without a domain; with `__Secure-`, `Secure`:
    /// browsers drop them otherwise, so a client built with a store breaking these rules
    /// fails to build.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// Sets `Secure`. Only turn it off for plain-http development (e.g. `http://localhost`):
    /// browsers would otherwise drop the cookies.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }
    /// Sets `SameSite`.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }
    /// Sets `Domain`.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
    /// Sets `Path`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Keeps the session in one cookie, [`SEALED_COOKIE`](crate::defaults::SEALED_COOKIE)
    /// (prefixed), holding the whole record — tokens, times, type and payload — encrypted and
    /// authenticated with `keys` and bound to the cookie's name. The browser (and anyone who
    /// copies the cookie out of it) cannot read the tokens; a cookie changed in any way reads
    /// as no session (logged), never as an error page. Keys rotate: the current key seals,
    /// older keys listed with [`Encryption::with_old_key`] still open. Plain token cookies
    /// are ignored while encryption is on (and removed by the next save or clear).
    pub fn encrypted(mut self, keys: Encryption) -> Self {
        self.encryption = Some(keys);
        self
    }

    /// The full name of cookie `base` (one of [`crate::defaults::COOKIE_NAMES`]).
    pub fn name(&self, base: &str) -> String {
        match &self.prefix {
            Some(prefix) if prefix.ends_with('-') => format!("{prefix}{base}"),
            Some(prefix) if !prefix.is_empty() => format!("{prefix}_{base}"),
            _ => base.to_owned(),
        }
    }

    /// Whether the names carry browser prefix `browser` (`__Host-`, `__Secure-`; browsers
    /// compare it without case).
    fn has_browser_prefix(&self, browser: &str) -> bool {
        self.prefix.as_deref().is_some_and(|prefix| {
            prefix
                .get(..browser.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(browser))
        })
    }

    /// The rules the prefix and the attributes must follow (see [`prefix`](Self::prefix)).
    fn check(&self) -> Result<(), Error> {
        let refuse = |why: &str| Err(Error::config(format!("cookie store: {why}")));
        if let Some(prefix) = &self.prefix {
            // A cookie name is an RFC 6265 token: no separators, spaces or controls.
            if let Some(bad) = prefix
                .chars()
                .find(|c| !c.is_ascii_graphic() || "()<>@,;:\\\"/[]?={}".contains(*c))
            {
                return refuse(&format!("the prefix holds {bad:?}, which a cookie name cannot"));
            }
        }
        if self.has_browser_prefix("__Host-") {
            if !self.secure {
                return refuse("__Host- cookies must be Secure (browsers drop them otherwise)");
            }
            if self.path != "/" {
                return refuse("__Host- cookies must have Path=/ (browsers drop them otherwise)");
            }
            if self.domain.is_some() {
                return refuse("__Host- cookies cannot have a Domain (browsers drop them otherwise)");
            }
        }
        if self.has_browser_prefix("__Secure-") && !self.secure {
            return refuse("__Secure- cookies must be Secure (browsers drop them otherwise)");
        }
        Ok(())
    }

    fn build(&self, base: &str, value: String, max_age: Duration) -> Cookie<'static> {
        let mut cookie = Cookie::build((self.name(base), value))
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .path(self.path.clone())
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .build();
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    /// The cookie that expires `base`: with the attributes it was set with, as browsers
    /// require to accept it (`Secure` above all, for prefixed names).
    fn removal(&self, base: &str) -> Cookie<'static> {
        let mut cookie = Cookie::build(self.name(base))
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .path(self.path.clone())
            .build();
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }
}

/// Keeps each user's tokens in cookies of the request [`Context`]: read from the incoming
/// `Cookie` header, written to the context's `Set-Cookie` delta.
///
/// Reading never changes the cookies. A tampered or unreadable cookie is treated as absent
/// (with a log line): a record left with only a refresh token is refreshed; with no token at
/// all, the user is logged out.
///
/// The session payload (a login response's user object, or claims) is kept with the session:
/// in plain cookies, as the base64url of its JSON in
/// [`PAYLOAD_COOKIE`](crate::defaults::PAYLOAD_COOKIE) — unless it is the access token's own
/// JWT claims, which are read back from the token. Plain cookies are HttpOnly (no script
/// reads them) but the browser's user can change them: rely on the payload (or the claims)
/// only with [`CookieConfig::encrypted`], or verify them.
#[derive(Debug, Clone)]
pub struct CookieStore {
    config: CookieConfig,
    /// The full names of [`COOKIE_NAMES`](crate::defaults::COOKIE_NAMES) then
    /// [`PAYLOAD_COOKIE`](crate::defaults::PAYLOAD_COOKIE), computed once.
    names: [String; 6],
    /// The full name of [`SEALED_COOKIE`](crate::defaults::SEALED_COOKIE).
    sealed: String,
    /// Tells this store's records apart from other stores' in a context's record cache
    /// (clones, with the same configuration, share it).
    id: u64,
}

impl Default for CookieStore {
    fn default() -> Self {
        Self::new(CookieConfig::default())
    }
}

impl CookieStore {
    /// A store writing cookies as `config` says.
    pub fn new(config: CookieConfig) -> Self {
        let [a, b, c, d, e] = crate::defaults::COOKIE_NAMES;
        let names = [a, b, c, d, e, crate::defaults::PAYLOAD_COOKIE].map(|base| config.name(base));
        let sealed = config.name(crate::defaults::SEALED_COOKIE);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            config,
            names,
            sealed,
            id,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CookieConfig {
        &self.config
    }

    /// The record of `ctx`'s cookies, read once per context while its cookies are unchanged.
    fn record(&self, ctx: &Context) -> Option<Arc<TokenRecord>> {
        ctx.record_with(self.id, || self.read_record(ctx))
    }

    fn read_record(&self, ctx: &Context) -> Option<Arc<TokenRecord>> {
        if let Some(keys) = &self.config.encryption {
            return self.read_sealed(ctx, keys);
        }
        // All six cookies in one pass over the request's header (in `names` order).
        let [access, refresh, expires_at, obtained_at, token_type, payload] = ctx
            .cookie_values(self.names.each_ref().map(String::as_str))
            .map(|v| v.filter(|v| !v.is_empty()));
        let refresh = refresh.filter(|t| {
            let ok = valid_token(t);
            if !ok {
                tracing::warn!("ignoring a malformed refresh-token cookie");
            }
            ok
        });
        let mut access = access.filter(|t| {
            let ok = valid_token(t);
            if !ok {
                tracing::warn!("ignoring a malformed access-token cookie");
            }
            ok
        });
        let expires_at = parse_time(expires_at.as_deref()).unwrap_or_else(|()| {
            tracing::warn!("ignoring an access token whose expiry cookie is malformed");
            access = None;
            None
        });
        let obtained_at = parse_time(obtained_at.as_deref())
            .ok()
            .flatten()
            .unwrap_or(UNIX_EPOCH);
        if access.is_none() && refresh.is_none() {
            return None;
        }
        let payload = match payload {
            Some(text) => decode_payload(&text),
            None => access.as_deref().and_then(jwt_claims),
        };
        // Built in place: the record is moved once, into its `Arc`.
        Some(Arc::new(TokenRecord {
            payload,
            access_token: access.map(|t| AccessToken::new(t.into_owned())),
            refresh_token: refresh.map(|t| RefreshToken::new(t.into_owned())),
            token_type: token_type.filter(|t| valid_token(t)).map(Cow::into_owned),
            scope: None,
            expires_at,
            refresh_expires_at: None,
            obtained_at,
            cache: Default::default(),
        }))
    }
}

impl CookieStore {
    /// The record sealed in the one cookie of an encrypted store; `None` (logged) when it is
    /// absent, does not open, or does not decode.
    fn read_sealed(&self, ctx: &Context, keys: &Encryption) -> Option<Arc<TokenRecord>> {
        let sealed = ctx.cookie_value(&self.sealed).filter(|v| !v.is_empty())?;
        let record = keys
            .open(&self.sealed, &sealed)
            .and_then(|json| TokenRecord::decode(&json))
            .filter(|record| record.validate().is_ok());
        if record.is_none() {
            tracing::warn!(
                "ignoring a session cookie that does not open (tampered, or sealed with an unknown key)"
            );
        }
        record.map(Arc::new)
    }

    /// The cookies that hold `record`: the sealed one, or the plain ones (`None`: removed).
    fn cookies_of(&self, record: &TokenRecord) -> Result<Vec<(&'static str, Option<String>)>, Error> {
        if let Some(keys) = &self.config.encryption {
            let sealed = keys.seal(&self.sealed, &record.encode()?)?;
            return Ok(vec![(crate::defaults::SEALED_COOKIE, Some(sealed))]);
        }
        // The payload is written unless the access token's claims give it back.
        let derived = record.access_token.as_ref().and_then(|t| jwt_claims(t.secret()));
        let payload = record
            .payload
            .as_ref()
            .filter(|payload| derived.as_ref() != Some(*payload))
            .map(encode_payload)
            .transpose()?;
        Ok(vec![
            (
                "access_token",
                record.access_token.as_ref().map(|t| t.secret().to_owned()),
            ),
            (
                "refresh_token",
                record.refresh_token.as_ref().map(|t| t.secret().to_owned()),
            ),
            (
                "access_expires_at",
                record.expires_at.map(|at| unix_secs(at).to_string()),
            ),
            ("last_refresh_at", Some(unix_secs(record.obtained_at).to_string())),
            ("token_type", record.token_type.clone()),
            (crate::defaults::PAYLOAD_COOKIE, payload),
        ])
    }

    /// Removes the cookies of the layout not in use (plain or sealed) that the browser holds:
    /// turning encryption on or off leaves nothing behind.
    fn remove_other_layout(&self, ctx: &Context) {
        let [a, b, c, d, e] = crate::defaults::COOKIE_NAMES;
        let plain = [a, b, c, d, e, crate::defaults::PAYLOAD_COOKIE];
        let other: &[&str] = if self.config.encryption.is_some() {
            &plain
        } else {
            &[crate::defaults::SEALED_COOKIE]
        };
        for base in other {
            let removal = self.config.removal(base);
            if ctx.cookie(removal.name()).is_some() {
                ctx.remove_cookie(removal);
            }
        }
    }
}

/// The payload as a cookie value: the base64url of its JSON.
fn encode_payload(payload: &serde_json::Value) -> Result<String, Error> {
    use base64::Engine;
    let json = serde_json::to_vec(payload).map_err(|e| {
        Error::new(
            ErrorKind::Store,
            format!("could not encode the session payload: {e}"),
        )
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

/// The payload a cookie holds; `None` (logged) when it does not decode.
fn decode_payload(text: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok());
    if payload.is_none() {
        tracing::warn!("ignoring a malformed session-payload cookie");
    }
    payload
}

/// A time cookie (Unix seconds): `Ok(None)` when absent, `Err` when malformed.
fn parse_time(text: Option<&str>) -> Result<Option<SystemTime>, ()> {
    match text {
        None => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .map(Some)
            .ok_or(()),
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn valid_token(value: &str) -> bool {
    // Without an early exit, so the check is vectorized (tokens are hundreds of bytes).
    value.bytes().fold(true, |ok, b| ok & (0x21..=0x7e).contains(&b))
}

#[async_trait]
impl TokenStore for CookieStore {
    async fn load(&self, ctx: Option<&Context>) -> Result<Option<Arc<TokenRecord>>, Error> {
        Ok(self.record(ctx.ok_or_else(no_context)?))
    }

    /// The cookies are the request's: no I/O, so a fresh token is served without an await.
    fn peek(&self, ctx: Option<&Context>) -> Option<Result<Option<Arc<TokenRecord>>, Error>> {
        Some(ctx.ok_or_else(no_context).map(|ctx| self.record(ctx)))
    }

    async fn save(
        &self,
        ctx: Option<&Context>,
        record: Arc<TokenRecord>,
        _replaces: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        let ctx = ctx.ok_or_else(no_context)?;
        let max_age = record
            .refresh_lifetime()
            .unwrap_or(crate::defaults::COOKIE_MAX_AGE);
        let mut cookies = Vec::with_capacity(6);
        let mut removals = Vec::new();
        for (base, value) in self.cookies_of(&record)? {
            match value {
                Some(value) => cookies.push(self.config.build(base, value, max_age)),
                None => removals.push(self.config.removal(base)),
            }
        }
        // Check every size before writing any, so a failed save changes nothing.
        for cookie in &cookies {
            let size = cookie.encoded().to_string().len();
            if size > crate::defaults::MAX_COOKIE_BYTES {
                return Err(Error::new(
                    ErrorKind::Store,
                    format!(
                        "cookie {} would be {size} bytes, over the {}-byte limit browsers keep: \
                         keep these sessions server-side (SessionStore, or tokenkit-redis's \
                         RedisSessionStore), where the browser holds only a session id",
                        cookie.name(),
                        crate::defaults::MAX_COOKIE_BYTES
                    ),
                ));
            }
        }
        for cookie in cookies {
            ctx.set_cookie(cookie);
        }
        for removal in removals {
            if ctx.cookie(removal.name()).is_some() {
                ctx.remove_cookie(removal);
            }
        }
        self.remove_other_layout(ctx);
        Ok(())
    }

    async fn clear(&self, ctx: Option<&Context>) -> Result<(), Error> {
        let ctx = ctx.ok_or_else(no_context)?;
        if self.config.encryption.is_some() {
            ctx.remove_cookie(self.config.removal(crate::defaults::SEALED_COOKIE));
        } else {
            for base in crate::defaults::COOKIE_NAMES {
                ctx.remove_cookie(self.config.removal(base));
            }
            if ctx.cookie(&self.names[5]).is_some() {
                ctx.remove_cookie(self.config.removal(crate::defaults::PAYLOAD_COOKIE));
            }
        }
        self.remove_other_layout(ctx);
        Ok(())
    }

    fn scope(&self) -> StoreScope {
        StoreScope::Request
    }

    fn check(&self) -> Result<(), Error> {
        self.config.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;
    use proptest::prelude::*;

    #[test]
    fn the_cookie_names_come_in_the_order_read_record_takes_them() {
        assert_eq!(
            crate::defaults::COOKIE_NAMES,
            [
                "access_token",
                "refresh_token",
                "access_expires_at",
                "last_refresh_at",
                "token_type"
            ]
        );
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn record() -> TokenRecord {
        TokenRecord::new(AccessToken::new("acc.tok+/="), at(1_000))
            .with_refresh_token(RefreshToken::new("ref;tok,\"x"))
            .with_token_type("Bearer")
            .with_expires_at(at(4_600))
    }

    /// What a browser would send back: the name=value pairs of the Set-Cookie delta.
    fn browser_echo(ctx: &Context) -> Context {
        let pairs: Vec<String> = ctx
            .set_cookie_headers()
            .iter()
            .filter_map(|h| h.to_str().ok()?.split(';').next().map(str::to_owned))
            .filter(|pair| !pair.ends_with('='))
            .collect();
        Context::from_cookie_header(&pairs.join("; "))
    }

    /// A context keeps the record a store read, per store, until its cookies change.
    #[test]
    fn the_record_read_from_a_context_follows_its_cookie_changes_and_its_store() {
        let ctx = Context::from_cookie_header("access_token=one; app_access_token=two");
        let plain = CookieStore::new(CookieConfig::new());
        let prefixed = CookieStore::new(CookieConfig::new().prefix("app"));
        let token = |store: &CookieStore| {
            let record = store.peek(Some(&ctx)).unwrap().unwrap().unwrap();
            record.access_token.as_ref().unwrap().secret().to_owned()
        };
        assert_eq!(token(&plain), "one");
        assert_eq!(token(&prefixed), "two");
        assert_eq!(token(&plain), "one");
        let first = plain.peek(Some(&ctx)).unwrap().unwrap().unwrap();
        let again = plain.peek(Some(&ctx)).unwrap().unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "read once while unchanged");
        // A change to the cookies is seen by the next read, of this store only.
        let next = TokenRecord::new(AccessToken::new("three"), at(1_000));
        block_on(plain.save(Some(&ctx), Arc::new(next), None)).unwrap();
        assert_eq!(token(&plain), "three");
        assert_eq!(token(&prefixed), "two");
    }

    #[test]
    fn writes_the_five_cookies_with_the_spec_attributes() {
        let store = CookieStore::new(CookieConfig::new().prefix("app").domain("example.com"));
        let ctx = Context::new();
        block_on(store.save(Some(&ctx), Arc::new(record()), None)).unwrap();
        let mut delta = ctx.cookie_delta();
        delta.sort_by(|a, b| a.name().cmp(b.name()));
        let names: Vec<_> = delta.iter().map(|c| c.name().to_owned()).collect();
        assert_eq!(
            names,
            [
                "app_access_expires_at",
                "app_access_token",
                "app_last_refresh_at",
                "app_refresh_token",
                "app_token_type"
            ]
        );
        for c in &delta {
            assert_eq!(c.http_only(), Some(true));
            assert_eq!(c.secure(), Some(true));
            assert_eq!(c.same_site(), Some(SameSite::Lax));
            assert_eq!(c.path(), Some("/"));
            assert_eq!(c.domain(), Some("example.com"));
            assert_eq!(c.max_age(), Some(cookie::time::Duration::days(7)));
        }
        let header = ctx.set_cookie_headers()[0].to_str().unwrap().to_owned();
        assert!(header.contains("HttpOnly") && header.contains("Secure") && header.contains("SameSite=Lax"));
    }

    #[test]
    fn round_trips_through_a_browser_and_reading_changes_nothing() {
        let store = CookieStore::default();
        let ctx = Context::new();
        block_on(store.save(Some(&ctx), Arc::new(record()), None)).unwrap();
        let next = browser_echo(&ctx);
        let loaded = block_on(store.load(Some(&next))).unwrap().unwrap();
        assert_eq!(loaded.access_token.as_ref().unwrap().secret(), "acc.tok+/=");
        assert_eq!(loaded.refresh_token.as_ref().unwrap().secret(), "ref;tok,\"x");
        assert_eq!(loaded.expires_at, Some(at(4_600)));
        assert_eq!(loaded.obtained_at, at(1_000));
        assert_eq!(loaded.token_type.as_deref(), Some("Bearer"));
        assert!(next.cookie_delta().is_empty(), "load must not mutate the session");
    }

    #[test]
    fn max_age_follows_the_refresh_token_and_secure_can_be_turned_off() {
        let store = CookieStore::new(CookieConfig::new().secure(false));
        let ctx = Context::new();
        let r = record().with_refresh_expires_at(at(1_000 + 3_600));
        block_on(store.save(Some(&ctx), Arc::new(r), None)).unwrap();
        for c in ctx.cookie_delta() {
            assert_eq!(c.max_age(), Some(cookie::time::Duration::hours(1)));
            assert_eq!(c.secure(), Some(false));
            assert_eq!(c.http_only(), Some(true), "HttpOnly is not configurable");
        }
    }

    #[test]
    fn clear_expires_every_cookie() {
        let store = CookieStore::default();
        let ctx = Context::from_cookie_header("access_token=a; refresh_token=r");
        block_on(store.clear(Some(&ctx))).unwrap();
        let delta = ctx.cookie_delta();
        assert_eq!(delta.len(), 5);
        assert!(delta
            .iter()
            .all(|c| c.max_age() == Some(cookie::time::Duration::ZERO)));
        assert!(block_on(store.load(Some(&ctx))).unwrap().is_none());
    }

    #[test]
    fn browser_prefixes_are_glued_without_an_underscore() {
        let name = |prefix: &str| CookieConfig::new().prefix(prefix).name("access_token");
        assert_eq!(name("__Host-"), "__Host-access_token");
        assert_eq!(name("__Secure-"), "__Secure-access_token");
        assert_eq!(name("__Host-app-"), "__Host-app-access_token");
        assert_eq!(name("app"), "app_access_token");
        assert_eq!(
            CookieConfig::new().prefix("").name("access_token"),
            "access_token"
        );
    }

    /// Removal cookies carry what the cookies were set with: a browser ignores a removal of a
    /// `__Host-` or `Secure` cookie that is not `Secure` itself.
    #[test]
    fn removals_carry_the_attributes_browsers_require() {
        for config in [
            CookieConfig::new().prefix("__Host-"),
            CookieConfig::new()
                .prefix("__Secure-")
                .domain("example.com")
                .path("/app"),
            CookieConfig::new().secure(false),
        ] {
            let store = CookieStore::new(config.clone());
            store.check().unwrap();
            let ctx = Context::new();
            block_on(store.save(Some(&ctx), Arc::new(record()), None)).unwrap();
            let set: Vec<_> = ctx.cookie_delta();
            let back = browser_echo(&ctx);
            block_on(store.clear(Some(&back))).unwrap();
            let removed = back.cookie_delta();
            assert_eq!(removed.len(), 5);
            for removal in &removed {
                let original = set.iter().find(|c| c.name() == removal.name()).unwrap();
                assert_eq!(removal.max_age(), Some(cookie::time::Duration::ZERO));
                assert_eq!(removal.secure(), original.secure(), "{}", removal.name());
                assert_eq!(removal.path(), original.path());
                assert_eq!(removal.domain(), original.domain());
                assert_eq!(removal.http_only(), Some(true));
                assert_eq!(removal.same_site(), original.same_site());
            }
            if config.prefix.as_deref() == Some("__Host-") {
                assert!(removed
                    .iter()
                    .all(|c| c.name().starts_with("__Host-") && c.domain().is_none()));
            }
        }
    }

    #[test]
    fn a_configuration_browsers_would_drop_is_refused() {
        let refused = [
            (CookieConfig::new().prefix("__Host-").secure(false), "Secure"),
            (CookieConfig::new().prefix("__host-").secure(false), "Secure"),
            (
                CookieConfig::new().prefix("__Host-").domain("example.com"),
                "Domain",
            ),
            (CookieConfig::new().prefix("__Host-").path("/app"), "Path=/"),
            (CookieConfig::new().prefix("__Secure-").secure(false), "Secure"),
            (CookieConfig::new().prefix("a;b"), "';'"),
            (CookieConfig::new().prefix("a b"), "' '"),
        ];
        for (config, why) in refused {
            let err = CookieStore::new(config.clone()).check().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{config:?}");
            assert!(err.message().contains(why), "{config:?}: {err}");
        }
        for config in [
            CookieConfig::new().prefix("__Host-"),
            CookieConfig::new()
                .prefix("__Secure-")
                .domain("example.com")
                .path("/app"),
            CookieConfig::new().prefix("app").secure(false),
            CookieConfig::new(),
        ] {
            CookieStore::new(config.clone()).check().unwrap();
        }
    }

    fn with_user(record: TokenRecord) -> TokenRecord {
        record.with_payload(serde_json::json!({"name": "alice", "roles": ["reader"]}))
    }

    /// Names and values of the cookies a context would set.
    fn set_cookies(ctx: &Context) -> Vec<(String, String)> {
        ctx.cookie_delta()
            .iter()
            .map(|c| (c.name().to_owned(), c.value().to_owned()))
            .collect()
    }

    #[test]
    fn the_payload_is_kept_with_a_plain_session() {
        let store = CookieStore::default();
        let ctx = Context::new();
        block_on(store.save(Some(&ctx), Arc::new(with_user(record())), None)).unwrap();
        let set = set_cookies(&ctx);
        let payload = &set.iter().find(|(n, _)| n == "session_payload").unwrap().1;
        assert!(!payload.contains("alice"), "encoded, compactly: {payload}");
        let back = block_on(store.load(Some(&browser_echo(&ctx)))).unwrap().unwrap();
        assert_eq!(back.payload, with_user(record()).payload);
        // A damaged payload cookie loses the payload, not the session.
        let damaged = Context::from_cookie_header("access_token=a; session_payload=!!!");
        let back = block_on(store.load(Some(&damaged))).unwrap().unwrap();
        assert!(back.payload.is_none() && back.access_token.is_some());
    }

    #[test]
    fn claims_of_the_access_token_are_not_written_twice() {
        // {"alg":"none"} . {"sub":"u1"} . sig
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.c2ln";
        let claims = crate::token::jwt_claims(jwt).unwrap();
        let record = TokenRecord::new(AccessToken::new(jwt), at(1_000)).with_payload(claims.clone());
        let store = CookieStore::default();
        let ctx = Context::new();
        block_on(store.save(Some(&ctx), Arc::new(record), None)).unwrap();
        assert!(set_cookies(&ctx).iter().all(|(n, _)| n != "session_payload"));
        let back = block_on(store.load(Some(&browser_echo(&ctx)))).unwrap().unwrap();
        assert_eq!(back.payload, Some(claims));
    }

    fn keys(id: &str, key: u8) -> Encryption {
        Encryption::new(id, [key; 32]).unwrap()
    }

    #[test]
    fn an_encrypted_session_is_one_sealed_cookie() {
        let store = CookieStore::new(CookieConfig::new().prefix("__Host-").encrypted(keys("k1", 1)));
        store.check().unwrap();
        let ctx = Context::new();
        let written = with_user(record());
        block_on(store.save(Some(&ctx), Arc::new(written.clone()), None)).unwrap();
        let set = set_cookies(&ctx);
        assert_eq!(set.len(), 1, "{set:?}");
        let (name, value) = &set[0];
        assert_eq!(name, "__Host-session");
        for secret in ["acc.tok", "ref;tok", "alice", "Bearer"] {
            assert!(!value.contains(secret), "{secret} is sealed");
        }
        let back = block_on(store.load(Some(&browser_echo(&ctx)))).unwrap().unwrap();
        assert!(back.same_tokens(&written));
        assert_eq!(back.payload, written.payload);
        assert_eq!(back.expires_at, written.expires_at);
        assert_eq!(back.token_type, written.token_type);
        assert_eq!(back.obtained_at, written.obtained_at);
    }

    #[test]
    fn sealed_cookies_need_the_key_rotate_and_refuse_tampering() {
        let old = CookieStore::new(CookieConfig::new().encrypted(keys("k1", 1)));
        let ctx = Context::new();
        block_on(old.save(Some(&ctx), Arc::new(record()), None)).unwrap();
        let sealed = set_cookies(&ctx).remove(0).1;
        let load = |store: &CookieStore, header: &str| {
            block_on(store.load(Some(&Context::from_cookie_header(header)))).unwrap()
        };
        let header = format!("session={sealed}");
        assert!(load(&old, &header).is_some());
        // Without the key: nothing to read, whatever the store.
        assert!(load(
            &CookieStore::new(CookieConfig::new().encrypted(keys("k1", 9))),
            &header
        )
        .is_none());
        assert!(load(
            &CookieStore::new(CookieConfig::new().encrypted(keys("k2", 2))),
            &header
        )
        .is_none());
        assert!(load(&CookieStore::default(), &header).is_none());
        // Rotation: the new key reads the old key's cookies and writes its own.
        let rotated = CookieStore::new(
            CookieConfig::new().encrypted(keys("k2", 2).with_old_key("k1", [1; 32]).unwrap()),
        );
        assert!(load(&rotated, &header).unwrap().same_tokens(&record()));
        let ctx = Context::new();
        block_on(rotated.save(Some(&ctx), Arc::new(record()), None)).unwrap();
        assert!(set_cookies(&ctx)[0].1.starts_with("tk1.k2."));
        // Bound to its name: under another cookie name it does not open.
        let moved = CookieStore::new(CookieConfig::new().prefix("app").encrypted(keys("k1", 1)));
        assert!(load(&moved, &format!("app_session={sealed}")).is_none());
        // Changed in any way: no session, no error.
        let mut flipped = sealed.clone().into_bytes();
        let at = flipped.len() / 2;
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            flipped.as_str(),
            "tk1.k1.",
            "tk1.k1.AAAA",
            "x",
            "%FF",
            &sealed[..sealed.len() - 4],
        ] {
            assert!(load(&old, &format!("session={bad}")).is_none(), "{bad:?}");
        }
        // Plain token cookies mean nothing to an encrypted store.
        assert!(load(&old, "access_token=forged; refresh_token=forged").is_none());
    }

    #[test]
    fn switching_layouts_leaves_no_cookie_behind() {
        let plain = CookieStore::default();
        let sealed = CookieStore::new(CookieConfig::new().encrypted(keys("k1", 1)));
        // A browser with a plain session signs in again under encryption.
        let ctx = Context::new();
        block_on(plain.save(Some(&ctx), Arc::new(with_user(record())), None)).unwrap();
        let browser = browser_echo(&ctx);
        block_on(sealed.save(Some(&browser), Arc::new(record()), None)).unwrap();
        let delta = browser.cookie_delta();
        let removed: Vec<_> = delta
            .iter()
            .filter(|c| c.max_age() == Some(cookie::time::Duration::ZERO))
            .map(|c| c.name().to_owned())
            .collect();
        assert_eq!(
            removed.len(),
            6,
            "the five token cookies and the payload: {removed:?}"
        );
        assert!(delta
            .iter()
            .any(|c| c.name() == "session" && !c.value().is_empty()));
        // And back: clearing the sealed session from a plain store removes it too.
        let back = browser_echo(&browser);
        block_on(plain.clear(Some(&back))).unwrap();
        assert!(back
            .cookie_delta()
            .iter()
            .any(|c| c.name() == "session" && c.value().is_empty()));
    }

    #[test]
    fn a_sealed_session_over_the_cookie_limit_is_refused() {
        let store = CookieStore::new(CookieConfig::new().encrypted(keys("k1", 1)));
        let big = record().with_payload(serde_json::json!({"groups": "g".repeat(5_000)}));
        let ctx = Context::new();
        let err = block_on(store.save(Some(&ctx), Arc::new(big), None)).unwrap_err();
        assert!(
            err.message().contains("4096") && err.message().contains("SessionStore"),
            "{err}"
        );
        assert!(ctx.cookie_delta().is_empty(), "nothing written");
    }

    #[test]
    fn tampered_cookies_are_dropped_not_fatal() {
        let store = CookieStore::default();
        // A bad expiry drops the access token, keeping the refresh token (refreshed next).
        let ctx = Context::from_cookie_header("access_token=a; refresh_token=r; access_expires_at=soon");
        let r = block_on(store.load(Some(&ctx))).unwrap().unwrap();
        assert!(r.access_token.is_none());
        assert_eq!(r.refresh_token.as_ref().unwrap().secret(), "r");
        // Only a refresh token: a record to refresh.
        let ctx = Context::from_cookie_header("refresh_token=r");
        let r = block_on(store.load(Some(&ctx))).unwrap().unwrap();
        assert!(r.access_token.is_none() && r.refresh_token.is_some());
        // A token with a control byte (percent-decoded) is ignored.
        let ctx = Context::from_cookie_header("access_token=a%0D%0Ab");
        assert!(block_on(store.load(Some(&ctx))).unwrap().is_none());
        assert!(block_on(store.load(Some(&Context::new()))).unwrap().is_none());
    }

    #[test]
    fn oversize_cookies_are_refused_without_a_partial_write() {
        let store = CookieStore::default();
        let ctx = Context::new();
        let big = TokenRecord::new(AccessToken::new("a".repeat(5000)), at(0));
        let err = block_on(store.save(Some(&ctx), Arc::new(big), None)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store);
        assert!(err.message().contains("4096"));
        assert!(ctx.cookie_delta().is_empty());
    }

    #[test]
    fn without_a_context_the_error_says_how_to_bind_one() {
        let err = block_on(CookieStore::default().load(None)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoContext);
        assert!(err.message().contains("run_with_context"));
    }

    proptest! {
        #[test]
        fn codec_round_trips_any_header_safe_token(
            access in "[!-~]{1,200}",
            refresh in "[!-~]{1,200}",
            expires in 1u64..4_000_000_000,
        ) {
            let store = CookieStore::new(CookieConfig::new().prefix("p"));
            let ctx = Context::new();
            let r = TokenRecord::new(AccessToken::new(access.clone()), at(5))
                .with_refresh_token(RefreshToken::new(refresh.clone()))
                .with_expires_at(at(expires));
            block_on(store.save(Some(&ctx), Arc::new(r), None)).unwrap();
            let loaded = block_on(store.load(Some(&browser_echo(&ctx)))).unwrap().unwrap();
            prop_assert_eq!(loaded.access_token.as_ref().unwrap().secret(), access.as_str());
            prop_assert_eq!(loaded.refresh_token.as_ref().unwrap().secret(), refresh.as_str());
            prop_assert_eq!(loaded.expires_at, Some(at(expires)));
        }

        #[test]
        fn loading_any_cookie_header_never_panics(header in "\\PC{0,300}") {
            let ctx = Context::from_cookie_header(&header);
            let _ = block_on(CookieStore::default().load(Some(&ctx)));
        }
    }
}
