//! `squall bench api`: installing a very large pack over HTTP, and listing
//! executions filtered by action and status from a table of a million.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use squall_core::execution::CapturedOutput;
use squall_core::{Execution, ExecutionId, ExecutionStatus, StatusChange, TenantId};
use squall_reactor::{PackSet, PackStore, Reactor, ReactorConfig, Runner};
use squall_sandbox::Limits;
use squall_store::{Store, StoreConfig};

use crate::bench::{median, ms, p99, runtime};
use crate::commands::open_sandbox;

/// Actions the list benchmark spreads its rows over.
const LIST_ACTIONS: usize = 20;
/// Statuses of the rows, with their share out of 100.
const LIST_STATUSES: [(ExecutionStatus, usize); 4] = [
    (ExecutionStatus::Succeeded, 85),
    (ExecutionStatus::Failed, 10),
    (ExecutionStatus::Timeout, 3),
    (ExecutionStatus::Canceled, 2),
];

pub(crate) fn api(
    actions: usize,
    installs: usize,
    rows: usize,
    queries: usize,
    packs: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let rt = runtime(2)?;
    rt.block_on(async {
        println!("squall bench api");
        let server = BenchServer::start(&packs).await?;
        install(&server, actions, installs).await?;
        list(&server, rows, queries).await?;
        server.reactor.shutdown(Duration::from_secs(5)).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) struct BenchServer {
    dir: tempfile::TempDir,
    pub(crate) store: Store,
    pub(crate) reactor: Reactor,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    /// `packs/core`'s component, shared by the generated pack's actions.
    component: PathBuf,
}

impl BenchServer {
    pub(crate) async fn start(packs: &[PathBuf]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("squall.db"), &StoreConfig::default())?;
        let sandbox = Arc::new(open_sandbox(dir.path(), 1000)?);
        let set = PackSet::load(packs)?;
        let core = set
            .packs()
            .find(|p| p.manifest.pack_ref.as_str() == "core")
            .context("the core pack is needed (build it with `squall pack build packs/core`)")?;
        let echo = core.actions.get("echo").context("core.echo")?;
        let component = core.component_path(echo)?;
        let runner = Runner::new(sandbox, store.clone(), Arc::new(set), Limits::default());
        let config = ReactorConfig {
            pack_store: Some(PackStore::open(&dir.path().join("packs"))?),
            ..ReactorConfig::default()
        };
        let reactor = Reactor::start(store.clone(), runner, &config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let mut state = squall_api::AppState::new(reactor.clone());
        state.upload_limit = 256 << 20;
        tokio::spawn(squall_api::serve(state, listener, std::future::pending()));
        let http = crate::bench::operator_client(&store, reqwest::Client::builder()).await?;
        Ok(Self {
            dir,
            store,
            reactor,
            base,
            http,
            component,
        })
    }
}

/// A pack of `n` actions that all run one component, each with a
/// parameters block like those of StackStorm's aws pack.
fn generate_pack(root: &Path, n: usize, component: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("aws");
    std::fs::create_dir_all(dir.join("actions"))?;
    std::fs::write(
        dir.join("pack.yaml"),
        "name: aws\nversion: 1.0.0\ndescription: generated, like StackStorm's aws pack\nauthor: bench\n",
    )?;
    std::fs::copy(component, dir.join("actions/aws.wasm"))?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("actions/op_{i:05}.yaml")),
            format!(
                "name: op_{i:05}\nrunner_type: wasm\nentry_point: aws.wasm\ndescription: Generated operation {i}\nparameters:\n  region: {{type: string, default: us-east-1, description: AWS region}}\n  account_id: {{type: string}}\n  instance_ids: {{type: array, items: {{type: string}}}}\n  dry_run: {{type: boolean, default: false}}\n  max_results: {{type: integer, minimum: 1, maximum: 1000}}\n  filters: {{type: object}}\n"
            ),
        )?;
    }
    Ok(dir)
}

async fn install(s: &BenchServer, actions: usize, installs: usize) -> anyhow::Result<()> {
    println!(
        "  install a pack of {actions} actions sharing one component (POST /api/v1/packs/upload):"
    );
    let dir = generate_pack(s.dir.path(), actions, &s.component)?;
    let t = Instant::now();
    let archive = squall_reactor::install::archive_pack(&dir)?;
    println!(
        "    archive: {:.1} MiB, made in {:.0} ms (client side, not counted)",
        archive.len() as f64 / (1 << 20) as f64,
        ms(t.elapsed())
    );
    let mut times = Vec::new();
    for i in 0..installs.max(1) {
        let t = Instant::now();
        let r = s
            .http
            .post(format!("{}/api/v1/packs/upload", s.base))
            .body(archive.clone())
            .send()
            .await?;
        let took = t.elapsed();
        let status = r.status();
        let body: serde_json::Value = r.json().await?;
        if status.as_u16() != 201 {
            bail!("install failed: {status} {body}");
        }
        println!(
            "    install {}: {:.3} s ({} actions, {})",
            i + 1,
            took.as_secs_f64(),
            body["actions"],
            if i == 0 {
                "first version; component compiled"
            } else {
                "replacing the previous version"
            }
        );
        times.push(took);
    }
    let listed = s
        .http
        .get(format!("{}/api/v1/actions?pack=aws&limit=1", s.base))
        .send()
        .await?;
    let total = listed
        .headers()
        .get("X-Total-Count")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    println!(
        "    median {:.3} s over {} installs; the API lists {total} aws actions",
        median(&times).as_secs_f64(),
        times.len()
    );
    Ok(())
}

