//! The per-request context, and how tokenkit finds it without it being passed by hand.
//!
//! A [`Context`] is a cheap handle (clones share state) holding the incoming request's
//! cookies, the `Set-Cookie` changes to send back, and typed extensions. [`run_with_context`]
//! makes a context current while a future is polled — the analogue of Node's
//! `AsyncLocalStorage.run`, working on any executor because it only sets a thread-local around
//! each poll.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll};

use cookie::{Cookie, CookieJar};
use http::header::{HeaderMap, HeaderValue, COOKIE};

use crate::error::{Error, ErrorKind};
use crate::runtime::BoxFuture;
use crate::token::TokenRecord;

/// The `name=value` pairs of a `Cookie` header, trimmed, in order; pieces without `=` are
/// skipped: the plain definition [`for_each_pair`] is checked against.
#[cfg(test)]
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split_terminator(';').filter_map(|pair| {
        let eq = pair.bytes().position(|b| b == b'=')?;
        Some((pair[..eq].trim(), pair[eq + 1..].trim()))
    })
}

/// `text` percent-decoded as UTF-8 (borrowed when it holds no escape); `None` when the
/// decoded bytes are not UTF-8, as the cookie parser treats such a pair.
fn decoded(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('%') {
        return Some(Cow::Borrowed(text));
    }
    percent_encoding::percent_decode_str(text).decode_utf8().ok()
}

/// A `name=value` pair of a `Cookie` header, trimmed, and whether each side holds a
/// percent-escape (to be decoded when compared or read).
#[derive(Debug, Clone, Copy)]
struct Pair<'h> {
    name: &'h str,
    value: &'h str,
    escaped_name: bool,
    escaped_value: bool,
}

/// Calls `found` for every `name=value` pair of a `Cookie` header, in order, pairs with an
/// empty name skipped (the pairs of [`cookie_pairs`]). One pass: names (short) are scanned
/// a word at a time for `=`, `;` and `%`; values (long: tokens) are crossed with a
/// vectorized search for `;` and `%`.
fn for_each_pair<'h>(header: &'h str, mut found: impl FnMut(Pair<'h>)) {
    let bytes = header.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        // Pairs are usually separated by `; `: the space is skipped here rather than trimmed.
        while bytes.get(start) == Some(&b' ') {
            start += 1;
        }
        let (at, escaped_name) = find_stop(bytes, start, [b'=', b';']);
        match bytes.get(at) {
            // A piece without `=`: skipped.
            None => return,
            Some(b';') => {
                start = at + 1;
                continue;
            }
            Some(_) => {}
        }
        let value_start = at + 1;
        let (end, escaped_value) = find_stop(bytes, value_start, [b';', b';']);
        let name = trimmed(header, start, at);
        if !name.is_empty() {
            found(Pair {
                name,
                value: trimmed(header, value_start, end),
                escaped_name,
                escaped_value,
            });
        }
        start = end + 1;
    }
}

/// The first `stop` byte at or after `start` (or `bytes.len()`), and whether a `%` comes
/// before it. The first words go eight bytes at a time (names and most values are short):
/// per word, a byte equal to a needle becomes a zero byte under XOR, and the classic
/// zero-byte test marks it; the test's borrow can only mark bytes above a real zero byte,
/// so the lowest mark is exact. Past 32 bytes (a JWT), a vectorized search takes over.
#[inline(always)]
fn find_stop(bytes: &[u8], start: usize, stop: [u8; 2]) -> (usize, bool) {
    const LOW: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const fn zero_bytes(word: u64) -> u64 {
        word.wrapping_sub(LOW) & !word & HIGH
    }
    let (mut at, mut escaped) = (start, false);
    let limit = start.saturating_add(32);
    while let Some(word) = bytes
        .get(at..)
        .and_then(|rest| rest.first_chunk::<8>())
        .map(|chunk| u64::from_le_bytes(*chunk))
    {
        let stops =
            zero_bytes(word ^ (LOW * u64::from(stop[0]))) | zero_bytes(word ^ (LOW * u64::from(stop[1])));
        let escapes = zero_bytes(word ^ (LOW * u64::from(b'%')));
        if stops != 0 {
            // The stop's mark is bit 8k+7: the bits below it cover bytes 0..k. A false `%`
            // mark below the stop sits above a real `%`, so "any below" is still exact.
            let mark = stops.trailing_zeros();
            let before = escapes & ((1 << mark) - 1);
            return (at + (mark / 8) as usize, escaped || before != 0);
        }
        escaped |= escapes != 0;
        at += 8;
        if at >= limit {
            return find_stop_long(bytes, at, stop, escaped);
        }
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == stop[0] || byte == stop[1] {
            break;
        }
        escaped |= byte == b'%';
        at += 1;
    }
    (at, escaped)
}

