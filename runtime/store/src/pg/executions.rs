//! Execution records on PostgreSQL, as the SQLite store keeps them
//! (`crate::executions`, whose encoding, decoding and filters both share):
//! a completed execution is never written again, a waiting one starts at
//! most once, and lists page by id through the same indexes.

use squall_core::TenantId;
use squall_core::execution::Execution;
use squall_core::ids::ExecutionId;
use squall_core::metrics::metrics;

use super::{PgStore, arguments, by_id_in_tenant, exec, numbered};
use crate::executions::{
    COLUMNS, Columns, ExecutionFilter, ExecutionRow, ExecutionSummary, StoredExecution, decode,
    filter_sql, parsed,
};
use crate::{Error, Result};

/// The context's user, as the index `executions_by_user` has it.
pub(super) const USER: &str = "(context::jsonb ->> 'user')";

impl Columns for tokio_postgres::Row {
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.try_get(i)?)
    }
    fn maybe_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
    fn maybe_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }
}

const INSERT: &str = "INSERT INTO executions (id, tenant_id, action_ref, status, parameters, result, output, status_log, start_timestamp, end_timestamp, trace_tag, trigger_instance_id, rule_ref, context, delay, parent, trigger_type)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

pub(super) async fn insert(
    client: &impl deadpool_postgres::GenericClient,
    row: &ExecutionRow,
) -> Result<()> {
    exec(
        client,
        INSERT,
        &[
            &row.id,
            &row.tenant,
            &row.action,
            &row.status,
            &row.parameters,
            &row.result,
            &row.output,
            &row.log,
            &row.start,
            &row.end,
            &row.trace_tag,
            &row.trigger_instance_id,
            &row.rule_ref,
            &row.context,
            &row.delay,
            &row.parent,
            &row.trigger_type,
        ],
    )
    .await?;
    Ok(())
}

/// Update inside an open transaction; completed executions are left as
/// they are (returns `false`).
pub(super) async fn update(
    client: &impl deadpool_postgres::GenericClient,
    row: &ExecutionRow,
) -> Result<bool> {
    let n = exec(
            client,
            concat!(
                "UPDATE executions SET status = $3, result = $4, output = $5, status_log = $6, end_timestamp = $7, context = $8
                 WHERE ", by_id_in_tenant!(), "
                   AND status NOT IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')"
            ),
            &[&row.tenant, &row.id, &row.status, &row.result, &row.output, &row.log, &row.end, &row.context],
        )
        .await?;
    if n == 0 {
        let exists = client
            .query_opt(
                concat!("SELECT 1 FROM executions WHERE ", by_id_in_tenant!()),
                &[&row.tenant, &row.id],
            )
            .await?
            .is_some();
        if !exists {
            return Err(Error::Corrupt(format!(
                "execution {} does not exist",
                row.id
            )));
        }
    }
    Ok(n == 1)
}

impl PgStore {
    /// Insert a new execution record.
    pub async fn insert_execution(&self, execution: &Execution) -> Result<()> {
        let client = self.client().await?;
        insert(&client, &ExecutionRow::encode(execution)).await?;
        metrics().executions_requested.inc();
        Ok(())
    }

    /// Insert many new execution records in one transaction.
    pub async fn insert_executions(&self, executions: &[Execution]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for e in executions {
            insert(&tx, &ExecutionRow::encode(e)).await?;
        }
        tx.commit().await?;
        metrics()
            .executions_requested
            .inc_by(executions.len() as u64);
        Ok(())
    }

    /// Write an execution's mutable fields: status, result, output, log,
    /// end, context. An execution already in a completed status is never
    /// changed again: such a write is skipped and `false` returned.
    pub async fn update_execution(&self, execution: &Execution) -> Result<bool> {
        let client = self.client().await?;
        let written = update(&client, &ExecutionRow::encode(execution)).await?;
        if written && execution.status.is_completed() {
            metrics().completed(execution.status.as_str());
        }
        Ok(written)
    }

    /// Record that an execution started running — only if it is still
    /// waiting (`requested`, `scheduled` or `delayed`), so no execution can
    /// start twice. Returns false when it was not waiting.
    pub async fn start_execution(&self, execution: &Execution) -> Result<bool> {
        let row = ExecutionRow::encode(execution);
        let client = self.client().await?;
        let n = exec(
            &client,
            concat!(
                "UPDATE executions SET status = $3, status_log = $4
                     WHERE ",
                by_id_in_tenant!(),
                " AND status IN ('requested', 'scheduled', 'delayed')"
            ),
            &[&row.tenant, &row.id, &row.status, &row.log],
        )
        .await?;
        Ok(n == 1)
    }

