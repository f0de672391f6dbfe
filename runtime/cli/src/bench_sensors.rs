//! `squall bench sensors`: many polling sensors on one server (CPU and
//! memory), and the dispatch rate of one tight sensor.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use squall_core::TenantId;
use squall_reactor::{PackSet, Reactor, ReactorConfig, Runner};
use squall_sandbox::Limits;
use squall_store::{Store, StoreConfig};

use crate::bench::{proc_status, runtime};
use crate::commands::open_sandbox;

const COUNTED: &str = "[{name: counted, payload_schema: {type: object, properties: {count: {type: integer}}, required: [count]}}]";

/// A pack `name` with `n` sensors sharing `component`, each polling every
/// `poll` seconds, configured with `config` (YAML).
fn sensor_pack(
    root: &Path,
    name: &str,
    component: &Path,
    n: usize,
    poll: f64,
    config: &str,
) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("sensors"))?;
    std::fs::write(
        dir.join("pack.yaml"),
        format!("name: {name}\nversion: 1.0.0\ndescription: bench\nauthor: bench\n"),
    )?;
    std::fs::copy(component, dir.join("sensors/sensor.wasm"))
        .with_context(|| format!("cannot read the sensor component '{}'", component.display()))?;
    std::fs::write(
        dir.join("config.schema.yaml"),
        "mode: {type: string}\nburst: {type: integer}\n",
    )?;
    std::fs::write(dir.join("config.yaml"), config)?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("sensors/s{i}.yaml")),
            format!(
                "class_name: S{i}\nentry_point: sensor.wasm\npoll_interval: {poll}\ntrigger_types: {}\n",
                COUNTED
            ),
        )?;
    }
    Ok(dir)
}

/// (user + system CPU seconds, resident bytes) of this process.
fn usage() -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces): state is 3rd.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let rss_kb = proc_status("VmRSS:");
    // USER_HZ is 100 on Linux.
    Ok((ticks / 100.0, rss_kb * 1024))
}

async fn start(root: &Path, packs: Vec<PathBuf>) -> anyhow::Result<(Reactor, Store)> {
    let store = Store::open(&root.join("squall.db"), &StoreConfig::default())?;
    let sandbox = Arc::new(open_sandbox(root, 2000)?);
    let runner = Runner::new(
        sandbox,
        store.clone(),
        Arc::new(PackSet::load(&packs)?),
        Limits::default(),
    );
    let reactor = Reactor::start(store.clone(), runner, &ReactorConfig::default()).await?;
    Ok((reactor, store))
}

fn dispatched(reactor: &Reactor) -> u64 {
    reactor
        .sensors(&TenantId::default_tenant())
        .iter()
        .map(|s| s.dispatched)
        .sum()
}

pub(crate) fn sensors(component: PathBuf, count: usize, seconds: u64) -> anyhow::Result<ExitCode> {
    let rt = runtime(2)?;
    rt.block_on(async {
        println!("squall bench sensors");
        let (cpu0, rss0) = usage()?;
        println!("  before: {:.0} MiB resident", rss0 as f64 / (1 << 20) as f64);

        let root = tempfile::tempdir()?;
        let pack = sensor_pack(root.path(), "many", &component, count, 1.0, "mode: counter\n")?;
        let started = Instant::now();
        let (reactor, _store) = start(root.path(), vec![pack]).await?;
        println!(
            "  {count} polling sensors (kv write + dispatch every second each) started in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        // Let them settle, then measure a window.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let running = reactor
            .sensors(&TenantId::default_tenant())
            .iter()
            .filter(|s| s.state.as_str() == "running")
            .count();
        if running != count {
            bail!("only {running} of {count} sensors are running");
        }
        let (cpu1, _) = usage()?;
        let d1 = dispatched(&reactor);
        let t1 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu2, rss2) = usage()?;
        let window = t1.elapsed().as_secs_f64();
        let events = dispatched(&reactor) - d1;
        println!(
            "  over {window:.1} s: {:.0} events/s dispatched (target {count}/s), CPU {:.0}% of one core, {:.0} MiB resident ({:.0} KiB per sensor above the start)",
            events as f64 / window,
            (cpu2 - cpu1) / window * 100.0,
            rss2 as f64 / (1 << 20) as f64,
            (rss2.saturating_sub(rss0)) as f64 / 1024.0 / count as f64
        );
        let _ = cpu0;
        reactor.shutdown(Duration::from_secs(5)).await;
        drop(reactor);

        let root = tempfile::tempdir()?;
        let pack = sensor_pack(root.path(), "tight", &component, 1, 0.001, "mode: burst\nburst: 1000\n")?;
        let (reactor, _store) = start(root.path(), vec![pack]).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d1 = dispatched(&reactor);
        let t1 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds.min(10))).await;
        let rate = (dispatched(&reactor) - d1) as f64 / t1.elapsed().as_secs_f64();
        println!(
            "  one tight sensor (1,000 dispatches per poll, no rules): {rate:.0} events/s, each durable before dispatch returns"
        );
        reactor.shutdown(Duration::from_secs(5)).await;
        Ok(ExitCode::SUCCESS)
    })
}
