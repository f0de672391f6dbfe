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
    #[error(
        "quota exceeded: the tenant's datastore would hold {would} bytes; its limit is {limit}"
    )]
    Quota { would: u64, limit: u64 },
    #[error("datastore unavailable: {0}")]
    Backend(String),
}

/// Check a key before it reaches the backend.
pub fn check_key(key: &str) -> Result<(), KvError> {
    let reason = if key.is_empty() {
        "a key cannot be empty"
    } else if key.len() > MAX_KEY_LEN {
        "a key is at most 512 bytes"
    } else if key.chars().any(char::is_control) {
        "a key cannot hold control characters"
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

/// StackStorm's datastore scopes. A user's keys live in the same table as
/// the tenant's, under a prefix no key name can hold (names cannot contain
/// control characters), so guests and `st2kv.system` never see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvScope {
    /// `st2kv.system`: the tenant's keys.
    System,
    /// `st2kv.user`: keys of one user of the tenant.
    User(String),
}

const USER_MARK: char = '\u{1f}';

impl KvScope {
    pub const SYSTEM: &'static str = "st2kv.system";
    pub const USER: &'static str = "st2kv.user";

    /// The scope a request names (`system`, `st2kv.system`, `user`,
    /// `st2kv.user`); user keys belong to `user`.
    pub fn parse(scope: &str, user: &str) -> Result<Self, String> {
        match scope {
            "system" | Self::SYSTEM => Ok(Self::System),
            "user" | Self::USER => Ok(Self::User(user.to_owned())),
            other => Err(format!(
                "unknown scope '{other}': use st2kv.system or st2kv.user"
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::System => Self::SYSTEM,
            Self::User(_) => Self::USER,
        }
    }

    /// The key a `name` in this scope is stored under.
    pub fn storage_key(&self, name: &str) -> String {
        match self {
            Self::System => name.to_owned(),
            Self::User(user) => format!("{}{name}", self.storage_prefix_of(user)),
        }
    }

    fn storage_prefix_of(&self, user: &str) -> String {
        format!("{USER_MARK}user{USER_MARK}{user}{USER_MARK}")
    }

    /// The scope and name of a stored key.
    pub fn of_storage_key(key: &str) -> (Self, &str) {
        if let Some((user, name)) = key
            .strip_prefix(USER_MARK)
            .and_then(|r| r.strip_prefix("user"))
            .and_then(|r| r.strip_prefix(USER_MARK))
            .and_then(|r| r.split_once(USER_MARK))
        {
            return (Self::User(user.to_owned()), name);
        }
        (Self::System, key)
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_user_keys_cannot_be_named() {
        let bob = KvScope::parse("user", "bob").expect("scope");
        let stored = bob.storage_key("token");
        assert!(check_key(&stored).is_err(), "no request can name it");
        assert_eq!(KvScope::of_storage_key(&stored), (bob, "token"));
        assert_eq!(KvScope::of_storage_key("a:b"), (KvScope::System, "a:b"));
        assert_eq!(KvScope::parse("st2kv.system", "x"), Ok(KvScope::System));
        assert!(KvScope::parse("global", "x").is_err());
    }
}
