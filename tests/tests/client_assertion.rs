//! Client authentication by assertion (RFC 7523) against the test server's token endpoint,
//! which verifies each assertion's signature (registered public keys, or the client secret
//! for HS256), `iss`/`sub`/`aud`/`exp`, and refuses a `jti` it has seen.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use tokenkit_core::testing::ManualClock;
use tokenkit_core::{
    AssertionFile, AssertionSource, Client, ClientAuth, Clock, OAuth2Config, OutageConfig, SigningAlgorithm,
    SigningKey,
};
use tokenkit_tests::{AuthServer, DiscoveryDoc, Fault};

const TOKEN_PATH: &str = "/oauth2/token";
const CLIENT: &str = "jwt-client";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(der: &[u8]) -> Vec<u8> {
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
    .into_bytes()
}

/// A generated key of each type: (signing key, public JWK for the server).
fn keys() -> Vec<(&'static str, SigningKey, String)> {
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let public = ec.public_key().as_ref();
    let ec_public = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "ec-1",
        "x": b64url(&public[1..33]), "y": b64url(&public[33..])});
    let ec_key = SigningKey::from_pem(SigningAlgorithm::Es256, &pem(ec.to_pkcs8v1().unwrap().as_ref()))
        .unwrap()
        .key_id("ec-1");
    let ed = Ed25519KeyPair::generate().unwrap();
    let ed_public = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "ed-1",
        "x": b64url(ed.public_key().as_ref())});
    let ed_key = SigningKey::from_pem(SigningAlgorithm::EdDsa, &pem(ed.to_pkcs8().unwrap().as_ref()))
        .unwrap()
        .key_id("ed-1");
    let rsa_pem = include_bytes!("../keys/rsa-private.pem");
    let rsa_public = include_str!("../keys/rsa-public.jwk.json");
    let rsa_from_pem = SigningKey::from_pem(SigningAlgorithm::Rs256, rsa_pem)
        .unwrap()
        .key_id("rsa-1");
    let rsa_from_jwk = SigningKey::from_jwk(include_str!("../keys/rsa-private.jwk.json")).unwrap();
    vec![
        ("RS256 from PEM", rsa_from_pem, rsa_public.to_owned()),
        ("RS256 from a JWK", rsa_from_jwk, rsa_public.to_owned()),
        ("ES256", ec_key, ec_public.to_string()),
        ("EdDSA", ed_key, ed_public.to_string()),
    ]
}

async fn server(clock: &ManualClock) -> AuthServer {
    AuthServer::start_with_clock(Arc::new(clock.clone()))
        .await
        .unwrap()
}

fn client(server: &AuthServer, clock: &ManualClock, config: OAuth2Config) -> Client {
    tokenkit_reqwest::builder(server.url())
        .clock(clock.clone())
        .oauth2_client_credentials(config.retry_delay(Duration::from_millis(1)))
        .outage(OutageConfig::disabled())
        .build()
        .unwrap()
}

fn token_id(client_response: Value) -> u64 {
    client_response["token_id"].as_u64().unwrap()
}

#[tokio::test]
async fn private_key_jwt_with_each_key_type_authenticates_with_a_fresh_assertion_each_time() {
    for (name, key, public) in keys() {
        let clock = ManualClock::default();
        let server = server(&clock).await;
        server.register_client_key(CLIENT, &public);
        let config = OAuth2Config::new(server.oauth_token_url(), CLIENT).private_key_jwt(key);
        let api = client(&server, &clock, config);
        for round in 0..3 {
            let body = api.get("/api/me").send::<Value>().await.unwrap().data;
            assert_eq!(body["user"], format!("client:{CLIENT}"), "{name}");
            assert!(token_id(body) > 0);
            clock.advance(Duration::from_secs(7200));
            let _ = round;
        }
        let jtis = server.assertion_jtis();
        assert_eq!(jtis.len(), 3, "{name}: one assertion per token request");
        let unique: std::collections::HashSet<_> = jtis.iter().collect();
        assert_eq!(unique.len(), 3, "{name}: never the same jti twice");
    }
}

#[tokio::test]
async fn a_retried_token_request_carries_a_newly_minted_assertion() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let (_, key, public) = keys().remove(2);
    server.register_client_key(CLIENT, &public);
    let config = OAuth2Config::new(server.oauth_token_url(), CLIENT)
        .private_key_jwt(key)
        .attempts(2);
    let api = client(&server, &clock, config);
    server.fail_next_token_requests(1, Fault::Status(500));
    api.get("/api/me").send::<Value>().await.unwrap();
    // The failed attempt's assertion never reached the verifier (the fault answered first);
    // the retry's did, and was accepted: had it been the same assertion, a provider that
    // had seen it would refuse it.
    assert_eq!(server.count(TOKEN_PATH), 2);
    let sent: Vec<String> = server
        .log()
        .into_iter()
        .filter(|r| r.path == TOKEN_PATH)
        .map(|r| r.body_fields()["client_assertion"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0], sent[1], "the retry re-minted the assertion");
}

