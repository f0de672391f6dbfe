//! Trigger instances, rule enforcements, API overrides of rules, policies
//! and sensors, traces, recovery reads and retention on PostgreSQL, as the
//! SQLite store keeps them (`crate::reactor`, whose encoding, decoding and
//! filters both share).

use squall_core::metrics::metrics;
use squall_core::trigger::{RuleEnforcement, TriggerInstance};
use squall_core::{Execution, ExecutionStatus, TenantId};

use super::changes::bump_epoch;
use super::exec;
use super::executions::insert;
use super::{Argument, PgError, PgStore, arguments, by_id_in_tenant};
use crate::executions::{COLUMNS as EXECUTION_COLUMNS, ExecutionRow, decode, parsed};
use crate::reactor::{
    EnforcementFilter, InstanceRow, Overrides, Page, RE_COLUMNS, TI_COLUMNS, Trace, TraceFilter,
    enforcement_status, id_floor, re_decode, ti_decode, where_clause,
};
use crate::{Error, Result};

const COMPLETED: &str = "('succeeded', 'failed', 'timeout', 'canceled', 'abandoned')";

fn tenant_of(raw: String) -> Result<TenantId> {
    TenantId::new(raw).map_err(|e| Error::Corrupt(format!("tenant: {e}")))
}

