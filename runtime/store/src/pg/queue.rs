//! The cluster's execution queue: executions are claimed, not pushed. A
//! waiting execution has a row in `execution_queue`, a small, hot table
//! (fillfactor 70, partial indexes) apart from the history. A node claims
//! rows with `FOR UPDATE SKIP LOCKED`, each under a lease with a fence
//! number from one sequence, and commits the claim before it runs
//! anything. It completes an execution only while its fence still holds
//! the row: a node presumed dead whose lease was reaped, and whose
//! execution was ended or claimed again meanwhile, is refused, and the
//! refusal is recorded. A node renews all its leases in one statement.
//! Leases not renewed in time are reaped: their executions end
//! `abandoned`, as after a single node's crash.
//!
//! Per-tenant limits hold across the cluster: a claim takes each tenant's
//! advisory lock (in one order, so claimers never deadlock) before it
//! counts what the tenant has running on every node.

use std::time::Duration;

use squall_core::TenantId;
use squall_core::execution::{Execution, ExecutionStatus};
use squall_core::ids::ExecutionId;

use super::executions::update;
use super::{PgStore, by_id_in_tenant};
use crate::executions::{COLUMNS, ExecutionRow, decode, parsed};
use crate::{Error, Result};

/// An execution this node holds: run it, then complete it with the fence.
#[derive(Debug, Clone)]
pub struct Claim {
    pub execution: Execution,
    /// The claim's fence number: only a completion that carries it is
    /// accepted.
    pub fence: i64,
}

/// An execution whose lease ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub execution: ExecutionId,
    /// The node that held it.
    pub node: String,
    pub fence: i64,
    /// It had not started: released to be claimed again (else it ended
    /// `abandoned`).
    pub released: bool,
}

/// The advisory lock key of `tenant`'s running count.
fn tenant_lock(tenant: &str) -> String {
    format!("squall-running/{tenant}")
}

/// The executions of `pairs` (an id, and what goes with it), each read in
/// `tx` with its companion, in the order of their ids.
async fn paired_executions<T: Clone>(
    tx: &tokio_postgres::Transaction<'_>,
    pairs: &[(String, T)],
) -> Result<Vec<(Execution, T)>> {
    let ids: Vec<&str> = pairs.iter().map(|(id, _)| id.as_str()).collect();
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM executions WHERE id = ANY($1) ORDER BY id"),
            &[&ids],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let execution = parsed(decode(r)?)?;
            let with = pairs
                .iter()
                .find(|(id, _)| id == execution.id.as_str())
                .map(|(_, with)| with.clone())
                .ok_or_else(|| Error::Corrupt(format!("read {} unasked", execution.id)))?;
            Ok((execution, with))
        })
        .collect()
}

impl PgStore {
    /// Put a waiting execution in the queue, claimable once `delay` has
    /// passed.
    pub async fn enqueue(&self, execution: &Execution, delay: Duration) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO execution_queue (execution_id, tenant_id, available_at)
                 VALUES ($1, $2, now() + make_interval(secs => $3))",
                &[
                    &execution.id.as_str(),
                    &execution.tenant.as_str(),
                    &delay.as_secs_f64(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Claim up to `limit` available executions for `node`, oldest first,
    /// each under a lease of `lease`, and none that would put its tenant
    /// past `tenant_max_running` claimed executions across the cluster.
    /// The claim is committed before this returns.
    pub async fn claim(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
        tenant_max_running: Option<u32>,
    ) -> Result<Vec<Claim>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Tenants already at their limit are passed over here, so their
        // waiting executions do not fill the batch while other tenants'
        // wait (the count below, under the tenant's lock, is the one that
        // holds the limit).
        let cap = tenant_max_running.map_or(i64::MAX, i64::from);
        let candidates: Vec<(String, String)> = tx
            .query(
                "SELECT execution_id, tenant_id FROM execution_queue
                 WHERE node IS NULL AND available_at <= now()
                   AND tenant_id NOT IN (
                       SELECT tenant_id FROM execution_queue WHERE node IS NOT NULL
                       GROUP BY tenant_id HAVING count(*) >= $2)
                 ORDER BY available_at, execution_id
                 LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&limit, &cap],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut chosen: Vec<&str> = Vec::with_capacity(candidates.len());
        if let Some(max) = tenant_max_running {
            let mut tenants: Vec<&str> = candidates.iter().map(|(_, t)| t.as_str()).collect();
            tenants.sort_unstable();
            tenants.dedup();
            let mut room = std::collections::HashMap::new();
            for tenant in tenants {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    &[&tenant_lock(tenant)],
                )
                .await?;
                let running: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM execution_queue WHERE tenant_id = $1 AND node IS NOT NULL",
                        &[&tenant],
                    )
                    .await?
                    .get(0);
                room.insert(tenant, i64::from(max) - running);
            }
            for (id, tenant) in &candidates {
                let left = room.get_mut(tenant.as_str()).expect("counted");
                if *left > 0 {
                    *left -= 1;
                    chosen.push(id);
                }
            }
        } else {
            chosen.extend(candidates.iter().map(|(id, _)| id.as_str()));
        }
        let fences: Vec<(String, i64)> = tx
            .query(
                "UPDATE execution_queue
                 SET node = $1, fence = nextval('execution_fence'),
                     lease_until = now() + make_interval(secs => $2)
                 WHERE execution_id = ANY($3)
                 RETURNING execution_id, fence",
                &[&node, &lease.as_secs_f64(), &chosen],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let claimed = paired_executions(&tx, &fences).await?;
        tx.commit().await?;
        Ok(claimed
            .into_iter()
            .map(|(execution, fence)| Claim { execution, fence })
            .collect())
    }

