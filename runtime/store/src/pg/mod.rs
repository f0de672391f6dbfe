//! The store on PostgreSQL, for N identical nodes sharing one database
//! (`tokio-postgres` through a `deadpool-postgres` pool). It keeps the
//! contract the SQLite store keeps, one part at a time; each part's
//! behaviour tests run against both engines (`tests` below and in the
//! modules they share). What is here so far: the schema's migrations, the
//! datastore, the accounts (tenants, users, API keys, tokens), pack
//! configs, execution records, and the reactor's records (trigger
//! instances, enforcements, API overrides, traces, retention).
//!
//! Transactions are short and never span a guest call; writes that must
//! not interleave per tenant (the datastore's quota) take a
//! transaction-scoped advisory lock.

mod auth;
mod changes;
mod configs;
mod events;
mod executions;
mod gates;
mod group;
mod kv;
mod leases;
mod migrate;
mod packs;
mod queue;
mod reactor;
mod requests;
mod throttles;
mod workflows;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use changes::{CHANNEL, Heard};
pub use events::{EventId, LoggedEvent};
pub use gates::GATES;
pub use leases::Held;
pub use packs::PackVersion;
pub use queue::{Claim, Reaped};
pub use requests::{Holder, REQUESTS};
pub use throttles::Window;

use crate::SecretKey;

/// `text` as PostgreSQL's text can hold it: a NUL (a template may render
/// one, a key may carry it) becomes U+001F.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{1f}")
}

/// Errors from the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("could not reach the database: {0}")]
    Connect(String),
    #[error("database error: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error(
        "the database has schema version {found}, newer than this build of Squall supports ({supported}); upgrade Squall"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("TLS to the database: {0}")]
    Tls(String),
    #[error(
        "this node's datastore key (SQUALL_SECRET_KEY, else the data directory's secret.key) is not the one the database's secrets are sealed with: give every node the same key"
    )]
    WrongKey,
    #[error(
        "this node's lease on the database may have run out (its renewal is overdue): it sends nothing until the lease is renewed"
    )]
    LeaseLapsed,
}

