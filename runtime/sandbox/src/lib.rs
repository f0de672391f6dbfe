//! The wasmtime host of Squall, and the only crate that names a wasmtime type.
//!
//! One [`Sandbox`] per process owns the [`wasmtime::Engine`] (pooling
//! allocator when the machine can reserve the address space, on-demand
//! otherwise), the epoch ticker thread, the on-disk compile cache and one
//! `InstancePre` per loaded component. Each execution gets a fresh `Store`
//! with its own memory limit, epoch deadline and capped output pipes, and is
//! dropped when the call returns: nothing leaks from one execution to the
//! next. Every way a guest can end — result, action error, trap, timeout — is
//! mapped to an [`Outcome`] a person can act on.

pub mod bench;
mod bindings;
mod cache;
mod engine;
mod host;
mod live;
mod run;
mod sensor;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_core::execution::CapturedOutput;

pub use engine::Allocator;
pub use host::egress::Egress;
pub use live::SensorLog;
pub use live::{Cancel, LiveOutput};
pub use run::{Invocation, Limits, Preopen};
pub use sensor::{
    SensorCallError, SensorComponent, SensorInstance, SensorInterrupt, SensorLimits, SensorSetup,
    SensorTrigger,
};

/// Open `dirs` in `wasi` at their own paths; the error names the directory.
fn preopen(
    wasi: &mut wasmtime_wasi::WasiCtxBuilder,
    dirs: &[Preopen],
) -> std::result::Result<(), String> {
    for dir in dirs {
        let perms = if dir.writable {
            wasmtime_wasi::FsPerms::ReadWrite
        } else {
            wasmtime_wasi::FsPerms::ReadOnly
        };
        let guest = dir.path.to_string_lossy();
        wasi.preopened_dir(&dir.path, guest.as_ref(), perms)
            .map_err(|e| format!("cannot open directory '{}': {e:#}", dir.path.display()))?;
    }
    Ok(())
}

/// Errors from loading a component.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read component '{path}': {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "'{path}' is not a WebAssembly component (build it with `cargo build --target wasm32-wasip2`): {reason}"
    )]
    NotAComponent { path: PathBuf, reason: String },
    #[error("'{path}' does not implement the squall:automation/action world: {reason}")]
    WrongWorld { path: PathBuf, reason: String },
    #[error("'{path}' does not implement the squall:automation/sensor world: {reason}")]
    WrongSensorWorld { path: PathBuf, reason: String },
    #[error("compile cache '{path}': {cause}")]
    Cache {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("failed to set up the WebAssembly engine: {0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings for [`Sandbox::new`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled components are cached (`<sha256>-<engine hash>.cwasm`).
    pub cache_dir: PathBuf,
    /// Instances that may exist at once; also the pooling allocator's size.
    pub max_instances: u32,
    /// Largest linear memory any execution may be granted (the pooling
    /// allocator's per-slot cap).
    pub max_memory_bytes: usize,
    /// Epoch tick: the granularity of timeouts and of yielding to tokio.
    pub epoch_tick: Duration,
    /// Use the pooling allocator when available (`None`: probe).
    pub pooling: Option<bool>,
}

impl SandboxConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_instances: 1000,
            max_memory_bytes: 1 << 30,
            epoch_tick: Duration::from_millis(10),
            pooling: None,
        }
    }
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `run` returned a JSON result.
    Succeeded(serde_json::Value),
    /// The action failed, trapped or returned something unusable.
    Failed(Failure),
    /// The deadline passed; the guest was stopped.
    Timeout { after: Duration },
    /// [`Cancel::cancel`] was called; the guest was stopped.
    Canceled,
}

/// Why an execution failed, with a message meant for the person reading the
/// execution record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `action-error::invalid-input`.
    InvalidInput,
    /// `action-error::failed`.
    ActionFailed,
    /// `action-error::retryable`.
    Retryable,
    /// The guest tried to grow memory past its limit and then trapped.
    MemoryLimit,
    StackOverflow,
    /// A Rust panic (or other abort) inside the guest.
    Panic,
    /// Any other trap.
    Trap,
    /// `run` returned text that is not JSON, or too much of it.
    InvalidResult,
    /// The instance could not be created.
    Instantiation,
}

/// The report of one execution.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    pub output: CapturedOutput,
    pub elapsed: Duration,
}

/// A component checked against the `action` world and ready to instantiate.
pub struct ActionComponent {
    path: PathBuf,
    digest: String,
    pre: bindings::ActionPre<host::HostState>,
}

