//! Workflows: a running workflow's state (a head row and one row per task
//! execution) written in the same transaction as the executions that
//! moved it, so a crash never separates them.

use rusqlite::params;
use squall_core::{Execution, ExecutionId, TenantId};

use crate::executions::{COLUMNS, ExecutionRow, from_row, insert, update};
use squall_core::metrics::metrics;

use crate::reactor::{Emission, insert_instance, insert_outcome};
use crate::{Error, Result, SqliteStore};

/// One workflow's changed state, encoded by the caller.
#[derive(Debug, Clone)]
pub struct WorkflowWrite {
    /// The workflow's own execution.
    pub id: ExecutionId,
    pub tenant: TenantId,
    /// Its context (input, vars): written once, when it starts.
    pub context: Option<String>,
    pub head: String,
    pub completed: bool,
    /// Task executions that are new or changed: (index, JSON).
    pub tasks: Vec<(u64, String)>,
}

/// An execution that ended, with what its end emitted (as
/// [`SqliteStore::complete_execution`] writes it).
#[derive(Debug)]
pub struct Completion<'a> {
    pub execution: &'a Execution,
    pub emitted: Vec<Emission<'a>>,
    /// Executions its end requested (a retry).
    pub follow_ups: Vec<&'a Execution>,
}

/// Everything one workflow event writes, in one transaction.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// Executions that ended. The first one decides: when its record had
    /// already ended, nothing is written.
    pub completions: Vec<Completion<'a>>,
    /// Executions whose status changes otherwise (a workflow starting,
    /// pausing, canceling). Without completions, the first one decides.
    pub updates: Vec<&'a Execution>,
    /// New executions: the tasks' actions.
    pub inserts: Vec<&'a Execution>,
    /// New records written first, as they are, before the completions
    /// (which may end one of them: a re-run's workflow execution that
    /// ends in its first step), and never deciding: a task run that could
    /// not start, a re-run's workflow execution.
    pub created: Vec<&'a Execution>,
    pub workflows: Vec<WorkflowWrite>,
}

