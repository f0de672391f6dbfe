//! `squall bench cluster`: 100 ms actions on 1, 2 and 3 nodes on one
//! PostgreSQL database, each node with a few workers, the executions asked
//! of the nodes in turn over HTTP: how the executions per second grow with
//! the nodes while the workers (the slots) bound them. Then webhook events
//! (a rule's `core.noop` each) sent to the nodes in turn: how many events
//! per second the nodes take together, on a machine they share with the
//! database.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use squall_core::{ExecutionStatus, TenantId};
use squall_reactor::{ClusterNode, PackSet, Reactor, ReactorConfig, Runner};
use squall_sandbox::Limits;
use squall_store::Store;

use crate::bench::{median, ms, runtime};
use crate::commands::open_sandbox;

/// How long each action runs.
const ACTION: Duration = Duration::from_millis(100);

/// One node: its reactor, its API's address, and how to stop the API.
struct Node {
    reactor: Reactor,
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

pub(crate) fn cluster(
    database: String,
    executions: usize,
    events: usize,
    workers: usize,
    packs: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let rt = runtime(crate::serve::default_runtime_threads())?;
    rt.block_on(async move {
        let set = Arc::new(PackSet::load(&packs)?);
        let sandbox = Arc::new(open_sandbox(dir.path(), 1000)?);
        println!("squall bench cluster (postgresql)");
        println!(
            "  {executions} executions of core.sleep ({} ms) per run, asked of the nodes in turn over HTTP by 32 clients; {workers} workers per node; the nodes share this process, its runtime and the machine with the database",
            ACTION.as_millis()
        );
        let mut first_rate = None;
        let mut first_events = None;
        for count in 1..=3usize {
            let nodes = start_nodes(&database, &sandbox, &set, count, workers, "bench").await?;
            let store = nodes[0].reactor.store().clone();
            let http = crate::bench::operator_client(&store, reqwest::Client::builder()).await?;
            let started = Instant::now();
            let ids = ask_in_turn(&http, &nodes, executions).await?;
            let asked = started.elapsed();
            wait_all_succeeded(&store, &ids).await?;
            let took = started.elapsed();
            let rate = executions as f64 / took.as_secs_f64();
            let ideal = (count * workers) as f64 / ACTION.as_secs_f64();
            let ratio = rate / *first_rate.get_or_insert(rate);
            println!(
                "{count} node(s): {executions} executions in {:.2} s (asked in {:.2} s): {rate:.0} executions/s, {ratio:.2}x one node; the slots allow {ideal:.0}/s",
                took.as_secs_f64(),
                asked.as_secs_f64()
            );
            // The same asked of the first node alone: the others take what
            // waits there.
            if count > 1 {
                let started = Instant::now();
                let ids = ask_in_turn(&http, &nodes[..1], executions).await?;
                wait_all_succeeded(&store, &ids).await?;
                let alone = executions as f64 / started.elapsed().as_secs_f64();
                println!(
                    "{count} node(s), all asked of node 1: {alone:.0} executions/s, {:.2}x one node ({:.2}x asked in turn)",
                    alone / first_rate.unwrap_or(alone),
                    alone / rate
                );
            }
            // Webhooks, on nodes with `serve`'s worker pool (256 each).
            stop_nodes(nodes).await;
            let nodes = start_nodes(&database, &sandbox, &set, count, 256, "hooks").await?;
            let store = nodes[0].reactor.store().clone();
            if count == 1 {
                let rule = json!({"name": "bench_load", "pack": "core", "enabled": true,
                    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "bench_load"}},
                    "action": {"ref": "core.noop"}});
                let r = http.post(format!("{}/api/v1/rules", nodes[0].base)).json(&rule).send().await?;
                if r.status().as_u16() != 201 {
                    bail!("the rule was refused: {}", r.text().await?);
                }
            }
            let urls: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}/api/v1/webhooks/bench_load", n.base))
                .collect();
            let before = crate::bench_reactor::count_succeeded(&store)?;
            let started = Instant::now();
            let latencies = crate::bench_reactor::send_many(&http, &urls, events, 64).await?;
            let accepted = started.elapsed();
            crate::bench_reactor::wait_for_succeeded(&store, before + events).await?;
            let done = started.elapsed();
            let rate = events as f64 / accepted.as_secs_f64();
            let ratio = rate / *first_events.get_or_insert(rate);
            println!(
                "{count} node(s): {events} webhook events sent to the nodes in turn by 64 clients: {rate:.0} accepted/s ({ratio:.2}x one node), {:.0} executed and recorded/s, 2xx p50 {:.1} ms",
                events as f64 / done.as_secs_f64(),
                ms(median(&latencies))
            );
            if count == 3 {
                let seen = change_latencies(&http, &nodes[0].base, &nodes[2].base, 10).await?;
                println!(
                    "a rule made through node 1 takes webhooks on node 3 after: median {:.0} ms, max {:.0} ms ({} rules)",
                    ms(median(&seen)),
                    ms(*seen.iter().max().expect("some")),
                    seen.len()
                );
            }
            stop_nodes(nodes).await;
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// `count` nodes on `database`, each with `workers` workers and its API
/// listening, the first leading; named `<tag>-<count>-<n>`.
async fn start_nodes(
    database: &str,
    sandbox: &Arc<squall_sandbox::Sandbox>,
    set: &Arc<PackSet>,
    count: usize,
    workers: usize,
    tag: &str,
) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for n in 0..count {
        let name = format!("{tag}-{count}-{n}");
        let claims = Duration::from_secs(30);
        let store = Store::connect_as(database, 8, None, &name, claims).await?;
        let runner = Runner::new(
            sandbox.clone(),
            store.clone(),
            set.clone(),
            Limits::default(),
        );
        let config = ReactorConfig {
            workers,
            cluster: Some(ClusterNode {
                name,
                claim_ttl: claims,
                leads: n == 0,
            }),
            ..ReactorConfig::default()
        };
        let reactor = Reactor::start(store, runner, &config).await?;
        reactor.follow_changes();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = squall_api::AppState::new(reactor.clone());
        tokio::spawn(squall_api::serve(state, listener, async {
            let _ = stop_rx.await;
        }));
        nodes.push(Node {
            reactor,
            base,
            stop,
        });
    }
    Ok(nodes)
}

/// Stop `nodes`' APIs and reactors, letting their claims go.
async fn stop_nodes(nodes: Vec<Node>) {
    for node in nodes {
        let _ = node.stop.send(());
        node.reactor.shutdown(Duration::from_secs(5)).await;
        node.reactor.release_claims().await;
    }
}

/// Ask for `n` executions, node after node, from 32 clients; their ids.
async fn ask_in_turn(
    http: &reqwest::Client,
    nodes: &[Node],
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let clients = 32usize;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let http = http.clone();
        let bases: Vec<String> = nodes.iter().map(|node| node.base.clone()).collect();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            let mut i = c;
            while i < n {
                let url = format!("{}/api/v1/executions", bases[i % bases.len()]);
                let body = json!({"action": "core.sleep", "parameters": {"seconds": ACTION.as_secs_f64()}});
                let r = http.post(&url).json(&body).send().await?;
                if r.status().as_u16() != 201 {
                    bail!("{url} answered {}", r.status());
                }
                let e: serde_json::Value = r.json().await?;
                ids.push(e["id"].as_str().context("an id")?.to_owned());
                i += clients;
            }
            anyhow::Ok(ids)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids??);
    }
    Ok(all)
}

