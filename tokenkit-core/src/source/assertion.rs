//! Client authentication by assertion (RFC 7523 §2.2, OpenID Connect Core §9):
//! `private_key_jwt` with the client's own key, `client_secret_jwt` with its secret, or an
//! assertion from elsewhere (a workload identity token file). Every token request carries a
//! freshly minted assertion: a new `jti`, `iat` now, `exp` a minute later, `aud` the token
//! endpoint — a retried request is minted again, never replayed.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::error::Error;

/// How long a minted assertion is valid.
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// The signature algorithm of a [`SigningKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

impl SigningAlgorithm {
    pub(crate) fn jws(self) -> Algorithm {
        match self {
            SigningAlgorithm::Rs256 => Algorithm::RS256,
            SigningAlgorithm::Ps256 => Algorithm::PS256,
            SigningAlgorithm::Es256 => Algorithm::ES256,
            SigningAlgorithm::Es384 => Algorithm::ES384,
            SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => SigningAlgorithm::Rs256,
            "PS256" => SigningAlgorithm::Ps256,
            "ES256" => SigningAlgorithm::Es256,
            "ES384" => SigningAlgorithm::Es384,
            "EdDSA" | "Ed25519" => SigningAlgorithm::EdDsa,
            _ => return None,
        })
    }
}

/// A private key that signs client assertions (`private_key_jwt`): RSA (RS256, PS256), EC
/// (ES256, ES384) or Ed25519 (EdDSA), from PEM or from a private JWK. `Debug` never shows
/// the key.
///
/// ```
/// # fn demo(pem: &[u8]) -> Result<(), tokenkit_core::Error> {
/// use tokenkit_core::{OAuth2Config, SigningAlgorithm, SigningKey};
/// let key = SigningKey::from_pem(SigningAlgorithm::Es256, pem)?.key_id("2026-11");
/// let config = OAuth2Config::from_issuer("https://id.example.com", "svc").private_key_jwt(key);
/// # let _ = config; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SigningKey {
    algorithm: SigningAlgorithm,
    key: Arc<EncodingKey>,
    kid: Option<String>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn key_error(what: &str) -> Error {
    Error::config(format!("the signing key could not be read: {what}"))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(field: &str, value: Option<&serde_json::Value>) -> Result<Vec<u8>, Error> {
    let text = value
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| key_error(&format!("the JWK has no `{field}`")))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| key_error(&format!("the JWK's `{field}` is not base64url")))
}

impl SigningKey {
    /// A key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`) for every algorithm, or PKCS#1 (`BEGIN
    /// RSA PRIVATE KEY`) for RSA.
    pub fn from_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Result<Self, Error> {
        let key = match algorithm {
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => EncodingKey::from_rsa_pem(pem),
            SigningAlgorithm::Es256 | SigningAlgorithm::Es384 => EncodingKey::from_ec_pem(pem),
            SigningAlgorithm::EdDsa => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|_| key_error("not a PEM private key of that type"))?;
        let key = Self {
            algorithm,
            key: Arc::new(key),
            kid: None,
        };
        key.check()?;
        Ok(key)
    }