    /// Mark a running execution `canceling` (only if it is still running).
    pub async fn mark_canceling(&self, execution: &Execution) -> Result<bool> {
        let log = serde_json::to_string(&execution.log).expect("a log serializes");
        let client = self.client().await?;
        let n = exec(
            &client,
            concat!(
                "UPDATE executions SET status = 'canceling', status_log = $3
                 WHERE ",
                by_id_in_tenant!(),
                " AND status = 'running'"
            ),
            &[&execution.tenant.as_str(), &execution.id.as_str(), &log],
        )
        .await?;
        Ok(n == 1)
    }

    /// [`PgStore::get_execution`] without parsing the result.
    pub async fn get_execution_stored(
        &self,
        tenant: &TenantId,
        id: &ExecutionId,
    ) -> Result<Option<StoredExecution>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM executions WHERE {}",
                by_id_in_tenant!()
            ))
            .await?;
        client
            .query_opt(&stmt, &[&tenant.as_str(), &id.as_str()])
            .await?
            .map(|r| decode(&r))
            .transpose()
    }

    pub async fn get_execution(
        &self,
        tenant: &TenantId,
        id: &ExecutionId,
    ) -> Result<Option<Execution>> {
        self.get_execution_stored(tenant, id)
            .await?
            .map(parsed)
            .transpose()
    }

    /// The executions of `tenant` among `ids`, by id (those that exist).
    pub async fn executions_by_id(
        &self,
        tenant: &TenantId,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Execution>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM executions
                 WHERE id = ANY($2) AND tenant_id IS NOT DISTINCT FROM $1"
            ))
            .await?;
        client
            .query(&stmt, &[&tenant.as_str(), &ids])
            .await?
            .iter()
            .map(|r| {
                let e = parsed(decode(r)?)?;
                Ok((e.id.as_str().to_owned(), e))
            })
            .collect()
    }

    /// Executions matching `filter`, newest first.
    pub async fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>> {
        let (stored, _) = self.list_executions_stored(filter).await?;
        stored.into_iter().map(parsed).collect()
    }

    /// [`PgStore::list_executions`] and how many match in all.
    pub async fn list_executions_counted(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<(Vec<Execution>, u64)> {
        let (stored, total) = self.list_executions_stored(filter).await?;
        Ok((
            stored.into_iter().map(parsed).collect::<Result<_>>()?,
            total,
        ))
    }

    /// Executions matching `filter`, newest first, results left as stored,
    /// and how many match in all.
    pub async fn list_executions_stored(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<(Vec<StoredExecution>, u64)> {
        let (clause, args) = filter_sql(filter, USER);
        let (rows, total) = self
            .list_page("executions", COLUMNS, &clause, &args, page(filter))
            .await?;
        let stored = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok((stored, total))
    }

    /// What a list of executions shows of each matching `filter`, newest
    /// first, without counting all that match.
    pub async fn list_execution_summaries(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<ExecutionSummary>> {
        let (clause, args) = filter_sql(filter, USER);
        let clause = numbered(&clause, 1);
        let n = args.len();
        let (limit, offset) = page(filter);
        let params = arguments(&args, &limit, &offset);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT id, action_ref, status, start_timestamp, end_timestamp, rule_ref,
                            trigger_instance_id, parent, {USER},
                            EXISTS (SELECT 1 FROM executions AS c
                                    WHERE c.tenant_id = executions.tenant_id AND c.parent = executions.id),
                            trigger_type
                     FROM executions WHERE {clause} ORDER BY id DESC LIMIT ${} OFFSET ${}",
                    n + 1,
                    n + 2
                ),
                &params,
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ExecutionSummary {
                    id: r.try_get(0)?,
                    action: r.try_get(1)?,
                    status: r.try_get(2)?,
                    start_timestamp: r.try_get(3)?,
                    end_timestamp: r.try_get(4)?,
                    rule: r.try_get(5)?,
                    trigger_instance: r.try_get(6)?,
                    parent: r.try_get(7)?,
                    user: r.try_get(8)?,
                    has_children: r.try_get(9)?,
                    trigger_type: r.try_get(10)?,
                })
            })
            .collect()
    }
}

/// The page `filter` asks for, as PostgreSQL's `LIMIT` and `OFFSET` take
/// them.
fn page(filter: &ExecutionFilter) -> (i64, i64) {
    (
        i64::try_from(filter.limit).unwrap_or(i64::MAX),
        i64::try_from(filter.offset).unwrap_or(i64::MAX),
    )
}
