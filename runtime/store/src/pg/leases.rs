//! What must run once in a cluster runs under a named lease: the leader's
//! housekeeping (retention, TTL expiry, inquiry timeouts), each sensor
//! instance. A lease has one holder at a time and a fence number that
//! grows with every change of holder; its holder renews it before it runs
//! out, and another node takes it only once it has. Timers fire once per
//! tick cluster-wide: a fire is recorded under (timer, fire time), and only
//! the node whose record was new fires it.

use std::time::Duration;

use squall_core::TenantId;

use super::PgStore;
use crate::Result;

/// A lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Grows with every change of holder: work done under an older fence
    /// is a previous holder's.
    pub fence: i64,
}

/// Take lease `$1` for node `$2` for `$3` seconds, or renew it if `$2`
/// holds it already; returns its fence while `$2` is the holder.
const TAKE: &str = "INSERT INTO leases (name, holder, fence, expires_at)
    VALUES ($1, $2, nextval('lease_fence'), now() + make_interval(secs => $3))
    ON CONFLICT (name) DO UPDATE SET
        fence = CASE WHEN leases.holder = excluded.holder THEN leases.fence ELSE excluded.fence END,
        holder = excluded.holder,
        expires_at = excluded.expires_at
    WHERE leases.holder = excluded.holder OR leases.expires_at < now()
    RETURNING fence";

impl PgStore {
    /// Take lease `name` for `node` for `ttl`, or renew it if `node` holds
    /// it already: `Some` while `node` is the holder, `None` while another
    /// node's lease has not run out.
    pub async fn acquire_lease(
        &self,
        name: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Held>> {
        let client = self.client().await?;
        let row = client
            .query_opt(TAKE, &[&name, &node, &ttl.as_secs_f64()])
            .await?;
        Ok(row.map(|r| Held { fence: r.get(0) }))
    }

    /// [`PgStore::acquire_lease`], renewing in the same statement the
    /// claims `node` holds on executions for `ttl`: what a node does at
    /// each beat, leading or not (one statement for all it holds).
    pub async fn hold_lease(&self, name: &str, node: &str, ttl: Duration) -> Result<Option<Held>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "WITH claims AS (
                         UPDATE execution_queue SET lease_until = now() + make_interval(secs => $3)
                         WHERE node = $2)
                     {TAKE}"
                ),
                &[&name, &node, &ttl.as_secs_f64()],
            )
            .await?;
        Ok(row.map(|r| Held { fence: r.get(0) }))
    }

    /// Renew every lease `node` holds, in one statement; how many.
    pub async fn renew_node_leases(&self, node: &str, ttl: Duration) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $2)
                 WHERE holder = $1 AND expires_at >= now()",
                &[&node, &ttl.as_secs_f64()],
            )
            .await?)
    }

    /// A node's beat for its sensors: hold its own `node/<node>` lease for
    /// `ttl` (the live nodes are those whose lease has not run out), renew
    /// the leases it holds whose name starts with `prefix` (those that ran
    /// out are lost: another node may run them), and count the live nodes.
    /// Returns the names of the leases renewed, and how many nodes live.
    pub async fn beat_leases(
        &self,
        node: &str,
        prefix: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, usize)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH me AS (
                     INSERT INTO leases (name, holder, fence, expires_at)
                     VALUES ('node/' || $1, $1, nextval('lease_fence'),
                             now() + make_interval(secs => $3))
                     ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE leases.holder = excluded.holder
                 ), renewed AS (
                     UPDATE leases SET expires_at = now() + make_interval(secs => $3)
                     WHERE holder = $1 AND starts_with(name, $2) AND expires_at >= now()
                     RETURNING name
                 )
                 SELECT ARRAY(SELECT name FROM renewed ORDER BY name),
                        (SELECT count(*) FROM leases
                         WHERE starts_with(name, 'node/') AND name <> 'node/' || $1
                           AND expires_at >= now()) + 1",
                &[&node, &prefix, &ttl.as_secs_f64()],
            )
            .await?;
        let live: i64 = row.get(1);
        Ok((row.get(0), usize::try_from(live).unwrap_or(1)))
    }

    /// Give up every lease of `node` whose name starts with `prefix`, and
    /// its own `node/<node>` lease (a node stopping); how many.
    pub async fn release_leases(&self, node: &str, prefix: &str) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE leases SET expires_at = now() - interval '1 microsecond'
                 WHERE holder = $1 AND (starts_with(name, $2) OR name = 'node/' || $1)",
                &[&node, &prefix],
            )
            .await?)
    }

    /// Give lease `name` up (a node stopping), if `node` holds it; whether
    /// it did.
    pub async fn release_lease(&self, name: &str, node: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE leases SET expires_at = now() - interval '1 microsecond'
                 WHERE name = $1 AND holder = $2",
                &[&name, &node],
            )
            .await?
            == 1)
    }

    /// The holder of lease `name` and its fence, while it has not run out.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT holder, fence FROM leases WHERE name = $1 AND expires_at >= now()",
                &[&name],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    /// Every lease held now: its name, holder and seconds left.
    pub async fn leases_held(&self) -> Result<Vec<(String, String, f64)>> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT name, holder, EXTRACT(EPOCH FROM expires_at - now())::float8
                 FROM leases WHERE expires_at >= now() ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Record that `timer` of `tenant` fires at `fire_time` (RFC 3339, the
    /// tick's own time): `true` for the one node that records it first,
    /// which fires it; `false` for every other.
    pub async fn record_timer_fire(
        &self,
        tenant: &TenantId,
        timer: &str,
        fire_time: &str,
        node: &str,
    ) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "INSERT INTO timer_fires (tenant_id, timer, fire_time, node)
                 VALUES ($1, $2, $3::text::timestamptz, $4)
                 ON CONFLICT DO NOTHING",
                &[&tenant.as_str(), &timer, &fire_time, &node],
            )
            .await?
            == 1)
    }
}

