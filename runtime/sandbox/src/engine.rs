//! The process-wide engine and its epoch ticker.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::{Error, Result, SandboxConfig};

/// Which instance allocator is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved up front; instantiation without mmap.
    Pooling,
    /// Memory mapped per instance.
    OnDemand,
}

/// Engine plus the ticker that advances its epoch.
pub(crate) struct EngineHandle {
    pub(crate) engine: Engine,
    pub(crate) allocator: Allocator,
    pub(crate) tick: Duration,
}

impl EngineHandle {
    pub(crate) fn new(config: &SandboxConfig) -> Result<Self> {
        let (engine, allocator) = match config.pooling {
            Some(false) => (build(config, false)?, Allocator::OnDemand),
            Some(true) => (build(config, true)?, Allocator::Pooling),
            None => match build(config, true) {
                Ok(engine) => (engine, Allocator::Pooling),
                Err(e) => {
                    tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                    (build(config, false)?, Allocator::OnDemand)
                }
            },
        };
        tracing::debug!(?allocator, "wasmtime engine ready");
        spawn_ticker(&engine, config.epoch_tick);
        Ok(Self {
            engine,
            allocator,
            tick: config.epoch_tick,
        })
    }
}

fn build(config: &SandboxConfig, pooling: bool) -> Result<Engine> {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        .max_wasm_stack(512 << 10)
        // Pooled stacks are reused across tenants: zero them.
        .async_stack_zeroing(true);
    if pooling {
        let n = config.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // A core instance slot is only a count (its memory is allocated
        // on instantiation), and a Python component instantiates 14 core
        // modules: with 4 per slot, 2,000 slots ran only 571 Python
        // executions at once. 16 per slot lets the `max_instances`
        // semaphore, not the pool, be what limits Python too.
        pool.total_component_instances(n)
            .total_core_instances(16 * n)
            .total_memories(n)
            .total_tables(2 * n)
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes)
            .max_component_instance_size(10 << 20)
            .max_core_instances_per_component(50)
            .table_elements(100_000)
            .linear_memory_keep_resident(2 << 20)
            // Tables too: a table page freed with madvise comes back as a
            // copy-on-write fault on its first write, and each such fault
            // flushed the TLB of every core (the largest remaining source
            // of IPIs in `squall bench webhooks`).
            .table_keep_resident(256 << 10)
            // And the top of each async stack (where a short call's frames
            // live): zeroed with memset on reuse instead of faulted back in.
            .async_stack_keep_resident(64 << 10)
            // Freeing a slot's pages with madvise sends a TLB-shootdown IPI
            // to every core running the process; batching the decommits
            // sends one per batch instead of one per instance.
            .decommit_batch_size(32)
            // Reset only the pages a guest dirtied, where the kernel can say
            // which (Linux 6.7+).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_unused_warm_slots(100.min(n));
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c).map_err(|e| Error::Engine(format!("{e:#}")))
}

/// One thread advances the epoch every `tick` until the engine is dropped.
fn spawn_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("squall-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("failed to spawn the epoch ticker thread");
}
