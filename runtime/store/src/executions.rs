//! The executions table.

use rusqlite::{OptionalExtension, Row, params};
use squall_core::execution::CapturedOutput;
use squall_core::metrics::metrics;
use squall_core::{ActionRef, Execution, ExecutionId, ExecutionStatus, StatusChange, TenantId};

use crate::{Error, Result, SqliteStore};

/// Which executions to list; newest first.
#[derive(Debug, Clone)]
pub struct ExecutionFilter {
    pub tenant: TenantId,
    pub action: Option<ActionRef>,
    pub status: Option<ExecutionStatus>,
    pub trigger_instance: Option<String>,
    /// Only the tasks of this workflow execution, or (`Some(None)`) only
    /// executions that are no workflow's task.
    pub parent: Option<Option<ExecutionId>>,
    /// Only those the rule requested.
    pub rule: Option<String>,
    /// Only those a rule requested for an instance of this trigger type.
    pub trigger_type: Option<String>,
    /// Only those this user asked for (the context's `user`).
    pub user: Option<String>,
    /// Only those whose id sorts below this one: the next page of a list
    /// read newest first, found by the index instead of skipped over.
    pub before: Option<String>,
    /// Only those whose id sorts at or above this one (ids begin with
    /// their creation time: see [`ExecutionFilter::id_at_millis`]).
    pub since: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

impl ExecutionFilter {
    pub fn for_tenant(tenant: TenantId) -> Self {
        Self {
            tenant,
            action: None,
            status: None,
            trigger_instance: None,
            parent: None,
            rule: None,
            trigger_type: None,
            user: None,
            before: None,
            since: None,
            limit: 50,
            offset: 0,
        }
    }

    /// The id bound that selects what was created at or after `millis`
    /// (Unix milliseconds): ids are UUIDv7, which begin with them.
    pub fn id_at_millis(millis: u64) -> String {
        format!("{:012x}{}", millis & 0xffff_ffff_ffff, "0".repeat(20))
    }
}

pub(crate) const COLUMNS: &str = "id, tenant_id, action_ref, status, parameters, result, output, status_log, start_timestamp, end_timestamp, trace_tag, trigger_instance_id, rule_ref, context, delay, parent, trigger_type";

/// An execution as stored, its result left as the JSON text it was stored
/// as, so serving it does not parse it again.
#[derive(Debug, Clone)]
pub struct StoredExecution {
    /// The record, with `result` left `None`.
    pub execution: Execution,
    pub result_json: Option<String>,
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("execution fields serialize to JSON")
}

impl SqliteStore {
    /// Insert a new execution record.
    pub async fn insert_execution(&self, execution: &Execution) -> Result<()> {
        let row = ExecutionRow::encode(execution);
        self.write(move |txn| insert(txn, &row)).await?;
        metrics().executions_requested.inc();
        Ok(())
    }

    /// Insert many new execution records in one write.
    pub async fn insert_executions(&self, executions: &[Execution]) -> Result<()> {
        let rows: Vec<ExecutionRow> = executions.iter().map(ExecutionRow::encode).collect();
        let n = rows.len() as u64;
        self.write(move |txn| {
            for row in &rows {
                insert(txn, row)?;
            }
            Ok(())
        })
        .await?;
        metrics().executions_requested.inc_by(n);
        Ok(())
    }

    /// Write an execution's mutable fields: status, result, output, log,
    /// end, context. An execution already in a completed status is never
    /// changed again: such a write is skipped and `false` returned.
    pub async fn update_execution(&self, execution: &Execution) -> Result<bool> {
        let row = ExecutionRow::encode(execution);
        let written = self.write(move |txn| update(txn, &row)).await?;
        if written && execution.status.is_completed() {
            metrics().completed(execution.status.as_str());
        }
        Ok(written)
    }

    /// Record that an execution started running — only if it is still
    /// waiting (`requested`, `scheduled` or `delayed`), so no execution can
    /// start twice. Returns false when it was not waiting.
    pub async fn start_execution(&self, execution: &Execution, lane: crate::Lane) -> Result<bool> {
        let row = ExecutionRow::encode(execution);
        self.submit_by(lane, move |txn| {
            let n = txn
                .prepare_cached(
                    "UPDATE executions SET status = ?3, status_log = ?4
                     WHERE tenant_id = ?1 AND id = ?2 AND status IN ('requested', 'scheduled', 'delayed')",
                )?
                .execute(params![row.tenant, row.id, row.status, row.log])?;
            Ok(n == 1)
        })?
        .await
    }

