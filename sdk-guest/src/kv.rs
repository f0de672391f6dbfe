//! The datastore: StackStorm's key-value store, scoped to the tenant.
//!
//! ```no_run
//! use squall_sdk::kv;
//! kv::set("last_run", "2026-11-21")?;
//! kv::set_with_ttl("lock", "held", 60)?;
//! assert_eq!(kv::get("last_run")?.as_deref(), Some("2026-11-21"));
//! for entry in kv::list("last_")? {
//!     println!("{} = {}", entry.key, entry.value);
//! }
//! kv::delete("lock")?;
//! # Ok::<(), squall_sdk::Error>(())
//! ```

use crate::bindings::squall::automation::kv as wit;
use crate::{Error, Result};

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Expiry in seconds since the Unix epoch, when the key has a TTL.
    pub expires_at: Option<u64>,
    /// Whether the value is stored encrypted.
    pub secret: bool,
}

/// The value of `key`, or `None` when absent or expired.
pub fn get(key: &str) -> Result<Option<String>> {
    wit::get(key, false).map_err(Error::Failed)
}

/// The value of a secret `key`, decrypted. In a sensor, `system:<key>`
/// reads the tenant's shared key (e.g. a password an operator stored with
/// `squall key set NAME VALUE --encrypt`).
pub fn get_secret(key: &str) -> Result<Option<String>> {
    wit::get(key, true).map_err(Error::Failed)
}

/// Store `value` under `key`, encrypted under the server's key.
pub fn set_secret(key: &str, value: &str) -> Result<()> {
    wit::set(key, value, None, true).map_err(Error::Failed)
}

/// Store `value` under `key`.
pub fn set(key: &str, value: &str) -> Result<()> {
    wit::set(key, value, None, false).map_err(Error::Failed)
}

/// Store `value` under `key` for `ttl_seconds`.
pub fn set_with_ttl(key: &str, value: &str, ttl_seconds: u32) -> Result<()> {
    wit::set(key, value, Some(ttl_seconds), false).map_err(Error::Failed)
}

/// Remove `key`; `true` when it existed.
pub fn delete(key: &str) -> Result<bool> {
    wit::delete(key).map_err(Error::Failed)
}

/// Every live key starting with `prefix`, in key order.
pub fn list(prefix: &str) -> Result<Vec<Entry>> {
    let entries = wit::list(prefix).map_err(Error::Failed)?;
    Ok(entries
        .into_iter()
        .map(|e| Entry {
            key: e.key,
            value: e.value,
            expires_at: e.expires_at,
            secret: e.secret,
        })
        .collect())
}
