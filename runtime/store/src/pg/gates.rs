//! Concurrency gates counted across the cluster: a concurrency policy, a
//! tenant's running limit. Each slot an execution holds is a row of
//! `gate_slots`, taken under the gate's advisory lock, so the nodes
//! together never hold more than the gate's threshold. The write that ends
//! an execution frees its slots, whichever node makes it (a takeover's
//! `abandoned` included), and sends a `NOTIFY` on [`GATES`] naming the
//! tenant: a hint to the nodes whose executions wait at its gates, which
//! also look again every second.

use std::collections::{HashMap, HashSet};

use squall_core::{ExecutionId, TenantId};
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::{Error, Result};

/// The notification channel of freed gate slots; the payload names the
/// tenant whose gates have room again.
pub const GATES: &str = "squall_gates";

/// One execution asking for a slot of each of its gates.
pub(super) struct Ask {
    tenant: String,
    execution: String,
    /// Each gate's stored key and threshold.
    gates: Vec<(String, usize)>,
    answer: tokio::sync::oneshot::Sender<Result<Option<usize>>>,
}

impl super::group::Member for Ask {
    fn fail(self, error: Error) {
        let _ = self.answer.send(Err(error));
    }
}

/// Asks counted together: what arrives while the database counts waits,
/// and is counted next, in one transaction (see [`PgStore::take_gates`]).
pub(super) type Asks = super::group::Group<Ask>;

/// Asks counted in one transaction, at most.
const GROUP: usize = 256;