    /// Record that an execution this node claimed with `fence` started
    /// running: only while the fence still holds its queue row and it is
    /// still waiting, so a node whose lease was reaped before it started
    /// does not run it. Returns false otherwise.
    pub async fn start_claimed(&self, fence: i64, execution: &Execution) -> Result<bool> {
        let row = ExecutionRow::encode(execution);
        let client = self.client().await?;
        let n = client
            .execute(
                concat!(
                    "UPDATE executions SET status = $3, status_log = $4
                     WHERE ",
                    by_id_in_tenant!(),
                    " AND status IN ('requested', 'scheduled', 'delayed')
                       AND EXISTS (SELECT 1 FROM execution_queue
                                   WHERE execution_id = executions.id AND fence = $5)"
                ),
                &[&row.tenant, &row.id, &row.status, &row.log, &fence],
            )
            .await?;
        Ok(n == 1)
    }

    /// Renew every lease `node` holds, in one statement; how many. A node's
    /// name must be its process's own (a restarted node takes a new one),
    /// or it would renew the leases of the process it replaced.
    pub async fn renew_leases(&self, node: &str, lease: Duration) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE execution_queue SET lease_until = now() + make_interval(secs => $2)
                 WHERE node = $1",
                &[&node, &lease.as_secs_f64()],
            )
            .await?)
    }

    /// Write the end of an execution this node claimed with `fence`:
    /// accepted (`true`) only while the fence still holds its queue row,
    /// which goes with it, and the record had not ended meanwhile (a
    /// cancel; the claim ends all the same, nothing is written); under a
    /// lost fence refused, and the refusal recorded with `node`.
    pub async fn complete_claimed(
        &self,
        node: &str,
        fence: i64,
        execution: &Execution,
    ) -> Result<bool> {
        let row = ExecutionRow::encode(execution);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let held = tx
            .execute(
                "DELETE FROM execution_queue WHERE execution_id = $1 AND fence = $2",
                &[&row.id, &fence],
            )
            .await?
            == 1;
        let mut written = false;
        if held {
            written = update(&tx, &row).await?;
        } else {
            tx.execute(
                "INSERT INTO stale_completions (execution_id, node, fence, status) VALUES ($1, $2, $3, $4)",
                &[&row.id, &node, &fence, &row.status],
            )
            .await?;
            tracing::warn!(execution = %row.id, node, fence, "a completion under a lost lease was refused");
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Take back up to `limit` executions whose lease ran out (their node
    /// died or stalled), in one transaction: one that had started ends
    /// `abandoned` and leaves the queue, as after a single node's crash;
    /// one that had not is released for another node to claim.
    pub async fn reap_expired(&self, limit: usize) -> Result<Vec<Reaped>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let expired: Vec<(String, String, i64)> = tx
            .query(
                "SELECT execution_id, node, fence FROM execution_queue
                 WHERE node IS NOT NULL AND lease_until < now()
                 ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&limit],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let ids: Vec<&str> = expired.iter().map(|(id, _, _)| id.as_str()).collect();
        let rows = tx
            .query(
                &format!("SELECT {COLUMNS} FROM executions WHERE id = ANY($1) FOR UPDATE"),
                &[&ids],
            )
            .await?;
        let mut reaped = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut execution = parsed(decode(r)?)?;
            let (_, node, fence) = expired
                .iter()
                .find(|(id, _, _)| id == execution.id.as_str())
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("reaped {} twice", execution.id)))?;
            let waiting = matches!(
                execution.status,
                ExecutionStatus::Requested | ExecutionStatus::Scheduled | ExecutionStatus::Delayed
            );
            if waiting {
                tx.execute(
                    "UPDATE execution_queue SET node = NULL, fence = NULL, lease_until = NULL
                     WHERE execution_id = $1",
                    &[&execution.id.as_str()],
                )
                .await?;
            } else {
                tx.execute(
                    "DELETE FROM execution_queue WHERE execution_id = $1",
                    &[&execution.id.as_str()],
                )
                .await?;
                if execution.transition(ExecutionStatus::Abandoned) {
                    update(&tx, &ExecutionRow::encode(&execution)).await?;
                }
            }
            reaped.push(Reaped {
                execution: execution.id,
                node,
                fence,
                released: waiting,
            });
        }
        tx.commit().await?;
        for r in &reaped {
            tracing::warn!(execution = %r.execution, node = %r.node, released = r.released, "lease ran out");
        }
        Ok(reaped)
    }

    /// Take over, for `node` and for `lease`, each under a new fence, the
    /// executions no live node holds: every claim of a node one of whose
    /// claims ran out (a node renews all its claims at once: it died or
    /// stalled), and those released; returns them. A dead node's claims
    /// go to one node together (a workflow with its tasks), and takeovers
    /// run one at a time across the cluster. From here on the database
    /// refuses the previous holder's writes to them (see
    /// [`crate::Error::is_fenced`]).
    pub async fn adopt_expired_claims(
        &self,
        node: &str,
        lease: Duration,
    ) -> Result<Vec<(TenantId, ExecutionId)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('squall-takeover', 0))",
            &[],
        )
        .await?;
        let rows = tx
            .query(
                "UPDATE execution_queue SET node = $1, fence = nextval('execution_fence'),
                     lease_until = now() + make_interval(secs => $2)
                 WHERE node IS NULL
                    OR (node <> $1 AND node IN (
                        SELECT node FROM execution_queue
                        WHERE node IS NOT NULL AND lease_until < now()))
                 RETURNING tenant_id, execution_id",
                &[&node, &lease.as_secs_f64()],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let tenant = TenantId::new(r.get::<_, String>(0))
                    .map_err(|e| Error::Corrupt(format!("tenant: {e}")))?;
                let id: String = r.get(1);
                let id = id
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("execution id {id}: {e}")))?;
                Ok((tenant, id))
            })
            .collect()
    }

    /// Say whether `node` is busy: its workers all taken, executions
    /// waiting for one. Only a busy node's waiting executions are taken
    /// by others ([`PgStore::take_waiting`]).
    pub async fn set_busy(&self, node: &str, busy: bool) -> Result<()> {
        let client = self.client().await?;
        let sql = if busy {
            "INSERT INTO busy_nodes (node) VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM busy_nodes WHERE node = $1"
        };
        client.execute(sql, &[&node]).await?;
        Ok(())
    }

    /// Take for `node`, each under a new fence and for `lease`, up to
    /// `limit` executions that other live nodes, busy ones
    /// ([`PgStore::set_busy`]), hold and that have waited there at least
    /// `waited` without starting: their node has no worker for them, this
    /// one has room. Only executions waiting for a worker are taken
    /// (`requested`, no delay, not a workflow's task: a task goes with its
    /// workflow), oldest first; each is locked as it is taken, so a holder
    /// starting one at that moment keeps it. From here on the holder's
    /// writes to them are refused (see [`crate::Error::is_fenced`]): it
    /// drops each as it reaches it.
    pub async fn take_waiting(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
        waited: Duration,
    ) -> Result<Vec<(Execution, String)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let taken: Vec<(String, String)> = tx
            .query(
                "SELECT q.execution_id, q.node FROM execution_queue q
                 JOIN executions e ON e.id = q.execution_id
                 WHERE q.node IS NOT NULL AND q.node <> $1 AND q.lease_until > now()
                   AND q.node IN (SELECT node FROM busy_nodes)
                   AND q.available_at <= now() - make_interval(secs => $3)
                   AND e.status = 'requested' AND e.parent IS NULL
                   AND coalesce(e.delay, 0) = 0
                 ORDER BY q.available_at, q.execution_id
                 LIMIT $2 FOR UPDATE OF q, e SKIP LOCKED",
                &[&node, &limit, &waited.as_secs_f64()],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
        // Waiting counts again from now: what a node took is not taken from
        // it at once.
        tx.execute(
            "UPDATE execution_queue SET node = $1, fence = nextval('execution_fence'),
                 lease_until = now() + make_interval(secs => $2), available_at = now()
             WHERE execution_id = ANY($3)",
            &[&node, &lease.as_secs_f64(), &ids],
        )
        .await?;
        let taken = paired_executions(&tx, &taken).await?;
        tx.commit().await?;
        Ok(taken)
    }

    /// Give `id`, which `node` took from node `to` (see
    /// [`PgStore::take_waiting`]) but cannot run (its secret parameters
    /// are only in `to`'s memory; its pack is not loaded here yet), back
    /// to `to`, whose job for it then runs; it is not taken again.
    pub async fn give_back(&self, node: &str, id: &ExecutionId, to: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE execution_queue SET node = $3, fence = nextval('execution_fence'),
                     available_at = 'infinity'
                 WHERE execution_id = $1 AND node = $2",
                &[&id.as_str(), &node, &to],
            )
            .await?
            == 1)
    }

    /// Claim for `node` every unfinished execution nobody claims (written
    /// by a tool, or before executions were claimed), for `lease`; returns
    /// them. Run at a node's start, before it takes over what was left.
    pub async fn claim_unclaimed(&self, node: &str, lease: Duration) -> Result<Vec<ExecutionId>> {
        let client = self.client().await?;
        client
            .query(
                "INSERT INTO execution_queue (execution_id, tenant_id, node, fence, lease_until)
                 SELECT id, tenant_id, $1, nextval('execution_fence'), now() + make_interval(secs => $2)
                 FROM executions e
                 WHERE status NOT IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')
                   AND NOT EXISTS (SELECT 1 FROM execution_queue q WHERE q.execution_id = e.id)
                 ON CONFLICT (execution_id) DO NOTHING
                 RETURNING execution_id",
                &[&node, &lease.as_secs_f64()],
            )
            .await?
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                id.parse()
                    .map_err(|e| Error::Corrupt(format!("execution id {id}: {e}")))
            })
            .collect()
    }

    /// Let `node`'s claims on `ids` run out now: it took them over but
    /// could not pick them up, and another round (its own or another
    /// node's) tries again.
    pub async fn release_executions(&self, node: &str, ids: &[&str]) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE execution_queue SET lease_until = now() - interval '1 microsecond'
                 WHERE node = $1 AND execution_id = ANY($2)",
                &[&node, &ids],
            )
            .await?)
    }

    /// Let the claims of `node` run out now (a node stopping gracefully),
    /// so that another node takes its unfinished executions over at once.
    pub async fn release_claims(&self, node: &str) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE execution_queue SET lease_until = now() - interval '1 microsecond'
                 WHERE node = $1",
                &[&node],
            )
            .await?)
    }

    /// The unfinished executions of every node: (the node holding them,
    /// their status, how many), for the cluster's figures.
    pub async fn cluster_executions(&self) -> Result<Vec<(String, String, i64)>> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT coalesce(q.node, ''), e.status, count(*) FROM execution_queue q
                 JOIN executions e ON e.id = q.execution_id GROUP BY 1, 2",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Completions refused because their lease was lost: (execution, node,
    /// fence), oldest first.
    pub async fn stale_completions(&self) -> Result<Vec<(String, String, i64)>> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT execution_id, node, fence FROM stale_completions ORDER BY refused_at, execution_id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use squall_core::TenantId;
    use squall_tests::postgres::Postgres;

    use super::*;
    use crate::contract::execution;

    /// A store on a fresh database of `pg`.
    async fn store(pg: &Postgres, name: &str) -> PgStore {
        PgStore::connect(&pg.create_database(name), 16)
            .await
            .expect("connect")
    }

    /// `n` waiting executions of `tenant`, queued.
    async fn queued(store: &PgStore, tenant: &TenantId, n: usize) -> Vec<ExecutionId> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let mut e = execution("core.noop", ExecutionStatus::Requested);
            e.tenant = tenant.clone();
            store.insert_execution(&e).await.expect("insert");
            store.enqueue(&e, Duration::ZERO).await.expect("enqueue");
            ids.push(e.id);
        }
        ids
    }

    /// Run a claimed execution to its end here.
    fn ran(mut e: Execution) -> Execution {
        assert!(
            e.transition(ExecutionStatus::Scheduled)
                && e.transition(ExecutionStatus::Running)
                && e.transition(ExecutionStatus::Succeeded)
        );
        e
    }

    const LEASE: Duration = Duration::from_secs(30);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_claiming_at_once_run_each_execution_exactly_once() {
        let pg = Postgres::start();
        let store = store(&pg, "share").await;
        let tenant = TenantId::default_tenant();
        let ids = queued(&store, &tenant, 300).await;
        let nodes: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|node| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    loop {
                        let claims = store.claim(node, 7, LEASE, None).await.expect("claim");
                        if claims.is_empty() {
                            return done;
                        }
                        for c in claims {
                            let id = c.execution.id.clone();
                            assert!(
                                store
                                    .complete_claimed(node, c.fence, &ran(c.execution))
                                    .await
                                    .expect("complete")
                            );
                            done.push(id);
                        }
                    }
                })
            })
            .collect();
        let mut runs: BTreeMap<ExecutionId, usize> = BTreeMap::new();
        for node in nodes {
            for id in node.await.expect("node") {
                *runs.entry(id).or_default() += 1;
            }
        }
        assert_eq!(runs.len(), ids.len());
        assert!(runs.values().all(|n| *n == 1), "{runs:?}");
        for id in &ids {
            let e = store
                .get_execution(&tenant, id)
                .await
                .expect("get")
                .expect("there");
            assert_eq!(e.status, ExecutionStatus::Succeeded);
        }
        assert!(
            store
                .claim("a", 10, LEASE, None)
                .await
                .expect("claim")
                .is_empty()
        );
        assert!(store.stale_completions().await.expect("read").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_lease_is_reaped_and_its_late_completion_refused() {
        let pg = Postgres::start();
        let store = store(&pg, "kill").await;
        let tenant = TenantId::default_tenant();
        let ids = queued(&store, &tenant, 3).await;
        // Node a takes two under a short lease and starts one; node c takes
        // the third and renews its lease.
        let short = Duration::from_millis(300);
        let mut held = store.claim("a", 2, short, None).await.expect("claim");
        assert_eq!(held.len(), 2);
        let kept = store.claim("c", 1, short, None).await.expect("claim");
        assert_eq!(kept.len(), 1);
        assert_eq!(store.renew_leases("c", LEASE).await.expect("renew"), 1);
        let not_started = held.pop().expect("two");
        let started = held.pop().expect("two");
        let mut running = started.execution.clone();
        assert!(
            running.transition(ExecutionStatus::Scheduled)
                && running.transition(ExecutionStatus::Running)
        );
        assert!(
            store
                .start_claimed(started.fence, &running)
                .await
                .expect("start")
        );

        // Node a stops renewing: its leases are reaped once they run out.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut reaped = Vec::new();
        while reaped.len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "not reaped: {reaped:?}"
            );
            reaped.extend(store.reap_expired(10).await.expect("reap"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reaped.sort_by_key(|r| r.released);
        assert_eq!(
            reaped
                .iter()
                .map(|r| (r.execution.clone(), r.node.as_str(), r.released))
                .collect::<Vec<_>>(),
            [
                (started.execution.id.clone(), "a", false),
                (not_started.execution.id.clone(), "a", true)
            ]
        );
        let abandoned = store
            .get_execution(&tenant, &started.execution.id)
            .await
            .expect("get")
            .expect("there");
        assert_eq!(abandoned.status, ExecutionStatus::Abandoned);

        // Node a comes back: it may not start what was released, and its
        // results are refused, and recorded.
        let mut too_late = not_started.execution.clone();
        assert!(
            too_late.transition(ExecutionStatus::Scheduled)
                && too_late.transition(ExecutionStatus::Running)
        );
        assert!(
            !store
                .start_claimed(not_started.fence, &too_late)
                .await
                .expect("start")
        );
        assert!(
            !store
                .complete_claimed("a", started.fence, &ran(started.execution.clone()))
                .await
                .expect("late")
        );
        let late = ran(not_started.execution.clone());
        assert!(
            !store
                .complete_claimed("a", not_started.fence, &late)
                .await
                .expect("late")
        );
        let stale = store.stale_completions().await.expect("read");
        assert_eq!(stale.len(), 2);
        assert!(stale.iter().all(|(_, node, _)| node == "a"));
        assert_eq!(
            store
                .get_execution(&tenant, &started.execution.id)
                .await
                .expect("get")
                .expect("there")
                .status,
            ExecutionStatus::Abandoned
        );

        // What had not started runs elsewhere, under a new fence.
        let again = store.claim("b", 10, LEASE, None).await.expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].execution.id, not_started.execution.id);
        assert!(again[0].fence > not_started.fence);
        assert!(
            store
                .complete_claimed("b", again[0].fence, &ran(again[0].execution.clone()))
                .await
                .expect("complete")
        );
        // Node c's renewed lease was not reaped.
        assert!(
            store
                .complete_claimed("c", kept[0].fence, &ran(kept[0].execution.clone()))
                .await
                .expect("complete")
        );
        assert_eq!(ids.len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_completion_of_an_execution_canceled_meanwhile_writes_nothing() {
        let pg = Postgres::start();
        let store = store(&pg, "canceled").await;
        let tenant = TenantId::default_tenant();
        queued(&store, &tenant, 1).await;
        let claimed = store
            .claim("a", 1, LEASE, None)
            .await
            .expect("claim")
            .pop()
            .expect("one");
        let mut canceled = claimed.execution.clone();
        assert!(canceled.transition(ExecutionStatus::Canceled));
        assert!(store.update_execution(&canceled).await.expect("cancel"));
        assert!(
            !store
                .complete_claimed("a", claimed.fence, &ran(claimed.execution.clone()))
                .await
                .expect("complete"),
            "the end of a canceled execution is not written"
        );
        let stored = store
            .get_execution(&tenant, &claimed.execution.id)
            .await
            .expect("get")
            .expect("it");
        assert_eq!(stored.status, ExecutionStatus::Canceled);
        assert!(
            store
                .claim("b", 1, LEASE, None)
                .await
                .expect("claim")
                .is_empty(),
            "its claim ended with it"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenants_running_limit_holds_across_nodes() {
        let pg = Postgres::start();
        let store = store(&pg, "limits").await;
        let acme = TenantId::new("acme").expect("tenant");
        store.create_tenant(&acme).await.expect("tenant");
        queued(&store, &acme, 10).await;
        queued(&store, &TenantId::default_tenant(), 3).await;
        let nodes: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|node| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.claim(node, 5, LEASE, Some(2)).await.expect("claim") },
                )
            })
            .collect();
        let mut claims = Vec::new();
        for node in nodes {
            claims.extend(node.await.expect("node"));
        }
        let of = |claims: &[Claim], tenant: &str| {
            claims
                .iter()
                .filter(|c| c.execution.tenant.as_str() == tenant)
                .count()
        };
        // Racing claimers fill acme's limit and no more; the default
        // tenant's executions (queued after acme's) may have waited behind
        // acme's in that round.
        assert_eq!(of(&claims, "acme"), 2, "{claims:?}");
        assert!(of(&claims, "default") <= 2, "{claims:?}");
        // A tenant at its limit no longer fills a claim: the next one takes
        // the default tenant's, up to its own limit.
        claims.extend(store.claim("d", 5, LEASE, Some(2)).await.expect("claim"));
        assert_eq!((of(&claims, "acme"), of(&claims, "default")), (2, 2));
        // One of acme's ends: room for one more of acme's.
        let first = claims
            .iter()
            .find(|c| c.execution.tenant == acme)
            .expect("one")
            .clone();
        assert!(
            store
                .complete_claimed("a", first.fence, &ran(first.execution))
                .await
                .expect("complete")
        );
        let more = store.claim("b", 10, LEASE, Some(2)).await.expect("claim");
        assert_eq!((of(&more, "acme"), of(&more, "default")), (1, 0));
    }

    /// The node holding `e`'s claim, if it has one.
    async fn holder(store: &PgStore, e: &Execution) -> Option<Option<String>> {
        let client = store.client().await.expect("client");
        client
            .query_opt(
                "SELECT node FROM execution_queue WHERE execution_id = $1",
                &[&e.id.as_str()],
            )
            .await
            .expect("query")
            .map(|r| r.get(0))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_node_takes_what_waits_on_a_busy_one_and_the_busy_one_is_refused() {
        let pg = Postgres::start();
        let url = pg.create_database("share");
        let node = |name: &'static str| PgStore::connect_as(&url, 2, None, name, LEASE);
        let (busy, idle) = (
            node("busy").await.expect("busy"),
            node("idle").await.expect("idle"),
        );
        let waited = Duration::from_millis(200);
        let requested = async |change: fn(&mut Execution)| {
            let mut e = execution("core.noop", ExecutionStatus::Requested);
            change(&mut e);
            busy.insert_execution(&e).await.expect("insert");
            e
        };
        let first = requested(|_| {}).await;
        let second = requested(|_| {}).await;
        let started = requested(|_| {}).await;
        let delayed = requested(|e| e.delay = Some(60_000)).await;
        let task = requested(|e| {
            let parent = serde_json::json!({"execution_id": ExecutionId::generate().as_str()});
            e.context.insert("parent".into(), parent);
        })
        .await;
        let mut running = started.clone();
        assert!(running.transition(ExecutionStatus::Scheduled));
        assert!(running.transition(ExecutionStatus::Running));
        assert!(busy.start_execution(&running).await.expect("started"));
        // Nothing is taken from a node that is not busy, however long
        // it waited, nor before it waited long enough.
        tokio::time::sleep(waited).await;
        assert!(
            idle.take_waiting("idle", 10, LEASE, waited)
                .await
                .expect("take")
                .is_empty()
        );
        busy.set_busy("busy", true).await.expect("busy");
        assert!(
            idle.take_waiting("idle", 10, LEASE, Duration::from_secs(600))
                .await
                .expect("take")
                .is_empty()
        );
        // Once they have: the oldest first, as many as asked; never what
        // started, waits out a delay, or is a workflow's task.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let taken = loop {
            let taken = idle
                .take_waiting("idle", 1, LEASE, waited)
                .await
                .expect("take");
            if !taken.is_empty() || std::time::Instant::now() > deadline {
                break taken;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ids = |list: &[(Execution, String)]| {
            list.iter()
                .map(|(e, from)| {
                    assert_eq!(from, "busy");
                    e.id.clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&taken), vec![first.id.clone()]);
        let rest = idle
            .take_waiting("idle", 10, LEASE, waited)
            .await
            .expect("take");
        assert_eq!(ids(&rest), vec![second.id.clone()]);
        for left in [&started, &delayed, &task] {
            assert_eq!(holder(&busy, left).await, Some(Some("busy".into())));
        }
        // Its own are not taken from it again, and a node no longer busy
        // keeps what it has.
        busy.set_busy("busy", false).await.expect("not busy");
        let third = requested(|_| {}).await;
        tokio::time::sleep(waited).await;
        assert!(
            idle.take_waiting("idle", 10, LEASE, waited)
                .await
                .expect("take")
                .is_empty()
        );
        assert_eq!(holder(&busy, &third).await, Some(Some("busy".into())));
        assert!(
            idle.take_waiting("idle", 10, LEASE, waited)
                .await
                .expect("take")
                .is_empty()
        );
        // The busy node, reaching one, is refused; the idle node runs it.
        let mut late = first.clone();
        assert!(late.transition(ExecutionStatus::Scheduled));
        assert!(late.transition(ExecutionStatus::Running));
        let refused = busy.start_execution(&late).await.expect_err("refused");
        assert!(refused.is_fenced(), "{refused}");
        assert!(
            idle.start_execution(&late)
                .await
                .expect("the taker starts it")
        );
        // One the taker cannot run goes back, and stays there.
        assert!(
            idle.give_back("idle", &second.id, "busy")
                .await
                .expect("give back")
        );
        assert_eq!(holder(&busy, &second).await, Some(Some("busy".into())));
        busy.set_busy("busy", true).await.expect("busy");
        tokio::time::sleep(waited).await;
        let now = idle
            .take_waiting("idle", 10, LEASE, waited)
            .await
            .expect("take");
        assert_eq!(ids(&now), vec![third.id.clone()], "not the one given back");
        let mut started = second.clone();
        assert!(started.transition(ExecutionStatus::Scheduled));
        assert!(started.transition(ExecutionStatus::Running));
        assert!(
            busy.start_execution(&started)
                .await
                .expect("its holder starts it")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_execution_is_written_only_by_the_node_holding_it() {
        let pg = Postgres::start();
        let url = pg.create_database("held");
        let node = |name: &'static str, claims| PgStore::connect_as(&url, 2, None, name, claims);
        // a's claims run out soon: it stands for a node that died.
        let short = Duration::from_millis(500);
        let (a, b) = (
            node("a", short).await.expect("a"),
            node("b", LEASE).await.expect("b"),
        );
        let tool = PgStore::connect(&url, 1).await.expect("tool");
        let status = async |e: &Execution| {
            let stored = tool.get_execution(&e.tenant, &e.id).await.expect("get");
            stored.expect("stored").status
        };

        // Written by a: claimed by a, which alone may write it.
        let mut e = execution("core.noop", ExecutionStatus::Requested);
        a.insert_execution(&e).await.expect("insert");
        assert_eq!(holder(&a, &e).await, Some(Some("a".into())));
        assert!(e.transition(ExecutionStatus::Scheduled));
        assert!(a.update_execution(&e).await.expect("a writes its own"));
        assert!(e.transition(ExecutionStatus::Running));
        let refused = b.update_execution(&e).await.expect_err("b is refused");
        assert!(refused.is_fenced(), "{refused}");
        assert!(refused.to_string().contains("held by node a"), "{refused}");
        assert_eq!(status(&e).await, ExecutionStatus::Scheduled);
        let refused = b.start_execution(&e).await.expect_err("b cannot start it");
        assert!(refused.is_fenced(), "{refused}");
        assert_eq!(status(&e).await, ExecutionStatus::Scheduled);

        // b takes a's claims over once they ran out (a presumed dead):
        // now a is refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let adopted = loop {
            let adopted = b.adopt_expired_claims("b", LEASE).await.expect("adopt");
            if !adopted.is_empty() || std::time::Instant::now() > deadline {
                break adopted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(adopted, vec![(e.tenant.clone(), e.id.clone())]);
        assert!(
            b.adopt_expired_claims("b", LEASE)
                .await
                .expect("again")
                .is_empty()
        );
        let late = a.update_execution(&e).await.expect_err("a is refused");
        assert!(late.is_fenced(), "{late}");
        assert_eq!(status(&e).await, ExecutionStatus::Scheduled);
        assert!(b.update_execution(&e).await.expect("b writes it"));
        assert!(e.transition(ExecutionStatus::Succeeded));
        assert!(b.update_execution(&e).await.expect("b ends it"));
        assert_eq!(holder(&a, &e).await, None, "the claim ends with it");
        assert_eq!(status(&e).await, ExecutionStatus::Succeeded);

        // Neither an execution written already ended nor one written
        // without a node (the command-line tools) is claimed, and a
        // connection without a node is not refused.
        let ended = execution("core.noop", ExecutionStatus::Failed);
        a.insert_execution(&ended).await.expect("insert");
        assert_eq!(holder(&a, &ended).await, None);
        let mut by_tool = execution("core.noop", ExecutionStatus::Requested);
        tool.insert_execution(&by_tool).await.expect("insert");
        assert_eq!(holder(&a, &by_tool).await, None);
        let mut held = execution("core.noop", ExecutionStatus::Requested);
        a.insert_execution(&held).await.expect("insert");
        assert!(held.transition(ExecutionStatus::Canceled));
        assert!(tool.update_execution(&held).await.expect("a tool writes"));
        assert!(by_tool.transition(ExecutionStatus::Canceled));
        assert!(a.update_execution(&by_tool).await.expect("unclaimed"));

        // A node's claims are renewed in one statement; released, they are
        // another node's to take at once.
        let waiting = execution("core.noop", ExecutionStatus::Requested);
        b.insert_execution(&waiting).await.expect("insert");
        let left = async || -> f64 {
            let client = tool.client().await.expect("client");
            let row = client
                .query_one(
                    "SELECT EXTRACT(EPOCH FROM lease_until - now())::float8 FROM execution_queue
                     WHERE execution_id = $1",
                    &[&waiting.id.as_str()],
                )
                .await
                .expect("lease");
            row.get(0)
        };
        assert!(left().await <= LEASE.as_secs_f64());
        let longer = Duration::from_secs(600);
        assert_eq!(b.renew_leases("b", longer).await.expect("renew"), 1);
        assert!(left().await > LEASE.as_secs_f64());
        assert!(
            a.adopt_expired_claims("a", LEASE)
                .await
                .expect("adopt")
                .is_empty()
        );
        assert_eq!(b.release_claims("b").await.expect("release"), 1);
        let taken = a.adopt_expired_claims("a", LEASE).await.expect("adopt");
        assert_eq!(taken, vec![(waiting.tenant.clone(), waiting.id.clone())]);

        // What nobody claims (written by a tool) is claimed at a node's
        // start; claimed executions and ended ones are left alone.
        let unclaimed = execution("core.noop", ExecutionStatus::Requested);
        tool.insert_execution(&unclaimed).await.expect("insert");
        let claimed = b.claim_unclaimed("b", LEASE).await.expect("claim");
        assert_eq!(claimed, vec![unclaimed.id.clone()]);
        assert_eq!(holder(&a, &unclaimed).await, Some(Some("b".into())));
        assert!(
            b.claim_unclaimed("b", LEASE)
                .await
                .expect("claim")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_node_name_that_would_not_pass_as_a_setting_is_refused() {
        let pg = Postgres::start();
        let url = pg.create_database("names");
        for name in ["", "a b", "a\\b", "a=b"] {
            let refused = PgStore::connect_as(&url, 1, None, name, LEASE).await;
            assert!(
                refused.is_err_and(|e| e.to_string().contains("letters, digits")),
                "{name:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delayed_execution_waits_its_delay() {
        let pg = Postgres::start();
        let store = store(&pg, "delay").await;
        let e = execution("core.noop", ExecutionStatus::Requested);
        store.insert_execution(&e).await.expect("insert");
        store
            .enqueue(&e, Duration::from_secs(3600))
            .await
            .expect("enqueue");
        assert!(
            store
                .claim("a", 10, LEASE, None)
                .await
                .expect("claim")
                .is_empty()
        );
    }
}
