//! Trigger instances, rule enforcements, rule overrides and traces.

use std::sync::LazyLock;

use rusqlite::{OptionalExtension, Row, params};
use squall_core::metrics::metrics;
use squall_core::trigger::{
    EnforcementStatus, RuleEnforcement, TriggerInstance, TriggerInstanceStatus,
};
use squall_core::{Execution, ExecutionStatus, TenantId};

use crate::executions::{
    COLUMNS as EXECUTION_COLUMNS, Columns, ExecutionRow, from_row as execution_from_row,
    insert as insert_execution,
};
use crate::{Error, Result, SqliteStore};

pub(crate) const TI_COLUMNS: &str =
    "id, tenant_id, trigger_type, trigger_parameters, payload, occurrence_time, status, trace_tag";
pub(crate) const RE_COLUMNS: &str = "id, tenant_id, rule_ref, trigger_instance_id, execution_id, status, failure_reason, enforced_at, trace_tag";

const PENDING_WHERE: &str = "WHERE tenant_id IN (SELECT id FROM tenants)
   AND status IN ('requested', 'scheduled', 'delayed') ORDER BY id";
const UNFINISHED_WHERE: &str = "WHERE tenant_id IN (SELECT id FROM tenants)
   AND status IN ('running', 'canceling') ORDER BY id";
const STATUS_COUNTS_SQL: &str =
    "SELECT status, count(*) FROM executions WHERE tenant_id = ?1 GROUP BY status";

/// One trigger instance emitted by a completion, with what matching it
/// decided.
#[derive(Debug)]
pub struct Emission<'a> {
    pub instance: &'a TriggerInstance,
    pub enforcements: Vec<RuleEnforcement>,
    pub executions: Vec<&'a Execution>,
}

/// The smallest id (UUIDv7, hex, as every record id is) created at or after
/// `time` (RFC 3339): ids sort by creation time.
pub(crate) fn id_floor(time: &str) -> Result<String> {
    let at = squall_core::time::parse_rfc3339(time)
        .ok_or_else(|| Error::Corrupt(format!("purge cutoff '{time}' is not an RFC 3339 time")))?;
    let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Ok(format!("{ms:012x}{}", "0".repeat(20)))
}

/// Everything one trace tag links.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub trigger_instances: Vec<TriggerInstance>,
    pub rule_enforcements: Vec<RuleEnforcement>,
    pub executions: Vec<Execution>,
}

/// Which rule enforcements to list; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct EnforcementFilter {
    pub rule_ref: Option<String>,
    pub trigger_instance: Option<String>,
    pub execution: Option<String>,
    /// RFC 3339 timestamps, as the store writes them.
    pub enforced_after: Option<String>,
    pub enforced_before: Option<String>,
}

impl EnforcementFilter {
    /// The `WHERE` clause (arguments `?`, in order) and its arguments.
    pub(crate) fn sql(&self, tenant: &TenantId) -> (String, Vec<String>) {
        where_clause(
            tenant,
            &[
                ("rule_ref", self.rule_ref.as_deref()),
                ("trigger_instance_id", self.trigger_instance.as_deref()),
                ("execution_id", self.execution.as_deref()),
                ("enforced_at >", self.enforced_after.as_deref()),
                ("enforced_at <", self.enforced_before.as_deref()),
            ],
        )
    }
}

/// Which traces to list: those holding the record given, if any.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    pub execution: Option<String>,
    pub rule_ref: Option<String>,
    pub trigger_instance: Option<String>,
}

/// A page of a list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: usize,
    pub offset: usize,
}

impl Page {
    pub(crate) fn sql(self) -> (i64, i64) {
        (
            i64::try_from(self.limit).unwrap_or(i64::MAX),
            i64::try_from(self.offset).unwrap_or(i64::MAX),
        )
    }
}

