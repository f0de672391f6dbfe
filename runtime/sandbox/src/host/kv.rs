//! `squall:automation/kv`: the tenant's datastore.
//!
//! Errors reach the guest as `err(string)`, never as traps. `encrypt`
//! stores the value encrypted under the server's key (refused, never
//! stored in clear, on a server without one); reading a secret needs
//! `decrypt`, and listings mask secrets.

use squall_core::kv::{KvEntry, KvError, check_key};
use squall_core::time::unix_now;

use super::HostState;
use crate::bindings::squall::automation::kv::{Entry, Host};

impl HostState {
    fn kv_store(&self) -> Result<&dyn squall_core::kv::KvStore, String> {
        self.kv
            .as_deref()
            .ok_or_else(|| "no datastore is available to this execution".to_owned())
    }
}

/// The prefix that reaches the tenant's shared keys from a sensor.
const SYSTEM: &str = "system:";

fn msg(e: KvError) -> String {
    e.to_string()
}

impl Host for HostState {
    async fn get(&mut self, key: String, decrypt: bool) -> Result<Option<String>, String> {
        check_key(&key).map_err(msg)?;
        // `system:` reads the tenant's shared keys (StackStorm's
        // `local=False`), e.g. a password an operator stored encrypted.
        let key = match key.strip_prefix(SYSTEM) {
            Some(shared) => shared.to_owned(),
            None => format!("{}{key}", self.kv_prefix),
        };
        // The sensor's prefix counts toward the key's length limit.
        check_key(&key).map_err(msg)?;
        let entry = self
            .kv_store()?
            .get(&self.tenant, &key)
            .await
            .map_err(msg)?;
        match entry {
            Some(e) if e.secret && !decrypt => Err(format!(
                "'{}' is a secret: read it with decrypt",
                key.get(self.kv_prefix.len()..).unwrap_or(&key)
            )),
            other => Ok(other.map(|e| e.value)),
        }
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
        encrypt: bool,
    ) -> Result<(), String> {
        check_key(&key).map_err(msg)?;
        if key.starts_with(SYSTEM) {
            return Err(format!("'{key}': `system:` keys can be read, not changed"));
        }
        let key = format!("{}{key}", self.kv_prefix);
        // The sensor's prefix counts toward the key's length limit.
        check_key(&key).map_err(msg)?;
        let entry = KvEntry {
            key,
            value,
            expires_at: ttl_seconds.map(|ttl| unix_now() + u64::from(ttl)),
            secret: encrypt,
        };
        self.kv_store()?.set(&self.tenant, entry).await.map_err(msg)
    }

    async fn delete(&mut self, key: String) -> Result<bool, String> {
        check_key(&key).map_err(msg)?;
        if key.starts_with(SYSTEM) {
            return Err(format!("'{key}': `system:` keys can be read, not changed"));
        }
        let key = format!("{}{key}", self.kv_prefix);
        // The sensor's prefix counts toward the key's length limit.
        check_key(&key).map_err(msg)?;
        self.kv_store()?
            .delete(&self.tenant, &key)
            .await
            .map_err(msg)
    }

    async fn list(&mut self, prefix: String) -> Result<Vec<Entry>, String> {
        // `system:` lists the tenant's shared keys, by their own names.
        let (prefix, own) = match prefix.strip_prefix(SYSTEM) {
            Some(shared) => (shared.to_owned(), 0),
            None => (format!("{}{prefix}", self.kv_prefix), self.kv_prefix.len()),
        };
        let entries = self
            .kv_store()?
            .list(&self.tenant, &prefix)
            .await
            .map_err(msg)?;
        Ok(entries
            .into_iter()
            .map(|e| Entry {
                key: e.key.get(own..).unwrap_or_default().to_owned(),
                // The store masks secrets in listings.
                value: e.value,
                expires_at: e.expires_at,
                secret: e.secret,
            })
            .collect())
    }
}