/// [`find_stop`] for what is left of a long name or value, with a vectorized search.
#[cold]
fn find_stop_long(bytes: &[u8], mut at: usize, stop: [u8; 2], mut escaped: bool) -> (usize, bool) {
    loop {
        match bytes
            .get(at..)
            .and_then(|rest| memchr::memchr3(stop[0], stop[1], b'%', rest))
        {
            None => return (bytes.len(), escaped),
            Some(offset) if bytes.get(at + offset) == Some(&b'%') => {
                escaped = true;
                at += offset + 1;
            }
            Some(offset) => return (at + offset, escaped),
        }
    }
}

/// `text[start..end]` without surrounding whitespace (as `str::trim` sees it).
#[inline(always)]
fn trimmed(text: &str, start: usize, end: usize) -> &str {
    let part = text.get(start..end).unwrap_or_default();
    let graphic = |b: &u8| (b'!'..0x80).contains(b);
    match part.as_bytes() {
        // The common case: printable ASCII at both ends, nothing to trim.
        [first, .., last] if graphic(first) && graphic(last) => part,
        [only] if graphic(only) => part,
        _ => trimmed_slowly(part),
    }
}

/// [`trimmed`] when an end is whitespace or not ASCII.
#[cold]
fn trimmed_slowly(part: &str) -> &str {
    let bytes = part.as_bytes();
    // ASCII whitespace as `char::is_whitespace` has it (`\x0b` included).
    let space = |b: u8| matches!(b, b'\t'..=b'\r' | b' ');
    let (mut from, mut to) = (0, bytes.len());
    while from < to && bytes.get(from).is_some_and(|&b| space(b)) {
        from += 1;
    }
    while to > from && bytes.get(to - 1).is_some_and(|&b| space(b)) {
        to -= 1;
    }
    match (bytes.get(from), bytes.get(to.wrapping_sub(1))) {
        (Some(first), Some(last)) if first.is_ascii() && last.is_ascii() => {
            part.get(from..to).unwrap_or_default()
        }
        (None, _) => "",
        // Unicode whitespace may follow: the full definition.
        _ => part.trim(),
    }
}

impl<'h> Pair<'h> {
    /// Whether this pair is cookie `name`.
    #[inline(always)]
    fn is_named(&self, name: &str) -> bool {
        if !self.escaped_name {
            // Nothing to decode: the raw name is the name.
            return self.name == name;
        }
        // Decoding only shortens.
        self.name.len() >= name.len() && decoded(self.name).as_deref() == Some(name)
    }

    /// The value, percent-decoded (`None` when it does not decode: the pair is skipped).
    fn value(&self) -> Option<Cow<'h, str>> {
        if self.escaped_value {
            decoded(self.value)
        } else {
            Some(Cow::Borrowed(self.value))
        }
    }
}

/// A request's `Cookie` header as a context keeps it.
enum Received {
    /// Text given to the context, or several headers joined with `; `.
    Text(String),
    /// The request's only `Cookie` header, shared with the request.
    Header(HeaderValue),
}

impl Received {
    /// The header as text; a header that is not UTF-8 holds no cookies, as such headers are
    /// skipped when several are joined.
    fn text(&self) -> &str {
        match self {
            Self::Text(text) => text,
            Self::Header(value) => std::str::from_utf8(value.as_bytes()).unwrap_or_default(),
        }
    }
}

/// A token record a store read from this context, kept for later reads of the same context
/// while its cookies are unchanged.
struct CachedRecord {
    /// The store that read it.
    owner: u64,
    /// The context's cookie generation when it was read.
    generation: u64,
    record: Arc<TokenRecord>,
}