/// `tenant_id = ? AND col = ? ...` for the filters that are set, so SQLite
/// can pick the index that serves them.
/// `tenant_id = ?` and each filter given: `column` is compared for
/// equality, or with the operator it ends with (`"enforced_at >"`).
pub(crate) fn where_clause(
    tenant: &TenantId,
    filters: &[(&str, Option<&str>)],
) -> (String, Vec<String>) {
    let mut sql = String::from("tenant_id = ?");
    let mut args = vec![tenant.as_str().to_owned()];
    for (column, value) in filters {
        if let Some(value) = value {
            if column.ends_with(['<', '>']) {
                sql.push_str(&format!(" AND {column} ?"));
            } else {
                sql.push_str(&format!(" AND {column} = ?"));
            }
            args.push((*value).to_owned());
        }
    }
    (sql, args)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

fn ti_from_row(row: &Row<'_>) -> Result<TriggerInstance> {
    ti_decode(row)
}

/// A trigger instance from a row of [`TI_COLUMNS`], either engine's.
pub(crate) fn ti_decode(row: &impl Columns) -> Result<TriggerInstance> {
    let params = row.text(3)?;
    let payload = row.text(4)?;
    let status = row.text(6)?;
    Ok(TriggerInstance {
        id: row.text(0)?,
        tenant: TenantId::new(row.text(1)?).map_err(|e| corrupt("tenant", e))?,
        trigger_type: row.text(2)?,
        trigger_parameters: serde_json::from_str(&params)
            .map_err(|e| corrupt("trigger parameters", e))?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", e))?,
        occurrence_time: row.text(5)?,
        status: TriggerInstanceStatus::parse(&status)
            .ok_or_else(|| corrupt("trigger instance status", &status))?,
        trace_tag: row.text(7)?,
    })
}

fn re_from_row(row: &Row<'_>) -> Result<RuleEnforcement> {
    re_decode(row)
}

/// A rule enforcement from a row of [`RE_COLUMNS`], either engine's.
pub(crate) fn re_decode(row: &impl Columns) -> Result<RuleEnforcement> {
    let status = row.text(5)?;
    let execution_id = row.maybe_text(4)?;
    Ok(RuleEnforcement {
        id: row.text(0)?,
        tenant: TenantId::new(row.text(1)?).map_err(|e| corrupt("tenant", e))?,
        rule_ref: row.text(2)?,
        trigger_instance_id: row.text(3)?,
        execution_id: execution_id
            .map(|id| id.parse())
            .transpose()
            .map_err(|e| corrupt("execution id", e))?,
        status: match status.as_str() {
            "succeeded" => EnforcementStatus::Succeeded,
            "failed" => EnforcementStatus::Failed,
            other => return Err(corrupt("enforcement status", other)),
        },
        failure_reason: row.maybe_text(6)?,
        enforced_at: row.text(7)?,
        trace_tag: row.text(8)?,
    })
}

/// The trace lookups of trigger instances, enforcements and executions
/// (`?1` tenant, `?2` tag): records traced by their own trigger instance
/// through its id, the others through the partial trace index, whose
/// condition `not_own` repeats (migration 6). Unordered: an `ORDER BY id`
/// here makes SQLite walk the tenant's whole id index instead; the few
/// rows are sorted after.
static TRACE_QUERIES: LazyLock<[String; 3]> = LazyLock::new(|| {
    let query = |columns: &str, table: &str, instance: &str, not_own: &str| {
        format!(
            "SELECT {columns} FROM {table} WHERE tenant_id = ?1 AND {instance} = ?2 AND trace_tag = ?2
             UNION ALL
             SELECT {columns} FROM {table} WHERE tenant_id = ?1 AND trace_tag = ?2 AND {not_own}"
        )
    };
    [
        query(TI_COLUMNS, "trigger_instances", "id", "trace_tag != id"),
        query(
            RE_COLUMNS,
            "rule_enforcements",
            "trigger_instance_id",
            "trace_tag != trigger_instance_id",
        ),
        query(
            EXECUTION_COLUMNS,
            "executions",
            "trigger_instance_id",
            "trace_tag IS NOT trigger_instance_id",
        ),
    ]
});

fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<Result<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// A trigger instance encoded for its row, by the caller (see `ExecutionRow`).
#[derive(Debug)]
pub(crate) struct InstanceRow {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) trigger_type: String,
    pub(crate) parameters: String,
    pub(crate) payload: String,
    pub(crate) occurrence_time: String,
    pub(crate) status: &'static str,
    pub(crate) trace_tag: String,
}