/// Insert a trigger instance inside an open transaction.
pub(super) async fn insert_instance(
    client: &impl deadpool_postgres::GenericClient,
    ti: &InstanceRow,
) -> Result<()> {
    exec(
        client,
        &format!(
            "INSERT INTO trigger_instances ({TI_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ),
        &[
            &ti.id,
            &ti.tenant,
            &ti.trigger_type,
            &ti.parameters,
            &ti.payload,
            &ti.occurrence_time,
            &ti.status,
            &ti.trace_tag,
        ],
    )
    .await?;
    Ok(())
}

/// Insert what matching an instance decided, inside an open transaction.
pub(super) async fn insert_outcome(
    client: &impl deadpool_postgres::GenericClient,
    enforcements: &[RuleEnforcement],
    executions: &[ExecutionRow],
) -> Result<()> {
    for e in executions {
        insert(client, e).await?;
    }
    for re in enforcements {
        client
            .execute(
                &format!(
                    "INSERT INTO rule_enforcements ({RE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &re.id,
                    &re.tenant.as_str(),
                    &re.rule_ref,
                    &re.trigger_instance_id,
                    &re.execution_id.as_ref().map(|id| id.as_str().to_owned()),
                    &enforcement_status(re),
                    &re.failure_reason,
                    &re.enforced_at,
                    &re.trace_tag,
                ],
            )
            .await?;
    }
    Ok(())
}

/// A trigger instance with the outcome of matching it, waiting to be
/// written.
pub(super) struct Recording {
    instance: InstanceRow,
    enforcements: Vec<RuleEnforcement>,
    executions: Vec<ExecutionRow>,
    written: tokio::sync::oneshot::Sender<Result<()>>,
}

impl Recording {
    /// Its statements, inside an open transaction.
    async fn write(&self, client: &impl deadpool_postgres::GenericClient) -> Result<()> {
        insert_instance(client, &self.instance).await?;
        insert_outcome(client, &self.enforcements, &self.executions).await
    }
}

impl super::group::Member for Recording {
    fn fail(self, error: Error) {
        let _ = self.written.send(Err(error));
    }
}

/// Group commit of trigger instances: what arrives while a transaction
/// is being written waits, and goes in the next one, together.
pub(super) type Recordings = super::group::Group<Recording>;

/// Trigger instances in one transaction, at most.
const GROUP: usize = 128;

impl PgStore {
    /// Persist a trigger instance together with the outcome of matching it
    /// — its enforcements and the executions they requested — in one
    /// transaction. Those that arrive together share it (each answered
    /// only once it committed); when one of them fails, each is written
    /// again in a transaction of its own, so one bad write fails alone.
    pub async fn insert_processed_trigger_instance(
        &self,
        ti: &TriggerInstance,
        enforcements: Vec<RuleEnforcement>,
        executions: &[&Execution],
    ) -> Result<()> {
        let requested = executions.len() as u64;
        let (written, answer) = tokio::sync::oneshot::channel();
        let recording = Recording {
            instance: InstanceRow::encode(ti),
            enforcements,
            executions: executions.iter().map(|e| ExecutionRow::encode(e)).collect(),
            written,
        };
        if self.recordings.join(recording) {
            // On the store's runtime: a caller that gives up cannot strand
            // the others' writes.
            let store = self.clone();
            self.bridge
                .handle()
                .spawn(async move { store.write_recordings().await });
        }
        answer.await.map_err(|_| super::group::writer_stopped())??;
        let m = metrics();
        m.trigger_instances.inc();
        m.executions_requested.inc_by(requested);
        Ok(())
    }

    /// Write what waits, a group at a time, until nothing does.
    async fn write_recordings(&self) {
        let mut writer = self.recordings.writer();
        while let Some(group) = writer.next(GROUP) {
            if group.len() > 1 {
                match self.write_group(&group).await {
                    Ok(()) => {
                        for recording in group {
                            let _ = recording.written.send(Ok(()));
                        }
                        continue;
                    }
                    // The database refused a statement: one write is bad,
                    // and fails alone below.
                    Err(Error::Postgres(PgError::Query(e))) if e.as_db_error().is_some() => {}
                    // No write could be made (no connection, or it broke):
                    // each would fail the same way, one after the other.
                    Err(e) => {
                        let reason = e.to_string();
                        for recording in group {
                            let _ = recording.written.send(Err(Error::Batch(reason.clone())));
                        }
                        continue;
                    }
                }
            }
            for recording in group {
                let written = self.write_group(std::slice::from_ref(&recording)).await;
                let _ = recording.written.send(written);
            }
        }
    }

    /// `group` (one or more) in one transaction, its statements pipelined.
    async fn write_group(&self, group: &[Recording]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        futures_util::future::try_join_all(group.iter().map(|r| r.write(&tx))).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Executions in `statuses` (an SQL list), all tenants, oldest first.
    async fn executions_in(&self, statuses: &str) -> Result<Vec<Execution>> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {EXECUTION_COLUMNS} FROM executions
                     WHERE tenant_id IN (SELECT id FROM tenants) AND status IN {statuses} ORDER BY id"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| parsed(decode(r)?))
            .collect()
    }

    /// Executions left `running` or `canceling`, all tenants, oldest first.
    pub async fn unfinished_executions(&self) -> Result<Vec<Execution>> {
        self.executions_in("('running', 'canceling')").await
    }

    /// Executions waiting to run, all tenants, oldest first.
    pub async fn pending_executions(&self) -> Result<Vec<Execution>> {
        self.executions_in("('requested', 'scheduled', 'delayed')")
            .await
    }

    /// Inquiries waiting for an answer, all tenants, oldest first.
    pub async fn waiting_inquiries(&self) -> Result<Vec<Execution>> {
        self.executions_in("('pending')").await
    }

    /// How many executions of `tenant` are in each status.
    pub async fn execution_status_counts(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(ExecutionStatus, u64)>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT status, count(*) FROM executions WHERE tenant_id = $1 GROUP BY status",
                &[&tenant.as_str()],
            )
            .await?
            .iter()
            .map(|r| {
                let status: String = r.get(0);
                let n: i64 = r.get(1);
                let status = status
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("status: {e}")))?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// Delete, in batches of `batch` rows per transaction, completed
    /// executions and the trigger instances and enforcements recorded
    /// before `before` (RFC 3339). Returns (executions, trigger instances,
    /// enforcements) deleted.
    pub async fn purge(&self, before: &str, batch: usize) -> Result<(u64, u64, u64)> {
        let cutoff = id_floor(before)?;
        let client = self.client().await?;
        let tenants: Vec<String> = client
            .query("SELECT id FROM tenants", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut counts = [0u64; 3];
        let tables = [
            ("executions", format!("AND status IN {COMPLETED}")),
            ("trigger_instances", String::new()),
            ("rule_enforcements", String::new()),
        ];
        for tenant in &tenants {
            for (i, (table, extra)) in tables.iter().enumerate() {
                let sql = format!(
                    "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table}
                     WHERE tenant_id = $1 AND id < $2 {extra} LIMIT $3)"
                );
                loop {
                    let n = client.execute(&sql, &[tenant, &cutoff, &batch]).await?;
                    counts[i] += n;
                    if i64::try_from(n).unwrap_or(i64::MAX) < batch {
                        break;
                    }
                }
            }
        }
        // The cluster's own records of the same age: the event log, timer
        // ticks, refused completions.
        let time = squall_core::time::parse_rfc3339(before).ok_or_else(|| {
            Error::Corrupt(format!("purge cutoff '{before}' is not an RFC 3339 time"))
        })?;
        let seconds = time.unix_timestamp_nanos() as f64 / 1e9;
        for sql in [
            "DELETE FROM events WHERE ctid IN (SELECT ctid FROM events WHERE at < to_timestamp($1) LIMIT $2)",
            "DELETE FROM timer_fires WHERE ctid IN (SELECT ctid FROM timer_fires WHERE fire_time < to_timestamp($1) LIMIT $2)",
            "DELETE FROM stale_completions WHERE ctid IN (SELECT ctid FROM stale_completions WHERE refused_at < to_timestamp($1) LIMIT $2)",
        ] {
            while client.execute(sql, &[&seconds, &batch]).await?
                == u64::try_from(batch).unwrap_or(u64::MAX)
            {}
        }
        Ok((counts[0], counts[1], counts[2]))
    }

    pub async fn get_trigger_instance(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<TriggerInstance>> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!(
                    "SELECT {TI_COLUMNS} FROM trigger_instances WHERE {}",
                    by_id_in_tenant!()
                ),
                &[&tenant.as_str(), &id],
            )
            .await?
            .map(|r| ti_decode(&r))
            .transpose()
    }

    /// Newest first, optionally of one trigger type; with the total count.
    pub async fn list_trigger_instances(
        &self,
        tenant: &TenantId,
        trigger_type: Option<&str>,
        page: Page,
    ) -> Result<(Vec<TriggerInstance>, u64)> {
        let (filter, args) = where_clause(tenant, &[("trigger_type", trigger_type)]);
        let (rows, total) = self
            .list_page("trigger_instances", TI_COLUMNS, &filter, &args, page.sql())
            .await?;
        Ok((rows.iter().map(ti_decode).collect::<Result<_>>()?, total))
    }

    /// Newest first, optionally of one rule, trigger instance, execution or
    /// time range; with the total.
    pub async fn list_enforcements(
        &self,
        tenant: &TenantId,
        filter: &EnforcementFilter,
        page: Page,
    ) -> Result<(Vec<RuleEnforcement>, u64)> {
        let (filter, args) = filter.sql(tenant);
        let (rows, total) = self
            .list_page("rule_enforcements", RE_COLUMNS, &filter, &args, page.sql())
            .await?;
        Ok((rows.iter().map(re_decode).collect::<Result<_>>()?, total))
    }

    pub async fn get_enforcement(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<RuleEnforcement>> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!(
                    "SELECT {RE_COLUMNS} FROM rule_enforcements WHERE {}",
                    by_id_in_tenant!()
                ),
                &[&tenant.as_str(), &id],
            )
            .await?
            .map(|r| re_decode(&r))
            .transpose()
    }

    /// Everything recorded under `trace_tag`, oldest first: records whose
    /// tag is their trigger instance's id through that id, the others
    /// through the partial trace indexes.
    pub async fn trace(&self, tenant: &TenantId, trace_tag: &str) -> Result<Trace> {
        let query = |columns: &str, table: &str, instance: &str| {
            format!(
                "SELECT {columns} FROM {table} WHERE tenant_id = $1 AND {instance} = $2 AND trace_tag = $2
                 UNION ALL
                 SELECT {columns} FROM {table} WHERE tenant_id = $1 AND trace_tag = $2
                     AND trace_tag IS DISTINCT FROM {instance}
                 ORDER BY 1"
            )
        };
        let client = self.client().await?;
        let args: [Argument<'_>; 2] = [&tenant.as_str(), &trace_tag];
        let instances = client
            .query(&query(TI_COLUMNS, "trigger_instances", "id"), &args)
            .await?;
        let enforcements = client
            .query(
                &query(RE_COLUMNS, "rule_enforcements", "trigger_instance_id"),
                &args,
            )
            .await?;
        let executions = client
            .query(
                &query(EXECUTION_COLUMNS, "executions", "trigger_instance_id"),
                &args,
            )
            .await?;
        Ok(Trace {
            trigger_instances: instances.iter().map(ti_decode).collect::<Result<_>>()?,
            rule_enforcements: enforcements.iter().map(re_decode).collect::<Result<_>>()?,
            executions: executions
                .iter()
                .map(|r| parsed(decode(r)?))
                .collect::<Result<_>>()?,
        })
    }

    /// The tags of `tenant`'s traces, by when each began, newest first
    /// unless `oldest_first`, with how many there are.
    pub async fn trace_tags(
        &self,
        tenant: &TenantId,
        filter: &TraceFilter,
        oldest_first: bool,
        page: Page,
    ) -> Result<(Vec<String>, u64)> {
        let mut having = String::new();
        let mut args: Vec<String> = vec![tenant.as_str().to_owned()];
        for (value, lookup) in [
            (
                &filter.execution,
                "SELECT trace_tag FROM executions WHERE tenant_id = $1 AND id = ",
            ),
            (
                &filter.trigger_instance,
                "SELECT trace_tag FROM trigger_instances WHERE tenant_id = $1 AND id = ",
            ),
            (
                &filter.rule_ref,
                "SELECT trace_tag FROM rule_enforcements WHERE tenant_id = $1 AND rule_ref = ",
            ),
        ] {
            if let Some(value) = value {
                args.push(value.clone());
                having.push_str(&format!(" AND tag IN ({lookup}${})", args.len()));
            }
        }
        let roots = format!(
            "WITH roots(tag, at) AS (
                 SELECT trace_tag, occurrence_time FROM trigger_instances WHERE tenant_id = $1
                 UNION ALL
                 SELECT trace_tag, start_timestamp FROM executions
                     WHERE tenant_id = $1 AND trace_tag IS NOT NULL)
             SELECT tag, MIN(at) AS began FROM roots WHERE 1 = 1{having} GROUP BY tag"
        );
        let order = if oldest_first { "ASC" } else { "DESC" };
        let n = args.len();
        let (limit, offset) = page.sql();
        let params = arguments(&args, &limit, &offset);
        let client = self.client().await?;
        let total: i64 = client
            .query_one(
                &format!("SELECT COUNT(*) FROM ({roots}) AS t"),
                &params[..n],
            )
            .await?
            .get(0);
        let tags = client
            .query(
                &format!(
                    "{roots} ORDER BY began {order}, tag COLLATE \"C\" {order} LIMIT ${} OFFSET ${}",
                    n + 1,
                    n + 2
                ),
                &params,
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok((tags, u64::try_from(total).unwrap_or(0)))
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
    pub async fn rule_changes(&self) -> Result<Vec<(TenantId, String, Option<String>)>> {
        self.overrides(Overrides::Rules).await
    }

    /// Record an API change to a policy, as [`PgStore::put_rule`] does.
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
    pub async fn policy_changes(&self) -> Result<Vec<(TenantId, String, Option<String>)>> {
        self.overrides(Overrides::Policies).await
    }

    async fn put_override(
        &self,
        table: Overrides,
        tenant: &TenantId,
        item_ref: &str,
        body: Option<String>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
                &format!(
                    "INSERT INTO {} (tenant_id, ref, body, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant_id, ref) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                    table.name()
                ),
                &[
                    &tenant.as_str(),
                    &item_ref,
                    &body,
                    &squall_core::time::now_rfc3339(),
                ],
            )
            .await?;
        bump_epoch(&tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn overrides(&self, table: Overrides) -> Result<Vec<(TenantId, String, Option<String>)>> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT tenant_id, ref, body FROM {} ORDER BY tenant_id COLLATE \"C\", ref COLLATE \"C\"",
                    table.name()
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((tenant_of(r.get(0))?, r.get(1), r.get(2))))
            .collect()
    }

    /// Remember that a sensor was enabled or disabled through the API.
    pub async fn put_sensor_enabled(
        &self,
        tenant: &TenantId,
        sensor_ref: &str,
        enabled: bool,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
                "INSERT INTO sensors (tenant_id, ref, enabled, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, ref) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
                &[
                    &tenant.as_str(),
                    &sensor_ref,
                    &enabled,
                    &squall_core::time::now_rfc3339(),
                ],
            )
            .await?;
        bump_epoch(&tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every sensor enabled or disabled through the API: (tenant, ref, enabled).
    pub async fn sensor_overrides(&self) -> Result<Vec<(TenantId, String, bool)>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT tenant_id, ref, enabled FROM sensors ORDER BY tenant_id COLLATE \"C\", ref COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((tenant_of(r.get(0))?, r.get(1), r.get(2))))
            .collect()
    }
}
