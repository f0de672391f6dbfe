//! Encryption of secret datastore values: AES-256-GCM under the server's
//! key, a fresh random nonce per value, stored as `v1:<base64(nonce ‖
//! ciphertext)>`. The key never enters the database.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The server's datastore key.
#[derive(Clone)]
pub struct SecretKey(Aes256Gcm);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

const PREFIX: &str = "v2:";

impl SecretKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)))
    }

    /// 32 random bytes for a new key.
    pub fn generate() -> [u8; 32] {
        Aes256Gcm::generate_key(OsRng).into()
    }

    /// Seal `plaintext`, bound to `context` (tenant and key): the sealed
    /// text opens only under the same context.
    pub(crate) fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        let sealed = self
            .0
            .encrypt(&nonce, payload)
            .expect("AES-GCM encryption of an in-memory value does not fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    pub(crate) fn open(&self, stored: &str, context: &str) -> Result<String, String> {
        let raw = stored
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or("not an encrypted value")?;
        let (nonce, sealed) = raw.split_at(12);
        let payload = Payload {
            msg: sealed,
            aad: context.as_bytes(),
        };
        let plain = self.0.decrypt(Nonce::from_slice(nonce), payload).map_err(
            |_| "cannot decrypt (written under another key, or copied from another key or tenant)",
        )?;
        String::from_utf8(plain).map_err(|_| "the decrypted value is not UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_other_keys_cannot_read_them() {
        let key = SecretKey::from_bytes(&SecretKey::generate());
        let sealed = key.seal("es_pass", "default\0a");
        assert!(sealed.starts_with("v2:"));
        assert!(!sealed.contains("es_pass"));
        assert_ne!(
            sealed,
            key.seal("es_pass", "default\0a"),
            "a fresh nonce each time"
        );
        assert_eq!(key.open(&sealed, "default\0a").as_deref(), Ok("es_pass"));
        assert!(
            key.open(&sealed, "other\0a").is_err(),
            "bound to tenant and key"
        );
        let other = SecretKey::from_bytes(&SecretKey::generate());
        assert!(other.open(&sealed, "default\0a").is_err());
        assert!(key.open("plain", "default\0a").is_err());
    }
}