    /// A key from a private JWK (RFC 7517): `kty` `RSA` (with `n`, `e`, `d`, `p`, `q`, `dp`,
    /// `dq`, `qi`), `EC` on P-256 or P-384 (`d`, `x`, `y`), or `OKP` Ed25519 (`d`, `x`). The
    /// algorithm is the JWK's `alg`, else RS256, ES256/ES384 or EdDSA by key type; its `kid`
    /// is kept.
    pub fn from_jwk(jwk: &str) -> Result<Self, Error> {
        let value: serde_json::Value =
            serde_json::from_str(jwk).map_err(|_| key_error("the JWK is not JSON"))?;
        let field = |name: &str| value.get(name);
        let text = |name: &str| field(name).and_then(serde_json::Value::as_str);
        let named = text("alg").map(|alg| {
            SigningAlgorithm::from_name(alg).ok_or_else(|| key_error(&format!("unsupported alg {alg:?}")))
        });
        let (algorithm, key) = match (text("kty"), text("crv")) {
            (Some("RSA"), _) => {
                let algorithm = named.transpose()?.unwrap_or(SigningAlgorithm::Rs256);
                let parts = ["n", "e", "d", "p", "q", "dp", "dq", "qi"]
                    .iter()
                    .map(|name| b64url_decode(name, field(name)))
                    .collect::<Result<Vec<_>, _>>()?;
                (algorithm, EncodingKey::from_rsa_der(&pkcs1_der(&parts)))
            }
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                let (default, signing) = if crv == "P-256" {
                    (
                        SigningAlgorithm::Es256,
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    )
                } else {
                    (
                        SigningAlgorithm::Es384,
                        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    )
                };
                let algorithm = named.transpose()?.unwrap_or(default);
                let d = b64url_decode("d", field("d"))?;
                let mut public = vec![0x04];
                public.extend(b64url_decode("x", field("x"))?);
                public.extend(b64url_decode("y", field("y"))?);
                let pair =
                    aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(signing, &d, &public)
                        .map_err(|_| key_error("the EC key's parts do not form a key pair"))?;
                let pkcs8 = pair
                    .to_pkcs8v1()
                    .map_err(|_| key_error("the EC key could not be encoded"))?;
                (algorithm, EncodingKey::from_ec_der(pkcs8.as_ref()))
            }
            (Some("OKP"), Some("Ed25519")) => {
                let algorithm = named.transpose()?.unwrap_or(SigningAlgorithm::EdDsa);
                let d = b64url_decode("d", field("d"))?;
                let x = b64url_decode("x", field("x"))?;
                let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(&d, &x)
                    .map_err(|_| key_error("the Ed25519 key's parts do not form a key pair"))?;
                let pkcs8 = pair
                    .to_pkcs8v1()
                    .map_err(|_| key_error("the Ed25519 key could not be encoded"))?;
                (algorithm, EncodingKey::from_ed_der(pkcs8.as_ref()))
            }
            _ => {
                return Err(key_error(
                    "unsupported key type (RSA, EC P-256/P-384, OKP Ed25519)",
                ))
            }
        };
        let key = Self {
            algorithm,
            key: Arc::new(key),
            kid: text("kid").map(str::to_owned),
        };
        key.check()?;
        Ok(key)
    }

    /// Sets the key id (`kid` header), so the provider picks the right registered key.
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// Signs once, so a key of the wrong type for its algorithm fails when it is read, not
    /// at the first token request.
    fn check(&self) -> Result<(), Error> {
        self.sign(Header::new(self.algorithm.jws()), &serde_json::json!({}))
            .map(|_| ())
            .map_err(|_| key_error("the key does not sign with its algorithm"))
    }

    /// A compact JWS of `claims` with `header` (its `alg` and `kid` set from the key).
    pub(crate) fn sign(&self, mut header: Header, claims: &impl Serialize) -> Result<String, Error> {
        header.alg = self.algorithm.jws();
        if header.kid.is_none() {
            header.kid = self.kid.clone();
        }
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| {
            Error::config(format!(
                "the client assertion could not be signed: {}",
                e.kind_name()
            ))
        })
    }
}

/// A short name of a jsonwebtoken error kind, for messages (never key material).
trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::InvalidEcdsaKey => "invalid ECDSA key",
            K::InvalidRsaKey(_) => "invalid RSA key",
            K::InvalidKeyFormat => "invalid key format",
            K::InvalidAlgorithm => "algorithm and key do not match",
            _ => "signing failed",
        }
    }
}

/// DER of an RSA private key in PKCS#1 form from its eight big-endian parts (n, e, d, p, q,
/// dp, dq, qi): a SEQUENCE of INTEGERs after version 0.
fn pkcs1_der(parts: &[Vec<u8>]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend(&bytes[skip..]);
        }
    }
    fn integer(out: &mut Vec<u8>, value: &[u8]) {
        let trimmed: &[u8] = {
            let skip = value.iter().take_while(|b| **b == 0).count();
            &value[skip.min(value.len().saturating_sub(1))..]
        };
        let pad = trimmed.first().is_some_and(|b| b & 0x80 != 0) || trimmed.is_empty();
        out.push(0x02);
        length(out, trimmed.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend(trimmed);
    }
    let mut body = Vec::new();
    integer(&mut body, &[0]);
    for part in parts {
        integer(&mut body, part);
    }
    let mut der = vec![0x30];
    length(&mut der, body.len());
    der.extend(body);
    der
}

/// Where client assertions come from when the client does not mint them itself: a workload
/// identity (a Kubernetes service-account token, a cloud's federated token) or your own
/// signer. Called for every token request; return a current assertion.
#[async_trait]
pub trait AssertionSource: Send + Sync + fmt::Debug {
    /// A JWT assertion for a request to `token_endpoint`.
    async fn assertion(&self, token_endpoint: &str) -> Result<String, Error>;
}

/// An assertion kept in a file and rotated by someone else (a Kubernetes projected
/// service-account token, say): read again for every token request, so a rotated token is
/// used as soon as it is written.
#[derive(Debug, Clone)]
pub struct AssertionFile {
    path: PathBuf,
}