impl PgStore {
    /// Take a slot of every gate of `gates` (a key, and how many may hold
    /// it at once) for `execution`, all or none, under the gates' locks.
    /// Returns the index in `gates` of the first gate found full (nothing
    /// is taken then), else `None`. The slots `execution` holds already
    /// (a node that took it over admits it again) are its own. An
    /// execution that has ended meanwhile (canceled) takes nothing.
    ///
    /// Asks that arrive together are counted together, in the order they
    /// arrived, in one transaction: a gate's lock is held until its
    /// commit, and every execution under the gate would otherwise queue
    /// behind each one's round trips.
    pub async fn take_gates(
        &self,
        tenant: &TenantId,
        execution: &ExecutionId,
        gates: &[(&str, usize)],
    ) -> Result<Option<usize>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let ask = Ask {
            tenant: tenant.as_str().to_owned(),
            execution: execution.as_str().to_owned(),
            gates: gates
                .iter()
                .map(|(key, threshold)| (super::storable(key), *threshold))
                .collect(),
            answer,
        };
        if self.gate_asks.join(ask) {
            let store = self.clone();
            self.bridge
                .handle()
                .spawn(async move { store.count_gates().await });
        }
        answered.await.map_err(|_| super::group::writer_stopped())?
    }

    /// Count what asks, a group at a time, until nothing does.
    async fn count_gates(&self) {
        let mut writer = self.gate_asks.writer();
        while let Some(group) = writer.next(GROUP) {
            match self.count_group(&group).await {
                Ok(answers) => {
                    for (ask, answer) in group.into_iter().zip(answers) {
                        let _ = ask.answer.send(Ok(answer));
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    for ask in group {
                        let _ = ask.answer.send(Err(Error::Batch(reason.clone())));
                    }
                }
            }
        }
    }

    /// Each ask of `group`'s answer, in one transaction.
    async fn count_group(&self, group: &[Ask]) -> Result<Vec<Option<usize>>> {
        let mut keys: Vec<&str> = group
            .iter()
            .flat_map(|a| a.gates.iter().map(|(key, _)| key.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        // Locked in one order, whoever asks, so two nodes counting the
        // same gates never wait on each other.
        let locks: Vec<String> = keys.iter().map(|k| format!("squall-gate/{k}")).collect();
        let executions: Vec<&str> = group.iter().map(|a| a.execution.as_str()).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock_args: [&(dyn ToSql + Sync); 1] = [&locks];
        let held_args: [&(dyn ToSql + Sync); 1] = [&keys];
        let live_args: [&(dyn ToSql + Sync); 1] = [&executions];
        // A slot's row need not wait for the disk: the gates' locks are
        // held until the commit. A crash of the database can lose the last
        // instants' rows (their executions then run uncounted until they
        // end); the executions themselves are written durably apart.
        let lazy = tx.batch_execute("SET LOCAL synchronous_commit = off");
        let lock = tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
            &lock_args,
        );
        // Read once the locks are held (the statements run in order).
        let held = tx.query(
            "SELECT gate, execution_id FROM gate_slots WHERE gate = ANY($1)",
            &held_args,
        );
        // Locked against their ending until this commits: one that ends
        // after it frees what it took here; one that ended takes nothing.
        let live = tx.query(
            "SELECT id FROM executions WHERE id = ANY($1)
               AND status NOT IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')
             FOR SHARE",
            &live_args,
        );
        let ((), _, held, live) = futures_util::future::try_join4(lazy, lock, held, live).await?;
        let mut holders: HashMap<String, HashSet<String>> = HashMap::new();
        for row in &held {
            holders.entry(row.get(0)).or_default().insert(row.get(1));
        }
        let live: HashSet<String> = live.iter().map(|r| r.get(0)).collect();
        let mut answers = Vec::with_capacity(group.len());
        let (mut gates, mut taken, mut tenants) = (Vec::new(), Vec::new(), Vec::new());
        for ask in group {
            let full = ask.gates.iter().position(|(key, threshold)| {
                let holding = holders.get(key);
                let others =
                    holding.map_or(0, |h| h.len() - usize::from(h.contains(&ask.execution)));
                others >= *threshold
            });
            if full.is_none() && live.contains(&ask.execution) {
                for (key, _) in &ask.gates {
                    if holders
                        .entry(key.clone())
                        .or_default()
                        .insert(ask.execution.clone())
                    {
                        gates.push(key.as_str());
                        taken.push(ask.execution.as_str());
                        tenants.push(ask.tenant.as_str());
                    }
                }
            }
            answers.push(full);
        }
        if !gates.is_empty() {
            tx.execute(
                "INSERT INTO gate_slots (gate, execution_id, tenant_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT DO NOTHING",
                &[&gates, &taken, &tenants],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(answers)
    }

    /// Free the slots `execution` holds before it ends (a workflow that
    /// started, a question asked: neither holds its gates while it runs),
    /// and tell the nodes waiting at its tenant's gates.
    pub async fn free_gates(&self, tenant: &TenantId, execution: &ExecutionId) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "WITH freed AS (DELETE FROM gate_slots WHERE execution_id = $1 RETURNING 1)
                 SELECT pg_notify($2, $3) WHERE EXISTS (SELECT 1 FROM freed)",
                &[&execution.as_str(), &GATES, &tenant.as_str()],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use squall_core::ExecutionStatus;
    use squall_tests::postgres::Postgres;

    use super::*;
    use crate::contract::execution;
    use crate::pg::Heard;

    /// The next notification `heard` hears.
    async fn next_hint(heard: &mut tokio::sync::mpsc::UnboundedReceiver<Heard>) -> Heard {
        tokio::time::timeout(Duration::from_secs(60), heard.recv())
            .await
            .expect("a notification")
            .expect("the listener runs")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gate_holds_across_nodes_and_an_ending_frees_its_slot() {
        let pg = Postgres::start();
        let url = pg.create_database("gates");
        let (one, two) = (
            PgStore::connect(&url, 8).await.expect("connect"),
            PgStore::connect(&url, 8).await.expect("connect"),
        );
        let tenant = TenantId::default_tenant();
        let mut executions = Vec::new();
        for _ in 0..12 {
            let e = execution("core.noop", ExecutionStatus::Requested);
            one.insert_execution(&e).await.expect("insert");
            executions.push(e);
        }
        // Twelve ask at once through two stores, each under the tenant's
        // limit of 5 and a policy's gate of 2 (the same key on both).
        let tenant = &tenant;
        let asks = executions.iter().enumerate().map(|(i, e)| {
            let store = if i % 2 == 0 { &one } else { &two };
            let gates = [("default\0", 5), ("default\0core.noop", 2)];
            async move { store.take_gates(tenant, &e.id, &gates).await }
        });
        let answers = futures_util::future::try_join_all(asks)
            .await
            .expect("asked");
        let admitted: Vec<usize> = (0..answers.len())
            .filter(|i| answers[*i].is_none())
            .collect();
        assert_eq!(admitted.len(), 2, "{answers:?}");
        assert!(
            answers.iter().flatten().all(|full| *full == 1),
            "the policy's gate is the full one: {answers:?}"
        );
        // One already holding its slots asks again (taken over): its own.
        let holder = &executions[admitted[0]];
        let gates = [("default\0", 5), ("default\0core.noop", 2)];
        assert_eq!(
            two.take_gates(tenant, &holder.id, &gates)
                .await
                .expect("gates"),
            None
        );
        let waiting = &executions[(0..12).find(|i| !admitted.contains(i)).expect("one waits")];
        assert_eq!(
            two.take_gates(tenant, &waiting.id, &gates)
                .await
                .expect("gates"),
            Some(1)
        );

        // One that ended before it was counted (a cancel racing its
        // admission) takes nothing.
        let mut canceled = waiting.clone();
        assert!(canceled.transition(ExecutionStatus::Canceled));
        one.update_execution(&canceled).await.expect("cancel");
        let wide = [("default\0", 5), ("default\0wide", 100)];
        assert_eq!(
            two.take_gates(tenant, &canceled.id, &wide)
                .await
                .expect("gates"),
            None
        );
        let client = one.client().await.expect("client");
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM gate_slots WHERE execution_id = $1",
                &[&canceled.id.as_str()],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(rows, 0, "no slot for an ended execution");
        let waiting = &executions[(0..12)
            .rev()
            .find(|i| !admitted.contains(i))
            .expect("one waits")];

        // The write that ends a holder frees its slots, and says so.
        let mut heard = two.listen_changes().await.expect("listen");
        let mut ended = holder.clone();
        assert!(
            ended.transition(ExecutionStatus::Scheduled)
                && ended.transition(ExecutionStatus::Running)
                && ended.transition(ExecutionStatus::Succeeded)
        );
        one.update_execution(&ended).await.expect("end");
        assert_eq!(next_hint(&mut heard).await, Heard::Gates(tenant.clone()));
        assert_eq!(
            two.take_gates(tenant, &waiting.id, &gates)
                .await
                .expect("gates"),
            None
        );
        // Full again; freed before its end by the other holder (a workflow
        // that started), then there is room.
        let third = &executions[(0..12)
            .find(|i| !admitted.contains(i) && executions[*i].id != waiting.id)
            .expect("another waits")];
        assert_eq!(
            one.take_gates(tenant, &third.id, &gates)
                .await
                .expect("gates"),
            Some(1)
        );
        let other = &executions[admitted[1]];
        one.free_gates(tenant, &other.id).await.expect("free");
        assert_eq!(next_hint(&mut heard).await, Heard::Gates(tenant.clone()));
        assert_eq!(
            one.take_gates(tenant, &third.id, &gates)
                .await
                .expect("gates"),
            None
        );
        // Freeing what holds nothing says nothing: the next hint heard is
        // one sent after it.
        one.free_gates(tenant, &other.id).await.expect("free");
        let client = one.client().await.expect("client");
        client
            .execute("SELECT pg_notify($1, 'marker')", &[&GATES])
            .await
            .expect("notify");
        assert_eq!(
            next_hint(&mut heard).await,
            Heard::Gates(TenantId::new("marker").expect("tenant"))
        );
    }
}