impl InstanceRow {
    pub(crate) fn encode(ti: &TriggerInstance) -> Self {
        Self {
            id: ti.id.clone(),
            tenant: ti.tenant.as_str().to_owned(),
            trigger_type: ti.trigger_type.clone(),
            parameters: serde_json::Value::Object(ti.trigger_parameters.clone()).to_string(),
            payload: ti.payload.to_string(),
            occurrence_time: ti.occurrence_time.clone(),
            status: ti.status.as_str(),
            trace_tag: ti.trace_tag.clone(),
        }
    }
}

// Statements run for every event, built once.
static INSERT_INSTANCE: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO trigger_instances ({TI_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
});
static INSERT_ENFORCEMENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO rule_enforcements ({RE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    )
});

pub(crate) fn insert_instance(txn: &rusqlite::Transaction<'_>, ti: &InstanceRow) -> Result<()> {
    txn.prepare_cached(&INSERT_INSTANCE)?.execute(params![
        ti.id,
        ti.tenant,
        ti.trigger_type,
        ti.parameters,
        ti.payload,
        ti.occurrence_time,
        ti.status,
        ti.trace_tag,
    ])?;
    Ok(())
}

pub(crate) fn insert_outcome(
    txn: &rusqlite::Transaction<'_>,
    enforcements: &[RuleEnforcement],
    executions: &[ExecutionRow],
) -> Result<()> {
    for e in executions {
        insert_execution(txn, e)?;
    }
    let mut stmt = txn.prepare_cached(&INSERT_ENFORCEMENT)?;
    for re in enforcements {
        stmt.execute(params![
            re.id,
            re.tenant.as_str(),
            re.rule_ref,
            re.trigger_instance_id,
            re.execution_id.as_ref().map(|id| id.as_str().to_owned()),
            enforcement_status(re),
            re.failure_reason,
            re.enforced_at,
            re.trace_tag,
        ])?;
    }
    Ok(())
}

/// An enforcement's status as stored.
pub(crate) fn enforcement_status(re: &RuleEnforcement) -> &'static str {
    match re.status {
        EnforcementStatus::Succeeded => "succeeded",
        EnforcementStatus::Failed => "failed",
    }
}

impl SqliteStore {
    /// Persist a trigger instance together with the outcome of matching it —
    /// its enforcements and the executions they requested — in one
    /// transaction, before the caller is told the event was accepted.
    pub async fn insert_processed_trigger_instance(
        &self,
        ti: &TriggerInstance,
        enforcements: Vec<RuleEnforcement>,
        executions: &[&Execution],
    ) -> Result<()> {
        let ti = InstanceRow::encode(ti);
        let executions: Vec<ExecutionRow> =
            executions.iter().map(|e| ExecutionRow::encode(e)).collect();
        let requested = executions.len() as u64;
        self.write(move |txn| {
            insert_instance(txn, &ti)?;
            insert_outcome(txn, &enforcements, &executions)
        })
        .await?;
        let m = metrics();
        m.trigger_instances.inc();
        m.executions_requested.inc_by(requested);
        Ok(())
    }