/// How connections are made: in clear, or over TLS (`sslmode=require`)
/// with the server's certificate verified against the public roots and,
/// when given, the certificates of a PEM file (a private or managed
/// database's CA). `disable` and `prefer` (the driver's default) connect
/// in clear; `require` never falls back to clear text and, unlike libpq's
/// `require`, always verifies the certificate and name.
fn tls_for(
    config: &tokio_postgres::Config,
    ca: Option<&std::path::Path>,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, PgError> {
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    if let Some(path) = ca {
        use rustls::pki_types::pem::PemObject as _;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| PgError::Tls(format!("'{}': {e}", path.display())))?;
        if certs.is_empty() {
            return Err(PgError::Tls(format!(
                "'{}' holds no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| PgError::Tls(format!("'{}': {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PgError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// `url` without its password, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "the given URL (not a PostgreSQL URL)".into();
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// A driver error with the server's own message and SQLSTATE, which its
/// `Display` leaves out.
/// The SQLSTATE of a write refused because another node holds the
/// execution (migration 14).
pub const FENCED: &str = "SQ001";

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

type Argument<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// The condition that finds one row by its id (`$2`) within its tenant
/// (`$1`), in tables whose ids are unique across tenants. The primary key
/// finds the row; the tenant is compared with `IS NOT DISTINCT FROM`,
/// which no index serves, so it is checked on that row alone. Written as
/// `tenant_id = $1 AND id = $2`, the condition is also served by every
/// list index that leads with the tenant (`(tenant_id, action_ref, id)`),
/// by scanning the tenant's whole range: a plan chosen while a table was
/// small (all indexes then cost the same) and kept by a connection's
/// prepared statement made each write scan a tenant's whole history.
macro_rules! by_id_in_tenant {
    () => {
        "id = $2 AND tenant_id IS NOT DISTINCT FROM $1"
    };
}
use by_id_in_tenant;

/// Run `sql` as a statement prepared once per connection (the pool's
/// cache): one round trip instead of two, and no parsing or planning each
/// time. For the statements every execution passes through.
async fn exec<C: deadpool_postgres::GenericClient>(
    client: &C,
    sql: &str,
    params: &[Argument<'_>],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

/// A filter's arguments, then `LIMIT` and `OFFSET`.
fn arguments<'a>(args: &'a [String], limit: &'a i64, offset: &'a i64) -> Vec<Argument<'a>> {
    let mut out: Vec<Argument<'a>> = args.iter().map(|a| a as Argument<'a>).collect();
    out.push(limit);
    out.push(offset);
    out
}

/// `sql` with its `?` arguments numbered from `$first`.
fn numbered(sql: &str, first: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = first;
    for c in sql.chars() {
        if c == '?' {
            out.push_str(&format!("${n}"));
            n += 1;
        } else {
            out.push(c);
        }
    }
    out
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Connect(with_causes(&e))
    }
}

/// `e` and what caused it, for a message that says why (a TLS handshake
/// fails for a reason: an unknown issuer, a name that does not match).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl From<tokio_postgres::Error> for crate::Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for crate::Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Postgres(e.into())
    }
}

/// The tables every execution writes (`gate_slots`: every one under a
/// concurrency limit), which autovacuum must keep up with.
const HOT_TABLES: &[&str] = &[
    "events",
    "execution_queue",
    "executions",
    "gate_slots",
    "leases",
    "rule_enforcements",
    "trigger_instances",
];

/// A handle to the shared database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Drives the pool's connections.
    bridge: std::sync::Arc<Bridge>,
    /// Where the database is, for connections of their own (`LISTEN`).
    config: tokio_postgres::Config,
    /// TLS for every connection, when the URL asks for it.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Encrypts secret datastore values; without it they are refused.
    pub(crate) secret_key: Option<SecretKey>,
    /// Bytes of keys and values one tenant's datastore may hold.
    kv_quota: Option<u64>,
    /// The lease this node serves under, when it does: no statement is
    /// sent once it may have run out.
    lease: Option<std::sync::Arc<LeaseClock>>,
    /// Trigger instances waiting to be written together (see
    /// [`PgStore::insert_processed_trigger_instance`]).
    recordings: std::sync::Arc<reactor::Recordings>,
    /// Executions asking for gate slots, counted together (see
    /// [`PgStore::take_gates`]).
    gate_asks: std::sync::Arc<gates::Asks>,
}

/// When a node's lease was last renewed, by its own clock. A process that
/// was paused (stopped, swapped out) past its lease must not write on
/// resuming, when another node may serve already: its store sends nothing
/// until the lease is renewed again, which fails if another node took it.
#[derive(Debug)]
pub struct LeaseClock {
    started: std::time::Instant,
    /// Milliseconds from `started` to the last renewal.
    renewed_ms: std::sync::atomic::AtomicU64,
    /// How long after a renewal the lease surely still holds.
    holds_for: std::time::Duration,
}

impl LeaseClock {
    /// A lease renewed now, surely held for `holds_for` after each renewal
    /// (its time to live less a margin).
    pub fn new(holds_for: std::time::Duration) -> Self {
        Self {
            started: std::time::Instant::now(),
            renewed_ms: std::sync::atomic::AtomicU64::new(0),
            holds_for,
        }
    }

    /// Record a renewal, just made.
    pub fn renewed(&self) {
        self.renewed_at(std::time::Instant::now());
    }

    /// Record a renewal whose statement was sent at `at` (the database
    /// counts the lease from then).
    pub fn renewed_at(&self, at: std::time::Instant) {
        let since = at.saturating_duration_since(self.started);
        let ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        self.renewed_ms
            .store(ms, std::sync::atomic::Ordering::Release);
    }

    /// Whether the lease surely still holds.
    pub fn fresh(&self) -> bool {
        let renewed = std::time::Duration::from_millis(
            self.renewed_ms.load(std::sync::atomic::Ordering::Acquire),
        );
        self.started.elapsed().saturating_sub(renewed) < self.holds_for
    }
}

/// The runtime the pool's connections run on: one thread of the store's
/// own, so that waiting for an answer never depends on the caller's runtime
/// (see [`PgStore::block`]).
struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    fn start() -> Result<Self, PgError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("squall-pg")
            .enable_all()
            .build()
            .map_err(|e| PgError::Connect(format!("could not start the store's runtime: {e}")))?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the bridge is dropped")
            .handle()
            .clone()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // The last handle may go inside an async task, where a runtime
        // cannot be dropped by waiting for it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Opens the pool's connections on the store's runtime, where they run.
struct OnBridge {
    runtime: tokio::runtime::Handle,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// Open a connection to `config` (over `tls`, when given) and run it on the
/// current runtime until it ends.
async fn open(
    config: &tokio_postgres::Config,
    tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let report = |e: tokio_postgres::Error| {
        tracing::warn!(error = %describe(&e), "database connection ended");
    };
    Ok(match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            let task = tokio::spawn(async move { connection.await.unwrap_or_else(report) });
            (client, task)
        }
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            let task = tokio::spawn(async move { connection.await.unwrap_or_else(report) });
            (client, task)
        }
    })
}

