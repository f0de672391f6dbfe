//! `squall bench sandbox`: figures for docs/benchmarks.md. Prints medians;
//! asserts nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use squall_core::{ActionRef, ExecutionId, TenantId};
use squall_reactor::PackSet;
use squall_sandbox::{ActionComponent, Invocation, Limits, Outcome, Sandbox};

use crate::commands::{open_sandbox, pack_paths};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Per-execution overhead of core.noop in a fresh instance against the
    /// raw wasmtime instantiate+call floor, executions/s on one and two
    /// threads, and the whole-process time of `squall run core.noop`.
    Sandbox {
        /// Executions per measurement.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Runs of the whole `squall run` process.
        #[arg(long, default_value_t = 20)]
        process_runs: usize,
        /// Where the core pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
        /// The action measured (a Python action measures its pack's
        /// Python component).
        #[arg(long, default_value = "core.noop")]
        action: String,
        /// Its parameters, as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
    },
    /// Rule matching alone: N rules over M trigger instances, one thread.
    Rules {
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        #[arg(long, default_value_t = 100_000)]
        instances: usize,
        /// Distinct webhook URLs the rules are spread over.
        #[arg(long, default_value_t = 100)]
        urls: usize,
    },
    /// Webhook -> rule -> core.noop -> durable records, through a server in
    /// this process with a load generator on loopback.
    Webhooks {
        /// Events for the throughput run.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Concurrent HTTP clients in the throughput run.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Offered rate for the latency run, events/s.
        #[arg(long, default_value_t = 5000)]
        rate: usize,
        /// Seconds of the latency run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Where the core pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
        /// Run the server on this PostgreSQL database (16 connections, as
        /// `serve`) instead of a SQLite file. Give an empty database.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// Run the server with this limit on the tenant's running
        /// executions (`serve --tenant-max-running`): every execution then
        /// passes a concurrency gate, counted in the database on
        /// PostgreSQL.
        #[arg(long, value_name = "N")]
        tenant_max_running: Option<usize>,
    },
    /// A durable queue of core.noop executions drained (left by a previous
    /// run, and requested while running), a large result written and read
    /// back, and the query plans of the scheduler's queries.
    Executions {
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// Size of the large result, MiB.
        #[arg(long, default_value_t = 10)]
        result_mib: usize,
        /// Where the core pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
    },
    /// Many polling sensors on one server (CPU, memory) and one tight
    /// sensor's dispatch rate. The component is the test sensor
    /// (`tests/guests/sensor`), built by `cargo test -p squall-tests --no-run`
    /// into target/wasm-guests/wasm32-wasip2/release/guest_sensor.wasm.
    Sensors {
        #[arg(
            long,
            default_value = "target/wasm-guests/wasm32-wasip2/release/guest_sensor.wasm"
        )]
        component: PathBuf,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Seconds of each measurement window.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Installing a pack of thousands of actions over HTTP (StackStorm's aws
    /// pack has 3,581), and listing executions filtered by action and status
    /// from a table of a million.
    Api {
        /// Actions in the generated pack.
        #[arg(long, default_value_t = 3581)]
        actions: usize,
        /// Installs measured (each after the first replaces the previous).
        #[arg(long, default_value_t = 3)]
        installs: usize,
        /// Executions in the table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// List requests measured.
        #[arg(long, default_value_t = 400)]
        queries: usize,
        /// Where the core pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
    },
    /// The cluster's execution queue on PostgreSQL: executions claimed
    /// (under fenced leases) and completed by 1, 2 and 3 claimers at once;
    /// claim latency p50 and p99 and executions per second. Give it a
    /// database of its own: it writes executions there.
    Queue {
        /// The database (`postgres://user@host:port/db`).
        #[arg(long, value_name = "URL", env = "SQUALL_DATABASE_URL")]
        database: String,
        /// Executions per run.
        #[arg(long, default_value_t = 3000)]
        executions: usize,
        /// Executions one claim takes at most.
        #[arg(long, default_value_t = 10)]
        batch: usize,
    },
    /// Nodes side by side on PostgreSQL: 100 ms actions asked of 1, 2 and
    /// 3 nodes in turn, each node with a few workers; executions per second
    /// against one node's. Give it a database of its own.
    Cluster {
        /// The database (`postgres://user@host:port/db`).
        #[arg(long, value_name = "URL", env = "SQUALL_DATABASE_URL")]
        database: String,
        /// Executions per run.
        #[arg(long, default_value_t = 600)]
        executions: usize,
        /// Webhook events per run.
        #[arg(long, default_value_t = 4000)]
        events: usize,
        /// Workers (executions running at once) of each node.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Where the core pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
    },
    /// The web UI: the server time of each page (its Server-Timing) over a
    /// history of a million executions.
    Ui {
        /// Executions in the history.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Requests measured per page.
        #[arg(long, default_value_t = 30)]
        requests: usize,
        /// Where the core pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
    },
    /// Workflows: a sequential one of many core.noop tasks (task
    /// transitions/s against plain executions in a row), a with-items task
    /// over many items, many five-task workflows at once (rate, peak RSS),
    /// and the conductor's own cost per task.
    Workflows {
        /// Tasks of the sequential workflow.
        #[arg(long, default_value_t = 1000)]
        tasks: usize,
        /// Items of the with-items task.
        #[arg(long, default_value_t = 10_000)]
        items: usize,
        /// Its concurrency.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Five-task workflows started at once.
        #[arg(long, default_value_t = 1000)]
        workflows: usize,
        /// Runs of each measurement (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where the core pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
    },
    /// How long a saved change takes to be live under `squall dev`: a pack
    /// made by `squall pack new`, its action rewritten each round, run
    /// through the API until the new answer comes back.
    Dev {
        /// The pack's language: python, rust (repeatable).
        #[arg(long = "language", default_values_t = ["python".to_owned(), "rust".to_owned()])]
        languages: Vec<String>,
        /// Saves measured per language (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Many executions at once, each waiting 1 s on a local server's
    /// response: time, memory and threads.
    ///
    /// Example: squall bench http --packs packs/pyexamples --action pyexamples.fetch_json --count 100
    Http {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Where the action's pack is (built). Default: ./packs
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
        /// The action run: it takes the server's address as its `url`
        /// parameter and GETs it.
        #[arg(long, default_value = "core.http")]
        action: String,
    },
}

pub(crate) fn bench(data_dir: &Path, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Sandbox {
            iterations,
            process_runs,
            packs,
            action,
            params,
        } => bench_sandbox(data_dir, iterations, process_runs, packs, &action, &params),
        BenchCommand::Api {
            actions,
            installs,
            rows,
            queries,
            packs,
        } => crate::bench_api::api(actions, installs, rows, queries, pack_paths(packs)),
        BenchCommand::Queue {
            database,
            executions,
            batch,
        } => crate::bench_queue::queue(database, executions, batch.max(1)),
        BenchCommand::Cluster {
            database,
            executions,
            events,
            workers,
            packs,
        } => crate::bench_cluster::cluster(
            database,
            executions,
            events,
            workers.max(1),
            pack_paths(packs),
        ),
        BenchCommand::Ui {
            rows,
            requests,
            packs,
        } => crate::bench_ui::ui(rows, requests, pack_paths(packs)),
        BenchCommand::Rules {
            rules,
            instances,
            urls,
        } => crate::bench_reactor::rules(rules, instances, urls),
        BenchCommand::Webhooks {
            events,
            clients,
            rate,
            seconds,
            packs,
            database,
            tenant_max_running,
        } => crate::bench_reactor::webhooks(
            events,
            clients,
            rate,
            seconds,
            pack_paths(packs),
            database.as_deref(),
            tenant_max_running,
        ),
        BenchCommand::Executions {
            count,
            result_mib,
            packs,
        } => crate::bench_executions::executions(count, result_mib, pack_paths(packs)),
        BenchCommand::Sensors {
            component,
            count,
            seconds,
        } => crate::bench_sensors::sensors(component, count, seconds),
        BenchCommand::Dev { languages, rounds } => crate::bench_dev::dev(&languages, rounds),
        BenchCommand::Http {
            count,
            packs,
            action,
        } => crate::bench_http::http(count, pack_paths(packs), &action),
        BenchCommand::Workflows {
            tasks,
            items,
            concurrency,
            workflows,
            runs,
            packs,
        } => crate::bench_workflows::workflows(
            crate::bench_workflows::Sizes {
                tasks,
                items,
                concurrency,
                workflows,
                runs,
            },
            pack_paths(packs),
        ),
    }
}