    /// Record an execution's final state together with the trigger
    /// instances its completion emits (each with what its rules requested)
    /// and any follow-up executions (retries), in one transaction: a
    /// completion is never recorded without its events. When the execution
    /// had already completed (canceled meanwhile), nothing is written and
    /// `false` is returned.
    pub async fn complete_execution(
        &self,
        execution: &Execution,
        emitted: &[Emission<'_>],
        follow_ups: &[&Execution],
    ) -> Result<bool> {
        self.write_batch(&crate::workflows::Batch::completing(
            execution, emitted, follow_ups,
        ))
        .await
    }

    /// Executions a process that died left `running` or `canceling`, all
    /// tenants, oldest first.
    pub fn unfinished_executions(&self) -> Result<Vec<Execution>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions {UNFINISHED_WHERE}"
            ))?;
            collect(stmt.query_map([], |row| Ok(execution_from_row(row)))?)
        })
    }

    /// How many executions of `tenant` are in each status (through the
    /// (tenant, status) index, without reading rows).
    pub fn execution_status_counts(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(ExecutionStatus, u64)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(STATUS_COUNTS_SQL)?;
            let rows = stmt.query_map([tenant.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (status, n) = row?;
                let status = status.parse().map_err(|e| corrupt("status", e))?;
                out.push((status, u64::try_from(n).unwrap_or(0)));
            }
            Ok(out)
        })
    }

    /// `EXPLAIN QUERY PLAN` of the queries the scheduler and recovery run,
    /// by name, for the benchmark report.
    pub fn scheduler_query_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>> {
        let queries: [(&'static str, String); 6] = [
            (
                "resume pending (start)",
                format!("SELECT {EXECUTION_COLUMNS} FROM executions {PENDING_WHERE}"),
            ),
            (
                "abandon running (start)",
                format!("SELECT {EXECUTION_COLUMNS} FROM executions {UNFINISHED_WHERE}"),
            ),
            (
                "record a transition",
                "UPDATE executions SET status = 'running' WHERE tenant_id = 'default' AND id = 'x'
                   AND status NOT IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')"
                    .into(),
            ),
            ("status counts", STATUS_COUNTS_SQL.replace("?1", "'default'")),
            (
                "list by status (API)",
                format!(
                    "SELECT {EXECUTION_COLUMNS} FROM executions WHERE tenant_id = 'default' AND status = 'requested' ORDER BY id DESC LIMIT 50 OFFSET 0"
                ),
            ),
            (
                "purge batch",
                "DELETE FROM executions WHERE rowid IN (SELECT rowid FROM executions
                 WHERE tenant_id = 'default' AND id < 'x' AND status IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned') LIMIT 1000)"
                    .into(),
            ),
        ];
        self.read(|conn| {
            let mut out = Vec::new();
            for (name, sql) in queries {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(3))?;
                out.push((name, rows.collect::<rusqlite::Result<Vec<_>>>()?));
            }
            Ok(out)
        })
    }

    /// Executions waiting to run (`requested`, `scheduled`, `delayed`),
    /// oldest first, all tenants.
    pub fn pending_executions(&self) -> Result<Vec<Execution>> {
        self.read(|conn| {
            // Through (tenant_id, status, id), one tenant and status at a time.
            let mut stmt = conn.prepare(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions {PENDING_WHERE}"
            ))?;
            collect(stmt.query_map([], |row| Ok(execution_from_row(row)))?)
        })
    }

    /// Inquiries waiting for an answer (`pending`), oldest first, all
    /// tenants.
    pub fn waiting_inquiries(&self) -> Result<Vec<Execution>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions
                 WHERE tenant_id IN (SELECT id FROM tenants) AND status = 'pending' ORDER BY id"
            ))?;
            collect(stmt.query_map([], |row| Ok(execution_from_row(row)))?)
        })
    }

    /// Delete, in batches of `batch` rows per write, completed executions
    /// and the trigger instances and enforcements recorded before `before`
    /// (RFC 3339). Each batch is its own short write, so the writer serves
    /// other work in between. Returns (executions, trigger instances,
    /// enforcements) deleted.
    pub async fn purge(&self, before: &str, batch: usize) -> Result<(u64, u64, u64)> {
        let cutoff = id_floor(before)?;
        let tenants: Vec<String> = self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id FROM tenants")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut counts = [0u64; 3];
        let tables = [
            (
                "executions",
                "AND status IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')",
            ),
            ("trigger_instances", ""),
            ("rule_enforcements", ""),
        ];
        for tenant in tenants {
            for (i, (table, extra)) in tables.iter().enumerate() {
                let sql = format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}
                     WHERE tenant_id = ?1 AND id < ?2 {extra} LIMIT ?3)"
                );
                loop {
                    let (sql, tenant, cutoff) = (sql.clone(), tenant.clone(), cutoff.clone());
                    let n = self
                        .write(move |txn| {
                            Ok(txn
                                .prepare_cached(&sql)?
                                .execute(params![tenant, cutoff, batch])?)
                        })
                        .await?;
                    counts[i] += n as u64;
                    if (n as i64) < batch {
                        break;
                    }
                }
            }
        }
        Ok((counts[0], counts[1], counts[2]))
    }

    pub fn get_trigger_instance(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<TriggerInstance>> {
        self.read(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {TI_COLUMNS} FROM trigger_instances WHERE tenant_id = ?1 AND id = ?2"
                ),
                params![tenant.as_str(), id],
                |row| Ok(ti_from_row(row)),
            )
            .optional()?
            .transpose()
        })
    }

    /// Newest first, optionally of one trigger type; with the total count.
    pub fn list_trigger_instances(
        &self,
        tenant: &TenantId,
        trigger_type: Option<&str>,
        page: Page,
    ) -> Result<(Vec<TriggerInstance>, u64)> {
        let (filter, args) = where_clause(tenant, &[("trigger_type", trigger_type)]);
        self.list_page(
            "trigger_instances",
            TI_COLUMNS,
            &filter,
            &args,
            page,
            ti_from_row,
        )
    }

    /// Newest first, optionally of one rule or trigger instance; with the total.
    pub fn list_enforcements(
        &self,
        tenant: &TenantId,
        filter: &EnforcementFilter,
        page: Page,
    ) -> Result<(Vec<RuleEnforcement>, u64)> {
        let (filter, args) = filter.sql(tenant);
        self.list_page(
            "rule_enforcements",
            RE_COLUMNS,
            &filter,
            &args,
            page,
            re_from_row,
        )
    }

    fn list_page<T>(
        &self,
        table: &str,
        columns: &str,
        filter: &str,
        args: &[String],
        page: Page,
        from_row: fn(&Row<'_>) -> Result<T>,
    ) -> Result<(Vec<T>, u64)> {
        let (limit, offset) = page.sql();
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {columns} FROM {table} WHERE {filter} ORDER BY id DESC LIMIT ? OFFSET ?"
            ))?;
            let mut bound: Vec<rusqlite::types::Value> = args
                .iter()
                .map(|a| rusqlite::types::Value::Text(a.clone()))
                .collect();
            bound.push(rusqlite::types::Value::Integer(limit));
            bound.push(rusqlite::types::Value::Integer(offset));
            let items = collect(
                stmt.query_map(rusqlite::params_from_iter(bound), |row| Ok(from_row(row)))?,
            )?;
            let total: i64 = conn
                .prepare_cached(&format!("SELECT count(*) FROM {table} WHERE {filter}"))?
                .query_row(rusqlite::params_from_iter(args), |r| r.get(0))?;
            Ok((items, u64::try_from(total).unwrap_or(0)))
        })
    }

    pub fn get_enforcement(&self, tenant: &TenantId, id: &str) -> Result<Option<RuleEnforcement>> {
        self.read(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {RE_COLUMNS} FROM rule_enforcements WHERE tenant_id = ?1 AND id = ?2"
                ),
                params![tenant.as_str(), id],
                |row| Ok(re_from_row(row)),
            )
            .optional()?
            .transpose()
        })
    }

    /// Everything recorded under `trace_tag`, oldest first. Records whose
    /// tag is their trigger instance's id are found by that id, the others
    /// through the (partial) trace indexes; see migration 6.
    pub fn trace(&self, tenant: &TenantId, trace_tag: &str) -> Result<Trace> {
        self.read(|conn| {
            let [ti, re, ex] = &*TRACE_QUERIES;
            let mut ti = conn.prepare_cached(ti)?;
            let mut re = conn.prepare_cached(re)?;
            let mut ex = conn.prepare_cached(ex)?;
            let args = params![tenant.as_str(), trace_tag];
            let mut trace = Trace {
                trigger_instances: collect(ti.query_map(args, |row| Ok(ti_from_row(row)))?)?,
                rule_enforcements: collect(re.query_map(args, |row| Ok(re_from_row(row)))?)?,
                executions: collect(ex.query_map(args, |row| Ok(execution_from_row(row)))?)?,
            };
            trace.trigger_instances.sort_by(|a, b| a.id.cmp(&b.id));
            trace.rule_enforcements.sort_by(|a, b| a.id.cmp(&b.id));
            trace.executions.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(trace)
        })
    }

    /// The tags of `tenant`'s traces, by when each began (its first trigger
    /// instance or execution), newest first unless `oldest_first`, with
    /// how many there are. Every record of the tenant is read: for a few
    /// traces, filter by one of their records.
    pub fn trace_tags(
        &self,
        tenant: &TenantId,
        filter: &TraceFilter,
        oldest_first: bool,
        page: Page,
    ) -> Result<(Vec<String>, u64)> {
        let mut having = String::new();
        let mut args: Vec<rusqlite::types::Value> = vec![tenant.as_str().to_owned().into()];
        for (value, lookup) in [
            (
                &filter.execution,
                "SELECT trace_tag FROM executions WHERE tenant_id = ?1 AND id = ?",
            ),
            (
                &filter.trigger_instance,
                "SELECT trace_tag FROM trigger_instances WHERE tenant_id = ?1 AND id = ?",
            ),
            (
                &filter.rule_ref,
                "SELECT trace_tag FROM rule_enforcements WHERE tenant_id = ?1 AND rule_ref = ?",
            ),
        ] {
            if let Some(value) = value {
                having.push_str(&format!(" AND tag IN ({lookup})"));
                args.push(value.clone().into());
            }
        }
        let roots = format!(
            "WITH roots(tag, at) AS (
                 SELECT trace_tag, occurrence_time FROM trigger_instances WHERE tenant_id = ?1
                 UNION ALL
                 SELECT trace_tag, start_timestamp FROM executions
                     WHERE tenant_id = ?1 AND trace_tag IS NOT NULL)
             SELECT tag, MIN(at) AS began FROM roots WHERE 1 = 1{having} GROUP BY tag"
        );
        let order = if oldest_first { "ASC" } else { "DESC" };
        let (limit, offset) = page.sql();
        self.read(|conn| {
            let total: i64 = conn
                .prepare_cached(&format!("SELECT COUNT(*) FROM ({roots})"))?
                .query_row(rusqlite::params_from_iter(&args), |r| r.get(0))?;
            let mut paged = args.clone();
            paged.push(limit.into());
            paged.push(offset.into());
            let mut stmt = conn.prepare_cached(&format!(
                "{roots} ORDER BY began {order}, tag {order} LIMIT ? OFFSET ?"
            ))?;
            let tags = stmt
                .query_map(rusqlite::params_from_iter(&paged), |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok((tags, total as u64))
        })
    }

    /// Record an API change to a rule: its new document, or `None` to delete.
    pub async fn put_rule(
        &self,
        tenant: &TenantId,
        rule_ref: &str,
        body: Option<String>,
    ) -> Result<()> {
        self.put_override(Overrides::Rules, tenant, rule_ref, body)
            .await
    }

    /// Every rule change made through the API: (tenant, ref, document or deleted).
    pub fn rule_changes(&self) -> Result<Vec<(TenantId, String, Option<String>)>> {
        self.overrides(Overrides::Rules)
    }

    /// Remember that a sensor was enabled or disabled through the API.
    pub async fn put_sensor_enabled(
        &self,
        tenant: &TenantId,
        sensor_ref: &str,
        enabled: bool,
    ) -> Result<()> {
        let (tenant, sensor_ref) = (tenant.clone(), sensor_ref.to_owned());
        self.write(move |txn| {
            txn.prepare_cached(
                "INSERT INTO sensors (tenant_id, ref, enabled, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant_id, ref) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
            )?
            .execute(params![
                tenant.as_str(),
                sensor_ref,
                enabled,
                squall_core::time::now_rfc3339()
            ])?;
            Ok(())
        })
        .await
    }

    /// Every sensor enabled or disabled through the API: (tenant, ref, enabled).
    pub fn sensor_overrides(&self) -> Result<Vec<(TenantId, String, bool)>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT tenant_id, ref, enabled FROM sensors ORDER BY tenant_id, ref")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, sensor_ref, enabled) = row?;
                out.push((
                    TenantId::new(tenant).map_err(|e| corrupt("tenant", e))?,
                    sensor_ref,
                    enabled,
                ));
            }
            Ok(out)
        })
    }

    /// Record an API change to a policy, as [`SqliteStore::put_rule`] does.
    pub async fn put_policy(
        &self,
        tenant: &TenantId,
        policy_ref: &str,
        body: Option<String>,
    ) -> Result<()> {
        self.put_override(Overrides::Policies, tenant, policy_ref, body)
            .await
    }

    /// Every policy change made through the API.
    pub fn policy_changes(&self) -> Result<Vec<(TenantId, String, Option<String>)>> {
        self.overrides(Overrides::Policies)
    }

    async fn put_override(
        &self,
        table: Overrides,
        tenant: &TenantId,
        item_ref: &str,
        body: Option<String>,
    ) -> Result<()> {
        let (tenant, item_ref) = (tenant.clone(), item_ref.to_owned());
        let sql = format!(
            "INSERT INTO {} (tenant_id, ref, body, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant_id, ref) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            table.name()
        );
        self.write(move |txn| {
            txn.prepare_cached(&sql)?.execute(params![
                tenant.as_str(),
                item_ref,
                body,
                squall_core::time::now_rfc3339()
            ])?;
            Ok(())
        })
        .await
    }

    fn overrides(&self, table: Overrides) -> Result<Vec<(TenantId, String, Option<String>)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT tenant_id, ref, body FROM {} ORDER BY tenant_id, ref",
                table.name()
            ))?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, rule_ref, body) = row?;
                out.push((
                    TenantId::new(tenant).map_err(|e| corrupt("tenant", e))?,
                    rule_ref,
                    body,
                ));
            }
            Ok(out)
        })
    }
}