    /// Mark a running execution `canceling` (only if it is still running).
    pub async fn mark_canceling(&self, execution: &Execution) -> Result<bool> {
        let (tenant, id) = (execution.tenant.clone(), execution.id.clone());
        let log = json(&execution.log);
        self.write(move |txn| {
            let n = txn
                .prepare_cached(
                    "UPDATE executions SET status = 'canceling', status_log = ?3
                     WHERE tenant_id = ?1 AND id = ?2 AND status = 'running'",
                )?
                .execute(params![tenant.as_str(), id.as_str(), log])?;
            Ok(n == 1)
        })
        .await
    }

    /// [`SqliteStore::get_execution`] without parsing the result.
    pub fn get_execution_stored(
        &self,
        tenant: &TenantId,
        id: &ExecutionId,
    ) -> Result<Option<StoredExecution>> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM executions WHERE tenant_id = ?1 AND id = ?2"),
                params![tenant.as_str(), id.as_str()],
                |row| Ok(stored_from_row(row)),
            )
            .optional()?
            .transpose()
        })
    }

    /// One execution of `tenant`.
    pub fn get_execution(&self, tenant: &TenantId, id: &ExecutionId) -> Result<Option<Execution>> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM executions WHERE tenant_id = ?1 AND id = ?2"),
                params![tenant.as_str(), id.as_str()],
                |row| Ok(from_row(row)),
            )
            .optional()?
            .transpose()
        })
    }

    /// Executions matching `filter`, newest first.
    pub fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>> {
        Ok(self.list_executions_counted(filter)?.0)
    }

    /// What a list of executions shows of each matching `filter`, newest
    /// first, without their parameters, results or output, and without
    /// counting all that match: a page of a long history costs the rows it
    /// shows.
    pub fn list_execution_summaries(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<ExecutionSummary>> {
        let (filter_sql, args) = filter_sql(filter, USER);
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(filter.offset).unwrap_or(i64::MAX);
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, action_ref, status, start_timestamp, end_timestamp, rule_ref,
                        trigger_instance_id, parent, context ->> '$.user',
                        EXISTS (SELECT 1 FROM executions AS c
                                WHERE c.tenant_id = executions.tenant_id AND c.parent = executions.id),
                        trigger_type
                 FROM executions WHERE {filter_sql} ORDER BY id DESC LIMIT ? OFFSET ?"
            ))?;
            let mut bound: Vec<rusqlite::types::Value> =
                args.into_iter().map(rusqlite::types::Value::Text).collect();
            bound.push(rusqlite::types::Value::Integer(limit));
            bound.push(rusqlite::types::Value::Integer(offset));
            let rows = stmt.query_map(rusqlite::params_from_iter(bound), |row| {
                Ok(ExecutionSummary {
                    id: row.get(0)?,
                    action: row.get(1)?,
                    status: row.get(2)?,
                    start_timestamp: row.get(3)?,
                    end_timestamp: row.get(4)?,
                    rule: row.get(5)?,
                    trigger_instance: row.get(6)?,
                    parent: row.get(7)?,
                    user: row.get(8)?,
                    has_children: row.get(9)?,
                    trigger_type: row.get(10)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// [`SqliteStore::list_executions_counted`] without parsing results.
    pub fn list_executions_stored(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<(Vec<StoredExecution>, u64)> {
        self.list_executions_with(filter, stored_from_row)
    }

    /// [`SqliteStore::list_executions`] and how many match in all. Only the
    /// filters given appear in the SQL, so SQLite can use the index that
    /// serves them (a `?x IS NULL OR ...` clause would force a table scan).
    pub fn list_executions_counted(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<(Vec<Execution>, u64)> {
        self.list_executions_with(filter, from_row)
    }

    fn list_executions_with<T>(
        &self,
        filter: &ExecutionFilter,
        from_row: fn(&Row<'_>) -> Result<T>,
    ) -> Result<(Vec<T>, u64)> {
        let (filter_sql, args) = filter_sql(filter, USER);
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(filter.offset).unwrap_or(i64::MAX);
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM executions WHERE {filter_sql} ORDER BY id DESC LIMIT ? OFFSET ?"
            ))?;
            let mut bound: Vec<rusqlite::types::Value> =
                args.iter().map(|a| rusqlite::types::Value::Text(a.clone())).collect();
            bound.push(rusqlite::types::Value::Integer(limit));
            bound.push(rusqlite::types::Value::Integer(offset));
            let rows = stmt.query_map(rusqlite::params_from_iter(bound), |row| Ok(from_row(row)))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            let total: i64 = conn
                .prepare_cached(&format!("SELECT count(*) FROM executions WHERE {filter_sql}"))?
                .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
            Ok((out, u64::try_from(total).unwrap_or(0)))
        })
    }
}

/// The context's user, as the index `executions_by_user` has it.
const USER: &str = "(context ->> '$.user')";

/// The `WHERE` clause `filter` makes, and its arguments. Only the filters
/// given appear in it, so SQLite can use the index that serves them (a
/// `?x IS NULL OR ...` clause would force a table scan). Arguments are
/// `?`, in order; `user` is how the engine reads the context's user (as its
/// index has it).
pub(crate) fn filter_sql(filter: &ExecutionFilter, user: &str) -> (String, Vec<String>) {
    let by_user = format!("{user} = ?");
    let mut clauses = vec!["tenant_id = ?"];
    let mut args: Vec<String> = vec![filter.tenant.as_str().to_owned()];
    if let Some(action) = &filter.action {
        clauses.push("action_ref = ?");
        args.push(action.to_string());
    }
    if let Some(status) = filter.status {
        clauses.push("status = ?");
        args.push(status.as_str().to_owned());
    }
    if let Some(ti) = &filter.trigger_instance {
        clauses.push("trigger_instance_id = ?");
        args.push(ti.clone());
    }
    match &filter.parent {
        Some(Some(parent)) => {
            clauses.push("parent = ?");
            args.push(parent.as_str().to_owned());
        }
        Some(None) => clauses.push("parent IS NULL"),
        None => {}
    }
    if let Some(rule) = &filter.rule {
        clauses.push("rule_ref = ?");
        args.push(rule.clone());
    }
    if let Some(trigger_type) = &filter.trigger_type {
        clauses.push("trigger_type = ?");
        args.push(trigger_type.clone());
    }
    if let Some(user) = &filter.user {
        clauses.push(&by_user);
        args.push(user.clone());
    }
    if let Some(before) = &filter.before {
        clauses.push("id < ?");
        args.push(before.clone());
    }
    if let Some(since) = &filter.since {
        clauses.push("id >= ?");
        args.push(since.clone());
    }
    (clauses.join(" AND "), args)
}

/// An execution as a list shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecutionSummary {
    pub id: String,
    pub action: String,
    pub status: String,
    pub start_timestamp: String,
    pub end_timestamp: Option<String>,
    pub rule: Option<String>,
    pub trigger_instance: Option<String>,
    pub parent: Option<String>,
    /// Who asked (the context's `user`).
    pub user: Option<String>,
    /// Whether it has tasks (a workflow's execution).
    pub has_children: bool,
    /// The type of the trigger instance whose rule started it.
    pub trigger_type: Option<String>,
}

/// An execution encoded for its row. Callers encode (JSON and all) before
/// handing the row to the writer, so the single writer thread only binds.
#[derive(Debug)]
pub(crate) struct ExecutionRow {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) action: String,
    pub(crate) status: &'static str,
    pub(crate) parameters: String,
    pub(crate) result: Option<String>,
    pub(crate) output: String,
    pub(crate) log: String,
    pub(crate) start: String,
    pub(crate) end: Option<String>,
    pub(crate) trace_tag: Option<String>,
    pub(crate) trigger_instance_id: Option<String>,
    pub(crate) rule_ref: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) delay: Option<i64>,
    /// The workflow execution this one is a task of.
    pub(crate) parent: Option<String>,
    pub(crate) trigger_type: Option<String>,
}

