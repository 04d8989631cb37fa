//! Sealed values: the records tokenkit keeps outside the process (cookies, Redis), encrypted
//! and authenticated with keys that rotate.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The prefix of an encrypted value: `tk1.<key id>.<base64(nonce ‖ ciphertext)>`.
const VERSION: &str = "tk1";

/// Keys that encrypt and authenticate the records tokenkit keeps outside the process
/// (XChaCha20-Poly1305, a random 192-bit nonce per value): cookies
/// ([`CookieConfig::encrypted`](crate::CookieConfig::encrypted)) and Redis
/// (`tokenkit-redis`). New values are sealed with the current key; values sealed with an
/// older key stay readable while it is listed, so keys can rotate without logging anyone out.
/// Each value is bound to where it is kept (a cookie's name, a Redis key): moved elsewhere, it
/// no longer opens.
///
/// With encryption on, a value that is not sealed, is sealed with an unknown key, or was
/// tampered with reads as no record (logged), never as a panic.
///
/// ```
/// let keys = tokenkit_core::Encryption::new("2026-12", [7; 32])?;
/// let sealed = keys.seal("session", "{\"secret\":1}")?;
/// assert_eq!(keys.open("session", &sealed).as_deref(), Some("{\"secret\":1}"));
/// assert!(keys.open("elsewhere", &sealed).is_none());
/// # Ok::<(), tokenkit_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Encryption {
    current: Arc<(String, XChaCha20Poly1305)>,
    older: Arc<Vec<(String, XChaCha20Poly1305)>>,
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryption")
            .field("current_key", &self.current.0)
            .field(
                "older_keys",
                &self.older.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Encryption {
    /// Seals new values with `key`, named `id` (a short label stored beside each value, e.g.
    /// `"2026-11"`). `id` must not contain `.`.
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Result<Self, Error> {
        Ok(Self {
            current: Arc::new((checked_id(id.into())?, XChaCha20Poly1305::new(&key.into()))),
            older: Arc::new(Vec::new()),
        })
    }

    /// Also opens values sealed with an older `key` named `id`.
    pub fn with_old_key(mut self, id: impl Into<String>, key: [u8; 32]) -> Result<Self, Error> {
        let entry = (checked_id(id.into())?, XChaCha20Poly1305::new(&key.into()));
        Arc::make_mut(&mut self.older).push(entry);
        Ok(self)
    }

    /// Seals `plaintext`, kept under `bound_to` (a cookie name, a Redis key): the value opens
    /// only there. `tk1.<key id>.<base64 of nonce and ciphertext>`.
    pub fn seal(&self, bound_to: &str, plaintext: &str) -> Result<String, Error> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::new(ErrorKind::Store, format!("no randomness for a nonce: {e}")))?;
        let (id, cipher) = &*self.current;
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| Error::new(ErrorKind::Store, "could not encrypt the record"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!("{VERSION}.{id}.{}", BASE64.encode(blob)))
    }

    /// Opens a value kept under `bound_to`; `None` if it is not one of ours (unsealed, an
    /// unknown key, tampered with, or sealed for somewhere else).
    pub fn open(&self, bound_to: &str, value: &str) -> Option<String> {
        let mut parts = value.splitn(3, '.');
        let (version, id, body) = (parts.next()?, parts.next()?, parts.next()?);
        if version != VERSION {
            return None;
        }
        let cipher = std::iter::once(&*self.current)
            .chain(self.older.iter())
            .find(|(known, _)| known == id)
            .map(|(_, cipher)| cipher)?;
        let blob = BASE64.decode(body).ok()?;
        if blob.len() < 24 {
            return None;
        }
        let (nonce, sealed) = blob.split_at(24);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: bound_to.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn checked_id(id: String) -> Result<String, Error> {
    if id.is_empty() || id.contains('.') || id.len() > 64 {
        return Err(Error::new(
            ErrorKind::Config,
            "an encryption key id must be 1 to 64 characters without '.'",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_rotates_and_refuses_tampering() {
        let old = Encryption::new("k1", [1; 32]).unwrap();
        let sealed = old.seal("tk:{a}:record", "{\"secret\":1}").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(
            old.open("tk:{a}:record", &sealed).as_deref(),
            Some("{\"secret\":1}")
        );
        // Bound to its key: moved to another session, it does not open.
        assert!(old.open("tk:{b}:record", &sealed).is_none());
        // Rotation: the new key reads values of the old one while it is listed.
        let rotated = Encryption::new("k2", [2; 32])
            .unwrap()
            .with_old_key("k1", [1; 32])
            .unwrap();
        assert!(rotated.open("tk:{a}:record", &sealed).is_some());
        assert!(rotated.seal("tk:{a}:record", "x").unwrap().starts_with("tk1.k2."));
        let dropped = Encryption::new("k2", [2; 32]).unwrap();
        assert!(
            dropped.open("tk:{a}:record", &sealed).is_none(),
            "an unknown key id"
        );
        // Tampering, truncation, garbage, plaintext: none opens, none panics.
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            flipped.as_str(),
            "tk1.k1.",
            "tk1.k1.AAAA",
            "tk1.k1.!!",
            "tk2.k1.x",
            "{\"plain\":1}",
            "",
        ] {
            assert!(old.open("tk:{a}:record", bad).is_none(), "{bad:?}");
        }
        assert!(Encryption::new("a.b", [0; 32]).is_err());
        assert!(!format!("{old:?}").contains("[1, 1"), "keys never reach Debug");
    }
}