fn bench_sandbox(
    data_dir: &Path,
    iterations: usize,
    process_runs: usize,
    packs: Vec<PathBuf>,
    action: &str,
    params: &str,
) -> anyhow::Result<ExitCode> {
    let iterations = iterations.max(10);
    let pack_dirs = pack_paths(packs);
    let set = PackSet::load(&pack_dirs)?;
    let action: ActionRef = action.parse()?;
    let parameters: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(params).context("--params must be a JSON object")?;
    let (pack, meta) = set.action(&action)?;
    let wasm = pack.component_path(meta)?;
    let job = Job {
        action: action.clone(),
        parameters,
    };

    let sandbox = Arc::new(open_sandbox(data_dir, 1000)?);
    let component = sandbox.load_action(&wasm)?;
    println!("squall bench sandbox");
    println!(
        "  component        {} ({} KiB)",
        wasm.display(),
        std::fs::metadata(&wasm)?.len() / 1024
    );
    println!("  allocator        {:?}", sandbox.allocator());
    println!("  iterations       {iterations}");

    let rt = runtime(2)?;
    // Warm up code paths, the pooling allocator's slots and the page cache.
    rt.block_on(async {
        for _ in 0..200 {
            run_once(&sandbox, &component, &job).await?;
        }
        anyhow::Ok(())
    })?;
    let floor = rt.block_on(sandbox.raw_floor(
        &component,
        (action.pack().as_str(), action.name()),
        params,
        iterations,
    ));
    let full = rt.block_on(async {
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            run_once(&sandbox, &component, &job).await?;
            times.push(t.elapsed());
        }
        anyhow::Ok(times)
    })?;
    let (floor_med, full_med) = (median(&floor.whole), median(&full));
    println!();
    println!("per execution, sequential (median / p99)");
    println!(
        "  raw wasmtime floor   {:>8.1} µs / {:>8.1} µs",
        us(floor_med),
        us(p99(&floor.whole))
    );
    println!(
        "    of which instantiation {:>6.1} µs / {:>8.1} µs",
        us(median(&floor.instantiation)),
        us(p99(&floor.instantiation))
    );
    println!(
        "  squall {:<13} {:>8.1} µs / {:>8.1} µs",
        job.action.to_string(),
        us(full_med),
        us(p99(&full))
    );
    println!(
        "  ratio (squall/floor) {:>8.2}",
        full_med.as_secs_f64() / floor_med.as_secs_f64()
    );

    println!();
    println!("throughput, fresh instance per execution");
    for threads in [1, 2] {
        let rt = runtime(threads)?;
        let per_second = rt.block_on(throughput(
            &sandbox,
            &component,
            &job,
            iterations,
            threads * 4,
        ))?;
        println!(
            "  {threads} thread{}            {:>10.0} executions/s",
            if threads == 1 { " " } else { "s" },
            per_second
        );
    }

    if process_runs > 0 {
        let times = process_times(&pack_dirs, data_dir, process_runs, &job)?;
        println!();
        println!(
            "whole process: squall run {}, warm compile cache ({process_runs} runs)",
            job.action
        );
        println!(
            "  median {:>8.1} ms, min {:>8.1} ms",
            ms(median(&times)),
            ms(*times.iter().min().expect("at least one run"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

/// The action a sandbox benchmark runs, and with what.
struct Job {
    action: ActionRef,
    parameters: serde_json::Map<String, serde_json::Value>,
}

async fn run_once(sandbox: &Sandbox, component: &ActionComponent, job: &Job) -> anyhow::Result<()> {
    let inv = Invocation {
        execution_id: ExecutionId::generate(),
        tenant: TenantId::default_tenant(),
        action: job.action.clone(),
        parameters: job.parameters.clone(),
        config: "{}".into(),
        kv: None,
        trace_tag: None,
        limits: Limits::default(),
        cancel: squall_sandbox::Cancel::new(),
        output: None,
        dirs: Vec::new(),
        egress: squall_sandbox::Egress::default(),
    };
    match sandbox.run_action(component, inv).await.outcome {
        Outcome::Succeeded(_) => Ok(()),
        other => bail!("{} did not succeed: {other:?}", job.action),
    }
}

async fn throughput(
    sandbox: &Arc<Sandbox>,
    component: &Arc<ActionComponent>,
    job: &Job,
    total: usize,
    tasks: usize,
) -> anyhow::Result<f64> {
    let per_task = total.div_ceil(tasks);
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (sandbox, component) = (sandbox.clone(), component.clone());
        let job = Job {
            action: job.action.clone(),
            parameters: job.parameters.clone(),
        };
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                run_once(&sandbox, &component, &job).await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok((per_task * tasks) as f64 / start.elapsed().as_secs_f64())
}

fn process_times(
    packs: &[PathBuf],
    data_dir: &Path,
    runs: usize,
    job: &Job,
) -> anyhow::Result<Vec<Duration>> {
    let exe = std::env::current_exe().context("cannot find the squall binary")?;
    let dir = data_dir.join("bench-process");
    let args: Vec<String> = job
        .parameters
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    let action = job.action.to_string();
    let run = || -> anyhow::Result<Duration> {
        let mut cmd = Command::new(&exe);
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["run", &action])
            .args(&args);
        for p in packs {
            cmd.arg("--packs").arg(p);
        }
        let t = Instant::now();
        let out = cmd.output()?;
        let elapsed = t.elapsed();
        if !out.status.success() {
            bail!(
                "squall run {action} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(elapsed)
    };
    run()?; // fills the compile cache
    (0..runs).map(|_| run()).collect()
}

/// A numeric field of `/proc/self/status` (e.g. `VmRSS:` in kB,
/// `Threads:`); 0 when absent.
pub(crate) fn proc_status(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An HTTP client carrying a new operator key of the default tenant, as
/// every request to the server is authenticated in production.
pub(crate) async fn operator_client(
    store: &squall_store::Store,
    builder: reqwest::ClientBuilder,
) -> anyhow::Result<reqwest::Client> {
    let (_, key) = store
        .create_api_key(
            &squall_core::TenantId::default_tenant(),
            "bench",
            squall_core::auth::Role::Operator,
        )
        .await?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("St2-Api-Key", key.parse()?);
    Ok(builder.default_headers(headers).build()?)
}

pub(crate) fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

pub(crate) fn p99(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
