//! [`Store`]: one handle over either engine, SQLite (one machine, the
//! default) or PostgreSQL (N nodes sharing one database).
//!
//! The operations both engines offer are declared once, in [`contract!`]
//! below; each becomes a method of [`Store`] that calls the engine in use.
//! SQLite's reads block their caller (callers run them on blocking
//! threads); PostgreSQL is asynchronous, so the same reads on it wait for
//! their answer on the caller's thread ([`PgStore::block`]), while the
//! store's own runtime drives the connections.

use std::sync::Arc;

use squall_core::TenantId;
use squall_core::auth::{Principal, Role};
use squall_core::execution::{Execution, ExecutionStatus};
use squall_core::ids::ExecutionId;
use squall_core::kv::{KvEntry, KvError, KvStore};
use squall_core::trigger::{RuleEnforcement, TriggerInstance};

use crate::auth::{AccountError, ApiKeyInfo, TenantInfo, UserInfo};
use crate::configs::{PackConfig, StoredConfigs};
use crate::executions::{ExecutionFilter, ExecutionSummary, StoredExecution};
use crate::pg::PgStore;
use crate::reactor::{Emission, EnforcementFilter, Page, Trace, TraceFilter};
use crate::workflows::{Batch, StoredWorkflow};
use crate::{Lane, Result, SecretKey, SqliteStore};

type Values = serde_json::Map<String, serde_json::Value>;

/// A handle to the database, on either engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Engine,
}

#[derive(Debug, Clone)]
enum Engine {
    // Shared: each engine's handle carries its secret key's cipher (a
    // kilobyte), and this one is cloned for every request.
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Self {
            engine: Engine::Sqlite(Arc::new(store)),
        }
    }
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Self {
        Self {
            engine: Engine::Postgres(Arc::new(store)),
        }
    }
}

/// Declares the contract: each operation becomes a method of [`Store`],
/// `async` unless marked `sync` (SQLite's reads, which block the caller),
/// and, for the behaviour tests, a method of `Contract` awaited either way.
macro_rules! contract {
    ($( $([$sync:ident])? fn $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty; )*) => {
        impl Store {
            $( contract!(@method [$($sync)?] $name ($($arg: $ty),*) -> $out); )*
        }

        /// The store's operations, awaited whatever the engine, for the
        /// behaviour tests written once for both.
        #[cfg(test)]
        pub(crate) trait Contract {
            $( async fn $name(&self, $($arg: $ty),*) -> $out; )*
        }

        #[cfg(test)]
        impl Contract for Store {
            $(
                async fn $name(&self, $($arg: $ty),*) -> $out {
                    contract!(@call [$($sync)?] Store::$name(self, $($arg),*))
                }
            )*
        }
    };
    (@method [] $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        pub async fn $name(&self, $($arg: $ty),*) -> $out {
            match &self.engine {
                Engine::Sqlite(s) => s.$name($($arg),*).await,
                Engine::Postgres(p) => p.$name($($arg),*).await,
            }
        }
    };
    (@method [sync] $name:ident ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        pub fn $name(&self, $($arg: $ty),*) -> $out {
            match &self.engine {
                Engine::Sqlite(s) => s.$name($($arg),*),
                Engine::Postgres(p) => p.block(p.$name($($arg),*)),
            }
        }
    };
    (@call [] $call:expr) => { $call.await };
    (@call [sync] $call:expr) => { $call };
}