/// An assertion source that always returns the same assertion (as a buggy signer would).
#[derive(Debug)]
struct Fixed(String);

#[tokenkit_core::async_trait]
impl AssertionSource for Fixed {
    async fn assertion(&self, _token_endpoint: &str) -> Result<String, tokenkit_core::Error> {
        Ok(self.0.clone())
    }
}

/// An assertion minted by hand with the ES256 key, for `aud`.
fn hand_minted(key_der: &[u8], aud: &str, jti: &str, now: u64) -> String {
    let claims = json!({"iss": CLIENT, "sub": CLIENT, "aud": aud, "jti": jti, "iat": now, "exp": now + 300});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec-1".to_owned());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(key_der)).unwrap()
}

#[tokio::test]
async fn a_replayed_assertion_is_refused_and_an_assertion_file_is_reread() {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let der = ec.to_pkcs8v1().unwrap();
    let public = ec.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "ec-1",
        "x": b64url(&public[1..33]), "y": b64url(&public[33..])});
    server.register_client_key(CLIENT, &jwk.to_string());
    let now = clock.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let aud = server.oauth_token_url();

    // A source that replays: the provider refuses the second use.
    let fixed = Fixed(hand_minted(der.as_ref(), &aud, "same-jti", now));
    let api = client(
        &server,
        &clock,
        OAuth2Config::new(&aud, CLIENT).client_assertion(fixed),
    );
    api.get("/api/me").send::<Value>().await.unwrap();
    clock.advance(Duration::from_secs(7200));
    let err = api.get("/api/me").send::<Value>().await.unwrap_err();
    assert!(err.is_invalid_client(), "a replayed assertion is refused: {err}");

    // A file rotated by someone else: read again for every token request.
    let dir = std::env::temp_dir().join(format!("tokenkit-sa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    let now = clock.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    std::fs::write(&path, hand_minted(der.as_ref(), &aud, "file-1", now) + "\n").unwrap();
    let api = client(
        &server,
        &clock,
        OAuth2Config::new(&aud, CLIENT).client_assertion(AssertionFile::new(&path)),
    );
    api.get("/api/me").send::<Value>().await.unwrap();
    clock.advance(Duration::from_secs(7200));
    let now = clock.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    std::fs::write(&path, hand_minted(der.as_ref(), &aud, "file-2", now)).unwrap();
    api.get("/api/me").send::<Value>().await.unwrap();
    let jtis = server.assertion_jtis();
    assert_eq!(
        &jtis[jtis.len() - 2..],
        ["file-1", "file-2"],
        "the rotated file was read"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn client_secret_jwt_and_a_wrong_key_and_discovery() {
    let clock = ManualClock::default();
    let server = server(&clock).await;
    let config = OAuth2Config::new(server.oauth_token_url(), "client-1")
        .client_secret("secret-1")
        .client_secret_jwt();
    let api = client(&server, &clock, config);
    let body = api.get("/api/me").send::<Value>().await.unwrap().data;
    assert_eq!(body["user"], "client:client-1");
    let body = server
        .log()
        .into_iter()
        .find(|r| r.path == TOKEN_PATH)
        .unwrap()
        .body;
    let form = String::from_utf8_lossy(&body);
    assert!(
        !form.contains("client_secret="),
        "the secret itself is never sent: {form}"
    );
    assert!(form.contains("client_assertion_type=urn"), "{form}");

    // The wrong secret: invalid_client, typed.
    let config = OAuth2Config::new(server.oauth_token_url(), "client-1")
        .client_secret("wrong")
        .client_secret_jwt();
    let err = client(&server, &clock, config)
        .get("/api/me")
        .send::<Value>()
        .await
        .unwrap_err();
    assert!(err.is_invalid_client(), "{err}");
    assert!(
        !format!("{err} {err:?}").contains("eyJ"),
        "no assertion in the error: {err:?}"
    );

    // A key the server does not know: invalid_client.
    let (_, key, _) = keys().remove(3);
    let config = OAuth2Config::new(server.oauth_token_url(), "unregistered").private_key_jwt(key);
    let err = client(&server, &clock, config)
        .get("/api/me")
        .send::<Value>()
        .await
        .unwrap_err();
    assert!(err.is_invalid_client(), "{err}");

    // A provider that lists only client_secret_jwt: chosen from the metadata.
    server.set_discovery(DiscoveryDoc {
        auth_methods: vec![ClientAuth::SecretJwt.as_str().to_owned()],
        ..DiscoveryDoc::new()
    });
    let config = OAuth2Config::from_issuer(server.url(), "client-1").client_secret("secret-1");
    let before = server.assertion_jtis().len();
    client(&server, &clock, config)
        .get("/api/me")
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(
        server.assertion_jtis().len(),
        before + 1,
        "authenticated by assertion"
    );
}