#[cfg(test)]
mod tests {
    use squall_tests::postgres::Postgres;

    use super::*;

    async fn store(pg: &Postgres, name: &str) -> PgStore {
        PgStore::connect(&pg.create_database(name), 16)
            .await
            .expect("connect")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nodes_beat_renews_its_leases_of_a_kind_and_counts_the_live_nodes() {
        let pg = Postgres::start();
        let store = store(&pg, "beats").await;
        let ttl = Duration::from_secs(30);
        let beat = async |node: &str| store.beat_leases(node, "sensor/", ttl).await.expect("beat");
        assert_eq!(beat("a").await, (vec![], 1));
        assert_eq!(beat("b").await, (vec![], 2));
        for name in ["sensor/t/p.One", "sensor/t/p.Two", "leader"] {
            assert!(
                store
                    .acquire_lease(name, "a", ttl)
                    .await
                    .expect("take")
                    .is_some()
            );
        }
        // One of a's ran out: it is not renewed, and another takes it.
        store
            .acquire_lease("sensor/t/p.Two", "a", Duration::ZERO)
            .await
            .expect("shorten");
        assert_eq!(beat("a").await, (vec!["sensor/t/p.One".to_owned()], 2));
        assert!(
            store
                .acquire_lease("sensor/t/p.Two", "b", ttl)
                .await
                .expect("take")
                .is_some()
        );
        assert_eq!(beat("b").await, (vec!["sensor/t/p.Two".to_owned()], 2));
        // a stops: its sensors' leases and its own go, the leader's stays.
        assert_eq!(
            store.release_leases("a", "sensor/").await.expect("release"),
            2
        );
        assert_eq!(beat("b").await, (vec!["sensor/t/p.Two".to_owned()], 1));
        assert!(
            store
                .acquire_lease("sensor/t/p.One", "b", ttl)
                .await
                .expect("take")
                .is_some()
        );
        assert_eq!(
            store
                .lease_holder("leader")
                .await
                .expect("read")
                .map(|(h, _)| h),
            Some("a".to_owned())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_has_one_holder_and_moves_only_once_it_runs_out() {
        let pg = Postgres::start();
        let store = store(&pg, "leases").await;
        let ttl = Duration::from_secs(30);
        // Three nodes race for it: one holds it.
        let racers: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|node| {
                let store = store.clone();
                tokio::spawn(async move {
                    (
                        node,
                        store
                            .acquire_lease("leader", node, ttl)
                            .await
                            .expect("acquire"),
                    )
                })
            })
            .collect();
        let mut holders = Vec::new();
        for r in racers {
            let (node, held) = r.await.expect("racer");
            if let Some(held) = held {
                holders.push((node, held));
            }
        }
        assert_eq!(holders.len(), 1, "{holders:?}");
        let (leader, first) = holders[0];
        assert_eq!(
            store.lease_holder("leader").await.expect("read"),
            Some((leader.to_owned(), first.fence))
        );
        // The holder renews it, keeping its fence; the others cannot take it.
        assert_eq!(
            store
                .acquire_lease("leader", leader, ttl)
                .await
                .expect("renew"),
            Some(first)
        );
        assert_eq!(
            store.renew_node_leases(leader, ttl).await.expect("renew"),
            1
        );
        let other = if leader == "a" { "b" } else { "a" };
        assert_eq!(
            store
                .acquire_lease("leader", other, ttl)
                .await
                .expect("try"),
            None
        );

        // The holder stops renewing (a short lease here): once it runs
        // out, another node takes it under a greater fence.
        let short = Duration::from_millis(200);
        store
            .acquire_lease("sensor/default/examples.s", leader, short)
            .await
            .expect("take")
            .expect("free");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let taken = loop {
            if let Some(held) = store
                .acquire_lease("sensor/default/examples.s", other, ttl)
                .await
                .expect("try")
            {
                break held;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never ran out"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(taken.fence > first.fence);
        // A lease that ran out is not renewed by its old holder's sweep.
        assert_eq!(
            store.renew_node_leases(leader, ttl).await.expect("renew"),
            1
        );
        assert_eq!(
            store
                .lease_holder("sensor/default/examples.s")
                .await
                .expect("read"),
            Some((other.to_owned(), taken.fence))
        );
        // Released on stopping: free at once.
        assert!(
            store
                .release_lease("leader", leader)
                .await
                .expect("release")
        );
        assert!(
            store
                .acquire_lease("leader", other, ttl)
                .await
                .expect("take")
                .is_some()
        );
        assert!(
            !store
                .release_lease("leader", leader)
                .await
                .expect("not its own")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timer_tick_fires_on_one_node() {
        let pg = Postgres::start();
        let store = store(&pg, "timers").await;
        let tenant = TenantId::default_tenant();
        for tick in ["2026-12-05T10:00:00Z", "2026-12-05T10:00:01Z"] {
            let nodes: Vec<_> = ["a", "b", "c"]
                .into_iter()
                .map(|node| {
                    let (store, tenant) = (store.clone(), tenant.clone());
                    tokio::spawn(async move {
                        store
                            .record_timer_fire(&tenant, "examples.every_second", tick, node)
                            .await
                            .expect("record")
                    })
                })
                .collect();
            let mut fired = 0;
            for n in nodes {
                fired += usize::from(n.await.expect("node"));
            }
            assert_eq!(fired, 1, "tick {tick}");
        }
        let other = TenantId::new("other").expect("tenant");
        assert!(
            store
                .record_timer_fire(&other, "examples.every_second", "2026-12-05T10:00:00Z", "a")
                .await
                .expect("record"),
            "another tenant's timer of the same name is its own"
        );
    }
}
