//! Squall's store, the only crate that opens a database connection. One
//! handle, [`Store`], over either engine ([`engine`]): SQLite through
//! rusqlite, embedded, the default; or PostgreSQL ([`pg`]) for N nodes
//! sharing one database.
//!
//! On SQLite, one thread owns the write connection ([`writer`]): callers
//! send closures, the thread applies whatever has arrived together in one
//! transaction and answers each caller after the commit. A failing write
//! does not undo its neighbours: its batch is applied again with a
//! savepoint per closure. Reads use a small pool of read-only connections
//! ([`SqliteStore::read`]). The schema is an append-only list of migrations
//! tracked by `PRAGMA user_version` ([`migrate`]).

#![forbid(unsafe_code)]

mod auth;
mod checkpoint;
mod configs;
#[cfg(test)]
mod contract;
mod engine;
mod executions;
mod kv;
mod migrate;
pub mod pg;
mod reactor;
mod secrets;
mod workflows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use auth::{AccountError, ApiKeyInfo, TenantInfo, UserInfo};
pub use configs::{PackConfig, StoredConfigs};
pub use engine::Store;
pub use executions::{ExecutionFilter, ExecutionSummary, StoredExecution};
pub use migrate::SCHEMA_VERSION;
pub use reactor::{Emission, EnforcementFilter, Page, Trace, TraceFilter};
pub use secrets::SecretKey;
pub use workflows::{Batch, Completion, StoredWorkflow, WorkflowWrite};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to open database '{path}': {cause}")]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "database '{path}' has schema version {found}, newer than this build of Squall supports ({supported}); upgrade Squall"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// From the PostgreSQL store ([`pg::PgStore`]).
    #[error(transparent)]
    Postgres(#[from] pg::PgError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the store's writer has stopped")]
    WriterGone,
    /// The transaction holding a write could not be written (begun,
    /// applied or committed); the write did not happen.
    #[error("the write could not be committed: {0}")]
    Batch(String),
    /// A write found its execution already ended and was undone.
    #[error("the execution had already ended; nothing was written")]
    Superseded,
}

impl Error {
    /// Whether the database refused the write because another node holds
    /// the execution (PostgreSQL; see [`pg::PgStore::connect_as`]): this
    /// node was presumed dead and its work taken over. Nothing of the
    /// transaction was written.
    pub fn is_fenced(&self) -> bool {
        let Error::Postgres(pg::PgError::Query(e)) = self else {
            return false;
        };
        e.as_db_error()
            .is_some_and(|db| db.code().code() == pg::FENCED)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a write reaches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Queued for the writer thread, committed with whatever else is
    /// queued.
    Queued,
    /// Applied and committed on the caller's thread when the writer is
    /// idle (else queued): for a caller with nothing else in flight whose
    /// next step waits on this write, which would otherwise pay two thread
    /// wake-ups for it. Blocks for one transaction; never from a guest's
    /// host call (its stack is small).
    Here,
}

/// Settings for [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `synchronous=FULL` instead of `NORMAL`: every commit is fsynced.
    pub synchronous_full: bool,
    /// Read-only connections kept open.
    pub readers: usize,
    /// Shortest time between two commits of the writer: a write arriving
    /// sooner after a commit waits out the rest of it, to be committed with
    /// whatever else arrives meanwhile. Zero commits as soon as the writer
    /// is free.
    pub commit_interval: std::time::Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            synchronous_full: false,
            readers: 4,
            commit_interval: std::time::Duration::from_millis(1),
        }
    }
}

/// A handle to the SQLite database; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: writer::Writer,
    readers: Arc<ReadPool>,
    /// Encrypts secret datastore values; without it they are refused.
    secret_key: Option<SecretKey>,
    /// Bytes of keys and values one tenant's datastore may hold.
    kv_quota: Option<u64>,
}

#[derive(Debug)]
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, migrate it, and
    /// start the writer thread.
    pub fn open(path: &Path, config: &StoreConfig) -> Result<Self> {
        let open_err = |cause| Error::Open {
            path: path.to_owned(),
            cause,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, config.synchronous_full).map_err(open_err)?;
        migrate::migrate(&mut conn, path)?;
        checkpoint::install(&mut conn, path).map_err(open_err)?;
        let writer = writer::Writer::spawn(conn, config.commit_interval);
        Ok(Self {
            secret_key: None,
            kv_quota: None,
            writer,
            readers: Arc::new(ReadPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                max_idle: config.readers.max(1),
            }),
        })
    }

    /// Encrypt secret datastore values with `key` from now on.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(key);
        self
    }

    /// Limit each tenant's datastore to `bytes` of keys and values (stored
    /// sizes: secrets count encrypted).
    pub fn with_kv_quota(mut self, bytes: Option<u64>) -> Self {
        self.kv_quota = bytes;
        self
    }

    /// Run `f` on a read-only connection from the pool. Blocking: call it
    /// from a blocking context or through [`SqliteStore::read_async`].
    pub fn read<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let conn = self.readers.take()?;
        let out = f(&conn);
        self.readers.give_back(conn);
        out
    }

    /// [`SqliteStore::read`] on tokio's blocking pool.
    pub async fn read_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| Error::Corrupt(format!("read task failed: {e}")))?
    }

    /// Apply `f` inside the writer's next batch; resolves after the batch
    /// commits. `f` may run more than once (when a neighbour in its batch
    /// fails, the batch is rolled back and applied again): it must only
    /// touch the transaction, and the answer is that of its committed run.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl Fn(&rusqlite::Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (answer, f) = self
            .writer
            .submit(f)?
            .await
            .map_err(|_| Error::WriterGone)?;
        // Dropped here, on the thread that allocated what it holds.
        drop(f);
        answer
    }

    /// [`SqliteStore::write`], queued before this returns: writes submitted one
    /// after the other apply in that order.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl Fn(&rusqlite::Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<impl Future<Output = Result<R>> + Send + 'static> {
        self.submit_by(Lane::Queued, f)
    }

    /// [`SqliteStore::submit`] by `lane`.
    pub(crate) fn submit_by<R: Send + 'static>(
        &self,
        lane: Lane,
        f: impl Fn(&rusqlite::Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<impl Future<Output = Result<R>> + Send + 'static> {
        let answer = match lane {
            Lane::Queued => self.writer.submit(f)?,
            Lane::Here => self.writer.submit_here(f)?,
        };
        Ok(async move {
            let (answer, f) = answer.await.map_err(|_| Error::WriterGone)?;
            drop(f);
            answer
        })
    }

    /// [`SqliteStore::write`] for callers outside an async runtime.
    pub fn write_blocking<R: Send + 'static>(
        &self,
        f: impl Fn(&rusqlite::Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (answer, f) = self
            .writer
            .submit(f)?
            .blocking_recv()
            .map_err(|_| Error::WriterGone)?;
        drop(f);
        answer
    }
}

impl ReadPool {
    fn take(&self) -> Result<Connection> {
        if let Some(conn) = self.idle.lock().expect("read pool lock poisoned").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|cause| Error::Open {
            path: self.path.clone(),
            cause,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("read pool lock poisoned");
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

fn configure(conn: &Connection, synchronous_full: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if synchronous_full { "FULL" } else { "NORMAL" },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // When a batch is applied again after a failed job, every job runs in a
    // savepoint; SQLite keeps a savepoint's sub-journal in a temp file unless
    // told otherwise. Keep it in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}
