//! Encryption of secret datastore values: AES-256-GCM under the server's
//! key, a fresh random nonce per value, stored as `v1:<base64(nonce ‖
//! ciphertext)>`. The key never enters the database.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
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

const PREFIX: &str = "v1:";

impl SecretKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)))
    }

    /// 32 random bytes for a new key.
    pub fn generate() -> [u8; 32] {
        Aes256Gcm::generate_key(OsRng).into()
    }

    pub(crate) fn seal(&self, plaintext: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("AES-GCM encryption of an in-memory value does not fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    pub(crate) fn open(&self, stored: &str) -> Result<String, String> {
        let raw = stored
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or("not an encrypted value")?;
        let (nonce, sealed) = raw.split_at(12);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| "cannot decrypt (was it written under another key?)")?;
        String::from_utf8(plain).map_err(|_| "the decrypted value is not UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_other_keys_cannot_read_them() {
        let key = SecretKey::from_bytes(&SecretKey::generate());
        let sealed = key.seal("es_pass");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("es_pass"));
        assert_ne!(sealed, key.seal("es_pass"), "a fresh nonce each time");
        assert_eq!(key.open(&sealed).as_deref(), Ok("es_pass"));
        let other = SecretKey::from_bytes(&SecretKey::generate());
        assert!(other.open(&sealed).is_err());
        assert!(key.open("plain").is_err());
    }
}