impl AssertionFile {
    /// The assertion in the file at `path` (surrounding whitespace ignored).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

/// The largest assertion file read (a JWT of a few kilobytes; anything far larger is not one).
const MAX_ASSERTION_FILE: u64 = 64 * 1024;

#[async_trait]
impl AssertionSource for AssertionFile {
    async fn assertion(&self, _token_endpoint: &str) -> Result<String, Error> {
        use std::io::Read;
        let unreadable = |e: std::io::Error| {
            Error::config(format!(
                "the client assertion file {} could not be read",
                self.path.display()
            ))
            .with_source(e)
        };
        // A small local file read once per token request: not worth a thread hop.
        let file = std::fs::File::open(&self.path).map_err(unreadable)?;
        let mut text = String::new();
        file.take(MAX_ASSERTION_FILE + 1)
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        if text.len() as u64 > MAX_ASSERTION_FILE {
            return Err(Error::config(format!(
                "the client assertion file {} is larger than {MAX_ASSERTION_FILE} bytes",
                self.path.display()
            )));
        }
        let assertion = text.trim();
        if assertion.is_empty() || assertion.bytes().any(|b| b.is_ascii_control()) {
            return Err(Error::config(format!(
                "the client assertion file {} holds no assertion",
                self.path.display()
            )));
        }
        Ok(assertion.to_owned())
    }
}

/// The claims of a client assertion (RFC 7523 §3).
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

/// A fresh `jti`: 128 random bits.
fn jti() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::config(format!("no randomness for a jti: {e}")))?;
    Ok(b64url(&bytes))
}

/// Mints an assertion for `client_id` to `audience` at `now`, signed with `key` or, for
/// `client_secret_jwt`, HS256 with `secret`.
pub(crate) fn mint(
    signer: Signer<'_>,
    client_id: &str,
    audience: &str,
    now: SystemTime,
) -> Result<String, Error> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::config("the clock is before 1970"))?
        .as_secs();
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        jti: jti()?,
        iat,
        exp: iat.saturating_add(ASSERTION_LIFETIME.as_secs()),
    };
    match signer {
        Signer::Key(key) => key.sign(Header::default(), &claims),
        Signer::Secret(secret) => jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| {
            Error::config(format!(
                "the client assertion could not be signed: {}",
                e.kind_name()
            ))
        }),
    }
}

