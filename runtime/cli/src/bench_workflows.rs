//! `squall bench workflows`: a long sequential workflow, a wide with-items
//! task, many small workflows at once, and the engine's own cost per task.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use squall_core::{ExecutionId, ExecutionStatus, TenantId};
use squall_reactor::{PackSet, Reactor, ReactorConfig, RunRequest, Runner};
use squall_sandbox::Limits;
use squall_store::{Store, StoreConfig};
use squall_workflow::conductor::{Conductor, Limits as FlowLimits};
use squall_workflow::spec::Workflow;

use crate::bench::{median, ms, proc_status, runtime};
use crate::commands::open_sandbox;

/// What to measure.
pub(crate) struct Sizes {
    pub(crate) tasks: usize,
    pub(crate) items: usize,
    pub(crate) concurrency: usize,
    pub(crate) workflows: usize,
    pub(crate) runs: usize,
}

pub(crate) fn workflows(sizes: Sizes, packs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let rt = runtime(2)?;
    rt.block_on(async {
        println!("squall bench workflows");
        let dir = tempfile::tempdir()?;
        let pack = dir.path().join("wfbench");
        write_pack(&pack, sizes.tasks)?;
        let mut paths = packs;
        paths.push(pack);
        let store = Store::open(&dir.path().join("squall.db"), &StoreConfig::default())?;
        let sandbox = Arc::new(open_sandbox(dir.path(), 1000)?);
        let set = PackSet::load(&paths)?;
        let runner = Runner::new(sandbox, store.clone(), Arc::new(set), Limits::default());
        let reactor = Reactor::start(store.clone(), runner, &ReactorConfig::default()).await?;
        // Compile and warm the core component once.
        finish(&reactor, "core.noop", json!({})).await?;

        let floor = write_floor(&store, sizes.tasks).await?;
        let plain = plain_sequence(&reactor, sizes.tasks).await?;
        let sequential = sequential(&reactor, &sizes).await?;
        println!(
            "  per task: workflow {:.0} us, plain execution {:.0} us (ratio {:.2}); an empty store write waited for: {:.0} us",
            sequential * 1e6,
            plain * 1e6,
            sequential / plain,
            floor * 1e6
        );
        with_items(&reactor, &sizes).await?;
        many(&reactor, &store, &sizes).await?;
        reactor.shutdown(Duration::from_secs(5)).await;
        conductor_cost(sizes.tasks, sizes.runs)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `wfbench.seq` (n `core.noop` tasks in a row), `wfbench.items` (one
/// `core.noop` per item), `wfbench.five` (5 tasks in a row).
fn write_pack(dir: &Path, tasks: usize) -> anyhow::Result<()> {
    let actions = dir.join("actions");
    std::fs::create_dir_all(actions.join("workflows"))?;
    std::fs::write(
        dir.join("pack.yaml"),
        "name: wfbench\nversion: 1.0.0\ndescription: workflows for squall bench\nauthor: squall\n",
    )?;
    let chain = |n: usize| {
        let mut text = String::from("version: 1.0\ntasks:\n");
        for i in 0..n {
            text.push_str(&format!("  t{i:05}:\n    action: core.noop\n"));
            if i + 1 < n {
                text.push_str(&format!("    next:\n      - do: t{:05}\n", i + 1));
            }
        }
        text
    };
    for (name, definition, params) in [
        ("seq", chain(tasks), ""),
        ("five", chain(5), ""),
        (
            "items",
            "version: 1.0\ninput: [n, concurrency]\ntasks:\n  each:\n    with:\n      items: <% range(ctx(n)) %>\n      concurrency: <% ctx(concurrency) %>\n    action: core.noop\n".to_owned(),
            "parameters:\n  n: {type: integer, required: true}\n  concurrency: {type: integer, required: true}\n",
        ),
    ] {
        std::fs::write(
            actions.join(format!("{name}.yaml")),
            format!("name: {name}\nrunner_type: orquesta\nentry_point: workflows/{name}.yaml\n{params}"),
        )?;
        std::fs::write(actions.join(format!("workflows/{name}.yaml")), definition)?;
    }
    Ok(())
}

/// Request `action` and wait for it to end; its final status.
async fn finish(reactor: &Reactor, action: &str, params: Value) -> anyhow::Result<ExecutionStatus> {
    let mut events = reactor.subscribe();
    let req = RunRequest::new(
        TenantId::default_tenant(),
        action.parse()?,
        params.as_object().cloned().unwrap_or_default(),
    );
    let e = reactor.request_execution(req).await?;
    wait_end(reactor, &mut events, &e.id).await
}

async fn wait_end(
    reactor: &Reactor,
    events: &mut tokio::sync::broadcast::Receiver<squall_reactor::ExecutionEvent>,
    id: &ExecutionId,
) -> anyhow::Result<ExecutionStatus> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if Instant::now() > deadline {
            bail!("execution {id} did not end within 15 minutes");
        }
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Ok(ev)) if ev.execution.id == *id && ev.execution.status.is_completed() => {
                return Ok(ev.execution.status);
            }
            Ok(Ok(_)) => {}
            // Missed events or a quiet spell: read the record.
            _ => {
                let now = reactor
                    .store()
                    .get_execution(&TenantId::default_tenant(), id)?
                    .context("execution vanished")?;
                if now.status.is_completed() {
                    return Ok(now.status);
                }
            }
        }
    }
}

