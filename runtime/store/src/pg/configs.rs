//! Pack configs set through the API, on PostgreSQL: sealed as the SQLite
//! store seals them (`crate::configs`, whose code both share).

use squall_core::TenantId;
use squall_core::time::now_rfc3339;

use super::PgStore;
use super::changes::bump_epoch;
use crate::Result;
use crate::configs::{PackConfig, StoredConfigs, seal, unseal};

type Values = serde_json::Map<String, serde_json::Value>;

impl PgStore {
    /// The configs `tenant` has set, by pack.
    pub async fn pack_configs(&self, tenant: &TenantId) -> Result<StoredConfigs> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT pack, config, updated_at FROM pack_configs WHERE tenant_id = $1 ORDER BY pack COLLATE \"C\"",
                &[&tenant.as_str()],
            )
            .await?;
        Ok(StoredConfigs::sorted(rows.iter().map(|r| {
            let pack: String = r.get(0);
            let config = unseal(self.secret_key.as_ref(), tenant, &pack, r.get(1)).map(|values| {
                PackConfig {
                    values,
                    pack: pack.clone(),
                    updated_at: r.get(2),
                }
            });
            (pack, config)
        })))
    }

    /// The config `tenant` has set for `pack`, if any.
    pub async fn pack_config(&self, tenant: &TenantId, pack: &str) -> Result<Option<PackConfig>> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT config, updated_at FROM pack_configs WHERE tenant_id = $1 AND pack = $2",
                &[&tenant.as_str(), &pack],
            )
            .await?
            .map(|r| {
                Ok(PackConfig {
                    pack: pack.to_owned(),
                    values: unseal(self.secret_key.as_ref(), tenant, pack, r.get(0))?,
                    updated_at: r.get(1),
                })
            })
            .transpose()
    }

    /// Set `tenant`'s config of `pack` to `values`, or (`None`) drop it.
    /// Whether one was there.
    pub async fn put_pack_config(
        &self,
        tenant: &TenantId,
        pack: &str,
        values: Option<&Values>,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let had = match values {
            Some(values) => {
                let stored = seal(self.secret_key.as_ref(), tenant, pack, values);
                // `xmax` is not zero on a row this statement updated rather
                // than inserted.
                tx.query_one(
                        "INSERT INTO pack_configs (tenant_id, pack, config, updated_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (tenant_id, pack) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at
                         RETURNING xmax <> 0",
                        &[&tenant.as_str(), &pack, &stored, &now_rfc3339()],
                    )
                    .await?
                    .get(0)
            }
            None => {
                tx.execute(
                    "DELETE FROM pack_configs WHERE tenant_id = $1 AND pack = $2",
                    &[&tenant.as_str(), &pack],
                )
                .await?
                    > 0
            }
        };
        bump_epoch(&tx, tenant).await?;
        tx.commit().await?;
        Ok(had)
    }
}
