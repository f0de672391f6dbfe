//! Workflows on PostgreSQL: a workflow's state written in the same
//! transaction as the executions that moved it, as the SQLite store writes
//! it (`crate::workflows`, whose encoding both share).

use squall_core::{Execution, ExecutionId, TenantId};

use super::executions::{insert, update};
use super::reactor::{insert_instance, insert_outcome};
use super::{PgStore, exec};
use crate::executions::{COLUMNS, decode, parsed};
use crate::reactor::Emission;
use crate::workflows::{Batch, Encoded, StoredWorkflow, WorkflowWrite};
use crate::{Error, Result};

fn seq_of(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or(0)
}

async fn write_workflow(
    client: &impl deadpool_postgres::GenericClient,
    w: &WorkflowWrite,
) -> Result<()> {
    match &w.context {
        Some(context) => {
            exec(
                    client,
                    "INSERT INTO workflows (id, tenant_id, context, head, completed) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (id) DO UPDATE SET head = excluded.head, completed = excluded.completed",
                    &[&w.id.as_str(), &w.tenant.as_str(), context, &w.head, &w.completed],
                )
                .await?;
        }
        None => {
            exec(
                client,
                "UPDATE workflows SET head = $2, completed = $3 WHERE id = $1",
                &[&w.id.as_str(), &w.head, &w.completed],
            )
            .await?;
        }
    }
    for (seq, body) in &w.tasks {
        client
            .execute(
                "INSERT INTO workflow_tasks (workflow_id, seq, body) VALUES ($1, $2, $3)
                 ON CONFLICT (workflow_id, seq) DO UPDATE SET body = excluded.body",
                &[
                    &w.id.as_str(),
                    &i64::try_from(*seq).unwrap_or(i64::MAX),
                    body,
                ],
            )
            .await?;
    }
    Ok(())
}

impl PgStore {
    /// Write `batch` in one transaction. Returns false, writing nothing,
    /// when the execution that decides had already ended.
    pub async fn write_batch(&self, batch: &Batch<'_>) -> Result<bool> {
        let encoded = Encoded::of(batch);
        let counts = encoded.counts(batch);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Created records first: a completion may end one of them. One of
        // them cannot have ended elsewhere, so it never decides.
        for row in &encoded.created {
            insert(&tx, row).await?;
        }
        // Dropped without a commit, the transaction writes nothing.
        let mut first = true;
        for (row, emitted, follow_ups) in &encoded.completions {
            if !update(&tx, row).await? && first && !encoded.creates(row) {
                return Ok(false);
            }
            first = false;
            for (instance, enforcements, executions) in emitted {
                insert_instance(&tx, instance).await?;
                insert_outcome(&tx, enforcements, executions).await?;
            }
            for e in follow_ups {
                insert(&tx, e).await?;
            }
        }
        for row in &encoded.updates {
            if !update(&tx, row).await? && first {
                return Ok(false);
            }
            first = false;
        }
        for row in &encoded.inserts {
            insert(&tx, row).await?;
        }
        for w in &encoded.workflows {
            write_workflow(&tx, w).await?;
        }
        tx.commit().await?;
        counts.record();
        Ok(true)
    }

    /// Record an execution's final state together with the trigger
    /// instances its completion emits and any follow-up executions, in one
    /// transaction; `false`, writing nothing, when it had already ended.
    pub async fn complete_execution(
        &self,
        execution: &Execution,
        emitted: &[Emission<'_>],
        follow_ups: &[&Execution],
    ) -> Result<bool> {
        self.write_batch(&Batch::completing(execution, emitted, follow_ups))
            .await
    }
}

/// A workflow's task rows, read on the connection its head was read on
/// (a second connection from the pool could wait forever on a full pool).
async fn tasks(
    client: &impl deadpool_postgres::GenericClient,
    id: &str,
) -> Result<Vec<(u64, String)>> {
    Ok(client
        .query(
            "SELECT seq, body FROM workflow_tasks WHERE workflow_id = $1 ORDER BY seq",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| (seq_of(r.get(0)), r.get(1)))
        .collect())
}

impl PgStore {
    /// Workflows that had not ended, all tenants, oldest first.
    pub async fn running_workflows(&self) -> Result<Vec<StoredWorkflow>> {
        let client = self.client().await?;
        let heads = client
            .query(
                "SELECT id, tenant_id, context, head FROM workflows WHERE NOT completed ORDER BY id",
                &[],
            )
            .await?;
        let mut out = Vec::with_capacity(heads.len());
        for r in heads {
            let id: String = r.get(0);
            out.push(StoredWorkflow {
                tasks: tasks(&client, &id).await?,
                id: id
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("workflow id: {e}")))?,
                tenant: TenantId::new(r.get::<_, String>(1))
                    .map_err(|e| Error::Corrupt(format!("workflow tenant: {e}")))?,
                context: r.get(2),
                head: r.get(3),
            });
        }
        Ok(out)
    }

    /// One workflow's stored state, running or not.
    pub async fn workflow(
        &self,
        tenant: &TenantId,
        id: &ExecutionId,
    ) -> Result<Option<StoredWorkflow>> {
        let client = self.client().await?;
        let Some(head) = client
            .query_opt(
                "SELECT context, head FROM workflows WHERE tenant_id = $1 AND id = $2",
                &[&tenant.as_str(), &id.as_str()],
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(StoredWorkflow {
            id: id.clone(),
            tenant: tenant.clone(),
            context: head.get(0),
            head: head.get(1),
            tasks: tasks(&client, id.as_str()).await?,
        }))
    }

    /// The executions whose parent is `parent` (a workflow's tasks), oldest
    /// first.
    pub async fn children(
        &self,
        tenant: &TenantId,
        parent: &ExecutionId,
    ) -> Result<Vec<Execution>> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM executions WHERE tenant_id = $1 AND parent = $2 ORDER BY id"
                ),
                &[&tenant.as_str(), &parent.as_str()],
            )
            .await?
            .iter()
            .map(|r| parsed(decode(r)?))
            .collect()
    }
}