/// The context of one incoming request (or any unit of work that owns a session).
#[derive(Clone, Default)]
pub struct Context {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    /// Unique for the life of the process: never reused, unlike an address.
    id: u64,
    extensions: Mutex<http::Extensions>,
    /// The request's `Cookie` header as received: its pairs are located on the first lookup
    /// and decoded when asked for.
    received: Received,
    /// The cookies set or removed during this context: what to send back as `Set-Cookie`.
    /// Made on the first change (most contexts only read cookies).
    cookies: Mutex<Option<CookieJar>>,
    /// How many times a cookie was set or removed (`0`: never, and lookups skip the jar).
    generation: AtomicU64,
    record: Mutex<Option<CachedRecord>>,
}

impl Default for ContextInner {
    fn default() -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            extensions: Mutex::default(),
            received: Received::Text(String::new()),
            cookies: Mutex::default(),
            generation: AtomicU64::new(0),
            record: Mutex::new(None),
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding the cookies of a `Cookie` request header value (`"a=1; b=2"`).
    /// Values are percent-decoded (tokenkit percent-encodes the values it sets); malformed
    /// pairs are skipped.
    pub fn from_cookie_header(header: &str) -> Self {
        Self::with_received(Received::Text(header.to_owned()))
    }

    /// A context holding the cookies of every `Cookie` header in `headers` (a header that is
    /// not UTF-8 is skipped). A single header (what HTTP/1.1 browsers send) is shared, not
    /// copied.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut all = headers.get_all(COOKIE).iter();
        if let (Some(only), None) = (all.next(), all.next()) {
            return Self::with_received(Received::Header(only.clone()));
        }
        let mut received = String::new();
        for value in headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        {
            if !received.is_empty() {
                received.push_str("; ");
            }
            received.push_str(value);
        }
        Self::with_received(Received::Text(received))
    }

    fn with_received(received: Received) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                received,
                ..ContextInner::default()
            }),
        }
    }

    /// The value of cookie `name` as the request sent it: the last well-formed pair of that
    /// name, name and value percent-decoded and trimmed.
    fn received_cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        let [value] = self.received_cookies([name]);
        value
    }

    /// The received values of cookies `names`, in one pass over the header: for each name,
    /// the last pair of that name whose value decodes.
    fn received_cookies<const N: usize>(&self, names: [&str; N]) -> [Option<Cow<'_, str>>; N] {
        let mut values = [const { None }; N];
        for_each_pair(self.inner.received.text(), |pair| {
            for (name, value) in names.iter().zip(values.iter_mut()) {
                if pair.is_named(name) {
                    if let Some(decoded) = pair.value() {
                        *value = Some(decoded);
                    }
                }
            }
        });
        values
    }

    /// [`cookie`](Self::cookie) of each of `names`, reading the received header once.
    pub(crate) fn cookie_values<const N: usize>(&self, names: [&str; N]) -> [Option<Cow<'_, str>>; N] {
        if self.inner.generation.load(Ordering::Acquire) != 0 {
            return names.map(|name| self.cookie_value(name));
        }
        self.received_cookies(names)
    }

    fn jar(&self) -> MutexGuard<'_, Option<CookieJar>> {
        self.inner.cookies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the jar; the generation moves on once the change is made.
    fn change_jar(&self, change: impl FnOnce(&mut CookieJar)) {
        let mut jar = self.jar();
        change(jar.get_or_insert_with(CookieJar::new));
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The current value of cookie `name`: as changed during this context, else as received.
    /// A cookie removed during this context is absent.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookie_value(name).map(Cow::into_owned)
    }

    /// [`cookie`](Self::cookie), borrowed from the received header when it was not changed.
    pub(crate) fn cookie_value(&self, name: &str) -> Option<Cow<'_, str>> {
        if self.inner.generation.load(Ordering::Acquire) != 0 {
            if let Some(changed) = self.jar().as_ref().and_then(|jar| jar.get(name)) {
                let removed =
                    changed.value().is_empty() && changed.max_age() == Some(cookie::time::Duration::ZERO);
                return (!removed).then(|| Cow::Owned(changed.value().to_owned()));
            }
        }
        self.received_cookie(name)
    }

    /// The record store `owner` reads from this context with `read`, read once while the
    /// context's cookies are unchanged: later calls return the same record. Concurrent
    /// callers wait for the first read instead of repeating it.
    pub(crate) fn record_with(
        &self,
        owner: u64,
        read: impl FnOnce() -> Option<Arc<TokenRecord>>,
    ) -> Option<Arc<TokenRecord>> {
        let mut cached = self.inner.record.lock().unwrap_or_else(PoisonError::into_inner);
        // Read before the cookies: a change made during the read leaves the record stale
        // under an old generation, so it is read again next time.
        let generation = self.inner.generation.load(Ordering::Acquire);
        if let Some(cached) = cached.as_ref() {
            if cached.owner == owner && cached.generation == generation {
                return Some(Arc::clone(&cached.record));
            }
        }
        let record = read()?;
        let old = cached.replace(CachedRecord {
            owner,
            generation,
            record: Arc::clone(&record),
        });
        drop(cached);
        drop(old);
        Some(record)
    }

    /// Sets a cookie to be sent back with the response.
    pub fn set_cookie(&self, cookie: Cookie<'static>) {
        self.change_jar(|jar| jar.add(cookie));
    }

    /// Removes a cookie: the response expires it (path and domain must match how it was set),
    /// whether or not the request carried it.
    pub fn remove_cookie(&self, cookie: Cookie<'static>) {
        let mut removal = cookie;
        removal.make_removal();
        self.change_jar(|jar| jar.add(removal));
    }

    /// The cookies changed during this context, as `Set-Cookie` header values (removals
    /// included, as expired cookies). Values are percent-encoded.
    pub fn set_cookie_headers(&self) -> Vec<HeaderValue> {
        self.jar()
            .iter()
            .flat_map(CookieJar::delta)
            .filter_map(|c| HeaderValue::from_str(&c.encoded().to_string()).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })
            .collect()
    }

    /// The cookies changed during this context.
    pub fn cookie_delta(&self) -> Vec<Cookie<'static>> {
        self.jar().iter().flat_map(CookieJar::delta).cloned().collect()
    }

    /// Stores a typed value, returning the previous one of that type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.inner
            .extensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(value)
    }

    /// A clone of the stored value of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.inner
            .extensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get::<T>()
            .cloned()
    }

    /// This context's identity, shared by its clones and never given to another context of
    /// the process (it keys per-session state such as a refresh in flight).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }
}