contract! {
    fn create_tenant(tenant: &TenantId) -> Result<(), AccountError>;
    [sync] fn tenants() -> Result<Vec<TenantInfo>>;
    fn put_user(tenant: &TenantId, user: &str, role: Role, password: Option<&str>) -> Result<(), AccountError>;
    [sync] fn users(tenant: &TenantId) -> Result<Vec<UserInfo>>;
    [sync] fn check_password(name: &str, password: &str) -> Result<Option<Principal>>;
    fn create_api_key(tenant: &TenantId, user: &str, role: Role) -> Result<(String, String), AccountError>;
    [sync] fn api_key_principal(key: &str) -> Result<Option<Principal>>;
    [sync] fn any_api_key() -> Result<bool>;
    [sync] fn api_keys(tenant: &TenantId) -> Result<Vec<ApiKeyInfo>>;
    fn set_api_key_enabled(tenant: &TenantId, id: &str, enabled: bool) -> Result<bool>;
    fn delete_api_key(tenant: &TenantId, id: &str) -> Result<bool>;
    fn create_token(principal: &Principal, ttl_secs: u64) -> Result<(String, u64)>;
    fn revoke_token(token: &str) -> Result<bool>;
    [sync] fn token_principal(token: &str) -> Result<Option<Principal>>;
    fn kv_list(tenant: &TenantId, prefix: &str, decrypt: bool) -> Result<Vec<KvEntry>, KvError>;
    [sync] fn pack_configs(tenant: &TenantId) -> Result<StoredConfigs>;
    [sync] fn pack_config(tenant: &TenantId, pack: &str) -> Result<Option<PackConfig>>;
    fn put_pack_config(tenant: &TenantId, pack: &str, values: Option<&Values>) -> Result<bool>;
    fn insert_execution(execution: &Execution) -> Result<()>;
    fn insert_executions(executions: &[Execution]) -> Result<()>;
    fn update_execution(execution: &Execution) -> Result<bool>;
    fn mark_canceling(execution: &Execution) -> Result<bool>;
    [sync] fn get_execution(tenant: &TenantId, id: &ExecutionId) -> Result<Option<Execution>>;
    [sync] fn get_execution_stored(tenant: &TenantId, id: &ExecutionId) -> Result<Option<StoredExecution>>;
    [sync] fn list_executions_counted(filter: &ExecutionFilter) -> Result<(Vec<Execution>, u64)>;
    [sync] fn list_executions(filter: &ExecutionFilter) -> Result<Vec<Execution>>;
    [sync] fn list_executions_stored(filter: &ExecutionFilter) -> Result<(Vec<StoredExecution>, u64)>;
    [sync] fn list_execution_summaries(filter: &ExecutionFilter) -> Result<Vec<ExecutionSummary>>;
    fn insert_processed_trigger_instance(ti: &TriggerInstance, enforcements: Vec<RuleEnforcement>, executions: &[&Execution]) -> Result<()>;
    [sync] fn unfinished_executions() -> Result<Vec<Execution>>;
    [sync] fn pending_executions() -> Result<Vec<Execution>>;
    [sync] fn waiting_inquiries() -> Result<Vec<Execution>>;
    [sync] fn execution_status_counts(tenant: &TenantId) -> Result<Vec<(ExecutionStatus, u64)>>;
    fn purge(before: &str, batch: usize) -> Result<(u64, u64, u64)>;
    [sync] fn get_trigger_instance(tenant: &TenantId, id: &str) -> Result<Option<TriggerInstance>>;
    [sync] fn list_trigger_instances(tenant: &TenantId, trigger_type: Option<&str>, page: Page) -> Result<(Vec<TriggerInstance>, u64)>;
    [sync] fn list_enforcements(tenant: &TenantId, filter: &EnforcementFilter, page: Page) -> Result<(Vec<RuleEnforcement>, u64)>;
    [sync] fn get_enforcement(tenant: &TenantId, id: &str) -> Result<Option<RuleEnforcement>>;
    [sync] fn trace(tenant: &TenantId, trace_tag: &str) -> Result<Trace>;
    [sync] fn trace_tags(tenant: &TenantId, filter: &TraceFilter, oldest_first: bool, page: Page) -> Result<(Vec<String>, u64)>;
    fn put_rule(tenant: &TenantId, rule_ref: &str, body: Option<String>) -> Result<()>;
    [sync] fn rule_changes() -> Result<Vec<(TenantId, String, Option<String>)>>;
    fn put_policy(tenant: &TenantId, policy_ref: &str, body: Option<String>) -> Result<()>;
    [sync] fn policy_changes() -> Result<Vec<(TenantId, String, Option<String>)>>;
    fn put_sensor_enabled(tenant: &TenantId, sensor_ref: &str, enabled: bool) -> Result<()>;
    [sync] fn sensor_overrides() -> Result<Vec<(TenantId, String, bool)>>;
    fn write_batch(batch: &Batch<'_>) -> Result<bool>;
    fn complete_execution(execution: &Execution, emitted: &[Emission<'_>], follow_ups: &[&Execution]) -> Result<bool>;
    [sync] fn running_workflows() -> Result<Vec<StoredWorkflow>>;
    [sync] fn workflow(tenant: &TenantId, id: &ExecutionId) -> Result<Option<StoredWorkflow>>;
    [sync] fn children(tenant: &TenantId, parent: &ExecutionId) -> Result<Vec<Execution>>;
}

impl Store {
    /// The SQLite store at `path` ([`SqliteStore::open`]).
    pub fn open(path: &std::path::Path, config: &crate::StoreConfig) -> Result<Self> {
        Ok(SqliteStore::open(path, config)?.into())
    }

    /// The PostgreSQL store at `url` ([`PgStore::connect`]).
    pub async fn connect(url: &str, connections: usize) -> Result<Self> {
        Ok(PgStore::connect(url, connections).await?.into())
    }

    /// [`Store::connect`], trusting the certificates in `ca` (PEM) for TLS
    /// ([`PgStore::connect_with_ca`]).
    pub async fn connect_with_ca(
        url: &str,
        connections: usize,
        ca: Option<&std::path::Path>,
    ) -> Result<Self> {
        Ok(PgStore::connect_with_ca(url, connections, ca).await?.into())
    }

    /// [`Store::connect_with_ca`] for node `node`, whose executions are
    /// claimed in its name ([`PgStore::connect_as`]).
    pub async fn connect_as(
        url: &str,
        connections: usize,
        ca: Option<&std::path::Path>,
        node: &str,
        claim_ttl: std::time::Duration,
    ) -> Result<Self> {
        Ok(PgStore::connect_as(url, connections, ca, node, claim_ttl)
            .await?
            .into())
    }

    /// Encrypt secret datastore values with `key` from now on.
    pub fn with_secret_key(self, key: SecretKey) -> Self {
        match self.engine {
            Engine::Sqlite(s) => Arc::unwrap_or_clone(s).with_secret_key(key).into(),
            Engine::Postgres(p) => Arc::unwrap_or_clone(p).with_secret_key(key).into(),
        }
    }

    /// Limit each tenant's datastore to `bytes` of keys and values.
    pub fn with_kv_quota(self, bytes: Option<u64>) -> Self {
        match self.engine {
            Engine::Sqlite(s) => Arc::unwrap_or_clone(s).with_kv_quota(bytes).into(),
            Engine::Postgres(p) => Arc::unwrap_or_clone(p).with_kv_quota(bytes).into(),
        }
    }

    /// On PostgreSQL, use the database only while `lease` is fresh
    /// ([`crate::pg::LeaseClock`]); nothing changes on SQLite.
    pub fn under_lease(self, lease: Arc<crate::pg::LeaseClock>) -> Self {
        match self.engine {
            Engine::Sqlite(_) => self,
            Engine::Postgres(p) => Arc::unwrap_or_clone(p).under_lease(lease).into(),
        }
    }

    /// The SQLite store, when that is the engine.
    pub fn sqlite(&self) -> Option<&SqliteStore> {
        match &self.engine {
            Engine::Sqlite(s) => Some(s),
            Engine::Postgres(_) => None,
        }
    }

    /// The PostgreSQL store, when that is the engine.
    pub fn postgres(&self) -> Option<&PgStore> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(p) => Some(p),
        }
    }

    /// The engine's name, as logs and metrics show it.
    pub fn engine_name(&self) -> &'static str {
        match &self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgresql",
        }
    }

    /// Record that an execution started running, only if it is still
    /// waiting; false when it was not. `lane` is SQLite's
    /// ([`Lane`]); PostgreSQL commits on a connection of the pool.
    pub async fn start_execution(&self, execution: &Execution, lane: Lane) -> Result<bool> {
        match &self.engine {
            Engine::Sqlite(s) => s.start_execution(execution, lane).await,
            Engine::Postgres(p) => p.start_execution(execution).await,
        }
    }

    /// [`Store::write_batch`], queued before this returns, after any batch
    /// submitted before it: SQLite's single writer applies them in that
    /// order. `None` on PostgreSQL, whose pool gives no such order: a
    /// caller that needs it awaits `write_batch` before the next.
    pub fn submit_batch(
        &self,
        batch: &Batch<'_>,
        lane: Lane,
    ) -> Result<Option<impl Future<Output = Result<bool>> + Send + 'static>> {
        match &self.engine {
            Engine::Sqlite(s) => s.submit_batch(batch, lane).map(Some),
            Engine::Postgres(_) => Ok(None),
        }
    }

    /// A datastore entry, read on the caller's thread: for blocking callers
    /// (a guest's host call, a template being rendered).
    pub fn kv_get_blocking(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<KvEntry>, KvError> {
        match &self.engine {
            Engine::Sqlite(s) => s.kv_get_blocking(tenant, key),
            Engine::Postgres(p) => p.block(p.get(tenant, key)),
        }
    }
}

#[async_trait::async_trait]
impl KvStore for Store {
    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<KvEntry>, KvError> {
        match &self.engine {
            Engine::Sqlite(s) => s.get(tenant, key).await,
            Engine::Postgres(p) => p.get(tenant, key).await,
        }
    }

    async fn set(&self, tenant: &TenantId, entry: KvEntry) -> Result<(), KvError> {
        match &self.engine {
            Engine::Sqlite(s) => s.set(tenant, entry).await,
            Engine::Postgres(p) => p.set(tenant, entry).await,
        }
    }

    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool, KvError> {
        match &self.engine {
            Engine::Sqlite(s) => s.delete(tenant, key).await,
            Engine::Postgres(p) => p.delete(tenant, key).await,
        }
    }

    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<KvEntry>, KvError> {
        match &self.engine {
            Engine::Sqlite(s) => s.list(tenant, prefix).await,
            Engine::Postgres(p) => p.list(tenant, prefix).await,
        }
    }
}