impl<'a> Batch<'a> {
    /// The batch of one execution's end, with what it emitted and the
    /// executions it requested (`SqliteStore::complete_execution`).
    pub(crate) fn completing(
        execution: &'a Execution,
        emitted: &[Emission<'a>],
        follow_ups: &[&'a Execution],
    ) -> Self {
        Self {
            completions: vec![Completion {
                execution,
                emitted: emitted
                    .iter()
                    .map(|e| Emission {
                        instance: e.instance,
                        enforcements: e.enforcements.clone(),
                        executions: e.executions.clone(),
                    })
                    .collect(),
                follow_ups: follow_ups.to_vec(),
            }],
            ..Default::default()
        }
    }
}

/// A running workflow as stored.
#[derive(Debug, Clone)]
pub struct StoredWorkflow {
    pub id: ExecutionId,
    pub tenant: TenantId,
    pub context: String,
    pub head: String,
    /// (index, JSON) in index order.
    pub tasks: Vec<(u64, String)>,
}

/// A batch encoded for its rows, before any engine writes it.
pub(crate) struct Encoded {
    pub(crate) created: Vec<ExecutionRow>,
    pub(crate) completions: Vec<(ExecutionRow, EncodedEmissions, Vec<ExecutionRow>)>,
    pub(crate) updates: Vec<ExecutionRow>,
    pub(crate) inserts: Vec<ExecutionRow>,
    pub(crate) workflows: Vec<WorkflowWrite>,
}

/// What a written batch adds to the metrics.
pub(crate) struct BatchCounts {
    instances: usize,
    requested: usize,
    ended: Vec<&'static str>,
}

impl BatchCounts {
    pub(crate) fn record(self) {
        let m = metrics();
        for status in self.ended {
            m.completed(status);
        }
        m.trigger_instances.inc_by(self.instances as u64);
        m.executions_requested.inc_by(self.requested as u64);
    }
}

impl Encoded {
    pub(crate) fn of(batch: &Batch<'_>) -> Self {
        let rows = |list: &[&Execution]| -> Vec<ExecutionRow> {
            list.iter().map(|e| ExecutionRow::encode(e)).collect()
        };
        Self {
            completions: batch
                .completions
                .iter()
                .map(|c| {
                    (
                        ExecutionRow::encode(c.execution),
                        c.emitted
                            .iter()
                            .map(|e| {
                                (
                                    crate::reactor::InstanceRow::encode(e.instance),
                                    e.enforcements.clone(),
                                    rows(&e.executions),
                                )
                            })
                            .collect(),
                        rows(&c.follow_ups),
                    )
                })
                .collect(),
            updates: rows(&batch.updates),
            inserts: rows(&batch.inserts),
            created: rows(&batch.created),
            workflows: batch.workflows.clone(),
        }
    }

    pub(crate) fn counts(&self, batch: &Batch<'_>) -> BatchCounts {
        BatchCounts {
            instances: self.completions.iter().map(|(_, e, _)| e.len()).sum(),
            requested: self
                .completions
                .iter()
                .map(|(_, e, f)| e.iter().map(|(_, _, x)| x.len()).sum::<usize>() + f.len())
                .sum::<usize>()
                + self.inserts.len()
                + self.created.len(),
            ended: batch
                .completions
                .iter()
                .map(|c| c.execution.status)
                .filter(|s| s.is_completed())
                .map(|s| s.as_str())
                .collect(),
        }
    }

    /// Whether `row` is one of the records this batch creates.
    pub(crate) fn creates(&self, row: &ExecutionRow) -> bool {
        self.created.iter().any(|c| c.id == row.id)
    }
}

pub(crate) type EncodedEmissions = Vec<(
    crate::reactor::InstanceRow,
    Vec<squall_core::trigger::RuleEnforcement>,
    Vec<ExecutionRow>,
)>;

impl SqliteStore {
    /// Write `batch` in one transaction. Returns false, writing nothing,
    /// when the execution that decides had already ended.
    pub async fn write_batch(&self, batch: &Batch<'_>) -> Result<bool> {
        self.submit_batch(batch, crate::Lane::Queued)?.await
    }

    /// [`SqliteStore::write_batch`], queued for the writer before this returns:
    /// batches submitted one after the other are written in that order.
    pub fn submit_batch(
        &self,
        batch: &Batch<'_>,
        lane: crate::Lane,
    ) -> Result<impl Future<Output = Result<bool>> + Send + 'static> {
        let encoded = Encoded::of(batch);
        let counts = encoded.counts(batch);
        let pending = self.submit_by(lane, move |txn| {
            // Created records first: a completion may end one of them (a
            // re-run's workflow execution ending in its first step). One of
            // them cannot have ended elsewhere, so it never decides.
            for row in &encoded.created {
                insert(txn, row)?;
            }
            // Not written after all: with created records to undo, an error
            // (the writer rolls this write back alone); else nothing was
            // written yet.
            let superseded = || {
                if encoded.created.is_empty() {
                    Ok(false)
                } else {
                    Err(crate::Error::Superseded)
                }
            };
            let mut first = true;
            for (row, emitted, follow_ups) in &encoded.completions {
                if !update(txn, row)? && first && !encoded.creates(row) {
                    return superseded();
                }
                first = false;
                for (instance, enforcements, executions) in emitted {
                    insert_instance(txn, instance)?;
                    insert_outcome(txn, enforcements, executions)?;
                }
                for e in follow_ups {
                    insert(txn, e)?;
                }
            }
            for row in &encoded.updates {
                if !update(txn, row)? && first {
                    return superseded();
                }
                first = false;
            }
            for row in &encoded.inserts {
                insert(txn, row)?;
            }
            for w in &encoded.workflows {
                write_workflow(txn, w)?;
            }
            Ok(true)
        })?;
        Ok(async move {
            let written = match pending.await {
                Ok(written) => written,
                // Nothing of it was kept: the writer rolled it back.
                Err(crate::Error::Superseded) => false,
                Err(e) => return Err(e),
            };
            if written {
                counts.record();
            }
            Ok(written)
        })
    }

    /// Workflows that had not ended, all tenants, oldest first.
    pub fn running_workflows(&self) -> Result<Vec<StoredWorkflow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, tenant_id, context, head FROM workflows WHERE completed = 0 ORDER BY id",
            )?;
            let heads = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut tasks = conn.prepare(
                "SELECT seq, body FROM workflow_tasks WHERE workflow_id = ?1 ORDER BY seq",
            )?;
            let mut out = Vec::with_capacity(heads.len());
            for (id, tenant, context, head) in heads {
                let rows = tasks
                    .query_map([&id], |r| {
                        Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.push(StoredWorkflow {
                    id: id
                        .parse()
                        .map_err(|e| Error::Corrupt(format!("workflow id: {e}")))?,
                    tenant: TenantId::new(tenant)
                        .map_err(|e| Error::Corrupt(format!("workflow tenant: {e}")))?,
                    context,
                    head,
                    tasks: rows,
                });
            }
            Ok(out)
        })
    }

    /// One workflow's stored state, running or not.
    pub fn workflow(&self, tenant: &TenantId, id: &ExecutionId) -> Result<Option<StoredWorkflow>> {
        self.read(|conn| {
            let head = conn
                .prepare_cached(
                    "SELECT context, head FROM workflows WHERE tenant_id = ?1 AND id = ?2",
                )?
                .query_row(params![tenant.as_str(), id.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                });
            let (context, head) = match head {
                Ok(found) => found,
                Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let tasks = conn
                .prepare_cached(
                    "SELECT seq, body FROM workflow_tasks WHERE workflow_id = ?1 ORDER BY seq",
                )?
                .query_map([id.as_str()], |r| {
                    Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(StoredWorkflow {
                id: id.clone(),
                tenant: tenant.clone(),
                context,
                head,
                tasks,
            }))
        })
    }

    /// The executions whose parent is `parent` (a workflow's tasks), oldest
    /// first.
    pub fn children(&self, tenant: &TenantId, parent: &ExecutionId) -> Result<Vec<Execution>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM executions WHERE tenant_id = ?1 AND parent = ?2 ORDER BY id"
            ))?;
            let rows = stmt.query_map(params![tenant.as_str(), parent.as_str()], |row| {
                Ok(from_row(row))
            })?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
    }
}

