//! Concurrency gates counted across the cluster: a concurrency policy, a
//! tenant's running limit. Each slot an execution holds is a row of
//! `gate_slots`, taken under the gate's advisory lock, so the nodes
//! together never hold more than the gate's threshold. The write that ends
//! an execution frees its slots, whichever node makes it (a takeover's
//! `abandoned` included), and sends a `NOTIFY` on [`GATES`] naming the
//! tenant: a hint to the nodes whose executions wait at its gates, which
//! also look again every second.

use squall_core::{ExecutionId, TenantId};
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::Result;

/// The notification channel of freed gate slots; the payload names the
/// tenant whose gates have room again.
pub const GATES: &str = "squall_gates";

impl PgStore {
    /// Take a slot of every gate of `gates` (a key, and how many may hold
    /// it at once) for `execution`, all or none, under the gates' locks.
    /// Returns the index in `gates` of the first gate found full (nothing
    /// is taken then), else `None`. The slots `execution` holds already
    /// (a node that took it over admits it again) are its own.
    pub async fn take_gates(
        &self,
        tenant: &TenantId,
        execution: &ExecutionId,
        gates: &[(&str, usize)],
    ) -> Result<Option<usize>> {
        let keys: Vec<String> = gates.iter().map(|(key, _)| super::storable(key)).collect();
        let thresholds: Vec<i64> = gates
            .iter()
            .map(|(_, threshold)| i64::try_from(*threshold).unwrap_or(i64::MAX))
            .collect();
        // Locked in one order, whoever asks, so two executions under the
        // same gates never wait on each other.
        let mut locks: Vec<String> = keys.iter().map(|k| format!("squall-gate/{k}")).collect();
        locks.sort_unstable();
        locks.dedup();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (execution, tenant) = (execution.as_str(), tenant.as_str());
        let lock_args: [&(dyn ToSql + Sync); 1] = [&locks];
        let take_args: [&(dyn ToSql + Sync); 4] = [&keys, &thresholds, &execution, &tenant];
        // Pipelined: the count runs once the locks are held.
        let lock = tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
            &lock_args,
        );
        let full = tx.query(
            "WITH full_gate AS (
                 SELECT w.i FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS w(gate, threshold, i)
                 WHERE (SELECT count(*) FROM gate_slots s
                        WHERE s.gate = w.gate AND s.execution_id <> $3) >= w.threshold
             ), taken AS (
                 INSERT INTO gate_slots (gate, execution_id, tenant_id)
                 SELECT g, $3, $4 FROM unnest($1::text[]) AS g
                 WHERE NOT EXISTS (SELECT 1 FROM full_gate)
                 ON CONFLICT DO NOTHING
             )
             SELECT min(i) FROM full_gate",
            &take_args,
        );
        let (_, full) = futures_util::future::try_join(lock, full).await?;
        tx.commit().await?;
        let first: Option<i64> = full.first().and_then(|r| r.get(0));
        Ok(first.and_then(|i| usize::try_from(i - 1).ok()))
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