impl ExecutionRow {
    pub(crate) fn encode(e: &Execution) -> Self {
        Self {
            id: e.id.as_str().to_owned(),
            tenant: e.tenant.as_str().to_owned(),
            action: e.action.to_string(),
            status: e.status.as_str(),
            parameters: json(&e.parameters),
            result: e.result.as_ref().map(json),
            output: json(&e.output),
            log: json(&e.log),
            start: e.start_timestamp.clone(),
            end: e.end_timestamp.clone(),
            trace_tag: e.trace_tag.clone(),
            trigger_instance_id: e.trigger_instance_id.clone(),
            rule_ref: e.rule_ref.clone(),
            context: (!e.context.is_empty()).then(|| json(&e.context)),
            delay: e.delay.and_then(|d| i64::try_from(d).ok()),
            parent: e
                .context
                .get("parent")
                .and_then(|p| p.get("execution_id"))
                .and_then(|id| id.as_str())
                .map(str::to_owned),
            trigger_type: e.trigger_type.clone(),
        }
    }
}

/// Update inside an open transaction; completed executions are left as
/// they are (returns `false`).
pub(crate) fn update(txn: &rusqlite::Transaction<'_>, e: &ExecutionRow) -> Result<bool> {
    let n = txn
        .prepare_cached(
            "UPDATE executions SET status = ?3, result = ?4, output = ?5, status_log = ?6, end_timestamp = ?7, context = ?8
             WHERE tenant_id = ?1 AND id = ?2
               AND status NOT IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')",
        )?
        .execute(params![e.tenant, e.id, e.status, e.result, e.output, e.log, e.end, e.context])?;
    if n == 0 {
        let exists = txn
            .prepare_cached("SELECT 1 FROM executions WHERE tenant_id = ?1 AND id = ?2")?
            .exists(params![e.tenant, e.id])?;
        if !exists {
            return Err(Error::Corrupt(format!("execution {} does not exist", e.id)));
        }
    }
    Ok(n == 1)
}

