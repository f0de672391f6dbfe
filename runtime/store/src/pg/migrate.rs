//! PostgreSQL's schema: append-only migrations of its own (the SQL differs
//! from SQLite's), numbered in `squall_schema`. Nodes that start together
//! migrate once: the first takes a transaction-scoped advisory lock, the
//! others wait for it and find the work done. A database written by a
//! newer Squall is refused.

use super::PgError;

/// The advisory lock key migrations hold ("squall" in ASCII).
const MIGRATION_LOCK: i64 = 0x7371_7561_6c6c;

const MIGRATIONS: &[&str] = &[
    // 1: tenants and the datastore. Keys sort byte by byte (COLLATE "C"),
    // as SQLite's do.
    r#"
    CREATE TABLE tenants (
        id          TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL
    );
    INSERT INTO tenants (id, created_at)
        VALUES ('default', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));

    CREATE TABLE kv (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        key         TEXT COLLATE "C" NOT NULL,
        value       TEXT NOT NULL,
        expires_at  BIGINT,
        secret      BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (tenant_id, key)
    );
    "#,
    // 2: accounts: users (one name server-wide), API keys and tokens (only
    // their hashes). (`user` is a keyword here: the column is `user_name`.)
    r#"
    CREATE TABLE users (
        name           TEXT PRIMARY KEY,
        tenant_id      TEXT NOT NULL REFERENCES tenants(id),
        role           TEXT NOT NULL,
        password_hash  TEXT,
        created_at     TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        user_name   TEXT NOT NULL,
        role        TEXT NOT NULL,
        key_hash    TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        enabled     BOOLEAN NOT NULL
    );
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
    CREATE TABLE tokens (
        token_hash  TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        user_name   TEXT NOT NULL,
        role        TEXT NOT NULL,
        expires_at  BIGINT NOT NULL
    );
    CREATE INDEX tokens_by_expiry ON tokens (expires_at);
    "#,
    // 3: pack configs set through the API (sealed when there is a key).
    r#"
    CREATE TABLE pack_configs (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        pack        TEXT NOT NULL,
        config      TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, pack)
    );
    "#,
    // 4: executions, with the indexes each list and filter of the API and
    // the UI reads through (SQLite's, one for one). Ids are UUIDv7 text:
    // they sort by time byte by byte (COLLATE "C"), whatever the database's
    // locale. The user filter reads the context as JSON.
    r#"
    CREATE TABLE executions (
        id                   TEXT COLLATE "C" PRIMARY KEY,
        tenant_id            TEXT NOT NULL REFERENCES tenants(id),
        action_ref           TEXT NOT NULL,
        status               TEXT NOT NULL,
        parameters           TEXT NOT NULL,
        result               TEXT,
        output               TEXT NOT NULL,
        status_log           TEXT NOT NULL,
        start_timestamp      TEXT NOT NULL,
        end_timestamp        TEXT,
        trace_tag            TEXT,
        trigger_instance_id  TEXT,
        rule_ref             TEXT,
        context              TEXT,
        delay                BIGINT,
        parent               TEXT COLLATE "C",
        trigger_type         TEXT
    ) WITH (fillfactor = 90);
    CREATE INDEX executions_by_tenant ON executions (tenant_id, id DESC);
    CREATE INDEX executions_by_action ON executions (tenant_id, action_ref, id DESC);
    CREATE INDEX executions_by_status ON executions (tenant_id, status, id DESC);
    CREATE INDEX executions_by_action_status ON executions (tenant_id, action_ref, status, id DESC);
    CREATE INDEX executions_by_trace ON executions (tenant_id, trace_tag)
        WHERE trace_tag IS DISTINCT FROM trigger_instance_id;
    CREATE INDEX executions_by_instance ON executions (tenant_id, trigger_instance_id)
        WHERE trigger_instance_id IS NOT NULL;
    CREATE INDEX executions_by_parent ON executions (tenant_id, parent, id)
        WHERE parent IS NOT NULL;
    CREATE INDEX executions_by_rule ON executions (tenant_id, rule_ref, id DESC)
        WHERE rule_ref IS NOT NULL;
    CREATE INDEX executions_by_user ON executions (tenant_id, (context::jsonb ->> 'user'), id DESC)
        WHERE parent IS NULL;
    CREATE INDEX executions_by_trigger_type ON executions (tenant_id, trigger_type, id DESC)
        WHERE trigger_type IS NOT NULL;
    "#,
    // 5: the reactor's records: trigger instances and rule enforcements
    // (traced through the instance's id, the partial indexes hold the
    // others), and rules, policies and sensors changed through the API
    // (a row overrides the pack's; a rule's or policy's `body` NULL
    // deletes it).
    r#"
    CREATE TABLE trigger_instances (
        id                  TEXT COLLATE "C" PRIMARY KEY,
        tenant_id           TEXT NOT NULL REFERENCES tenants(id),
        trigger_type        TEXT NOT NULL,
        trigger_parameters  TEXT NOT NULL,
        payload             TEXT NOT NULL,
        occurrence_time     TEXT NOT NULL,
        status              TEXT NOT NULL,
        trace_tag           TEXT NOT NULL
    );
    CREATE INDEX trigger_instances_by_tenant ON trigger_instances (tenant_id, id DESC);
    CREATE INDEX trigger_instances_by_type ON trigger_instances (tenant_id, trigger_type, id DESC);
    CREATE INDEX trigger_instances_by_trace ON trigger_instances (tenant_id, trace_tag)
        WHERE trace_tag <> id;

    CREATE TABLE rule_enforcements (
        id                   TEXT COLLATE "C" PRIMARY KEY,
        tenant_id            TEXT NOT NULL REFERENCES tenants(id),
        rule_ref             TEXT NOT NULL,
        trigger_instance_id  TEXT NOT NULL,
        execution_id         TEXT,
        status               TEXT NOT NULL,
        failure_reason       TEXT,
        enforced_at          TEXT NOT NULL,
        trace_tag            TEXT NOT NULL
    );
    CREATE INDEX enforcements_by_tenant ON rule_enforcements (tenant_id, id DESC);
    CREATE INDEX enforcements_by_instance ON rule_enforcements (tenant_id, trigger_instance_id);
    CREATE INDEX enforcements_by_trace ON rule_enforcements (tenant_id, trace_tag)
        WHERE trace_tag <> trigger_instance_id;

    CREATE TABLE rules (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        ref         TEXT NOT NULL,
        body        TEXT,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, ref)
    );
    CREATE TABLE policies (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        ref         TEXT NOT NULL,
        body        TEXT,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, ref)
    );
    CREATE TABLE sensors (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        ref         TEXT NOT NULL,
        enabled     BOOLEAN NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, ref)
    );
    "#,
    // 6: workflows: a running workflow's head row plus one row per task
    // execution, each written when it changes.
    r#"
    CREATE TABLE workflows (
        id         TEXT COLLATE "C" PRIMARY KEY,
        tenant_id  TEXT NOT NULL REFERENCES tenants(id),
        context    TEXT NOT NULL,
        head       TEXT NOT NULL,
        completed  BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX workflows_running ON workflows (id) WHERE NOT completed;
    CREATE TABLE workflow_tasks (
        workflow_id  TEXT NOT NULL,
        seq          BIGINT NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (workflow_id, seq)
    );
    "#,
    // 7: the cluster's execution queue: a row per waiting or claimed
    // execution, small and rewritten often (fillfactor 70 leaves room for
    // HOT updates); claims carry a fence from one sequence; completions
    // refused under a lost lease are recorded.
    r#"
    CREATE SEQUENCE execution_fence;
    CREATE TABLE execution_queue (
        execution_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES executions(id) ON DELETE CASCADE,
        tenant_id     TEXT NOT NULL,
        available_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        node          TEXT,
        fence         BIGINT,
        lease_until   TIMESTAMPTZ
    ) WITH (fillfactor = 70);
    CREATE INDEX execution_queue_waiting ON execution_queue (available_at, execution_id)
        WHERE node IS NULL;
    CREATE INDEX execution_queue_by_node ON execution_queue (node) WHERE node IS NOT NULL;
    CREATE INDEX execution_queue_leases ON execution_queue (lease_until) WHERE node IS NOT NULL;
    CREATE INDEX execution_queue_by_tenant ON execution_queue (tenant_id) WHERE node IS NOT NULL;
    CREATE TABLE stale_completions (
        execution_id  TEXT NOT NULL,
        node          TEXT NOT NULL,
        fence         BIGINT NOT NULL,
        status        TEXT NOT NULL,
        refused_at    TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    "#,
    // 8: what runs once in a cluster: named leases (the leader's
    // housekeeping, each sensor instance), with a fence that grows with
    // every change of holder; timer ticks, recorded once each.
    r#"
    CREATE SEQUENCE lease_fence;
    CREATE TABLE leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        fence       BIGINT NOT NULL,
        expires_at  TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX leases_by_holder ON leases (holder);
    CREATE TABLE timer_fires (
        tenant_id  TEXT NOT NULL,
        timer      TEXT NOT NULL,
        fire_time  TIMESTAMPTZ NOT NULL,
        node       TEXT NOT NULL,
        PRIMARY KEY (tenant_id, timer, fire_time)
    );
    "#,
    // 9: a tenant's change epoch, bumped in every transaction that changes
    // what its nodes hold in memory (rules, policies, sensors, packs).
    r#"
    CREATE TABLE tenant_epochs (
        tenant_id  TEXT PRIMARY KEY,
        epoch      BIGINT NOT NULL
    );
    "#,
    // 10: the event log the streams read: each event with its
    // transaction's id, read below the oldest running transaction.
    r#"
    CREATE TABLE events (
        seq        BIGSERIAL,
        tx         BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        tenant_id  TEXT NOT NULL,
        kind       TEXT NOT NULL,
        body       TEXT NOT NULL,
        at         TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (tx, seq)
    );
    CREATE INDEX events_by_tenant ON events (tenant_id, tx, seq);
    "#,
    // 11: packs installed through the API, for every node to install: the
    // version in force of each, with its archive (as uploaded, built
    // components included). Its `seq` grows with every install, so nodes
    // apply versions in the order they were installed.
    r#"
    CREATE SEQUENCE pack_seq;
    CREATE TABLE packs (
        tenant_id     TEXT NOT NULL REFERENCES tenants(id),
        pack          TEXT NOT NULL,
        version       TEXT NOT NULL,
        seq           BIGINT NOT NULL DEFAULT nextval('pack_seq'),
        archive       BYTEA NOT NULL,
        installed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, pack)
    );
    "#,
    // 12: every write of an execution logs an event in its own transaction,
    // whichever node or statement made it (the queue's reaper included):
    // the execution's id, which the streams read back.
    r#"
    CREATE FUNCTION log_execution_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO events (tenant_id, kind, body) VALUES (
            NEW.tenant_id,
            CASE WHEN TG_OP = 'INSERT' THEN 'st2.execution__create' ELSE 'st2.execution__update' END,
            NEW.id);
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER executions_log_events AFTER INSERT OR UPDATE ON executions
        FOR EACH ROW EXECUTE FUNCTION log_execution_event();
    CREATE INDEX events_by_time ON events (at);
    "#,
    // 13: settings every node must agree on, such as a value sealed with
    // the datastore key, which a node with another key cannot open.
    r#"
    CREATE TABLE squall_settings (
        name   TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    "#,
    // 14: an execution written by a node is claimed by that node (the
    // connection's `squall.node`) from its insert until it ends, and only
    // its holder may write it meanwhile: a node presumed dead, whose claims
    // another node took over, is refused by the database itself (SQLSTATE
    // SQ001), its whole transaction with it. A connection without a node
    // (the command-line tools) claims nothing and is not refused.
    r#"
    CREATE FUNCTION claim_execution() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        me      TEXT := nullif(current_setting('squall.node', true), '');
        ended   BOOLEAN := NEW.status IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned');
        holder  TEXT;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            IF me IS NOT NULL AND NOT ended THEN
                INSERT INTO execution_queue (execution_id, tenant_id, node, fence, lease_until)
                VALUES (NEW.id, NEW.tenant_id, me, nextval('execution_fence'),
                        now() + coalesce(nullif(current_setting('squall.claim_ttl', true), ''), '30s')::interval);
            END IF;
            RETURN NULL;
        END IF;
        SELECT node INTO holder FROM execution_queue WHERE execution_id = NEW.id FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        IF me IS NOT NULL AND holder IS DISTINCT FROM me THEN
            RAISE EXCEPTION 'execution % is held by node %, not by this node (%)',
                NEW.id, coalesce(holder, '(none: waiting to be claimed)'), me
                USING ERRCODE = 'SQ001';
        END IF;
        IF ended THEN
            DELETE FROM execution_queue WHERE execution_id = NEW.id;
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER executions_claimed AFTER INSERT OR UPDATE ON executions
        FOR EACH ROW EXECUTE FUNCTION claim_execution();
    "#,
    // 15: requests between nodes (cancel an execution another node
    // holds): a row addressed to the node, taken once, answered on the row.
    r#"
    CREATE TABLE node_requests (
        id     BIGSERIAL PRIMARY KEY,
        node   TEXT NOT NULL,
        body   TEXT NOT NULL,
        taken  BOOLEAN NOT NULL DEFAULT false,
        reply  TEXT,
        at     TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX node_requests_waiting ON node_requests (node) WHERE NOT taken;
    "#,
    // 16: nodes whose workers are all taken, with executions waiting for
    // one: only from these do nodes with room take waiting executions.
    r#"
    CREATE TABLE busy_nodes (
        node   TEXT PRIMARY KEY,
        since  TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    "#,
    // 17: concurrency gates counted across the cluster (a concurrency
    // policy, a tenant's running limit): one row per slot an execution
    // holds, taken under the gate's advisory lock. An execution's slots
    // are freed when it ends, by the write that ends it, whichever node
    // makes it (a takeover's `abandoned` included), with a hint to the
    // nodes whose executions wait at the tenant's gates.
    r#"
    CREATE TABLE gate_slots (
        gate          TEXT NOT NULL,
        execution_id  TEXT NOT NULL,
        tenant_id     TEXT NOT NULL,
        PRIMARY KEY (gate, execution_id)
    );
    CREATE INDEX gate_slots_by_execution ON gate_slots (execution_id);
    CREATE FUNCTION free_gate_slots() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM gate_slots WHERE execution_id = NEW.id;
        IF FOUND THEN
            PERFORM pg_notify('squall_gates', NEW.tenant_id);
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER executions_free_gates AFTER UPDATE OF status ON executions
        FOR EACH ROW
        WHEN (NEW.status IN ('succeeded', 'failed', 'timeout', 'canceled', 'abandoned'))
        EXECUTE FUNCTION free_gate_slots();
    "#,
    // 18: rules' throttle windows, shared by the nodes: the window of a
    // rule and throttle key is taken by the one enforcement that opens it,
    // in the database's time, whichever node it comes through.
    r#"
    CREATE TABLE throttle_windows (
        tenant_id  TEXT NOT NULL,
        rule       TEXT NOT NULL,
        key        TEXT NOT NULL,
        started    TIMESTAMPTZ NOT NULL,
        until      TIMESTAMPTZ NOT NULL,
        opened_by  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, rule, key)
    );
    CREATE INDEX throttle_windows_by_end ON throttle_windows (until);
    "#,
];

/// The schema version this build writes.
pub(super) const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS squall_schema (version BIGINT NOT NULL)")
        .await?;
    let found: i64 = tx
        .query_opt("SELECT version FROM squall_schema", &[])
        .await?
        .map_or(0, |row| row.get(0));
    if found > PG_SCHEMA_VERSION {
        return Err(PgError::TooNew {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.batch_execute(sql).await?;
        tracing::info!(version = i + 1, "applied PostgreSQL migration");
    }
    tx.execute("DELETE FROM squall_schema", &[]).await?;
    tx.execute(
        "INSERT INTO squall_schema (version) VALUES ($1)",
        &[&PG_SCHEMA_VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
