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