/// What signs a minted assertion.
#[derive(Clone, Copy)]
pub(crate) enum Signer<'a> {
    Key(&'a SigningKey),
    Secret(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsBigEndian;
    use jsonwebtoken::{DecodingKey, Validation};

    /// An instant in 2100: the verifier checks `exp` against the real clock.
    fn later() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(4_102_444_800)
    }

    fn es256_pem() -> (Vec<u8>, aws_lc_rs::signature::EcdsaKeyPair) {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        (pem.into_bytes(), pair)
    }

    fn verify(token: &str, key: &DecodingKey, alg: Algorithm) -> serde_json::Value {
        let mut validation = Validation::new(alg);
        validation.set_audience(&["https://id.example/token"]);
        validation.set_issuer(&["svc"]);
        jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn assertions_are_fresh_and_verifiable() {
        use aws_lc_rs::signature::KeyPair;
        let (pem, pair) = es256_pem();
        let key = SigningKey::from_pem(SigningAlgorithm::Es256, &pem)
            .unwrap()
            .key_id("k1");
        let now = later();
        let a = mint(Signer::Key(&key), "svc", "https://id.example/token", now).unwrap();
        let b = mint(Signer::Key(&key), "svc", "https://id.example/token", now).unwrap();
        let public = pair.public_key().as_ref();
        let decoding =
            DecodingKey::from_ec_components(&b64url(&public[1..33]), &b64url(&public[33..])).unwrap();
        let (ca, cb) = (
            verify(&a, &decoding, Algorithm::ES256),
            verify(&b, &decoding, Algorithm::ES256),
        );
        assert_ne!(ca["jti"], cb["jti"], "a fresh jti every time");
        assert_eq!(ca["sub"], "svc");
        assert_eq!(
            ca["exp"].as_u64().unwrap() - ca["iat"].as_u64().unwrap(),
            ASSERTION_LIFETIME.as_secs()
        );
        assert_eq!(
            jsonwebtoken::decode_header(&a).unwrap().kid.as_deref(),
            Some("k1")
        );
        assert!(
            !format!("{key:?}").contains("PRIVATE"),
            "Debug shows no key material"
        );

        let secret = mint(Signer::Secret("s3cr3t"), "svc", "https://id.example/token", now).unwrap();
        verify(&secret, &DecodingKey::from_secret(b"s3cr3t"), Algorithm::HS256);
    }

    #[test]
    fn jwk_private_keys_of_each_type_sign() {
        use aws_lc_rs::signature::KeyPair;
        // EC: from the parts of a generated key.
        let (_, pair) = es256_pem();
        let der = pair.to_pkcs8v1().unwrap();
        let private = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.as_ref(),
        )
        .unwrap();
        let d = private.private_key().as_be_bytes().unwrap();
        let public = pair.public_key().as_ref();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec-1",
            "d": b64url(d.as_ref()), "x": b64url(&public[1..33]), "y": b64url(&public[33..])});
        let key = SigningKey::from_jwk(&jwk.to_string()).unwrap();
        assert_eq!(
            (key.algorithm(), key.kid.as_deref()),
            (SigningAlgorithm::Es256, Some("ec-1"))
        );
        let token = mint(Signer::Key(&key), "svc", "https://id.example/token", later()).unwrap();
        let decoding =
            DecodingKey::from_ec_components(&b64url(&public[1..33]), &b64url(&public[33..])).unwrap();
        verify(&token, &decoding, Algorithm::ES256);

        // Ed25519.
        let ed = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        let seed = ed.seed().unwrap();
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "d": b64url(seed.as_be_bytes().unwrap().as_ref()), "x": b64url(ed.public_key().as_ref())});
        let key = SigningKey::from_jwk(&jwk.to_string()).unwrap();
        assert_eq!(key.algorithm(), SigningAlgorithm::EdDsa);
        let token = mint(Signer::Key(&key), "svc", "https://id.example/token", later()).unwrap();
        let decoding = DecodingKey::from_ed_components(&b64url(ed.public_key().as_ref())).unwrap();
        verify(&token, &decoding, Algorithm::EdDSA);
    }

    #[test]
    fn bad_keys_are_typed_errors() {
        for jwk in [
            "not json",
            r#"{"kty":"EC","crv":"P-256","d":"AA","x":"AA","y":"AA"}"#,
            r#"{"kty":"EC","crv":"P-521"}"#,
            r#"{"kty":"oct","k":"c2VjcmV0"}"#,
            r#"{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQ","p":"AQ","q":"AQ","dp":"AQ","dq":"AQ","qi":"AQ"}"#,
            r#"{"kty":"RSA","n":"!!"}"#,
            r#"{"kty":"OKP","crv":"Ed25519","d":"AA","x":"AA"}"#,
            r#"{"kty":"EC","crv":"P-256","alg":"none","d":"AA","x":"AA","y":"AA"}"#,
        ] {
            let err = SigningKey::from_jwk(jwk).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{jwk}");
        }
        let (pem, _) = es256_pem();
        assert!(
            SigningKey::from_pem(SigningAlgorithm::Rs256, &pem).is_err(),
            "wrong type"
        );
        assert!(SigningKey::from_pem(SigningAlgorithm::Es256, b"garbage").is_err());
    }

    #[test]
    fn pkcs1_integers_are_minimal_and_positive() {
        let der = pkcs1_der(&[vec![0x00, 0x00, 0x81], vec![0x01]]);
        // SEQUENCE { INTEGER 0, INTEGER 0x0081 (padded: high bit), INTEGER 1 }
        assert_eq!(
            der,
            [0x30, 0x0a, 0x02, 0x01, 0x00, 0x02, 0x02, 0x00, 0x81, 0x02, 0x01, 0x01]
        );
        let long = pkcs1_der(&[vec![0x7f; 300]]);
        assert_eq!(&long[..4], [0x30, 0x82, 0x01, 0x33]);
    }

    #[test]
    fn an_assertion_file_is_read_every_time() {
        let dir = std::env::temp_dir().join(format!("tokenkit-assertion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let file = AssertionFile::new(&path);
        std::fs::write(&path, "first.jwt.value\n").unwrap();
        let read = |f: &AssertionFile| futures_executor::block_on(f.assertion("https://t"));
        assert_eq!(read(&file).unwrap(), "first.jwt.value");
        std::fs::write(&path, "second.jwt.value").unwrap();
        assert_eq!(
            read(&file).unwrap(),
            "second.jwt.value",
            "a rotated token is used"
        );
        std::fs::write(&path, "  \n").unwrap();
        assert!(read(&file).is_err());
        std::fs::write(&path, vec![b'a'; 70_000]).unwrap();
        assert!(read(&file).is_err(), "huge");
        std::fs::remove_file(&path).unwrap();
        assert!(read(&file).is_err(), "missing");
    }
}
