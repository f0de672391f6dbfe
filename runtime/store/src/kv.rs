//! The datastore table, behind [`squall_core::kv::KvStore`].

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use squall_core::TenantId;
use squall_core::kv::{KvEntry, KvError, KvScope, KvStore};
use squall_core::time::unix_now;

use crate::{Error, SecretKey, SqliteStore};

fn backend(e: Error) -> KvError {
    KvError::Backend(e.to_string())
}

pub(crate) fn expiry(raw: Option<i64>) -> Option<u64> {
    raw.and_then(|t| u64::try_from(t).ok())
}

pub(crate) fn now() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// The live entry for `key`, read on the calling thread (a point lookup).
    pub fn kv_get_blocking(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<KvEntry>, KvError> {
        get_entry(self, tenant.clone(), key.to_owned())
    }
}

fn get_entry(
    store: &SqliteStore,
    tenant: TenantId,
    key: String,
) -> Result<Option<KvEntry>, KvError> {
    let owner = tenant.clone();
    let entry = store
        .read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT key, value, expires_at, secret FROM kv
                     WHERE tenant_id = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                    params![tenant.as_str(), key, now()],
                    |r| {
                        Ok(KvEntry {
                            key: r.get(0)?,
                            value: r.get(1)?,
                            expires_at: expiry(r.get(2)?),
                            secret: r.get(3)?,
                        })
                    },
                )
                .optional()?;
            Ok(row)
        })
        .map_err(backend)?;
    entry.map(|e| store.reveal(&owner, e)).transpose()
}

/// What a secret is bound to: its tenant and key.
fn context(tenant: &TenantId, key: &str) -> String {
    format!("{}\0{key}", tenant.as_str())
}

/// Decrypt a secret entry's value with `sealer` (plain entries pass
/// through). Shared by both engines.
pub(crate) fn reveal(
    sealer: Option<&SecretKey>,
    tenant: &TenantId,
    mut entry: KvEntry,
) -> Result<KvEntry, KvError> {
    if entry.secret {
        let key = sealer.ok_or(KvError::EncryptionUnavailable)?;
        entry.value = key
            .open(&entry.value, &context(tenant, &entry.key))
            .map_err(|e| KvError::Backend(format!("secret '{}': {e}", entry.key)))?;
    }
    Ok(entry)
}

/// Seal a secret entry's value with `sealer` before it is stored.
pub(crate) fn seal(
    sealer: Option<&SecretKey>,
    tenant: &TenantId,
    mut entry: KvEntry,
) -> Result<KvEntry, KvError> {
    if entry.secret {
        let key = sealer.ok_or(KvError::EncryptionUnavailable)?;
        entry.value = key.seal(&entry.value, &context(tenant, &entry.key));
    }
    Ok(entry)
}

/// A listing's entries as shown: secrets decrypted with `decrypt`, masked
/// as `********` without.
pub(crate) fn shown(
    sealer: Option<&SecretKey>,
    tenant: &TenantId,
    entries: Vec<KvEntry>,
    decrypt: bool,
) -> Result<Vec<KvEntry>, KvError> {
    entries
        .into_iter()
        .map(|mut e| {
            if !e.secret {
                Ok(e)
            } else if decrypt {
                reveal(sealer, tenant, e)
            } else {
                e.value = "********".into();
                Ok(e)
            }
        })
        .collect()
}

