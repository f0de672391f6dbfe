//! `squall bench executions`: draining a large durable queue, and writing
//! and reading back a large result.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Map, json};
use squall_core::execution::CapturedOutput;
use squall_core::time::now_rfc3339;
use squall_core::trigger::{ACTION_TRIGGER, TriggerInstance, TriggerInstanceStatus, new_id};
use squall_core::{Execution, ExecutionId, ExecutionStatus, StatusChange, TenantId};
use squall_reactor::{PackSet, Reactor, ReactorConfig, RunRequest, Runner};
use squall_sandbox::Limits;
use squall_store::{Emission, Store, StoreConfig};
use tempfile::TempDir;

use crate::bench::{median, ms, runtime};
use crate::commands::open_sandbox;

pub(crate) fn executions(
    count: usize,
    result_mib: usize,
    packs: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let rt = runtime(2)?;
    rt.block_on(async {
        println!("squall bench executions");
        let left = drain_left_queued(count, &packs).await?;
        let requested = drain_requested_while_running(count, &packs).await?;
        println!(
            "  ratio requested-while-running / left-queued: {:.2}",
            requested / left
        );
        large_result(result_mib).await?;
        large_result_end_to_end(result_mib, &packs).await?;
        query_plans(&packs).await?;
        Ok(ExitCode::SUCCESS)
    })
}

struct Bench {
    _dir: TempDir,
    store: Store,
    runner: Runner,
}

fn setup(packs: &[PathBuf]) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("squall.db"), &StoreConfig::default())?;
    let sandbox = Arc::new(open_sandbox(dir.path(), 1000)?);
    let set = PackSet::load(packs)?;
    let runner = Runner::new(sandbox, store.clone(), Arc::new(set), Limits::default());
    Ok(Bench {
        _dir: dir,
        store,
        runner,
    })
}

fn noop() -> RunRequest {
    RunRequest::new(
        TenantId::default_tenant(),
        "core.noop".parse().expect("valid ref"),
        Map::new(),
    )
}

/// Backlog (requested + scheduled + delayed), running, and completed.
fn counts(store: &Store) -> anyhow::Result<(u64, u64, u64)> {
    let mut c = (0, 0, 0);
    for (status, n) in store.execution_status_counts(&TenantId::default_tenant())? {
        match status {
            ExecutionStatus::Requested | ExecutionStatus::Scheduled | ExecutionStatus::Delayed => {
                c.0 += n
            }
            ExecutionStatus::Running => c.1 += n,
            s if s.is_completed() => c.2 += n,
            _ => {}
        }
    }
    Ok(c)
}

