//! The datastore as the sandbox sees it. The store implements [`KvStore`];
//! the sandbox's `kv` host interface calls it.

use async_trait::async_trait;

use crate::TenantId;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: String,
    /// Seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    pub secret: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("invalid key '{key}': {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error(
        "this server has no datastore key for secrets (give SQUALL_SECRET_KEY, or let `squall serve` create one in its data directory)"
    )]
    EncryptionUnavailable,
    #[error("datastore unavailable: {0}")]
    Backend(String),
}

/// Check a key before it reaches the backend.
pub fn check_key(key: &str) -> Result<(), KvError> {
    let reason = if key.is_empty() {
        "a key cannot be empty"
    } else if key.len() > MAX_KEY_LEN {
        "a key is at most 512 bytes"
    } else {
        return Ok(());
    };
    Err(KvError::InvalidKey {
        key: key.chars().take(64).collect(),
        reason,
    })
}

/// Tenant-scoped key-value storage.
#[async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The live (unexpired) entry for `key`.
    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<KvEntry>, KvError>;
    /// Insert or replace.
    async fn set(&self, tenant: &TenantId, entry: KvEntry) -> Result<(), KvError>;
    /// Remove; `true` when a live entry existed.
    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool, KvError>;
    /// Live entries whose key starts with `prefix`, in key order.
    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<KvEntry>, KvError>;
}