/// Finds the context of the work in progress, and binds one to a unit of work.
pub trait ContextProvider: Send + Sync + fmt::Debug {
    /// The current context, if one is bound.
    fn current(&self) -> Option<Context>;

    /// Runs `future` with `ctx` bound. The default is the task-scoped [`run_with_context`].
    fn scope<'a>(&self, ctx: Context, future: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        Box::pin(run_with_context(ctx, future))
    }

    /// Binds `ctx` imperatively (for frameworks without a scope), when the provider supports it.
    fn enter(&self, ctx: Context) -> Result<(), Error> {
        let _ = ctx;
        Err(Error::new(
            ErrorKind::Config,
            "this context provider binds contexts only through scope() / run_with_context",
        ))
    }
}

/// The error returned when a session operation runs without a bound context.
pub(crate) fn no_context() -> Error {
    Error::new(
        ErrorKind::NoContext,
        "no request context is bound: wrap the work in run_with_context(ctx, future), pass \
         .context(ctx) on the request, or install the framework adapter's layer",
    )
}

/// The operation a dynamic header is resolved for (`resolve_headers(ctx, operation)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// An API request.
    Request,
    /// A login call.
    Login,
    /// A refresh call.
    Refresh,
    /// A logout call.
    Logout,
}

/// Computes extra headers from the context for an operation.
pub(crate) type HeaderResolver = Arc<dyn Fn(Option<&Context>, Operation) -> HeaderMap + Send + Sync>;