pub(crate) fn finished(action: &str, status: ExecutionStatus) -> Execution {
    let now = squall_core::time::now_rfc3339();
    Execution {
        id: ExecutionId::generate(),
        tenant: TenantId::default_tenant(),
        action: action.parse().expect("valid ref"),
        status,
        parameters: serde_json::json!({"region": "eu-west-1"}),
        result: Some(serde_json::json!({"ok": status == ExecutionStatus::Succeeded})),
        output: CapturedOutput::default(),
        start_timestamp: now.clone(),
        end_timestamp: Some(now.clone()),
        log: vec![
            StatusChange {
                status: ExecutionStatus::Requested,
                timestamp: now.clone(),
            },
            StatusChange {
                status,
                timestamp: now,
            },
        ],
        trace_tag: None,
        trigger_instance_id: None,
        rule_ref: None,
        trigger_type: None,
        context: Default::default(),
        delay: None,
    }
}

async fn list(s: &BenchServer, rows: usize, queries: usize) -> anyhow::Result<()> {
    println!(
        "  list executions filtered by action and status from {rows} rows ({LIST_ACTIONS} actions; 85% succeeded, 10% failed, 3% timeout, 2% canceled):"
    );
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..rows {
        let action = format!("bench.op_{:02}", i % LIST_ACTIONS);
        let pick = (i / LIST_ACTIONS) % 100;
        let mut edge = 0;
        let status = LIST_STATUSES
            .iter()
            .find(|(_, share)| {
                edge += share;
                pick < edge
            })
            .map(|(s, _)| *s)
            .unwrap_or(ExecutionStatus::Succeeded);
        batch.push(finished(&action, status));
        if batch.len() == 10_000 || i + 1 == rows {
            s.store.insert_executions(&batch).await?;
            batch.clear();
        }
    }
    println!(
        "    {rows} rows written in {:.1} s (setup, not measured)",
        t.elapsed().as_secs_f64()
    );
    let mut by_status: Vec<(ExecutionStatus, Vec<Duration>)> = LIST_STATUSES
        .iter()
        .map(|(s, _)| (*s, Vec::new()))
        .collect();
    let mut all = Vec::new();
    for q in 0..queries {
        let action = format!("bench.op_{:02}", q % LIST_ACTIONS);
        let (status, times) = &mut by_status[q % LIST_STATUSES.len()];
        let url = format!(
            "{}/api/v1/executions?action={action}&status={}&limit=50",
            s.base,
            status.as_str()
        );
        let t = Instant::now();
        let r = s.http.get(url).send().await?;
        let ok = r.status().is_success();
        let body = r.bytes().await?;
        let took = t.elapsed();
        if !ok {
            bail!("list failed: {}", String::from_utf8_lossy(&body));
        }
        times.push(took);
        all.push(took);
    }
    for (status, times) in &by_status {
        println!(
            "    status={:<9} p50 {:>6.2} ms  p99 {:>6.2} ms  ({} queries)",
            status.as_str(),
            ms(median(times)),
            ms(p99(times)),
            times.len()
        );
    }
    println!(
        "    all queries: p50 {:.2} ms, p99 {:.2} ms (each returns 50 executions and X-Total-Count)",
        ms(median(&all)),
        ms(p99(&all))
    );
    let plans = s
        .store
        .sqlite()
        .ok_or_else(|| anyhow::anyhow!("the benchmark runs on SQLite"))?
        .read(|conn| {
        let mut out = Vec::new();
        for sql in [
            "EXPLAIN QUERY PLAN SELECT id FROM executions WHERE tenant_id = 'default' AND action_ref = 'bench.op_01' AND status = 'failed' ORDER BY id DESC LIMIT 50",
            "EXPLAIN QUERY PLAN SELECT count(*) FROM executions WHERE tenant_id = 'default' AND action_ref = 'bench.op_01' AND status = 'failed'",
        ] {
            let mut stmt = conn.prepare(sql)?;
            let detail: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(3))?
                .collect::<Result<_, _>>()?;
            out.push(detail.join("; "));
        }
        Ok(out)
    })?;
    println!("    plan (page): {}", plans[0]);
    println!("    plan (count): {}", plans[1]);
    Ok(())
}