/// Wait until every execution of `ids` succeeded (at most ten minutes).
async fn wait_all_succeeded(store: &Store, ids: &[String]) -> anyhow::Result<()> {
    let pg = store.postgres().context("a PostgreSQL store")?;
    let tenant = TenantId::default_tenant();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut left: Vec<&str> = ids.iter().map(String::as_str).collect();
    while !left.is_empty() {
        let found = pg.executions_by_id(&tenant, &left).await?;
        if let Some(failed) = found
            .values()
            .find(|e| e.status.is_completed() && e.status != ExecutionStatus::Succeeded)
        {
            bail!("execution {} ended {}", failed.id, failed.status);
        }
        left.retain(|id| {
            found
                .get(*id)
                .is_none_or(|e| e.status != ExecutionStatus::Succeeded)
        });
        if Instant::now() > deadline {
            bail!("{} executions did not end within ten minutes", left.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `rules` times: a rule made through `first` (on a webhook of its own),
/// then webhooks sent to `other` every 5 ms until one is taken (before,
/// `other` knows no such webhook: 404); how long that took each time.
async fn change_latencies(
    http: &reqwest::Client,
    first: &str,
    other: &str,
    rules: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut seen = Vec::with_capacity(rules);
    for i in 0..rules {
        let name = format!("probe{i}_{}", squall_core::trigger::new_id());
        let rule = json!({"name": name, "pack": "core", "enabled": true,
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": name}},
            "action": {"ref": "core.noop"}});
        let made = Instant::now();
        let r = http
            .post(format!("{first}/api/v1/rules"))
            .json(&rule)
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!("the rule was refused: {}", r.text().await?);
        }
        let deadline = made + Duration::from_secs(60);
        loop {
            let r = http
                .post(format!("{other}/api/v1/webhooks/{name}"))
                .json(&json!({}))
                .send()
                .await?;
            match r.status().as_u16() {
                202 => break,
                404 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                status => bail!("the webhook answered {status}"),
            }
        }
        seen.push(made.elapsed());
    }
    Ok(seen)
}
