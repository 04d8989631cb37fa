//! Redis key names. Every key of one session shares a hash tag (`{…}`), so each script touches
//! one slot and runs on Redis Cluster; a session is named by a digest of its refresh token,
//! never by the token itself.

use sha2::{Digest, Sha256};
use tokenkit_core::SessionKey;
use tokenkit_core::SessionKind;

/// The keys of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    /// The refresh lease: `SET … NX PX`, its value the owner token.
    pub(crate) lease: String,
    /// The successor published for the grace window (TTL = the window).
    pub(crate) successor: String,
}

impl Keys {
    /// The keys of `key` under `prefix`; `instance` names this process, for sessions known only
    /// by a request context (those are never shared across processes).
    pub(crate) fn new(prefix: &str, instance: &str, key: &SessionKey) -> Self {
        let mut tag = match key.kind() {
            SessionKind::RefreshToken(token) => hex(&Sha256::digest(token.secret().as_bytes())),
            SessionKind::Context(id) => format!("ctx-{instance}-{id}"),
            // Process-wide, and anything a newer core adds: one session per prefix.
            _ => "process".to_owned(),
        };
        if let Some(variant) = key.variant() {
            tag.push('-');
            tag.push_str(&hex(&Sha256::digest(variant.as_bytes())[..8]));
        }
        Self {
            lease: format!("{prefix}:{{{tag}}}:lease"),
            successor: format!("{prefix}:{{{tag}}}:successor"),
        }
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenkit_core::RefreshToken;

    #[test]
    fn keys_share_a_hash_tag_and_never_hold_the_token() {
        let key = SessionKey::refresh_token(RefreshToken::new("r-secret"));
        let keys = Keys::new("tk", "i1", &key);
        assert!(!keys.lease.contains("r-secret"));
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(tag(&keys.lease), tag(&keys.successor));
        assert_eq!(tag(&keys.lease).len(), 2 + 64, "a SHA-256 digest");
        let other = Keys::new(
            "tk",
            "i1",
            &SessionKey::refresh_token(RefreshToken::new("r-other")),
        );
        assert_ne!(keys, other);
        let varied = Keys::new("tk", "i1", &key.clone().with_variant("{\"a\":1}"));
        assert_ne!(keys, varied);
        assert_eq!(
            Keys::new("tk", "i1", &SessionKey::process()).lease,
            "tk:{process}:lease"
        );
        assert_ne!(
            Keys::new("tk", "i1", &SessionKey::context(7)),
            Keys::new("tk", "i2", &SessionKey::context(7)),
            "context sessions are per process"
        );
    }
}
