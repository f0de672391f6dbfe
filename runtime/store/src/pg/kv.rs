//! The datastore on PostgreSQL, behind [`squall_core::kv::KvStore`], as
//! the SQLite store keeps it: expired keys are absent, secrets are sealed
//! (by the same code), and a tenant's quota counts its live keys and
//! values. A write that checks the quota holds the tenant's advisory lock
//! for its transaction, so two nodes writing at once cannot both fit under
//! it.

use async_trait::async_trait;
use squall_core::TenantId;
use squall_core::kv::{KvEntry, KvError, KvScope, KvStore};

use super::{PgError, PgStore};
use crate::kv::{expiry, now, reveal, seal, shown};

fn backend(e: impl Into<PgError>) -> KvError {
    KvError::Backend(e.into().to_string())
}

fn entry_of(row: &tokio_postgres::Row) -> KvEntry {
    KvEntry {
        key: row.get(0),
        value: row.get(1),
        expires_at: expiry(row.get(2)),
        secret: row.get(3),
    }
}

/// The advisory lock that serialises one tenant's quota-checked writes.
fn quota_lock(tenant: &TenantId) -> String {
    format!("squall-kv-quota/{}", tenant.as_str())
}

impl PgStore {
    /// Live entries whose key starts with `prefix`, in key order; secret
    /// values decrypted with `decrypt`, masked as `********` without.
    pub async fn kv_list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        decrypt: bool,
    ) -> Result<Vec<KvEntry>, KvError> {
        let client = self.client().await.map_err(backend)?;
        let stmt = client
            .prepare_cached(
                "SELECT key, value, expires_at, secret FROM kv
                 WHERE tenant_id = $1 AND starts_with(key, $2)
                   AND (expires_at IS NULL OR expires_at > $3)
                 ORDER BY key",
            )
            .await
            .map_err(backend)?;
        let rows = client
            .query(&stmt, &[&tenant.as_str(), &prefix, &now()])
            .await
            .map_err(backend)?;
        let entries = rows.iter().map(entry_of).collect();
        shown(self.secret_key.as_ref(), tenant, entries, decrypt)
    }
}

/// What the key check seals, bound to.
const KEY_CHECK: &str = "squall datastore key check";

impl PgStore {
    /// Check that this node's datastore key is the one the database's
    /// secrets are sealed with (the first node to check records a value
    /// sealed with its key): a node with another key would fail to read
    /// every secret and stored pack config only once it served.
    pub async fn check_secret_key(&self) -> Result<(), PgError> {
        let Some(key) = &self.secret_key else {
            return Ok(());
        };
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO squall_settings (name, value) VALUES ('key_check', $1)
                 ON CONFLICT (name) DO NOTHING",
                &[&key.seal(KEY_CHECK, KEY_CHECK)],
            )
            .await?;
        let sealed: String = client
            .query_one(
                "SELECT value FROM squall_settings WHERE name = 'key_check'",
                &[],
            )
            .await?
            .get(0);
        match key.open(&sealed, KEY_CHECK) {
            Ok(text) if text == KEY_CHECK => Ok(()),
            _ => Err(PgError::WrongKey),
        }
    }
}

#[async_trait]
impl KvStore for PgStore {
    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<KvEntry>, KvError> {
        let client = self.client().await.map_err(backend)?;
        let stmt = client
            .prepare_cached(
                "SELECT key, value, expires_at, secret FROM kv
                 WHERE tenant_id = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&stmt, &[&tenant.as_str(), &key, &now()])
            .await
            .map_err(backend)?;
        row.map(|r| reveal(self.secret_key.as_ref(), tenant, entry_of(&r)))
            .transpose()
    }

    async fn set(&self, tenant: &TenantId, entry: KvEntry) -> Result<(), KvError> {
        let entry = seal(self.secret_key.as_ref(), tenant, entry)?;
        let expires_at = entry.expires_at.and_then(|t| i64::try_from(t).ok());
        let mut client = self.client().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(backend)?;
        if let Some(limit) = self.kv_quota {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&quota_lock(tenant)],
            )
            .await
            .map_err(backend)?;
            // Expired rows go first: they would otherwise pile up
            // uncounted (a quota beaten with short TTLs).
            tx.execute(
                "DELETE FROM kv WHERE tenant_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2",
                &[&tenant.as_str(), &now()],
            )
            .await
            .map_err(backend)?;
            let others: i64 = tx
                .query_one(
                    "SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0)::BIGINT FROM kv
                     WHERE tenant_id = $1 AND key <> $2 AND (expires_at IS NULL OR expires_at > $3)",
                    &[&tenant.as_str(), &entry.key, &now()],
                )
                .await
                .map_err(backend)?
                .get(0);
            let would =
                u64::try_from(others).unwrap_or(0) + (entry.key.len() + entry.value.len()) as u64;
            if would > limit {
                return Err(KvError::Quota { would, limit });
            }
        }
        tx.execute(
            "INSERT INTO kv (tenant_id, key, value, expires_at, secret) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value,
                 expires_at = excluded.expires_at, secret = excluded.secret",
            &[
                &tenant.as_str(),
                &entry.key,
                &entry.value,
                &expires_at,
                &entry.secret,
            ],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool, KvError> {
        let client = self.client().await.map_err(backend)?;
        // An expired key counts as absent, but its row goes too.
        let row = client
            .query_opt(
                "DELETE FROM kv WHERE tenant_id = $1 AND key = $2
                 RETURNING expires_at IS NULL OR expires_at > $3",
                &[&tenant.as_str(), &key, &now()],
            )
            .await
            .map_err(backend)?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<KvEntry>, KvError> {
        // A listing for guests and templates never decrypts, and holds the
        // tenant's keys only (not its users').
        let mut entries = self.kv_list(tenant, prefix, false).await?;
        entries.retain(|e| KvScope::of_storage_key(&e.key).0 == KvScope::System);
        Ok(entries)
    }
}