type GetFn = Arc<dyn Fn() -> Option<Context> + Send + Sync>;
type SetFn = Arc<dyn Fn(Context) + Send + Sync>;
type RunFn = Arc<dyn for<'a> Fn(Context, BoxFuture<'a, ()>) -> BoxFuture<'a, ()> + Send + Sync>;

/// A provider made of your framework's own functions to get the current context, set it,
/// and run work inside one. The three are given together, so
/// reading, binding and scoping always agree.
#[derive(Clone)]
pub struct FnContextProvider {
    get: GetFn,
    set: SetFn,
    run: RunFn,
}

impl fmt::Debug for FnContextProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnContextProvider")
    }
}

impl FnContextProvider {
    /// A provider from `get` (the current context), `set` (bind one imperatively) and `run`
    /// (run a future with one bound).
    pub fn new<G, S, R>(get: G, set: S, run: R) -> Self
    where
        G: Fn() -> Option<Context> + Send + Sync + 'static,
        S: Fn(Context) + Send + Sync + 'static,
        R: for<'a> Fn(Context, BoxFuture<'a, ()>) -> BoxFuture<'a, ()> + Send + Sync + 'static,
    {
        Self {
            get: Arc::new(get),
            set: Arc::new(set),
            run: Arc::new(run),
        }
    }
}

impl ContextProvider for FnContextProvider {
    fn current(&self) -> Option<Context> {
        (self.get)()
    }