impl SqliteStore {
    /// Decrypt a secret entry's value (plain entries pass through).
    fn reveal(&self, tenant: &TenantId, entry: KvEntry) -> Result<KvEntry, KvError> {
        reveal(self.secret_key.as_ref(), tenant, entry)
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<KvEntry>, KvError> {
        let (store, tenant, key) = (self.clone(), tenant.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || get_entry(&store, tenant, key))
            .await
            .map_err(|e| KvError::Backend(e.to_string()))?
    }

    async fn set(&self, tenant: &TenantId, entry: KvEntry) -> Result<(), KvError> {
        let tenant = tenant.clone();
        let entry = seal(self.secret_key.as_ref(), &tenant, entry)?;
        let quota = self.kv_quota;
        self.write(move |txn| {
            if let Some(limit) = quota {
                // Expired rows go first: they would otherwise pile up
                // uncounted (a quota beaten with short TTLs).
                txn.prepare_cached(
                    "DELETE FROM kv WHERE tenant_id = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2",
                )?
                .execute(params![tenant.as_str(), now()])?;
                // Live entries other than the one replaced, plus this one.
                let others: i64 = txn
                    .prepare_cached(
                        "SELECT coalesce(sum(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))), 0) FROM kv
                         WHERE tenant_id = ?1 AND key != ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                    )?
                    .query_row(params![tenant.as_str(), entry.key, now()], |r| r.get(0))?;
                let would = u64::try_from(others).unwrap_or(0)
                    + (entry.key.len() + entry.value.len()) as u64;
                if would > limit {
                    return Ok(Err(KvError::Quota { would, limit }));
                }
            }
            txn.prepare_cached("INSERT INTO kv (tenant_id, key, value, expires_at, secret) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value,
                     expires_at = excluded.expires_at, secret = excluded.secret")?.execute(params![
                    tenant.as_str(),
                    entry.key,
                    entry.value,
                    entry.expires_at.and_then(|t| i64::try_from(t).ok()),
                    entry.secret,
                ],)?;
            Ok(Ok(()))
        })
        .await
        .map_err(backend)?
    }

    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool, KvError> {
        let (tenant, key) = (tenant.clone(), key.to_owned());
        self.write(move |txn| {
            // An expired key counts as absent, but its row goes too.
            let live = txn.prepare_cached("DELETE FROM kv WHERE tenant_id = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)")?.execute(params![tenant.as_str(), key, now()],)?;
            txn.prepare_cached("DELETE FROM kv WHERE tenant_id = ?1 AND key = ?2")?.execute(params![tenant.as_str(), key],)?;
            Ok(live > 0)
        })
        .await
        .map_err(backend)
    }

    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<KvEntry>, KvError> {
        // A listing for guests and templates never decrypts, and holds
        // the tenant's keys only (not its users').
        let mut entries = self.kv_list(tenant, prefix, false).await?;
        entries.retain(|e| KvScope::of_storage_key(&e.key).0 == KvScope::System);
        Ok(entries)
    }
}

impl SqliteStore {
    /// Live entries whose key starts with `prefix`, in key order; secret
    /// values decrypted with `decrypt`, masked as `********` without.
    pub async fn kv_list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        decrypt: bool,
    ) -> Result<Vec<KvEntry>, KvError> {
        let (owner, prefix) = (tenant.clone(), prefix.to_owned());
        let tenant = tenant.clone();
        let entries = self
            .read_async(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT key, value, expires_at, secret FROM kv
                     WHERE tenant_id = ?1 AND substr(key, 1, length(?2)) = ?2
                       AND (expires_at IS NULL OR expires_at > ?3)
                     ORDER BY key",
                )?;
                let rows = stmt.query_map(params![tenant.as_str(), prefix, now()], |r| {
                    Ok(KvEntry {
                        key: r.get(0)?,
                        value: r.get(1)?,
                        expires_at: expiry(r.get(2)?),
                        secret: r.get(3)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .map_err(backend)?;
        shown(self.secret_key.as_ref(), &owner, entries, decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    fn sealing() -> crate::SecretKey {
        crate::SecretKey::from_bytes(&crate::SecretKey::generate())
    }

    #[tokio::test]
    async fn the_datastore_keeps_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path, &StoreConfig::default())
            .expect("open")
            .with_secret_key(sealing());
        crate::contract::datastore(&crate::Store::from(store.clone())).await;
        drop(store);
        // The secret the contract wrote is in neither file in clear.
        let needle = crate::contract::SECRET.as_bytes();
        for file in [path.clone(), dir.path().join("db-wal")] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        let quota = SqliteStore::open(&dir.path().join("quota"), &StoreConfig::default())
            .expect("open")
            .with_kv_quota(Some(1000));
        crate::contract::datastore_quota(&crate::Store::from(quota.clone()), 1000).await;
    }
}
