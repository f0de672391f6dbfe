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
///
/// ```no_run
/// for entry in squall_sdk::kv::list("host:")? {
///     let ttl = entry.expires_at.map_or("no expiry".to_owned(), |t| format!("expires at {t}"));
///     squall_sdk::log::info!("{} = {} ({ttl}, secret: {})", entry.key, entry.value, entry.secret);
/// }
/// # Ok::<(), squall_sdk::Error>(())
/// ```
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
///
/// ```no_run
/// let runs: u64 = squall_sdk::kv::get("runs")?.and_then(|v| v.parse().ok()).unwrap_or(0);
/// squall_sdk::kv::set("runs", &(runs + 1).to_string())?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn get(key: &str) -> Result<Option<String>> {
    wit::get(key, false).map_err(Error::Failed)
}

/// The value of a secret `key`, decrypted. In a sensor, `system:<key>`
/// reads the tenant's shared key (e.g. a password an operator stored with
/// `squall key set NAME VALUE --encrypt`).
///
/// ```no_run
/// let Some(token) = squall_sdk::kv::get_secret("system:github_token")? else {
///     return Err(squall_sdk::Error::invalid_input("store it: squall key set github_token ... --encrypt"));
/// };
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn get_secret(key: &str) -> Result<Option<String>> {
    wit::get(key, true).map_err(Error::Failed)
}

/// Store `value` under `key`, encrypted under the server's key.
///
/// ```no_run
/// squall_sdk::kv::set_secret("session", "s3cret")?;
/// assert_eq!(squall_sdk::kv::get_secret("session")?.as_deref(), Some("s3cret"));
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn set_secret(key: &str, value: &str) -> Result<()> {
    wit::set(key, value, None, true).map_err(Error::Failed)
}

/// Store `value` under `key`.
///
/// ```no_run
/// squall_sdk::kv::set("last_deploy", "v1.4.2")?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn set(key: &str, value: &str) -> Result<()> {
    wit::set(key, value, None, false).map_err(Error::Failed)
}

/// Store `value` under `key` for `ttl_seconds`.
///
/// ```no_run
/// // A lock that frees itself if the action dies holding it.
/// if squall_sdk::kv::get("deploy_lock")?.is_none() {
///     squall_sdk::kv::set_with_ttl("deploy_lock", "held", 300)?;
/// }
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn set_with_ttl(key: &str, value: &str, ttl_seconds: u32) -> Result<()> {
    wit::set(key, value, Some(ttl_seconds), false).map_err(Error::Failed)
}

/// Remove `key`; `true` when it existed.
///
/// ```no_run
/// let released = squall_sdk::kv::delete("deploy_lock")?;
/// squall_sdk::log::info!("lock released: {released}");
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn delete(key: &str) -> Result<bool> {
    wit::delete(key).map_err(Error::Failed)
}

/// Every live key starting with `prefix`, in key order.
///
/// ```no_run
/// let hosts: Vec<String> = squall_sdk::kv::list("host:")?.into_iter().map(|e| e.value).collect();
/// # Ok::<(), squall_sdk::Error>(())
/// ```
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
