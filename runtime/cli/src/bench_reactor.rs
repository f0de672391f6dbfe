//! `squall bench rules` and `squall bench webhooks`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, json};
use squall_core::rule::Rule;
use squall_core::template::Templates;
use squall_core::time::{now_rfc3339, parse_rfc3339};
use squall_core::trigger::{TriggerInstance, TriggerInstanceStatus, new_id};
use squall_core::{ExecutionStatus, PackRef, TenantId};
use squall_reactor::engine::{Decision, decide};
use squall_reactor::rules::RuleIndex;
use squall_reactor::{PackSet, Reactor, ReactorConfig, Runner};
use squall_sandbox::Limits;
use squall_store::{ExecutionFilter, Store, StoreConfig};

use crate::bench::{median, ms, p99, runtime};
use crate::commands::open_sandbox;

/// A small deterministic generator, so runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

pub(crate) fn rules(rules: usize, instances: usize, urls: usize) -> anyhow::Result<ExitCode> {
    let templates = Templates::new();
    let pack = PackRef::new("bench").expect("valid ref");
    let severities = ["critical", "warning", "info"];
    let mut built = Vec::with_capacity(rules);
    for i in 0..rules {
        let yaml = format!(
            "name: r{i}\nenabled: true\ntrigger: {{type: core.st2.webhook, parameters: {{url: hook{url}}}}}\n\
             criteria:\n  trigger.body.severity: {{type: equals, pattern: {sev}}}\n  trigger.body.host: {{type: startswith, pattern: web-{h}}}\n\
             action: {{ref: core.echo, parameters: {{message: '{{{{ trigger.body.host }}}} is {{{{ trigger.body.severity }}}}'}}}}\n",
            url = i % urls.max(1),
            sev = severities[i % 3],
            h = i % 10,
        );
        let rule = Rule::parse(&yaml, Path::new("bench.yaml"), &pack, &templates)?;
        built.push((TenantId::default_tenant(), Arc::new(rule)));
    }
    let index = RuleIndex::build(built);
    let mut rng = Lcg(42);
    let batch: Vec<TriggerInstance> = (0..instances)
        .map(|_| {
            let mut params = Map::new();
            params.insert("url".into(), json!(format!("hook{}", rng.next(urls))));
            TriggerInstance {
                id: new_id(),
                tenant: TenantId::default_tenant(),
                trigger_type: "core.st2.webhook".into(),
                trigger_parameters: params,
                payload: json!({"headers": {}, "body": {
                    "severity": severities[rng.next(3)],
                    "host": format!("web-{}{}", rng.next(10), rng.next(10)),
                }}),
                occurrence_time: now_rfc3339(),
                status: TriggerInstanceStatus::Pending,
                trace_tag: String::new(),
            }
        })
        .collect();
    // Warm up, then measure three passes and keep the median.
    let mut matched = 0;
    for ti in batch.iter().take(1000) {
        matched += decide(&index, ti, &templates, None).len();
    }
    let mut rates = Vec::new();
    for _ in 0..3 {
        matched = 0;
        let start = Instant::now();
        for ti in &batch {
            for d in decide(&index, ti, &templates, None) {
                if matches!(d, Decision::Enforce { .. }) {
                    matched += 1;
                }
            }
        }
        rates.push(instances as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!("squall bench rules");
    println!("  rules {rules} over {urls} webhook URLs, 2 criteria each, templated parameters");
    println!("  instances {instances} per pass, one thread, 3 passes");
    println!("  matched per pass     {matched} (criteria held and parameters rendered)");
    println!(
        "  median               {:>10.0} trigger instances/s",
        rates[1]
    );
    println!(
        "  passes               {:.0} / {:.0} / {:.0}",
        rates[0], rates[1], rates[2]
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn webhooks(
    events: usize,
    clients: usize,
    rate: usize,
    seconds: u64,
    packs: Vec<PathBuf>,
    database: Option<&str>,
    tenant_max_running: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let clients = clients.max(1);
    let rate = rate.max(1);
    // The server gets the runtime `squall serve` would build on this
    // machine; the load generator a thread of its own, as a client in
    // another process would.
    // Declared first, dropped last: after the runtimes and the store.
    let dir = tempfile::tempdir()?;
    let server_threads = crate::serve::default_runtime_threads();
    let server = runtime(server_threads)?;
    let client = runtime(1)?;
    let Bench {
        reactor,
        store,
        base,
        stop,
    } = server.block_on(start_server(
        dir.path(),
        packs,
        database,
        tenant_max_running,
    ))?;
    let http = client.block_on(crate::bench::operator_client(
        &store,
        reqwest::Client::builder().pool_max_idle_per_host(clients),
    ))?;

    match tenant_max_running {
        Some(n) => println!(
            "squall bench webhooks ({}, --tenant-max-running {n})",
            store.engine_name()
        ),
        None => println!("squall bench webhooks ({})", store.engine_name()),
    }
    println!(
        "  webhook -> rule -> core.noop -> execution record, all durable; server ({server_threads} runtime thread(s) and the store's writer) and load generator (1 runtime thread) share the machine"
    );

    // Warm-up: compile cache, connections.
    client.block_on(async {
        send_many(&http, std::slice::from_ref(&base), 500, clients).await?;
        wait_for_succeeded(&store, 500).await
    })?;

    // Throughput: as fast as the clients can send; done when every execution is recorded.
    let before = count_succeeded(&store)?;
    let start = Instant::now();
    let (latencies, accepted) = client.block_on(async {
        let latencies = send_many(&http, std::slice::from_ref(&base), events, clients).await?;
        let accepted = start.elapsed();
        wait_for_succeeded(&store, before + events).await?;
        anyhow::Ok((latencies, accepted))
    })?;
    let done = start.elapsed();
    println!();
    println!("throughput: {events} events, {clients} concurrent clients");
    println!(
        "  accepted (2xx)       {:>10.0} events/s",
        events as f64 / accepted.as_secs_f64()
    );
    println!(
        "  executed + recorded  {:>10.0} events/s",
        events as f64 / done.as_secs_f64()
    );
    println!(
        "  2xx latency          p50 {:.2} ms, p99 {:.2} ms",
        ms(median(&latencies)),
        ms(p99(&latencies))
    );

    // The same pipeline without HTTP: events handed to the reactor directly,
    // to tell the reactor's and store's share from the HTTP layer's.
    let before = count_succeeded(&store)?;
    let start = Instant::now();
    server.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let per = events.div_ceil(clients);
        for c in 0..clients {
            let reactor = reactor.clone();
            let count = per.min(events.saturating_sub(c * per));
            tasks.spawn(async move {
                let mut params = Map::new();
                params.insert("url".into(), json!("bench"));
                for i in 0..count {
                    let payload = json!({"headers": {}, "body": {"n": i}});
                    reactor
                        .dispatch(
                            &TenantId::default_tenant(),
                            "core.st2.webhook",
                            params.clone(),
                            payload,
                            None,
                        )
                        .await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        wait_for_succeeded(&store, before + events).await
    })?;
    println!();
    println!(
        "same pipeline without HTTP: {events} events dispatched in-process by {clients} tasks"
    );
    println!(
        "  executed + recorded  {:>10.0} events/s",
        events as f64 / start.elapsed().as_secs_f64()
    );

    // Latency at a fixed offered rate (open loop).
    let before = count_succeeded(&store)?;
    let total = rate * seconds as usize;
    let first_id = squall_core::ExecutionId::generate();
    let http_latencies = client.block_on(async {
        let latencies = paced(&http, &base, rate, total).await?;
        wait_for_succeeded(&store, before + total).await?;
        anyhow::Ok(latencies)
    })?;
    let end_to_end = end_to_end_latencies(&store, &first_id)?;
    println!();
    println!("latency at {rate} events/s offered for {seconds} s ({total} events)");
    println!(
        "  2xx (trigger instance durable)        p50 {:.2} ms, p99 {:.2} ms",
        ms(median(&http_latencies)),
        ms(p99(&http_latencies))
    );
    if !end_to_end.is_empty() {
        println!(
            "  end to end (event -> execution recorded) p50 {:.2} ms, p99 {:.2} ms ({} executions)",
            ms(median(&end_to_end)),
            ms(p99(&end_to_end)),
            end_to_end.len()
        );
    }
    let _ = stop.send(());
    server.block_on(reactor.shutdown(Duration::from_secs(5)));
    Ok(ExitCode::SUCCESS)
}

/// The server side of `bench webhooks`, running on its own runtime.
struct Bench {
    reactor: Reactor,
    store: Store,
    /// The bench webhook's URL.
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// The server, on `database` (PostgreSQL) if given, else on a SQLite file
/// in `dir`, with `tenant_max_running` if given.
async fn start_server(
    dir: &Path,
    packs: Vec<PathBuf>,
    database: Option<&str>,
    tenant_max_running: Option<usize>,
) -> anyhow::Result<Bench> {
    let hooks = dir.join("benchhooks");
    std::fs::create_dir_all(hooks.join("rules"))?;
    std::fs::write(
        hooks.join("pack.yaml"),
        "name: benchhooks\nversion: 1.0.0\ndescription: bench\nauthor: bench\n",
    )?;
    std::fs::write(
        hooks.join("rules/noop.yaml"),
        "name: noop\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: bench}}\ncriteria: {trigger.body.n: {type: exists}}\naction: {ref: core.noop}\n",
    )?;
    let mut all_packs = packs;
    all_packs.push(hooks);
    let set = PackSet::load(&all_packs)?;
    let store = match database {
        // As a serving node writes: its executions claimed in its name
        // (for longer than the run, which renews nothing).
        Some(url) => {
            let claims = std::time::Duration::from_secs(3600);
            Store::connect_as(url, 16, None, "bench", claims).await?
        }
        None => Store::open(&dir.join("squall.db"), &StoreConfig::default())?,
    };
    let sandbox = Arc::new(open_sandbox(dir, 1000)?);
    let runner = Runner::new(sandbox, store.clone(), Arc::new(set), Limits::default());
    let config = ReactorConfig {
        tenant_max_running,
        ..ReactorConfig::default()
    };
    let reactor = Reactor::start(store.clone(), runner, &config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/v1/webhooks/bench", listener.local_addr()?);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = squall_api::AppState::new(reactor.clone());
    tokio::spawn(squall_api::serve(state, listener, async {
        let _ = stop_rx.await;
    }));
    Ok(Bench {
        reactor,
        store,
        base,
        stop,
    })
}

/// POST `n` webhook events from `clients` clients, each client sending to
/// `urls` in turn; each one's time to its 202.
pub(crate) async fn send_many(
    http: &reqwest::Client,
    urls: &[String],
    n: usize,
    clients: usize,
) -> anyhow::Result<Vec<Duration>> {
    let per = n.div_ceil(clients);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, urls) = (http.clone(), urls.to_vec());
        let count = per.min(n.saturating_sub(c * per));
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for i in 0..count {
                let t = Instant::now();
                let url = &urls[(c + i) % urls.len()];
                let r = http.post(url).json(&json!({"n": i})).send().await?;
                if r.status().as_u16() != 202 {
                    bail!("webhook answered {}", r.status());
                }
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

async fn paced(
    http: &reqwest::Client,
    url: &str,
    rate: usize,
    total: usize,
) -> anyhow::Result<Vec<Duration>> {
    let per_ms = rate as f64 / 1000.0;
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * 1000.0 * per_ms) as usize).min(total);
        while sent < due {
            let (http, url) = (http.clone(), url.to_owned());
            tasks.spawn(async move {
                let t = Instant::now();
                let r = http.post(&url).json(&json!({"n": sent})).send().await?;
                anyhow::ensure!(
                    r.status().as_u16() == 202,
                    "webhook answered {}",
                    r.status()
                );
                anyhow::Ok(t.elapsed())
            });
            sent += 1;
        }
    }
    let mut all = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        all.push(r??);
    }
    Ok(all)
}

pub(crate) fn count_succeeded(store: &Store) -> anyhow::Result<usize> {
    let mut f = ExecutionFilter::for_tenant(TenantId::default_tenant());
    f.status = Some(ExecutionStatus::Succeeded);
    f.action = Some("core.noop".parse()?);
    f.limit = 1;
    Ok(store.list_executions_counted(&f)?.1 as usize)
}

pub(crate) async fn wait_for_succeeded(store: &Store, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while count_succeeded(store)? < n {
        if Instant::now() > deadline {
            bail!("executions did not finish within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// For executions created after `since`: end timestamp − trigger instance
/// occurrence time, both as recorded.
fn end_to_end_latencies(
    store: &Store,
    since: &squall_core::ExecutionId,
) -> anyhow::Result<Vec<Duration>> {
    let mut f = ExecutionFilter::for_tenant(TenantId::default_tenant());
    f.action = Some("core.noop".parse()?);
    f.limit = 1_000_000;
    let (executions, _) = store.list_executions_counted(&f)?;
    let mut out = Vec::new();
    for e in executions.iter().filter(|e| e.id > *since) {
        let Some(ti_id) = &e.trigger_instance_id else {
            continue;
        };
        let ti = store
            .get_trigger_instance(&e.tenant, ti_id)?
            .context("trigger instance of an execution")?;
        let (Some(start), Some(end)) = (
            parse_rfc3339(&ti.occurrence_time),
            e.end_timestamp.as_deref().and_then(parse_rfc3339),
        ) else {
            continue;
        };
        if let Ok(d) = Duration::try_from(end - start) {
            out.push(d);
        }
    }
    Ok(out)
}