impl std::fmt::Debug for ActionComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionComponent")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl ActionComponent {
    /// sha256 of the `.wasm`, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// Components already checked and ready, by content and by file.
#[derive(Default)]
struct Loaded {
    by_digest: HashMap<String, Arc<ActionComponent>>,
    /// A file whose length and mtime are unchanged is not read again; its
    /// stamp is taken again at most once per [`RESTAMP_AFTER`].
    by_path: HashMap<PathBuf, Seen>,
}

struct Seen {
    stamp: FileStamp,
    at: std::time::Instant,
    component: Arc<ActionComponent>,
}

/// How long a component file is trusted unchanged before it is looked at
/// again: a rebuilt component (`squall pack build` beside a running server)
/// is picked up within this time, and executions in between cost no system
/// call.
pub const RESTAMP_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

type FileStamp = (u64, Option<std::time::SystemTime>);

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// The process's WebAssembly host.
pub struct Sandbox {
    engine: engine::EngineHandle,
    linker: wasmtime::component::Linker<host::HostState>,
    sensor_linker: wasmtime::component::Linker<host::HostState>,
    cache: cache::CompileCache,
    loaded: Mutex<Loaded>,
    /// Sensor components by sha256.
    sensors: Mutex<HashMap<String, Arc<SensorComponent>>>,
    /// One per instance that may exist: executions hold one per run,
    /// sensors one for their instance's life.
    permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("allocator", &self.engine.allocator)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    pub fn new(config: &SandboxConfig) -> Result<Self> {
        let engine = engine::EngineHandle::new(config)?;
        let linker = host::linker(&engine.engine)?;
        let sensor_linker = host::sensor_linker(&engine.engine)?;
        let cache = cache::CompileCache::new(&config.cache_dir, &engine.engine)?;
        Ok(Self {
            engine,
            linker,
            sensor_linker,
            cache,
            loaded: Mutex::new(Loaded::default()),
            sensors: Mutex::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_instances as usize)),
        })
    }

    /// Which instance allocator the engine ended up with.
    pub fn allocator(&self) -> Allocator {
        self.engine.allocator
    }

    /// Load an action component: compile it once (or map it from the cache),
    /// check it against the `action` world, and keep its `InstancePre`.
    pub fn load_action(&self, path: &Path) -> Result<Arc<ActionComponent>> {
        if let Some(seen) = self.loaded().by_path.get(path)
            && seen.at.elapsed() < RESTAMP_AFTER
        {
            return Ok(seen.component.clone());
        }
        let stamp = stamp(path);
        if let Some(stamp) = stamp
            && let Some(seen) = self.loaded().by_path.get_mut(path)
            && seen.stamp == stamp
        {
            seen.at = std::time::Instant::now();
            return Ok(seen.component.clone());
        }
        let bytes = std::fs::read(path).map_err(|cause| Error::Read {
            path: path.to_owned(),
            cause,
        })?;
        let digest = cache::sha256_hex(&bytes);
        let known = self.loaded().by_digest.get(&digest).cloned();
        let loaded = match known {
            Some(loaded) => loaded,
            None => Arc::new(self.check(path, &bytes, digest)?),
        };
        let mut memo = self.loaded();
        memo.by_digest.insert(loaded.digest.clone(), loaded.clone());
        if let Some(stamp) = stamp {
            memo.by_path.insert(
                path.to_owned(),
                Seen {
                    stamp,
                    at: std::time::Instant::now(),
                    component: loaded.clone(),
                },
            );
        }
        Ok(loaded)
    }

    /// Compile (or map from the cache) and check against the `action` world.
    fn check(&self, path: &Path, bytes: &[u8], digest: String) -> Result<ActionComponent> {
        let component = self
            .cache
            .load_or_compile(&self.engine.engine, path, bytes, &digest)?;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = bindings::ActionPre::new(instance_pre).map_err(wrong_world)?;
        Ok(ActionComponent {
            path: path.to_owned(),
            digest,
            pre,
        })
    }

    /// Forget components loaded from files under `dir` (a pack version
    /// removed), and any compiled component nothing else holds any more.
    /// What a prepared execution or a running sensor holds stays alive
    /// with it.
    pub fn forget_under(&self, dir: &Path) {
        let mut memo = self.loaded();
        memo.by_path.retain(|path, _| !path.starts_with(dir));
        memo.by_digest.retain(|_, c| Arc::strong_count(c) > 1);
        drop(memo);
        self.sensors
            .lock()
            .expect("sensor map lock poisoned")
            .retain(|_, c| Arc::strong_count(c) > 1);
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().expect("component map lock poisoned")
    }
}