fn write_workflow(txn: &rusqlite::Transaction<'_>, w: &WorkflowWrite) -> Result<()> {
    match &w.context {
        Some(context) => {
            txn.prepare_cached(
                "INSERT INTO workflows (id, tenant_id, context, head, completed) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET head = excluded.head, completed = excluded.completed",
            )?
            .execute(params![
                w.id.as_str(),
                w.tenant.as_str(),
                context,
                w.head,
                w.completed
            ])?;
        }
        None => {
            txn.prepare_cached("UPDATE workflows SET head = ?2, completed = ?3 WHERE id = ?1")?
                .execute(params![w.id.as_str(), w.head, w.completed])?;
        }
    }
    let mut put = txn.prepare_cached(
        "INSERT INTO workflow_tasks (workflow_id, seq, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (workflow_id, seq) DO UPDATE SET body = excluded.body",
    )?;
    for (seq, body) in &w.tasks {
        put.execute(params![
            w.id.as_str(),
            i64::try_from(*seq).unwrap_or(i64::MAX),
            body
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{SqliteStore, StoreConfig};

    #[tokio::test]
    async fn workflow_batches_keep_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteStore::open(&dir.path().join("db"), &StoreConfig::default()).expect("open");
        crate::contract::workflow_batches(&crate::Store::from(store.clone())).await;
    }
}
