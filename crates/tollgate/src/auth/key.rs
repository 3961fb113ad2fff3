//! The virtual key format, `sk-tg-<public id>-<secret>`: generation,
//! parsing and hashing. The secret is 256 random bits; only its SHA-256 is
//! ever stored, and it is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::types::{KeyId, Secret};

pub const KEY_PREFIX: &str = "sk-tg-";
/// Hex characters of the public id (48 random bits: ids are unique per
/// store, guarded by the primary key, not by their length).
const ID_LEN: usize = 12;
const SECRET_BYTES: usize = 32;

/// A freshly generated key. `full` is shown once, in the creating response.
pub struct NewKey {
    pub id: KeyId,
    pub full: Secret<String>,
    pub secret_hash: String,
    pub prefix: String,
}

/// A new key with a new random id.
pub fn generate() -> NewKey {
    let mut id = [0u8; ID_LEN / 2];
    rand::rng().fill_bytes(&mut id);
    generate_for(KeyId(hex::encode(id)))
}

/// A new secret for an existing id (rotation keeps the id, so the key's
/// spend history and budgets carry over).
pub fn generate_for(id: KeyId) -> NewKey {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let full = format!("{KEY_PREFIX}{id}-{secret}");
    NewKey {
        prefix: display_prefix(&id),
        secret_hash: hash_secret(&secret),
        full: Secret::new(full),
        id,
    }
}

/// What listings show instead of the key.
pub fn display_prefix(id: &KeyId) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// Splits a presented key into its public id and secret. `None` for anything
/// not shaped like a tollgate key.
pub fn parse(presented: &str) -> Option<(KeyId, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('-')?;
    let id_ok = id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !id_ok || secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((KeyId(id.to_owned()), secret))
}

/// Hex SHA-256 of a secret: the only form in which secrets are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn verify(secret: &str, stored_hash: &str) -> bool {
    let presented = Sha256::digest(secret.as_bytes());
    let Ok(stored) = hex::decode(stored_hash) else {
        return false;
    };
    stored.len() == presented.len() && bool::from(presented[..].ct_eq(&stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let k = generate();
        let (id, secret) = parse(k.full.expose()).unwrap();
        assert_eq!(id, k.id);
        assert!(verify(secret, &k.secret_hash));
        assert!(!verify("not-the-secret", &k.secret_hash));
        // 32 bytes of base64url without padding.
        assert_eq!(secret.len(), 43);
        assert!(k.prefix.starts_with("sk-tg-"));
        assert!(!k.prefix.contains(secret));
    }

    #[test]
    fn rotation_keeps_the_id_and_changes_the_secret() {
        let a = generate();
        let b = generate_for(a.id.clone());
        assert_eq!(a.id, b.id);
        assert_ne!(a.secret_hash, b.secret_hash);
    }

    #[test]
    fn foreign_keys_do_not_parse() {
        for k in [
            "",
            "sk-proj-abc",
            "sk-tg-",
            "sk-tg-xyz-abc",
            "sk-tg-0123456789ab-",
            "sk-tg-0123456789ab",
        ] {
            assert!(parse(k).is_none(), "{k}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
        }

        #[test]
        fn verify_never_panics(s in ".*", h in ".*") {
            let _ = verify(&s, &h);
        }
    }
}