    fn scope<'a>(&self, ctx: Context, future: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        (self.run)(ctx, future)
    }

    fn enter(&self, ctx: Context) -> Result<(), Error> {
        (self.set)(ctx);
        Ok(())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// The built-in provider: the context bound by [`run_with_context`] for the future being polled.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskContextProvider;

impl ContextProvider for TaskContextProvider {
    fn current(&self) -> Option<Context> {
        current_context()
    }
}

/// The context bound by the innermost [`run_with_context`] being polled on this thread.
pub(crate) fn current_context() -> Option<Context> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `future` with `ctx` as the current context: every poll of `future` (and of what it
/// awaits inline) sees `ctx` through the task-scoped context provider
/// ([`TaskContextProvider`]). Tasks spawned from inside do not inherit it — wrap them too.
pub fn run_with_context<F: Future>(ctx: Context, future: F) -> impl Future<Output = F::Output> {
    WithContext {
        ctx: Some(ctx),
        future,
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`run_with_context`].
    pub(crate) struct WithContext<F> {
        // Lent to the thread-local while the future is polled (moved, not cloned).
        ctx: Option<Context>,
        #[pin]
        future: F,
    }
}

impl<F> fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithContext")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// Takes the lent context back and restores the previous one, even if the inner poll panics.
struct Restore<'a> {
    lent: &'a mut Option<Context>,
    previous: Option<Context>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        *self.lent = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let previous = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), this.ctx.take()));
        let _restore = Restore {
            lent: this.ctx,
            previous,
        };
        this.future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    /// Finding a cookie when asked gives what parsing the whole header with the cookie crate
    /// gave (the last well-formed pair of a name wins; names and values percent-decoded).
    #[test]
    fn lazy_cookie_lookup_matches_the_cookie_crate() {
        let headers = [
            "a=1; b=2",
            "a=1;b=2;a=3",
            " a = 1 ; b=",
            "a=%41%42; %62=x",
            "a=\"quoted\"; b=with space",
            "a=%FF; a=ok",
            "=nameless; a=1; novalue; b=2=3",
            "access_token=tok; refresh_token=r; access_expires_at=99",
            "",
            ";;;",
            "a=1; a=%E2%9C%93",
            "\u{a0}a=\u{2003}x\u{a0}; b= \t2\u{3000}",
            "a=caf\u{e9}; \u{e9}=1",
        ];
        for header in headers {
            let mut jar = CookieJar::new();
            for cookie in Cookie::split_parse_encoded(header.to_owned()).flatten() {
                jar.add_original(cookie);
            }
            let ctx = Context::from_cookie_header(header);
            for name in [
                "a",
                "b",
                "access_token",
                "refresh_token",
                "access_expires_at",
                "c",
                "",
            ] {
                let expected = jar.get(name).map(|c| c.value().to_owned());
                assert_eq!(ctx.cookie(name), expected, "{header:?} / {name:?}");
            }
        }
    }

    use super::*;

    proptest::proptest! {
        /// The one-pass index finds the same pairs as splitting and trimming.
        #[test]
        fn the_cookie_index_finds_the_plain_pairs(header in "[a-c=;% \t\r\u{b}\u{0}\u{1}\u{a0}\u{2003}\u{e9}]{0,80}") {
            let mut indexed: Vec<(&str, &str)> = Vec::new();
            for_each_pair(&header, |pair| {
                assert_eq!(pair.escaped_name, pair.name.contains('%'));
                assert_eq!(pair.escaped_value, pair.value.contains('%'));
                indexed.push((pair.name, pair.value));
            });
            let plain: Vec<(&str, &str)> = cookie_pairs(&header).filter(|(name, _)| !name.is_empty()).collect();
            proptest::prop_assert_eq!(indexed, plain);
        }
    }

    proptest::proptest! {
        /// The word-at-a-time search agrees with a byte loop, from any start, for names
        /// (`=` or `;`) and values (`;`), short and long (the vectorized rest). `$`, `<` and
        /// `:` are one bit away from `%`, `=` and `;`: the bytes the zero-byte test can mark
        /// falsely.
        #[test]
        fn the_stop_search_agrees_with_a_byte_loop(
            text in "[a$<:%=;\u{0}\u{1}\u{e9}]{0,12}[a$<:%\u{1}]{0,60}[a$<:%=;\u{0}\u{1}]{0,12}",
            start in 0usize..90,
            name in proptest::bool::ANY,
        ) {
            let bytes = text.as_bytes();
            let start = start.min(bytes.len());
            let stop = if name { [b'=', b';'] } else { [b';', b';'] };
            let end = bytes[start..]
                .iter()
                .position(|b| stop.contains(b))
                .map_or(bytes.len(), |i| start + i);
            let expected = (end, bytes[start..end].contains(&b'%'));
            proptest::prop_assert_eq!(find_stop(bytes, start, stop), expected);
        }
    }

    #[test]
    fn cookies_in_and_delta_out() {
        let ctx = Context::from_cookie_header("a=1; b=two; junk; c=");
        assert_eq!(ctx.cookie("a").as_deref(), Some("1"));
        assert_eq!(ctx.cookie("b").as_deref(), Some("two"));
        assert!(ctx.set_cookie_headers().is_empty(), "reading changes nothing");
        ctx.set_cookie(Cookie::build(("a", "9")).path("/").build());
        ctx.remove_cookie(Cookie::build("b").path("/").build());
        assert_eq!(ctx.cookie("a").as_deref(), Some("9"));
        assert_eq!(ctx.cookie("b"), None);
        let mut headers: Vec<String> = ctx
            .set_cookie_headers()
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        headers.sort();
        assert_eq!(headers.len(), 2);
        assert!(headers[0].starts_with("a=9; Path=/"), "{headers:?}");
        assert!(
            headers[1].starts_with("b=; Path=/") && headers[1].contains("Max-Age=0"),
            "{headers:?}"
        );
    }

    #[test]
    fn cookie_values_are_percent_encoded_out_and_decoded_in() {
        let ctx = Context::new();
        ctx.set_cookie(Cookie::build(("t", "a;b,c\"d=")).path("/").build());
        let header = ctx.set_cookie_headers()[0].to_str().unwrap().to_owned();
        let pair = header.split(';').next().unwrap().to_owned();
        assert!(
            !pair[2..].contains(';') && !pair.contains(',') && !pair.contains('"'),
            "{header}"
        );
        let back = Context::from_cookie_header(&pair);
        assert_eq!(back.cookie("t").as_deref(), Some("a;b,c\"d="));
    }

    #[test]
    fn cookies_from_several_headers() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        let ctx = Context::from_headers(&headers);
        assert_eq!(
            (ctx.cookie("a").as_deref(), ctx.cookie("b").as_deref()),
            (Some("1"), Some("2"))
        );
        // One header is shared, and read like the same text given directly.
        let mut one = HeaderMap::new();
        one.insert(COOKIE, HeaderValue::from_static(" a = %41 ;b=2; a=3"));
        let shared = Context::from_headers(&one);
        let text = Context::from_cookie_header(" a = %41 ;b=2; a=3");
        for name in ["a", "b", "c"] {
            assert_eq!(shared.cookie(name), text.cookie(name), "{name}");
        }
        assert_eq!(shared.cookie("a").as_deref(), Some("3"));
        // UTF-8 is read; a header that is not UTF-8 holds no cookies, one header or several.
        let mut utf8 = HeaderMap::new();
        utf8.insert(COOKIE, HeaderValue::from_bytes("a=caf\u{e9}".as_bytes()).unwrap());
        assert_eq!(
            Context::from_headers(&utf8).cookie("a").as_deref(),
            Some("caf\u{e9}")
        );
        utf8.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(
            Context::from_headers(&utf8).cookie("a").as_deref(),
            Some("caf\u{e9}")
        );
        let odd = HeaderValue::from_bytes(b"a=caf\xe9").unwrap();
        let mut alone = HeaderMap::new();
        alone.insert(COOKIE, odd.clone());
        assert_eq!(Context::from_headers(&alone).cookie("a"), None);
        alone.append(COOKIE, HeaderValue::from_static("b=2"));
        let joined = Context::from_headers(&alone);
        assert_eq!(
            (joined.cookie("a"), joined.cookie("b").as_deref()),
            (None, Some("2"))
        );
    }

    #[test]
    fn fn_provider_uses_the_three_functions() {
        use std::sync::Mutex as M;
        let slot: Arc<M<Option<Context>>> = Arc::default();
        let (g, s) = (Arc::clone(&slot), Arc::clone(&slot));
        let provider = FnContextProvider::new(
            move || g.lock().unwrap().clone(),
            move |ctx| *s.lock().unwrap() = Some(ctx),
            |ctx, fut| Box::pin(run_with_context(ctx, fut)),
        );
        assert!(provider.current().is_none());
        let ctx = Context::new();
        provider.enter(ctx.clone()).unwrap();
        assert!(provider.current().unwrap().id() == ctx.id());
        let inner = Context::new();
        let seen = Arc::new(M::new(None));
        let seen2 = Arc::clone(&seen);
        futures_executor::block_on(provider.scope(
            inner.clone(),
            Box::pin(async move { *seen2.lock().unwrap() = current_context() }),
        ));
        assert!(seen.lock().unwrap().as_ref().unwrap().id() == inner.id());
        assert!(TaskContextProvider.enter(Context::new()).is_err());
    }

    #[test]
    fn context_is_current_only_inside_run() {
        assert!(current_context().is_none());
        let ctx = Context::new();
        ctx.insert(42u32);
        let seen = futures_executor::block_on(run_with_context(ctx.clone(), async {
            let inner = current_context().expect("bound");
            inner.get::<u32>()
        }));
        assert_eq!(seen, Some(42));
        assert!(current_context().is_none());
    }

    #[test]
    fn nested_contexts_restore_the_outer_one() {
        let outer = Context::new();
        let inner = Context::new();
        let (a, b, c) = futures_executor::block_on(run_with_context(outer.clone(), async {
            let a = current_context().unwrap();
            let b = run_with_context(inner.clone(), async { current_context().unwrap() }).await;
            let c = current_context().unwrap();
            (a, b, c)
        }));
        assert!(a.id() == outer.id() && b.id() == inner.id() && c.id() == outer.id());
    }

    #[test]
    fn interleaved_tasks_see_their_own_context() {
        use futures_util::future::join_all;
        let contexts: Vec<Context> = (0..8).map(|_| Context::new()).collect();
        let futures = contexts.iter().enumerate().map(|(i, ctx)| {
            ctx.insert(i);
            run_with_context(ctx.clone(), async move {
                let mut seen = Vec::new();
                for _ in 0..3 {
                    seen.push(current_context().unwrap().get::<usize>().unwrap());
                    yield_now().await;
                }
                (i, seen)
            })
        });
        for (i, seen) in futures_executor::block_on(join_all(futures)) {
            assert_eq!(seen, vec![i; 3]);
        }
    }

    async fn yield_now() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }
}