/// Insert inside an open transaction (shared with trigger processing).
pub(crate) fn insert(txn: &rusqlite::Transaction<'_>, e: &ExecutionRow) -> Result<()> {
    static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO executions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        )
    });
    txn.prepare_cached(&INSERT)?.execute(params![
        e.id,
        e.tenant,
        e.action,
        e.status,
        e.parameters,
        e.result,
        e.output,
        e.log,
        e.start,
        e.end,
        e.trace_tag,
        e.trigger_instance_id,
        e.rule_ref,
        e.context,
        e.delay,
        e.parent,
        e.trigger_type,
    ])?;
    Ok(())
}

pub(crate) fn from_row(row: &Row<'_>) -> Result<Execution> {
    parsed(stored_from_row(row)?)
}

/// The execution with its result parsed.
pub(crate) fn parsed(stored: StoredExecution) -> Result<Execution> {
    let mut execution = stored.execution;
    execution.result = stored
        .result_json
        .map(|r| {
            serde_json::from_str(&r)
                .map_err(|e| Error::Corrupt(format!("execution {} result: {e}", execution.id)))
        })
        .transpose()?;
    Ok(execution)
}

pub(crate) fn stored_from_row(row: &Row<'_>) -> Result<StoredExecution> {
    decode(row)
}

/// The columns of one row, read the same way from either engine's rows.
pub(crate) trait Columns {
    fn text(&self, i: usize) -> Result<String>;
    fn maybe_text(&self, i: usize) -> Result<Option<String>>;
    fn maybe_int(&self, i: usize) -> Result<Option<i64>>;
}

impl Columns for Row<'_> {
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.get(i)?)
    }
    fn maybe_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
    fn maybe_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.get(i)?)
    }
}