/// The store's floor: an empty write, waited for, `n` times in a row;
/// seconds each. A task needs two (its `running` record, then its end with
/// the workflow's step).
async fn write_floor(store: &Store, n: usize) -> anyhow::Result<f64> {
    let store = store
        .sqlite()
        .ok_or_else(|| anyhow::anyhow!("the benchmark runs on SQLite"))?;
    let started = Instant::now();
    for _ in 0..n {
        store.write(|_| Ok(())).await?;
    }
    Ok(started.elapsed().as_secs_f64() / n as f64)
}

/// `tasks` plain `core.noop` executions one after the other: seconds each.
async fn plain_sequence(reactor: &Reactor, tasks: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..tasks {
        let status = finish(reactor, "core.noop", json!({})).await?;
        if status != ExecutionStatus::Succeeded {
            bail!("core.noop ended {status}");
        }
    }
    Ok(started.elapsed().as_secs_f64() / tasks as f64)
}

/// The sequential workflow, `runs` times: median transitions/s. Returns
/// the median seconds per task.
async fn sequential(reactor: &Reactor, sizes: &Sizes) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..sizes.runs {
        let started = Instant::now();
        let mut events = reactor.subscribe();
        let req = RunRequest::new(
            TenantId::default_tenant(),
            "wfbench.seq".parse()?,
            Map::new(),
        );
        let e = reactor.request_execution(req).await?;
        let status = wait_end(reactor, &mut events, &e.id).await?;
        if status != ExecutionStatus::Succeeded {
            bail!("wfbench.seq ended {status}");
        }
        times.push(started.elapsed());
        last = Some(e.id);
    }
    let m = median(&times);
    println!(
        "  sequential, {} core.noop tasks: median {:.0} ms, {:.0} task transitions/s (runs: {})",
        sizes.tasks,
        ms(m),
        sizes.tasks as f64 / m.as_secs_f64(),
        times
            .iter()
            .map(|t| format!("{:.0} ms", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(id) = last {
        breakdown(reactor.store(), &id)?;
    }
    Ok(m.as_secs_f64() / sizes.tasks as f64)
}

/// Where a task's time goes, from its records' status timestamps: from
/// requested to running (queue, worker, the `running` write), running to
/// its end (the action, then the end's write), and from one task's end to
/// the next one's request (the step).
fn breakdown(store: &Store, id: &ExecutionId) -> anyhow::Result<()> {
    let tasks = store.children(&TenantId::default_tenant(), id)?;
    let at = |e: &squall_core::Execution, s: ExecutionStatus| {
        e.log
            .iter()
            .find(|c| c.status == s)
            .map(|c| c.timestamp.clone())
    };
    let span = |a: Option<String>, b: Option<String>| {
        let a = squall_core::time::parse_rfc3339(&a?)?;
        let b = squall_core::time::parse_rfc3339(&b?)?;
        Some(Duration::from_secs_f64((b - a).as_seconds_f64().max(0.0)))
    };
    let mut queued = Vec::new();
    let mut ran = Vec::new();
    let mut between = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        queued.extend(span(
            at(t, ExecutionStatus::Requested),
            at(t, ExecutionStatus::Running),
        ));
        ran.extend(span(
            at(t, ExecutionStatus::Running),
            at(t, ExecutionStatus::Succeeded),
        ));
        if let Some(next) = tasks.get(i + 1) {
            between.extend(span(
                at(t, ExecutionStatus::Succeeded),
                at(next, ExecutionStatus::Requested),
            ));
        }
    }
    println!(
        "    per task, medians: requested -> running {:.0} us, running -> succeeded {:.0} us, end -> next requested {:.0} us",
        median(&queued).as_secs_f64() * 1e6,
        median(&ran).as_secs_f64() * 1e6,
        median(&between).as_secs_f64() * 1e6,
    );
    Ok(())
}

async fn with_items(reactor: &Reactor, sizes: &Sizes) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..sizes.runs {
        let started = Instant::now();
        let status = finish(
            reactor,
            "wfbench.items",
            json!({"n": sizes.items, "concurrency": sizes.concurrency}),
        )
        .await?;
        if status != ExecutionStatus::Succeeded {
            bail!("wfbench.items ended {status}");
        }
        times.push(started.elapsed());
    }
    let m = median(&times);
    println!(
        "  with-items, {} items at concurrency {}: median {:.2} s, {:.0} items/s (runs: {})",
        sizes.items,
        sizes.concurrency,
        m.as_secs_f64(),
        sizes.items as f64 / m.as_secs_f64(),
        times
            .iter()
            .map(|t| format!("{:.2} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `workflows` five-task workflows requested at once: time to complete
/// them all, and the process' peak resident memory meanwhile.
async fn many(reactor: &Reactor, store: &Store, sizes: &Sizes) -> anyhow::Result<()> {
    let rss_before = proc_status("VmRSS:") * 1024;
    let mut times = Vec::new();
    let mut peak = 0u64;
    for _ in 0..sizes.runs {
        let started = Instant::now();
        let mut ids = Vec::with_capacity(sizes.workflows);
        for _ in 0..sizes.workflows {
            let req = RunRequest::new(
                TenantId::default_tenant(),
                "wfbench.five".parse()?,
                Map::new(),
            );
            ids.push(reactor.request_execution(req).await?.id);
        }
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            peak = peak.max(proc_status("VmRSS:") * 1024);
            let done = ids.iter().try_fold(0usize, |n, id| {
                store
                    .get_execution(&TenantId::default_tenant(), id)
                    .map(|e| n + usize::from(e.is_some_and(|e| e.status.is_completed())))
            })?;
            if done == ids.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{done} of {} workflows ended within 15 minutes", ids.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        times.push(started.elapsed());
        for id in &ids {
            let e = store
                .get_execution(&TenantId::default_tenant(), id)?
                .context("listed")?;
            if e.status != ExecutionStatus::Succeeded {
                bail!("workflow {id} ended {}", e.status);
            }
        }
    }
    let m = median(&times);
    println!(
        "  {} workflows of 5 tasks at once: median {:.2} s, {:.0} workflows/s, {:.0} tasks/s; RSS {:.0} MiB before, peak {:.0} MiB",
        sizes.workflows,
        m.as_secs_f64(),
        sizes.workflows as f64 / m.as_secs_f64(),
        (sizes.workflows * 5) as f64 / m.as_secs_f64(),
        rss_before as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
    );
    println!(
        "    the process' high-water mark so far (every phase before included): {:.0} MiB",
        (proc_status("VmHWM:") * 1024) as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// The conductor alone (no IO): each task's action ends at once. Its cost
/// per task is what the engine adds to a task beyond storing and running
/// its action.
fn conductor_cost(tasks: usize, runs: usize) -> anyhow::Result<()> {
    let mut text = String::from("version: 1.0\ninput: [n]\ntasks:\n");
    for i in 0..tasks {
        text.push_str(&format!(
            "  t{i:05}:\n    action: core.echo\n    input: {{message: <% str(ctx(n)) %>}}\n"
        ));
        if i + 1 < tasks {
            text.push_str(&format!(
                "    next:\n      - when: <% succeeded() %>\n        publish: last=<% result().stdout %>\n        do: t{:05}\n",
                i + 1
            ));
        }
    }
    let spec =
        Arc::new(Workflow::parse(&text).map_err(|e| anyhow::anyhow!("bench workflow: {e}"))?);
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let input = json!({"n": 7});
        let (mut c, mut step) = Conductor::start(
            spec.clone(),
            Arc::new(squall_workflow::yaql::NoHost),
            FlowLimits::default(),
            input.as_object().expect("object"),
            Map::new(),
        );
        let result = json!({"stdout": 7, "stderr": "", "return_code": 0, "succeeded": true, "failed": false});
        while let Some(run) = step.runs.pop() {
            let next = c.action_ended(run.task, run.item, "succeeded", result.clone());
            step.runs.extend(next.runs);
        }
        if !c.status().is_completed() {
            bail!("the conductor did not finish: {:?}", c.status());
        }
        times.push(started.elapsed());
    }
    let m = median(&times);
    println!(
        "  conductor alone: {:.1} us per task (a when, a publish and an input rendered each; median of {runs})",
        m.as_secs_f64() * 1e6 / tasks as f64
    );
    Ok(())
}
