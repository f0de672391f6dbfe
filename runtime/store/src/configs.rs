//! Pack configs set through the API (`PUT /api/v1/configs/{pack}`): the
//! values a tenant gave for a pack, in place of the `config.yaml` the pack
//! ships. A config often holds credentials, so it is sealed whole under the
//! server's key when the store has one (as secret datastore values are),
//! bound to its tenant and pack.

use rusqlite::{OptionalExtension, params};
use squall_core::TenantId;
use squall_core::time::now_rfc3339;

use crate::{Error, Result, SecretKey, SqliteStore};

/// A pack's stored config.
#[derive(Debug, Clone, PartialEq)]
pub struct PackConfig {
    pub pack: String,
    /// The values as given (JSON), before the pack's schema applies its
    /// defaults.
    pub values: serde_json::Map<String, serde_json::Value>,
    pub updated_at: String,
}

/// A tenant's stored configs: those read, and those that could not be
/// (sealed under another key, or damaged), each with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredConfigs {
    pub readable: Vec<PackConfig>,
    /// (pack, why it cannot be read).
    pub unreadable: Vec<(String, String)>,
}

impl StoredConfigs {
    /// Sort each stored config into `readable` or `unreadable`.
    pub(crate) fn sorted(configs: impl IntoIterator<Item = (String, Result<PackConfig>)>) -> Self {
        let mut out = Self::default();
        for (pack, config) in configs {
            match config {
                Ok(config) => out.readable.push(config),
                Err(e) => out.unreadable.push((pack, e.to_string())),
            }
        }
        out
    }
}

/// What a sealed config is bound to.
fn context(tenant: &TenantId, pack: &str) -> String {
    format!("pack-config\0{}\0{pack}", tenant.as_str())
}

impl SqliteStore {
    /// The configs `tenant` has set, by pack; one that cannot be read does
    /// not hide the others.
    pub fn pack_configs(&self, tenant: &TenantId) -> Result<StoredConfigs> {
        let rows: Vec<(String, String, String)> = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT pack, config, updated_at FROM pack_configs WHERE tenant_id = ?1 ORDER BY pack",
            )?;
            let rows = stmt.query_map([tenant.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })?;
        Ok(StoredConfigs::sorted(rows.into_iter().map(
            |(pack, stored, updated_at)| {
                let config = self
                    .unseal_config(tenant, &pack, &stored)
                    .map(|values| PackConfig {
                        pack: pack.clone(),
                        values,
                        updated_at,
                    });
                (pack, config)
            },
        )))
    }

    /// The config `tenant` has set for `pack`, if any.
    pub fn pack_config(&self, tenant: &TenantId, pack: &str) -> Result<Option<PackConfig>> {
        let row: Option<(String, String)> = self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT config, updated_at FROM pack_configs WHERE tenant_id = ?1 AND pack = ?2",
                )?
                .query_row(params![tenant.as_str(), pack], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })?;
        row.map(|(stored, updated_at)| {
            Ok(PackConfig {
                pack: pack.to_owned(),
                values: self.unseal_config(tenant, pack, &stored)?,
                updated_at,
            })
        })
        .transpose()
    }

    /// Set `tenant`'s config of `pack` to `values`, or (`None`) drop it, so
    /// the pack's own `config.yaml` applies again. Whether one was there.
    pub async fn put_pack_config(
        &self,
        tenant: &TenantId,
        pack: &str,
        values: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<bool> {
        let stored = values.map(|v| seal(self.secret_key.as_ref(), tenant, pack, v));
        let (tenant, pack) = (tenant.as_str().to_owned(), pack.to_owned());
        self.write(move |txn| {
            let had = txn
                .prepare_cached("SELECT 1 FROM pack_configs WHERE tenant_id = ?1 AND pack = ?2")?
                .exists(params![tenant, pack])?;
            match &stored {
                Some(config) => {
                    txn.prepare_cached(
                        "INSERT INTO pack_configs (tenant_id, pack, config, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (tenant_id, pack) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
                    )?
                    .execute(params![tenant, pack, config, now_rfc3339()])?;
                }
                None => {
                    txn.prepare_cached(
                        "DELETE FROM pack_configs WHERE tenant_id = ?1 AND pack = ?2",
                    )?
                    .execute(params![tenant, pack])?;
                }
            }
            Ok(had)
        })
        .await
    }

    fn unseal_config(
        &self,
        tenant: &TenantId,
        pack: &str,
        stored: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        unseal(self.secret_key.as_ref(), tenant, pack, stored)
    }
}

/// A config as stored: its JSON, sealed when there is a key. Shared by
/// both engines.
pub(crate) fn seal(
    sealer: Option<&SecretKey>,
    tenant: &TenantId,
    pack: &str,
    values: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let text = serde_json::Value::Object(values.clone()).to_string();
    match sealer {
        Some(key) => key.seal(&text, &context(tenant, pack)),
        None => text,
    }
}

/// A stored config's values.
pub(crate) fn unseal(
    sealer: Option<&SecretKey>,
    tenant: &TenantId,
    pack: &str,
    stored: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let corrupt = |e: &dyn std::fmt::Display| {
        Error::Corrupt(format!("config of pack '{pack}' of tenant '{tenant}': {e}"))
    };
    // A sealed config begins with the sealing's version; JSON with `{`.
    let text = if stored.starts_with('{') {
        stored.to_owned()
    } else {
        let key = sealer.ok_or_else(|| corrupt(&"it is sealed, and the server has no key"))?;
        key.open(stored, &context(tenant, pack))
            .map_err(|e| corrupt(&e))?
    };
    serde_json::from_str(&text).map_err(|e| corrupt(&e))
}

#[cfg(test)]
mod tests {
    use crate::{SecretKey, SqliteStore, StoreConfig};

    #[tokio::test]
    async fn pack_configs_keep_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db"), &StoreConfig::default())
            .expect("open")
            .with_secret_key(SecretKey::from_bytes(&SecretKey::generate()));
        crate::contract::pack_configs(&crate::Store::from(store.clone())).await;
    }
}