/// Sample the backlog every 100 ms until `count` executions completed;
/// print the drain rate and how the backlog moved. Returns executions/s.
async fn watch_drain(store: &Store, count: usize, since: Instant) -> anyhow::Result<f64> {
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let deadline = since + Duration::from_secs(900);
    loop {
        let (backlog, _, done) = counts(store)?;
        samples.push((since.elapsed(), backlog));
        if done as usize >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!("did not drain within 15 minutes ({done} of {count} completed)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = since.elapsed();
    let rate = count as f64 / took.as_secs_f64();
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    // Never growing after the peak: nothing piles up behind anything.
    let peak_at = samples.iter().position(|s| s.1 == peak).unwrap_or(0);
    let grew_after_peak = samples[peak_at..]
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .count();
    let quarter = |q: usize| {
        let i = (samples.len() * q / 4).min(samples.len() - 1);
        format!("{:.1}s:{}", samples[i].0.as_secs_f64(), samples[i].1)
    };
    println!(
        "    drained {count} in {:.2} s: {rate:.0} executions/s",
        took.as_secs_f64()
    );
    println!(
        "    backlog (requested+scheduled+delayed) peak {peak}; at 0/25/50/75%: {} {} {} {}; samples where it grew after the peak: {grew_after_peak} of {}",
        quarter(0),
        quarter(1),
        quarter(2),
        quarter(3),
        samples.len() - peak_at
    );
    Ok(rate)
}

/// `count` core.noop executions recorded `requested` by a run that
/// stopped, then drained by the next start.
async fn drain_left_queued(count: usize, packs: &[PathBuf]) -> anyhow::Result<f64> {
    println!("  {count} core.noop left requested by a previous run, drained at start:");
    let b = setup(packs)?;
    let written = Instant::now();
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..count {
        let execution = b.runner.prepare(noop(), None)?.execution;
        let store = b.store.clone();
        batch.spawn(async move { store.insert_execution(&execution).await });
        if batch.len() >= 1000 || i + 1 == count {
            while let Some(r) = batch.join_next().await {
                r??;
            }
        }
    }
    println!(
        "    recorded in {:.2} s (setup, not measured below)",
        written.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let reactor =
        Reactor::start(b.store.clone(), b.runner.clone(), &ReactorConfig::default()).await?;
    println!(
        "    start (recovery query + admitting {count}) returned after {:.0} ms",
        ms(started.elapsed())
    );
    let rate = watch_drain(&b.store, count, started).await?;
    reactor.shutdown(Duration::from_secs(5)).await;
    Ok(rate)
}

/// `count` core.noop requested through the API's path (64 concurrent
/// requesters) while the workers run them.
async fn drain_requested_while_running(count: usize, packs: &[PathBuf]) -> anyhow::Result<f64> {
    println!("  {count} core.noop requested by 64 concurrent callers while workers run them:");
    let b = setup(packs)?;
    let reactor =
        Reactor::start(b.store.clone(), b.runner.clone(), &ReactorConfig::default()).await?;
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..64 {
        let reactor = reactor.clone();
        let n = count / 64 + usize::from(c < count % 64);
        callers.spawn(async move {
            for _ in 0..n {
                reactor.request_execution(noop()).await?;
            }
            anyhow::Ok(())
        });
    }
    let watch = watch_drain(&b.store, count, started);
    let requests = async {
        while let Some(r) = callers.join_next().await {
            r??;
        }
        anyhow::Ok(started.elapsed())
    };
    let (rate, requested_in) = tokio::join!(watch, requests);
    println!(
        "    all {count} requests answered after {:.2} s",
        requested_in?.as_secs_f64()
    );
    reactor.shutdown(Duration::from_secs(5)).await;
    rate
}

/// Write a finished execution with a `mib` MiB result together with its
/// actiontrigger (which carries the result, as StackStorm's does), then
/// read it back as the API serves it (the stored text, not parsed).
async fn large_result(mib: usize) -> anyhow::Result<()> {
    println!("  a {mib} MiB result, written with its actiontrigger and read back (5 runs):");
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("squall.db"), &StoreConfig::default())?;
    // Many small records, like an inventory or a query's hits.
    let mut rows = Vec::new();
    let mut size = 0;
    while size < mib << 20 {
        let row = json!({"host": format!("web-{:05}", rows.len()), "cpu": 0.25, "ok": true,
            "tags": ["prod", "eu-west-1"], "note": "a line of text about this host"});
        size += row.to_string().len() + 1;
        rows.push(row);
    }
    let data = serde_json::Value::Array(rows);
    let (mut writes, mut reads, mut parses) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let now = now_rfc3339();
        let mut e = Execution {
            id: ExecutionId::generate(),
            tenant: TenantId::default_tenant(),
            action: "core.echo".parse()?,
            status: ExecutionStatus::Running,
            parameters: json!({}),
            result: None,
            output: CapturedOutput::default(),
            start_timestamp: now.clone(),
            end_timestamp: None,
            log: vec![StatusChange {
                status: ExecutionStatus::Running,
                timestamp: now,
            }],
            trace_tag: None,
            trigger_instance_id: None,
            rule_ref: None,
            trigger_type: None,
            context: Map::new(),
            delay: None,
        };
        store.insert_execution(&e).await?;
        // From the guest's JSON text to durable records: the same steps as
        // a worker (parse once, build the event, encode, write).
        let text = json!({ "data": data }).to_string();
        let t = Instant::now();
        let value: serde_json::Value = serde_json::from_str(&text)?;
        e.result = Some(value);
        e.transition(ExecutionStatus::Succeeded);
        let event = TriggerInstance {
            id: new_id(),
            tenant: e.tenant.clone(),
            trigger_type: ACTION_TRIGGER.into(),
            trigger_parameters: Map::new(),
            payload: json!({"execution_id": e.id.as_str(), "result": e.result}),
            occurrence_time: now_rfc3339(),
            status: TriggerInstanceStatus::Processed,
            trace_tag: new_id(),
        };
        let emitted = [Emission {
            instance: &event,
            enforcements: Vec::new(),
            executions: Vec::new(),
        }];
        store.complete_execution(&e, &emitted, &[]).await?;
        writes.push(t.elapsed());
        let t = Instant::now();
        let (store2, id) = (store.clone(), e.id.clone());
        let stored = tokio::task::spawn_blocking(move || {
            store2.get_execution_stored(&TenantId::default_tenant(), &id)
        })
        .await??;
        let len = stored
            .and_then(|s| s.result_json)
            .map(|r| r.len())
            .unwrap_or(0);
        reads.push(t.elapsed());
        if len < (mib << 20) {
            bail!("read back {len} bytes");
        }
        // For comparison: what parsing it on every read would add.
        let t = Instant::now();
        let _: serde_json::Value = serde_json::from_str(&text)?;
        parses.push(t.elapsed());
    }
    let (w, r, p) = (median(&writes), median(&reads), median(&parses));
    println!(
        "    write (parse + event + commit) median {:.0} ms; read back median {:.0} ms; total {:.0} ms",
        ms(w),
        ms(r),
        ms(w + r)
    );
    println!(
        "    parsing the result again on each read would add {:.0} ms per read",
        ms(p)
    );
    Ok(())
}

/// End to end: `core.echo` with a `mib` MiB message (so the guest returns a
/// result that large) requested, run, recorded and read back.
async fn large_result_end_to_end(mib: usize, packs: &[PathBuf]) -> anyhow::Result<()> {
    println!(
        "  core.echo returning {mib} MiB, requested -> run -> recorded -> read back (3 runs):"
    );
    let b = setup(packs)?;
    let limits = Limits {
        result_bytes: (mib + 1) << 20,
        ..Limits::default()
    };
    let runner = Runner::new(
        Arc::new(open_sandbox(b._dir.path(), 16)?),
        b.store.clone(),
        Arc::new(PackSet::load(packs)?),
        limits,
    );
    let reactor = Reactor::start(b.store.clone(), runner, &ReactorConfig::default()).await?;
    let message = "x".repeat(mib << 20);
    let mut totals = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut params = Map::new();
        params.insert("message".into(), json!(message));
        let mut req = noop();
        req.action = "core.echo".parse()?;
        req.parameters = params;
        let id = reactor.request_execution(req).await?.id;
        let len = loop {
            let (store, id) = (b.store.clone(), id.clone());
            let stored = tokio::task::spawn_blocking(move || {
                store.get_execution_stored(&TenantId::default_tenant(), &id)
            })
            .await??;
            if let Some(s) = stored.filter(|s| s.execution.status.is_completed()) {
                if s.execution.status != ExecutionStatus::Succeeded {
                    bail!(
                        "core.echo ended {}: {:?}",
                        s.execution.status,
                        s.result_json
                    );
                }
                break s.result_json.map(|r| r.len()).unwrap_or(0);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        totals.push(t.elapsed());
        if len < (mib << 20) {
            bail!("read back {len} bytes");
        }
    }
    println!("    median {:.0} ms", ms(median(&totals)));
    reactor.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

async fn query_plans(packs: &[PathBuf]) -> anyhow::Result<()> {
    let b = setup(packs)?;
    println!("  EXPLAIN QUERY PLAN of the scheduler's queries:");
    for (name, plan) in b
        .store
        .sqlite()
        .ok_or_else(|| anyhow::anyhow!("the benchmark runs on SQLite"))?
        .scheduler_query_plans()?
    {
        println!("    {name}: {}", plan.join(" | "));
    }
    Ok(())
}
