//! A runner over a temp store and a sandbox shared by all tests.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use squall_core::time::parse_rfc3339;
use squall_core::{Execution, ExecutionStatus, TenantId};
use squall_reactor::{PackSet, RunError, RunRequest, Runner};
use squall_sandbox::{Limits, Sandbox, SandboxConfig};
use squall_store::{ExecutionFilter, Store, StoreConfig};
use tempfile::TempDir;

/// One engine for the whole test binary, as in a server process.
pub(crate) fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<(TempDir, Arc<Sandbox>)> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = SandboxConfig::new(dir.path().join("cache"));
            config.max_instances = 64;
            let sandbox = Sandbox::new(&config).expect("sandbox");
            (dir, Arc::new(sandbox))
        })
        .1
        .clone()
}

pub(crate) struct Harness {
    pub(crate) runner: Runner,
    pub(crate) store: Store,
    _dirs: Vec<TempDir>,
}

/// Limits that keep hostile tests quick.
pub(crate) fn test_limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: 32 << 20,
        output_bytes: 64 << 10,
        result_bytes: 1 << 20,
    }
}

impl Harness {
    /// A runner over `packs` (temp pack dirs, kept alive with the harness).
    pub(crate) fn new(packs: Vec<TempDir>) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&data.path().join("db"), &StoreConfig::default()).expect("store");
        let paths: Vec<PathBuf> = packs.iter().map(|d| d.path().to_owned()).collect();
        let set = PackSet::load(&paths).expect("packs load");
        let runner = Runner::new(sandbox(), store.clone(), Arc::new(set), test_limits());
        let mut dirs = packs;
        dirs.push(data);
        Self {
            runner,
            store,
            _dirs: dirs,
        }
    }

    pub(crate) async fn run(&self, action: &str, params: Value) -> Result<Execution, RunError> {
        let Value::Object(parameters) = params else {
            panic!("test parameters must be an object")
        };
        self.runner
            .run(RunRequest::new(
                TenantId::default_tenant(),
                action.parse().expect("valid action ref"),
                parameters,
            ))
            .await
    }

    pub(crate) async fn run_ok(&self, action: &str, params: Value) -> Execution {
        self.run(action, params).await.expect("execution starts")
    }

    pub(crate) fn executions(&self) -> Vec<Execution> {
        self.store
            .list_executions(&ExecutionFilter::for_tenant(TenantId::default_tenant()))
            .expect("list")
    }

    pub(crate) fn stored(&self, e: &Execution) -> Execution {
        self.store
            .get_execution(&e.tenant, &e.id)
            .expect("get")
            .expect("execution is stored")
    }
}

pub(crate) fn error_of(e: &Execution) -> String {
    e.result
        .as_ref()
        .and_then(|r| r.get("error"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// From entering `running` to the final status, read from the record's log.
pub(crate) fn running_time(e: &Execution) -> Duration {
    let at = |status: ExecutionStatus| {
        let change = e
            .log
            .iter()
            .find(|c| c.status == status)
            .expect("status in log");
        parse_rfc3339(&change.timestamp).expect("valid timestamp")
    };
    let took = at(e.status) - at(ExecutionStatus::Running);
    Duration::try_from(took).expect("ends after it starts")
}

/// How long a test waits for something before calling it a hang. A
/// deadline catches hangs, it measures nothing: this is many times what
/// any step takes on a quiet machine, so a busy one passes too.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// Check `check` every 25 ms until it gives a value, for up to
/// [`PATIENCE`]; past that, panic saying what was awaited and what was
/// last seen (`check`'s `Err`).
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {PATIENCE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}