impl deadpool_postgres::Connect for OnBridge {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let config = config.clone();
        let (runtime, tls) = (self.runtime.clone(), self.tls.clone());
        Box::pin(async move {
            let opened = runtime
                .spawn(async move { open(&config, tls.as_ref()).await })
                .await;
            match opened {
                Ok(opened) => opened,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime shuts down only once the last handle to the
                // store, and so to this pool, is gone.
                Err(_) => unreachable!("the store's runtime stopped while its pool was in use"),
            }
        })
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user@host:port/db`)
    /// with at most `connections` connections, and bring its schema up to
    /// date (once, whichever node gets there first).
    pub async fn connect(url: &str, connections: usize) -> Result<Self, PgError> {
        Self::connect_with_ca(url, connections, None).await
    }

    /// [`PgStore::connect`]; with `sslmode=require` in `url`, over TLS,
    /// the server's certificate verified against the public roots and the
    /// certificates in `ca` (PEM), when given.
    pub async fn connect_with_ca(
        url: &str,
        connections: usize,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, PgError> {
        let store = Self::connect_unmigrated(url, connections, ca, None).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// [`PgStore::connect_with_ca`] for node `node`: every execution its
    /// connections write is claimed by `node`, for `claim_ttl` unless
    /// renewed ([`PgStore::hold_lease`]), and an execution another node
    /// holds cannot be written through it (see [`crate::Error::is_fenced`]).
    /// `node` is made of letters, digits, `.`, `_` and `-`.
    pub async fn connect_as(
        url: &str,
        connections: usize,
        ca: Option<&std::path::Path>,
        node: &str,
        claim_ttl: std::time::Duration,
    ) -> Result<Self, PgError> {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if node.is_empty() || !node.chars().all(plain) {
            return Err(PgError::Connect(format!(
                "node name '{node}' must be made of letters, digits, '.', '_' and '-'"
            )));
        }
        let identity = format!(
            "-c squall.node={node} -c squall.claim_ttl={}ms",
            claim_ttl.as_millis()
        );
        let store = Self::connect_unmigrated(url, connections, ca, Some(&identity)).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store on `url`, its connections opened with the server options
    /// `identity` (a node's, see [`PgStore::connect_as`]) when given.
    async fn connect_unmigrated(
        url: &str,
        connections: usize,
        ca: Option<&std::path::Path>,
        identity: Option<&str>,
    ) -> Result<Self, PgError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
        // A transaction left open by a stalled or cut-off node would hold
        // back every stream's reader (the event log is read below the
        // oldest running transaction) and its locks: the server ends it.
        // Keepalives find a peer that vanished.
        let options = format!(
            "{} -c idle_in_transaction_session_timeout=60000 {}",
            config.get_options().unwrap_or_default(),
            identity.unwrap_or_default()
        );
        config.options(options.trim());
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        let tls = tls_for(&config, ca)?;
        let bridge = Bridge::start()?;
        let manager = Manager::from_connect(
            config.clone(),
            OnBridge {
                runtime: bridge.handle(),
                tls: tls.clone(),
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // A caller waits for a connection at most this long, then gets an
        // error rather than hanging.
        let pool = Pool::builder(manager)
            .max_size(connections.max(1))
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(30)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Connect(e.to_string()))?;
        let store = Self {
            pool,
            bridge: std::sync::Arc::new(bridge),
            config,
            tls,
            secret_key: None,
            kv_quota: None,
            lease: None,
            recordings: Default::default(),
            gate_asks: Default::default(),
        };
        Ok(store)
    }

    /// A store of one connection for a node's lease on the database, on a
    /// connection of its own (a busy pool never holds a renewal up). Only
    /// a database without the lease table yet (a new one) is migrated
    /// here: otherwise a node of a newer build migrates once it leads
    /// ([`PgStore::schema_is_current`]), never under older nodes serving.
    pub async fn connect_for_lease(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, PgError> {
        let store = Self::connect_unmigrated(url, 1, ca, None).await?;
        let client = store.client().await?;
        let has_leases: bool = client
            .query_one("SELECT to_regclass('leases') IS NOT NULL", &[])
            .await?
            .get(0);
        drop(client);
        if !has_leases {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Whether the database's schema is the one this build writes: a node
    /// of a newer build migrates it only once it leads, so that it never
    /// changes the schema under older nodes serving.
    pub async fn schema_is_current(&self) -> Result<bool, PgError> {
        let client = self.client().await?;
        let found: i64 = client
            .query_opt("SELECT version FROM squall_schema", &[])
            .await?
            .map_or(0, |row| row.get(0));
        Ok(found >= migrate::PG_SCHEMA_VERSION)
    }

    /// Bring the schema up to date (once, whichever node gets there first).
    async fn migrate(&self) -> Result<(), PgError> {
        let mut client = self.pool.get().await?;
        migrate::migrate(&mut client).await
    }

    /// Encrypt secret datastore values with `key` from now on.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(key);
        self
    }

    /// Limit each tenant's datastore to `bytes` of keys and values.
    pub fn with_kv_quota(mut self, bytes: Option<u64>) -> Self {
        self.kv_quota = bytes;
        self
    }

    /// Wait for `operation` on the caller's thread: for the operations
    /// SQLite answers synchronously, which callers run on blocking threads.
    /// The connections are driven by the store's own runtime, so this
    /// holds in any caller, a single-threaded runtime's included (whose
    /// thread it blocks meanwhile, as a SQLite read does).
    pub fn block<F: std::future::Future>(&self, operation: F) -> F::Output {
        let wait = || {
            // The pool's timeouts need a runtime's clock: the store's own.
            let _context = self.bridge.handle().enter();
            futures_executor::block_on(operation)
        };
        // On a worker of a multi-threaded runtime, its other tasks move to
        // the other workers meanwhile: among them may be those holding the
        // pool's connections, which this wait could otherwise starve.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// Dead rows of the tables every execution writes, by table.
    pub async fn dead_tuples(&self) -> Result<Vec<(String, i64)>, PgError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT relname::text, n_dead_tup FROM pg_stat_user_tables
                 WHERE relname = ANY($1) ORDER BY relname",
                &[&HOT_TABLES],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// This node's pool: connections in use, idle, and callers waiting.
    pub fn pool_state(&self) -> [(&'static str, usize); 3] {
        let status = self.pool.status();
        [
            ("in_use", status.size.saturating_sub(status.available)),
            ("idle", status.available),
            ("waiting", status.waiting),
        ]
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        if let Some(lease) = &self.lease
            && !lease.fresh()
        {
            return Err(PgError::LeaseLapsed);
        }
        Ok(self.pool.get().await?)
    }

    /// Use the database only while `lease` is fresh (see [`LeaseClock`]).
    pub fn under_lease(mut self, lease: std::sync::Arc<LeaseClock>) -> Self {
        self.lease = Some(lease);
        // Its writes go out under the lease, never with another store's.
        self.recordings = Default::default();
        self.gate_asks = Default::default();
        self
    }

    /// A page of `table`'s rows matching `filter` (arguments `?`), newest
    /// first, and how many match in all.
    async fn list_page(
        &self,
        table: &str,
        columns: &str,
        filter: &str,
        args: &[String],
        (limit, offset): (i64, i64),
    ) -> crate::Result<(Vec<tokio_postgres::Row>, u64)> {
        let filter = numbered(filter, 1);
        let n = args.len();
        let params = arguments(args, &limit, &offset);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {columns} FROM {table} WHERE {filter} ORDER BY id DESC LIMIT ${} OFFSET ${}",
                    n + 1,
                    n + 2
                ),
                &params,
            )
            .await?;
        let total: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {filter}"),
                &params[..n],
            )
            .await?
            .get(0);
        Ok((rows, u64::try_from(total).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use squall_core::TenantId;
    use squall_tests::postgres::Postgres;

    use super::*;

    fn sealing() -> SecretKey {
        SecretKey::from_bytes(&SecretKey::generate())
    }

    /// The indexes read by the generic plan (the one a connection keeps
    /// for a prepared statement) of `sql`, whose `$1` and `$2` are text.
    async fn indexes_read(client: &deadpool_postgres::Object, sql: &str) -> Vec<String> {
        fn walk(node: &serde_json::Value, out: &mut Vec<String>) {
            if let Some(index) = node.get("Index Name").and_then(|v| v.as_str()) {
                out.push(index.to_owned());
            }
            for child in node["Plans"].as_array().into_iter().flatten() {
                walk(child, out);
            }
        }
        client
            .batch_execute(&format!(
                "SET plan_cache_mode = force_generic_plan;
                 DEALLOCATE ALL;
                 PREPARE probe(text, text) AS {sql}"
            ))
            .await
            .expect("prepare");
        let rows = client
            .simple_query("EXPLAIN (FORMAT JSON) EXECUTE probe('default', 'x')")
            .await
            .expect("explain");
        let text = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("a plan");
        let plan: serde_json::Value = serde_json::from_str(&text).expect("json plan");
        let mut out = Vec::new();
        walk(&plan[0]["Plan"], &mut out);
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trigger_instances_arriving_together_share_a_transaction_and_a_bad_one_fails_alone() {
        use crate::contract::{instance, outcome};
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("group"), 8)
            .await
            .expect("connect");
        // Each written from a task of its own, all at once; `doubled`, the
        // instance of the first, a second time.
        async fn record_all(
            store: &PgStore,
            n: usize,
            doubled: Option<&squall_core::trigger::TriggerInstance>,
        ) -> (Vec<String>, Vec<bool>) {
            let mut ids = Vec::new();
            let mut tasks = Vec::new();
            for i in 0..n {
                let ti = match (i, doubled) {
                    (0, Some(ti)) => ti.clone(),
                    _ => instance(None),
                };
                let (e, enforcement) = outcome(&ti);
                ids.push(e.id.as_str().to_owned());
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .insert_processed_trigger_instance(&ti, vec![enforcement], &[&e])
                        .await
                        .is_ok()
                }));
            }
            let mut written = Vec::new();
            for t in tasks {
                written.push(t.await.expect("task"));
            }
            (ids, written)
        }
        async fn transactions(store: &PgStore, ids: &[String]) -> i64 {
            let client = store.client().await.expect("client");
            client
                .query_one(
                    "SELECT count(DISTINCT tx) FROM events WHERE body = ANY($1)",
                    &[&ids],
                )
                .await
                .expect("count")
                .get(0)
        }

        let (ids, written) = record_all(&store, 100, None).await;
        assert!(written.iter().all(|w| *w));
        let shared = transactions(&store, &ids).await;
        assert!(shared < 50, "100 written in {shared} transactions");

        let first = instance(None);
        let (e, enforcement) = outcome(&first);
        store
            .insert_processed_trigger_instance(&first, vec![enforcement], &[&e])
            .await
            .expect("record");
        let (ids, written) = record_all(&store, 50, Some(&first)).await;
        assert!(!written[0], "the second write of an instance fails");
        assert!(written[1..].iter().all(|w| *w), "the others do not");
        let client = store.client().await.expect("client");
        let stored: i64 = client
            .query_one(
                "SELECT count(*) FROM executions WHERE id = ANY($1)",
                &[&&ids[1..]],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(stored, 49);
    }

    /// A prepared statement keeps the plan it first made, chosen while
    /// its table was small; on an empty table every index costs the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_row_is_found_through_its_primary_key_even_on_an_empty_table() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("plans"), 2)
            .await
            .expect("connect");
        let client = store.client().await.expect("client");
        for table in ["executions", "trigger_instances", "rule_enforcements"] {
            let sql = format!("SELECT 1 FROM {table} WHERE {}", by_id_in_tenant!());
            assert_eq!(
                indexes_read(&client, &sql).await,
                [format!("{table}_pkey")],
                "{table}"
            );
        }
        client
            .batch_execute("DEALLOCATE ALL; RESET plan_cache_mode")
            .await
            .expect("reset");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_use_tls_when_the_url_requires_it() {
        let pg = Postgres::start_tls();
        let url = pg.create_database("tls");
        async fn encrypted(store: &PgStore) -> bool {
            let client = store.client().await.expect("client");
            client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .expect("pg_stat_ssl")
                .get(0)
        }
        let required = format!("{url}?sslmode=require");
        let store = PgStore::connect_with_ca(&required, 2, Some(&pg.ca()))
            .await
            .expect("connects over TLS with the CA");
        assert!(encrypted(&store).await);
        store
            .listen_changes()
            .await
            .expect("the listener connects over TLS too");
        let untrusted = PgStore::connect(&required, 2)
            .await
            .expect_err("a certificate no root vouches for");
        assert!(untrusted.to_string().contains("certificate"), "{untrusted}");
        let plain = PgStore::connect(&url, 2).await.expect("connects in clear");
        assert!(
            !encrypted(&plain).await,
            "prefer, the default, is clear text"
        );
        let not_pem = pg.ca().with_extension("txt");
        std::fs::write(&not_pem, "not a certificate").expect("write");
        let refused = PgStore::connect_with_ca(&required, 2, Some(&not_pem))
            .await
            .expect_err("no certificate in the file");
        assert!(
            refused.to_string().contains("holds no PEM certificate"),
            "{refused}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_with_another_datastore_key_is_refused() {
        let pg = Postgres::start();
        let url = pg.create_database("keys");
        let first = PgStore::connect(&url, 2)
            .await
            .expect("connect")
            .with_secret_key(sealing());
        first
            .check_secret_key()
            .await
            .expect("the first key is recorded");
        first.check_secret_key().await.expect("and holds");
        let other = PgStore::connect(&url, 2)
            .await
            .expect("connect")
            .with_secret_key(sealing());
        let refused = other.check_secret_key().await.expect_err("another key");
        assert!(
            refused.to_string().contains("give every node the same key"),
            "{refused}"
        );
        // The lease's own connection finds the schema made and leaves it.
        takes_the_lease(&url).await;
    }

    /// A lease store of `url` takes the server lease.
    async fn takes_the_lease(url: &str) {
        let lease = PgStore::connect_for_lease(url, None)
            .await
            .expect("lease store");
        assert!(
            lease
                .acquire_lease("server", "n1", std::time::Duration::from_secs(5))
                .await
                .expect("acquire")
                .is_some()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_database_gets_its_lease_table_from_the_first_lease_store() {
        let pg = Postgres::start();
        takes_the_lease(&pg.create_database("fresh")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_under_a_lapsed_lease_sends_nothing() {
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("lapsed"), 2)
            .await
            .expect("connect");
        let held = store
            .clone()
            .under_lease(Arc::new(LeaseClock::new(Duration::from_secs(3600))));
        held.tenants().await.expect("fresh: served");
        // A lease surely held 2 s after each renewal, left unrenewed, as
        // a paused process leaves it: refused once overdue.
        let clock = Arc::new(LeaseClock::new(Duration::from_secs(2)));
        let lapsing = store.under_lease(clock.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        let refused = loop {
            match lapsing.tenants().await {
                Err(e) => break e,
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "still served long after the lease lapsed"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            refused.to_string().contains("may have run out"),
            "{refused}"
        );
        clock.renewed();
        lapsing.tenants().await.expect("renewed: served again");
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        let shown = redacted("postgres://squall:hunter2@db.example:5433/prod");
        assert_eq!(shown, "postgres://squall@db.example:5433/prod");
        assert!(!redacted("postgresql://u:pw@h/d").contains("pw"));
        assert_eq!(
            redacted("nonsense://"),
            "the given URL (not a PostgreSQL URL)"
        );
    }

    #[test]
    fn arguments_are_numbered_in_order() {
        assert_eq!(
            numbered("tenant_id = ? AND id < ?", 1),
            "tenant_id = $1 AND id < $2"
        );
        assert_eq!(numbered("parent IS NULL", 3), "parent IS NULL");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_datastore_keeps_the_contract() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("kv"), 8)
            .await
            .expect("connect")
            .with_secret_key(sealing());
        crate::contract::datastore(&crate::Store::from(store.clone())).await;
        let quota = PgStore::connect(&pg.create_database("quota"), 8)
            .await
            .expect("connect")
            .with_kv_quota(Some(1000));
        crate::contract::datastore_quota(&crate::Store::from(quota.clone()), 1000).await;
    }

    // On a single-threaded runtime: the blocking reads hold its one thread.
    #[tokio::test]
    async fn accounts_keep_the_contract() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("accounts"), 8)
            .await
            .expect("connect");
        crate::contract::accounts(&crate::Store::from(store.clone())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pack_configs_keep_the_contract() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("configs"), 8)
            .await
            .expect("connect")
            .with_secret_key(sealing());
        crate::contract::pack_configs(&crate::Store::from(store.clone())).await;
    }

    // On a single-threaded runtime: the blocking reads hold its one thread.
    #[tokio::test]
    async fn executions_keep_the_contract() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("executions"), 8)
            .await
            .expect("connect");
        crate::contract::executions(&crate::Store::from(store.clone())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reactors_records_keep_the_contract() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("reactor"), 8)
            .await
            .expect("connect");
        crate::contract::reactor_records(&crate::Store::from(store.clone())).await;
    }

    // On a single-threaded runtime: the blocking reads hold its one thread.
    #[tokio::test]
    async fn workflow_batches_keep_the_contract() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("workflows"), 8)
            .await
            .expect("connect");
        crate::contract::workflow_batches(&crate::Store::from(store.clone())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_through_one_node_reaches_the_others() {
        let pg = Postgres::start();
        let url = pg.create_database("changes");
        let one = PgStore::connect(&url, 4).await.expect("connect");
        let three = PgStore::connect(&url, 4).await.expect("connect");
        let mut heard = three.listen_changes().await.expect("listen");
        let acme = TenantId::new("acme").expect("tenant");
        one.create_tenant(&acme).await.expect("tenant");
        one.put_rule(&acme, "hooks.r", Some("{}".into()))
            .await
            .expect("rule");
        let told = tokio::time::timeout(std::time::Duration::from_secs(60), heard.recv())
            .await
            .expect("a notification")
            .expect("the listener runs");
        assert_eq!(told, Heard::Tenant(acme.clone()));
        assert_eq!(three.epochs().await.expect("epochs"), [(acme.clone(), 1)]);
        // Each change bumps the epoch once, whatever carries it.
        one.put_policy(&acme, "hooks.p", None)
            .await
            .expect("policy");
        one.put_sensor_enabled(&acme, "hooks.s", false)
            .await
            .expect("sensor");
        one.put_pack_config(&acme, "hooks", Some(&serde_json::Map::new()))
            .await
            .expect("config");
        assert_eq!(three.epochs().await.expect("epochs"), [(acme.clone(), 4)]);
        for _ in 0..3 {
            let told = tokio::time::timeout(std::time::Duration::from_secs(60), heard.recv())
                .await
                .expect("a notification")
                .expect("the listener runs");
            assert_eq!(told, Heard::Tenant(acme.clone()));
        }
        // The listening connection is cut (the server ends it): the
        // receiver ends, so its node knows to read the epochs again.
        let client = one.client().await.expect("client");
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("terminate");
        let ended = tokio::time::timeout(std::time::Duration::from_secs(60), heard.recv())
            .await
            .expect("the receiver ends");
        assert_eq!(ended, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_purges_the_clusters_own_records_too() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("retention"), 4)
            .await
            .expect("connect");
        let tenant = TenantId::default_tenant();
        let tick = &squall_core::time::now_rfc3339();
        assert!(
            store
                .record_timer_fire(&tenant, "t.every", tick, "a")
                .await
                .expect("fire")
        );
        store
            .append_event(&tenant, "k", "old")
            .await
            .expect("append");
        let day_ago = squall_core::time::rfc3339_ago(std::time::Duration::from_secs(86_400));
        store.purge(&day_ago, 10).await.expect("purge");
        assert_eq!(
            store
                .events_after(&tenant, None, 10)
                .await
                .expect("read")
                .len(),
            1
        );
        assert!(
            !store
                .record_timer_fire(&tenant, "t.every", tick, "b")
                .await
                .expect("fire")
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // Everything so far is older than a moment from now.
        loop {
            let now = squall_core::time::now_rfc3339();
            store.purge(&now, 10).await.expect("purge");
            if store
                .events_after(&tenant, None, 10)
                .await
                .expect("read")
                .is_empty()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the event was never purged"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            store
                .record_timer_fire(&tenant, "t.every", tick, "b")
                .await
                .expect("fire"),
            "the old tick's record is gone"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
        let pg = Postgres::start();
        let url = pg.create_database("nodes");
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PgStore::connect(&url, 2).await })
            })
            .collect();
        let mut stores = Vec::new();
        for node in nodes {
            stores.push(node.await.expect("task").expect("connect"));
        }
        let client = stores[0].client().await.expect("client");
        let versions: Vec<i64> = client
            .query("SELECT version FROM squall_schema", &[])
            .await
            .expect("read")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, [migrate::PG_SCHEMA_VERSION]);
        client
            .execute("UPDATE squall_schema SET version = version + 1", &[])
            .await
            .expect("bump");
        let newer = PgStore::connect(&url, 2).await;
        assert!(matches!(newer, Err(PgError::TooNew { .. })), "{newer:?}");
        // A URL that is not one says so.
        assert!(matches!(
            PgStore::connect("postgres://[bad", 1).await,
            Err(PgError::Url(_))
        ));
    }
}