/// The tables of API changes that override packs' files.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Overrides {
    Rules,
    Policies,
}

impl Overrides {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Policies => "policies",
        }
    }
}

#[cfg(test)]
mod tests {
    use squall_core::ExecutionId;

    use super::*;
    use crate::StoreConfig;

    fn instance() -> TriggerInstance {
        crate::contract::instance(Some("trace-1"))
    }

    use crate::contract::outcome;

    #[tokio::test]
    async fn the_reactors_records_keep_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteStore::open(&dir.path().join("db"), &StoreConfig::default()).expect("open");
        crate::contract::reactor_records(&crate::Store::from(store.clone())).await;
    }

    #[tokio::test]
    async fn a_trace_under_its_instance_id_is_found_through_the_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteStore::open(&dir.path().join("db"), &StoreConfig::default()).expect("open");
        // No St2-Trace-Tag: the instance's id is the tag, and its records
        // are not in the trace indexes.
        let mut ti = instance();
        ti.trace_tag = ti.id.clone();
        let (execution, enforcement) = outcome(&ti);
        store
            .insert_processed_trigger_instance(&ti, vec![enforcement], &[&execution])
            .await
            .expect("record");
        // What the execution's completion emits carries the same tag under
        // an id of its own: in the index.
        let mut emitted = instance();
        emitted.trace_tag = ti.id.clone();
        let (follow_up, follow_up_enforcement) = outcome(&emitted);
        store
            .insert_processed_trigger_instance(&emitted, vec![follow_up_enforcement], &[&follow_up])
            .await
            .expect("record");
        // An execution requested through the API under that tag: no
        // trigger instance of its own, in the index.
        let (mut requested, _) = outcome(&ti);
        requested.id = ExecutionId::generate();
        requested.trigger_instance_id = None;
        store.insert_execution(&requested).await.expect("record");
        // Another event, and another tenant's records, stay out.
        let other = instance();
        store
            .insert_processed_trigger_instance(&other, Vec::new(), &[])
            .await
            .expect("record");

        let trace = store.trace(&ti.tenant, &ti.id).expect("trace");
        assert_eq!(
            trace
                .trigger_instances
                .iter()
                .map(|t| t.id.clone())
                .collect::<Vec<_>>(),
            [ti.id.clone(), emitted.id.clone()]
        );
        assert_eq!(
            trace
                .executions
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>(),
            [
                execution.id.clone(),
                follow_up.id.clone(),
                requested.id.clone()
            ]
        );
        assert_eq!(trace.rule_enforcements.len(), 2);
        let elsewhere = TenantId::new("elsewhere").expect("tenant");
        let none = store.trace(&elsewhere, &ti.id).expect("trace");
        assert!(none.trigger_instances.is_empty() && none.executions.is_empty());

        // Every arm of the three lookups is served by its own index, not
        // by a walk of the tenant's records.
        let plans = store
            .read(|conn| {
                let mut out = Vec::new();
                for sql in TRACE_QUERIES.iter() {
                    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows =
                        stmt.query_map(params!["default", "t"], |r| r.get::<_, String>(3))?;
                    out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
                }
                Ok(out)
            })
            .expect("plans");
        assert_eq!(
            plans.iter().filter(|p| p.starts_with("SEARCH")).count(),
            6,
            "{plans:?}"
        );
        assert!(
            !plans
                .iter()
                .any(|p| p.starts_with("SCAN") || p.contains("_by_tenant")),
            "{plans:?}"
        );
    }
}