/// An execution from a row of [`COLUMNS`], its result left as stored.
pub(crate) fn decode(row: &impl Columns) -> Result<StoredExecution> {
    let text = |i: usize| row.text(i);
    let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt(format!("{what}: {e}"));
    let id = text(0)?;
    let parse_json = |what: &str, s: &str| -> Result<serde_json::Value> {
        serde_json::from_str(s).map_err(|e| corrupt(&format!("execution {id} {what}"), &e))
    };
    let result_json = row.maybe_text(5)?;
    let context = row.maybe_text(13)?;
    let delay = row.maybe_int(14)?;
    let execution = Execution {
        id: id.parse().map_err(|e| corrupt("execution id", &e))?,
        tenant: TenantId::new(text(1)?).map_err(|e| corrupt("tenant id", &e))?,
        action: text(2)?.parse().map_err(|e| corrupt("action ref", &e))?,
        status: text(3)?.parse().map_err(|e| corrupt("status", &e))?,
        parameters: parse_json("parameters", &text(4)?)?,
        result: None,
        output: serde_json::from_str::<CapturedOutput>(&text(6)?)
            .map_err(|e| corrupt("execution output", &e))?,
        log: serde_json::from_str::<Vec<StatusChange>>(&text(7)?)
            .map_err(|e| corrupt("execution log", &e))?,
        start_timestamp: text(8)?,
        end_timestamp: row.maybe_text(9)?,
        trace_tag: row.maybe_text(10)?,
        trigger_instance_id: row.maybe_text(11)?,
        rule_ref: row.maybe_text(12)?,
        trigger_type: row.maybe_text(16)?,
        context: match context {
            Some(c) => serde_json::from_str(&c).map_err(|e| corrupt("execution context", &e))?,
            None => Default::default(),
        },
        delay: delay.and_then(|d| u64::try_from(d).ok()),
    };
    Ok(StoredExecution {
        execution,
        result_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;
    use crate::contract::execution as sample;

    #[tokio::test]
    async fn executions_keep_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteStore::open(&dir.path().join("db"), &StoreConfig::default()).expect("open");
        crate::contract::executions(&crate::Store::from(store.clone())).await;
    }

    #[tokio::test]
    async fn the_history_filters_by_trigger_type_through_its_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteStore::open(&dir.path().join("db"), &StoreConfig::default()).expect("open");
        let mut by_rule = sample("core.echo", ExecutionStatus::Requested);
        by_rule.trigger_instance_id = Some("ti-1".into());
        by_rule.rule_ref = Some("hooks.on_alert".into());
        by_rule.trigger_type = Some("core.st2.webhook".into());
        let by_hand = sample("core.echo", ExecutionStatus::Requested);
        store.insert_execution(&by_rule).await.expect("insert");
        store.insert_execution(&by_hand).await.expect("insert");
        let got = store
            .get_execution(&by_rule.tenant, &by_rule.id)
            .expect("get")
            .expect("exists");
        assert_eq!(got, by_rule);

        let mut f = ExecutionFilter::for_tenant(TenantId::default_tenant());
        f.trigger_type = Some("core.st2.webhook".into());
        let found = store.list_execution_summaries(&f).expect("list");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, by_rule.id.as_str());
        f.trigger_type = Some("core.st2.IntervalTimer".into());
        assert!(store.list_executions(&f).expect("list").is_empty());

        // A page of a busy type is read in order from its index, not
        // gathered and sorted.
        f.trigger_type = Some("core.st2.webhook".into());
        f.before = Some(by_hand.id.as_str().to_owned());
        let (sql, args) = filter_sql(&f, USER);
        let plan = store
            .read(|conn| {
                let mut stmt = conn.prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT id FROM executions WHERE {sql} ORDER BY id DESC LIMIT 50"
                ))?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(3)
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .expect("plan");
        assert!(
            plan.iter()
                .any(|p| p.contains("executions_by_trigger_type"))
                && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_its_batch_neighbours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteStore::open(&dir.path().join("db"), &StoreConfig::default()).expect("open");
        let good = sample("core.echo", ExecutionStatus::Requested);
        let mut missing = sample("core.echo", ExecutionStatus::Requested);
        missing.status = ExecutionStatus::Failed;
        let (r1, r2) = tokio::join!(
            store.insert_execution(&good),
            store.update_execution(&missing)
        );
        r1.expect("insert succeeds");
        assert!(r2.is_err(), "updating a missing execution fails");
        assert!(
            store
                .get_execution(&good.tenant, &good.id)
                .expect("get")
                .is_some()
        );
    }
}
