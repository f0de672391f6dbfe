//! Embedded, append-only migrations tracked by `PRAGMA user_version`.
//!
//! Never edit a migration that has shipped: append a new one.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::{Error, Result};

const MIGRATIONS: &[&str] = &[
    // 1: tenants, executions, the datastore.
    r#"
    CREATE TABLE tenants (
        id          TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL
    ) STRICT;
    INSERT INTO tenants (id, created_at) VALUES ('default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

    CREATE TABLE executions (
        id               TEXT PRIMARY KEY,
        tenant_id        TEXT NOT NULL REFERENCES tenants(id),
        action_ref       TEXT NOT NULL,
        status           TEXT NOT NULL,
        parameters       TEXT NOT NULL,
        result           TEXT,
        output           TEXT NOT NULL,
        status_log       TEXT NOT NULL,
        start_timestamp  TEXT NOT NULL,
        end_timestamp    TEXT,
        trace_tag        TEXT
    ) STRICT;
    CREATE INDEX executions_by_tenant ON executions (tenant_id, id DESC);
    CREATE INDEX executions_by_action ON executions (tenant_id, action_ref, id DESC);
    CREATE INDEX executions_by_status ON executions (tenant_id, status, id DESC);

    CREATE TABLE kv (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        expires_at  INTEGER,
        secret      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, key)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 2: the reactor: trigger instances, rules, enforcements, traces.
    r#"
    CREATE TABLE trigger_instances (
        id                  TEXT PRIMARY KEY,
        tenant_id           TEXT NOT NULL REFERENCES tenants(id),
        trigger_type        TEXT NOT NULL,
        trigger_parameters  TEXT NOT NULL,
        payload             TEXT NOT NULL,
        occurrence_time     TEXT NOT NULL,
        status              TEXT NOT NULL,
        trace_tag           TEXT NOT NULL
    ) STRICT;
    CREATE INDEX trigger_instances_by_tenant ON trigger_instances (tenant_id, id DESC);
    CREATE INDEX trigger_instances_by_trace ON trigger_instances (tenant_id, trace_tag);

    -- Rules created or changed through the API. A row overrides the rule of
    -- the same ref from a pack's rules/ directory; `body` NULL deletes it.
    CREATE TABLE rules (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        ref         TEXT NOT NULL,
        body        TEXT,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, ref)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE rule_enforcements (
        id                   TEXT PRIMARY KEY,
        tenant_id            TEXT NOT NULL REFERENCES tenants(id),
        rule_ref             TEXT NOT NULL,
        trigger_instance_id  TEXT NOT NULL,
        execution_id         TEXT,
        status               TEXT NOT NULL,
        failure_reason       TEXT,
        enforced_at          TEXT NOT NULL,
        trace_tag            TEXT NOT NULL
    ) STRICT;
    CREATE INDEX enforcements_by_tenant ON rule_enforcements (tenant_id, id DESC);
    CREATE INDEX enforcements_by_instance ON rule_enforcements (tenant_id, trigger_instance_id);
    CREATE INDEX enforcements_by_trace ON rule_enforcements (tenant_id, trace_tag);

    ALTER TABLE executions ADD COLUMN trigger_instance_id TEXT;
    ALTER TABLE executions ADD COLUMN rule_ref TEXT;
    CREATE INDEX executions_by_trace ON executions (tenant_id, trace_tag);
    CREATE INDEX executions_by_instance ON executions (tenant_id, trigger_instance_id);
    "#,
    // 3: the execution lifecycle: context and delay on executions, policies
    // changed through the API (overriding packs' policies/ like rules).
    r#"
    ALTER TABLE executions ADD COLUMN context TEXT;
    ALTER TABLE executions ADD COLUMN delay INTEGER;

    CREATE TABLE policies (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        ref         TEXT NOT NULL,
        body        TEXT,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, ref)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 4: sensors enabled or disabled through the API (overriding the
    // `enabled` of their YAML).
    r#"
    CREATE TABLE sensors (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        ref         TEXT NOT NULL,
        enabled     INTEGER NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, ref)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 5: accounts: users (one name server-wide), API keys and tokens (only
    // their hashes); the executions list filtered by action and status.
    r#"
    CREATE TABLE users (
        name           TEXT PRIMARY KEY,
        tenant_id      TEXT NOT NULL REFERENCES tenants(id),
        role           TEXT NOT NULL,
        password_hash  TEXT,
        created_at     TEXT NOT NULL
    ) STRICT;

    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        user        TEXT NOT NULL,
        role        TEXT NOT NULL,
        key_hash    TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        enabled     INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

    CREATE TABLE tokens (
        token_hash  TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        user        TEXT NOT NULL,
        role        TEXT NOT NULL,
        expires_at  INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE INDEX executions_by_action_status ON executions (tenant_id, action_ref, status, id DESC);
    "#,
    // 6: most records' trace tag is the id of the trigger instance they came
    // from (the default when an event carries no St2-Trace-Tag); those are
    // found through that instance's id, so the trace indexes hold only the
    // others. Three fewer index entries per event.
    r#"
    DROP INDEX trigger_instances_by_trace;
    CREATE INDEX trigger_instances_by_trace ON trigger_instances (tenant_id, trace_tag)
        WHERE trace_tag != id;
    DROP INDEX enforcements_by_trace;
    CREATE INDEX enforcements_by_trace ON rule_enforcements (tenant_id, trace_tag)
        WHERE trace_tag != trigger_instance_id;
    DROP INDEX executions_by_trace;
    CREATE INDEX executions_by_trace ON executions (tenant_id, trace_tag)
        WHERE trace_tag IS NOT trigger_instance_id;
    "#,
    // 7: workflows. A task's execution names its workflow's in `parent`
    // (derived from its context); a running workflow's state is its head
    // row plus one row per task execution, each written when it changes.
    r#"
    ALTER TABLE executions ADD COLUMN parent TEXT;
    CREATE INDEX executions_by_parent ON executions (tenant_id, parent, id)
        WHERE parent IS NOT NULL;

    CREATE TABLE workflows (
        id         TEXT PRIMARY KEY,
        tenant_id  TEXT NOT NULL REFERENCES tenants(id),
        context    TEXT NOT NULL,
        head       TEXT NOT NULL,
        completed  INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX workflows_running ON workflows (id) WHERE completed = 0;

    CREATE TABLE workflow_tasks (
        workflow_id  TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (workflow_id, seq)
    ) STRICT;
    "#,
    // 8: only executions a rule started have a trigger instance, so only
    // those are in its index: one B-tree fewer written for every other
    // execution (a workflow's tasks, runs through the API).
    r#"
    DROP INDEX executions_by_instance;
    CREATE INDEX executions_by_instance ON executions (tenant_id, trigger_instance_id)
        WHERE trigger_instance_id IS NOT NULL;
    "#,
    // 9: the history filtered by rule (the web UI) finds its page by index
    // however rare the rule's executions; only those a rule started are in
    // it.
    r#"
    CREATE INDEX executions_by_rule ON executions (tenant_id, rule_ref, id DESC)
        WHERE rule_ref IS NOT NULL;
    "#,
    // 10: the history filtered by who asked (the context's `user`); only
    // executions that are no workflow's task, as the history lists.
    r#"
    CREATE INDEX executions_by_user ON executions (tenant_id, (context ->> '$.user'), id DESC)
        WHERE parent IS NULL;
    "#,
    // 11: what a rule started records the type of the trigger instance it
    // matched, so the history filters by trigger type through an index
    // (only those a rule started are in it); those already recorded take
    // it from their trigger instance.
    r#"
    ALTER TABLE executions ADD COLUMN trigger_type TEXT;
    UPDATE executions SET trigger_type = (
        SELECT t.trigger_type FROM trigger_instances AS t
        WHERE t.tenant_id = executions.tenant_id AND t.id = executions.trigger_instance_id
    ) WHERE trigger_instance_id IS NOT NULL;
    CREATE INDEX executions_by_trigger_type ON executions (tenant_id, trigger_type, id DESC)
        WHERE trigger_type IS NOT NULL;
    "#,
    // 12: pack configs set through the API, in place of a pack's
    // config.yaml (sealed when the server has a key).
    r#"
    CREATE TABLE pack_configs (
        tenant_id   TEXT NOT NULL REFERENCES tenants(id),
        pack        TEXT NOT NULL,
        config      TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, pack)
    ) STRICT, WITHOUT ROWID;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the database up to [`SCHEMA_VERSION`] in one exclusive transaction;
/// refuse a database written by a newer Squall.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql)?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let mut conn = Connection::open(&path).expect("open");
        migrate(&mut conn, &path).expect("first");
        migrate(&mut conn, &path).expect("second");
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("pragma");
        assert_eq!(v, SCHEMA_VERSION);
        let tenants: i64 = conn
            .query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))
            .expect("count");
        assert_eq!(tenants, 1);
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let mut conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("pragma");
        let err = migrate(&mut conn, &path).expect_err("must refuse");
        assert!(matches!(err, Error::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("upgrade Squall"));
    }
}
