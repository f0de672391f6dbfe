//! Packs installed through the API, shared by the cluster's nodes: the
//! version in force of each pack, with its archive. The node that installs
//! a pack writes it here once the pack is in force on that node; a node
//! installs what this table holds when it starts serving. Each change also
//! bumps the tenant's change epoch in its transaction, for nodes serving
//! at the same time to follow once they share the work.

use squall_core::TenantId;

use super::PgStore;
use super::changes::bump_epoch;
use crate::Result;

/// A pack installed through the API: which version is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackVersion {
    pub tenant: TenantId,
    pub pack: String,
    pub version: String,
    /// Grows with every install, cluster-wide.
    pub seq: i64,
}

impl PgStore {
    /// Put `version` of `pack` in force for every node, with its archive.
    pub async fn put_pack(
        &self,
        tenant: &TenantId,
        pack: &str,
        version: &str,
        archive: &[u8],
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO packs (tenant_id, pack, version, archive) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, pack) DO UPDATE SET version = excluded.version,
                 archive = excluded.archive, seq = nextval('pack_seq'), installed_at = now()",
            &[&tenant.as_str(), &pack, &version, &archive],
        )
        .await?;
        bump_epoch(&tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Remove `pack` from every node; whether it was there.
    pub async fn delete_pack(&self, tenant: &TenantId, pack: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM packs WHERE tenant_id = $1 AND pack = $2",
                &[&tenant.as_str(), &pack],
            )
            .await?;
        bump_epoch(&tx, tenant).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Every pack installed through the API, in the order installed.
    pub async fn pack_versions(&self) -> Result<Vec<PackVersion>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant_id, pack, version, seq FROM packs ORDER BY seq",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PackVersion {
                    tenant: TenantId::new(r.get::<_, &str>(0))
                        .map_err(|e| crate::Error::Corrupt(format!("pack tenant: {e}")))?,
                    pack: r.get(1),
                    version: r.get(2),
                    seq: r.get(3),
                })
            })
            .collect()
    }

    /// The archive of `version` of `pack`, while that version is in force.
    pub async fn pack_archive(
        &self,
        tenant: &TenantId,
        pack: &str,
        version: &str,
    ) -> Result<Option<Vec<u8>>> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT archive FROM packs WHERE tenant_id = $1 AND pack = $2 AND version = $3",
                &[&tenant.as_str(), &pack, &version],
            )
            .await?
            .map(|r| r.get(0)))
    }
}

#[cfg(test)]
mod tests {
    use squall_tests::postgres::Postgres;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_version_in_force_replaces_the_last_in_install_order() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("packs"), 4)
            .await
            .expect("connect");
        let t = TenantId::default_tenant();
        let before = store.epochs().await.expect("epochs");
        store.put_pack(&t, "swap", "v1", b"one").await.expect("put");
        store.put_pack(&t, "other", "o1", b"o").await.expect("put");
        store.put_pack(&t, "swap", "v2", b"two").await.expect("put");
        let versions = store.pack_versions().await.expect("versions");
        let order: Vec<(&str, &str)> = versions
            .iter()
            .map(|v| (v.pack.as_str(), v.version.as_str()))
            .collect();
        assert_eq!(order, [("other", "o1"), ("swap", "v2")]);
        assert_eq!(
            store.pack_archive(&t, "swap", "v2").await.expect("read"),
            Some(b"two".to_vec())
        );
        assert_eq!(
            store.pack_archive(&t, "swap", "v1").await.expect("read"),
            None,
            "a replaced version is gone"
        );
        assert!(store.delete_pack(&t, "swap").await.expect("delete"));
        assert!(!store.delete_pack(&t, "swap").await.expect("delete"));
        assert_eq!(store.pack_versions().await.expect("versions").len(), 1);
        let after = store.epochs().await.expect("epochs");
        assert_ne!(before, after, "each change moves the tenant's epoch");
    }
}
