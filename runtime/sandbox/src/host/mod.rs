//! Per-execution host state and the host side of each WIT interface.
//!
//! One module per capability: `log`, `config`, `kv`, and `output` (the capped
//! stdout/stderr pipes handed to WASI).

mod config;
pub(crate) mod egress;
mod events;
mod kv;
mod log;
pub(crate) mod output;

use std::sync::Arc;

use squall_core::TenantId;
use squall_core::kv::KvStore;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::Action;
use crate::{Error, Result};

/// Everything one execution's `Store` holds.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) tenant: TenantId,
    /// The pack's config as JSON text.
    pub(crate) config: Arc<str>,
    pub(crate) kv: Option<Arc<dyn KvStore>>,
    /// Prepended to every key the guest names (a sensor's own keys).
    pub(crate) kv_prefix: String,
    pub(crate) log: Arc<std::sync::Mutex<crate::live::LogBuffer>>,
    /// Where a sensor's events go; `None` for actions.
    pub(crate) events: Option<Arc<dyn squall_core::events::EventSink>>,
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    /// The pack's outbound HTTP rules.
    pub(crate) egress: egress::EgressHooks,
}

impl HostState {
    /// A state with nothing granted: no kv, no events, no output kept, an
    /// empty config, memory up to `memory_limit` bytes.
    pub(crate) fn bare(memory_limit: usize) -> Self {
        let log = Arc::new(std::sync::Mutex::new(crate::live::LogBuffer::new(0)));
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_limit,
                refused: None,
            },
            tenant: TenantId::default_tenant(),
            config: "{}".into(),
            kv: None,
            kv_prefix: String::new(),
            log: log.clone(),
            events: None,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            egress: egress::EgressHooks {
                policy: crate::Egress::default(),
                log,
            },
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The linker every action is checked and instantiated against: WASI p2
/// (without filesystem preopens, env or sockets: see `run.rs`) plus Squall's
/// own interfaces.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    let err = |e: wasmtime::Error| Error::Engine(format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
    Action::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s).map_err(err)?;
    Ok(linker)
}

/// The linker sensors are checked and instantiated against: the action's
/// plus `events`.
pub(crate) fn sensor_linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    let err = |e: wasmtime::Error| Error::Engine(format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
    crate::bindings::sensor::Sensor::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
        .map_err(err)?;
    Ok(linker)
}

/// Caps linear memory and remembers a refused growth, so the trap that
/// usually follows can be reported as what it is.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl crate::bindings::squall::automation::types::Host for HostState {}
