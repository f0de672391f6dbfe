//! `squall serve`: the HTTP API and the reactor in one process.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use squall_core::TenantId;
use squall_core::template::Templates;
use squall_reactor::{PackSet, PackStore, Reactor, ReactorConfig, Runner, SensorConfig, vet_packs};
use squall_sandbox::Limits;

use crate::commands::{open_sandbox, open_store_with, pack_paths};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9101", env = "SQUALL_LISTEN")]
    listen: SocketAddr,
    /// A pack directory, or a directory of packs, to load at start
    /// (repeatable). Default: ./packs
    #[arg(long = "packs", value_name = "DIR")]
    packs: Vec<PathBuf>,
    /// Executions running at once. A worker also waits for its
    /// execution's start and end to be committed, so this is well above
    /// the number of cores; each running guest may use up to its memory
    /// limit.
    #[arg(long, default_value_t = 256)]
    workers: usize,
    /// Seconds to wait for work in flight at shutdown.
    #[arg(long, default_value_t = 10)]
    shutdown_grace: u64,
    /// Executions one tenant may have scheduled or running at once; more
    /// wait as `delayed`. Default: only --workers limits.
    #[arg(long, value_name = "N")]
    tenant_max_running: Option<usize>,
    /// Task executions (tasks and items) one workflow may start; past it
    /// the workflow fails, as a loop that never ends would.
    #[arg(long, default_value_t = squall_workflow::conductor::DEFAULT_MAX_TASKS)]
    max_workflow_tasks: u64,
    /// Largest action result stored, in MiB; a larger one ends the
    /// execution `failed`, saying so.
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    max_result_mib: usize,
    /// Delete completed executions, trigger instances and rule enforcements
    /// older than this many days, checked every hour (in small batches that
    /// do not hold up the writer). Default: keep everything.
    #[arg(long, value_name = "DAYS")]
    purge_after_days: Option<f64>,
    /// A host directory under which packs' configs may open directories to
    /// their sensors and actions (repeatable). Nothing is opened otherwise;
    /// a pack asking for more is refused, naming the directory.
    #[arg(long = "allow-dir", value_name = "DIR")]
    allow_dirs: Vec<PathBuf>,
    #[command(flatten)]
    egress: crate::commands::EgressArgs,
    #[command(flatten)]
    host: HostArgs,
    /// CPU seconds each process of a server-side build may use. An
    /// uploaded pack with Python actions or sensors but no built
    /// components is built by the server (componentize-py), one build at a
    /// time, and installed when its build succeeds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    build_cpu_seconds: u64,
    /// MiB of memory each process of a server-side build may allocate
    /// (also the largest file it may write).
    #[arg(long, default_value_t = 4096, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(64..))]
    build_memory_mib: u64,
    /// Wall-clock seconds a server-side build may take, from its start
    /// (time waiting for another build to finish is not counted); 0 turns
    /// server-side builds off (uploads must ship their components).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    build_timeout: u64,
    /// Per tenant: MiB of installed packs together; an install beyond it
    /// is refused (HTTP 429). Default: no limit.
    #[arg(long, value_name = "MIB")]
    tenant_max_pack_mib: Option<u64>,
    /// Per tenant: executions requested per minute (API and rules); more
    /// are refused (HTTP 429, or a failed rule enforcement saying so).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    tenant_executions_per_minute: Option<u32>,
    /// Per tenant: MiB of datastore keys and values; a write beyond it is
    /// refused (HTTP 429, or an error to the guest).
    #[arg(long, value_name = "MIB")]
    tenant_max_kv_mib: Option<u64>,
    /// Largest pack upload accepted (POST /api/v1/packs/upload), in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    max_upload_mib: usize,
    /// Mark the web UI's session cookie Secure on every response (browsers
    /// then send it over HTTPS only). Without it, the cookie is Secure when
    /// a proxy in front says the request came over HTTPS
    /// (`X-Forwarded-Proto: https` or `Forwarded: proto=https`). Give it
    /// when a TLS proxy serves the UI.
    #[arg(long)]
    secure_cookies: bool,
    /// On PostgreSQL (--database): seconds the leader lease and a node's
    /// claims on its executions last unrenewed. A node renews them six
    /// times per lifetime; when a node dies, another leads and takes its
    /// executions over within about this long. A node paused, or cut off
    /// from the database, this long stops (exit 75). Give every node the
    /// same value.
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_seconds: u64,
    /// Seconds a single sensor call (setup, poll, a trigger change) may run.
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    sensor_call_timeout: u64,
    /// Shortest time between two commits of the store, in microseconds:
    /// under load, writes that arrive meanwhile are committed together,
    /// which raises throughput at the cost of up to this much latency per
    /// write. 0 commits as soon as the writer is free.
    #[arg(long, default_value_t = 1000, value_name = "MICROSECONDS",
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    commit_interval_us: u64,
    /// Connections to the database given by --database (PostgreSQL): at
    /// most this many at once.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    database_connections: u16,
    /// Hours the event log keeps events on PostgreSQL (--database): a
    /// stream client can resume from `Last-Event-ID` within them.
    #[arg(long, default_value_t = 24, value_name = "HOURS",
          value_parser = clap::value_parser!(u64).range(1..=8760))]
    event_log_hours: u64,
    /// Threads running the HTTP API, the reactor and the guests. Default:
    /// the machine's cores less one (at least 1), leaving a core to the
    /// store's writer thread.
    #[arg(long, value_name = "N", env = "SQUALL_RUNTIME_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    runtime_threads: Option<u16>,
}

/// Host runners: commands on the server's host and over SSH.
#[derive(Debug, Args)]
pub(crate) struct HostArgs {
    /// Tenants whose actions may run commands on hosts (core.local,
    /// core.remote, any local-shell-* or remote-shell-* action),
    /// comma-separated or repeated. Off by default: a tenant not named is
    /// refused when it installs or runs such an action. A single-user
    /// install names `default`.
    #[arg(
        long = "host-runners",
        value_name = "TENANT[,TENANT...]",
        value_delimiter = ','
    )]
    host_runners: Vec<String>,
    /// The user local commands run as (a name, or UID:GID). Needed when the
    /// server runs as root; give `root` to mean it.
    #[arg(long, value_name = "USER")]
    host_runner_user: Option<String>,
    /// Hosts remote commands may reach: names (`*.example.com` for any
    /// subdomain), addresses, CIDR blocks, or `*`; comma-separated or
    /// repeated. Checked before connecting, on the address the name
    /// resolves to for address and CIDR entries. Default: none.
    #[arg(
        long = "ssh-allowed-hosts",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    ssh_allowed_hosts: Vec<String>,
    /// The known-hosts file host keys are checked against.
    /// Default: <data-dir>/ssh_known_hosts.
    #[arg(long, value_name = "FILE")]
    ssh_known_hosts: Option<PathBuf>,
    /// Trust, and record in the known-hosts file, the key of a host not
    /// yet in it. Without it such a host is refused.
    #[arg(long)]
    ssh_trust_on_first_use: bool,
    /// A private key file remote commands log in with when their action
    /// gives no `private_key`.
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// The user remote commands log in as when their action gives no
    /// `username`. Default: --host-runner-user, else the server's user.
    #[arg(long, value_name = "USER")]
    ssh_user: Option<String>,
}

impl HostArgs {
    /// The host runners these flags turn on, or why they cannot be.
    fn settings(
        &self,
        data_dir: &Path,
        api_url: &str,
    ) -> anyhow::Result<squall_reactor::HostRunners> {
        let mut tenants = Vec::new();
        for name in self.host_runners.iter().filter(|t| !t.is_empty()) {
            tenants.push(
                TenantId::new(name.clone())
                    .map_err(|e| anyhow::anyhow!("--host-runners: '{name}': {e}"))?,
            );
        }
        let mut host = squall_reactor::HostRunners::for_tenants(tenants);
        host.api_url = api_url.to_owned();
        host.run_as = self
            .host_runner_user
            .as_deref()
            .map(squall_reactor::RunAs::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--host-runner-user: {e}"))?;
        if host.tenants().next().is_some()
            && host.run_as.is_none()
            && rustix::process::geteuid().is_root()
        {
            anyhow::bail!(
                "--host-runners: this server runs as root, so host commands would too: give --host-runner-user with an unprivileged user (or `root` to mean it)"
            );
        }
        for entry in &self.ssh_allowed_hosts {
            host.ssh.allowed.push(
                squall_reactor::ssh::HostRule::parse(entry)
                    .map_err(|e| anyhow::anyhow!("--ssh-allowed-hosts: {e}"))?,
            );
        }
        host.ssh.known_hosts = Some(
            self.ssh_known_hosts
                .clone()
                .unwrap_or_else(|| data_dir.join("ssh_known_hosts")),
        );
        host.ssh.trust_on_first_use = self.ssh_trust_on_first_use;
        if let Some(path) = &self.ssh_key {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--ssh-key: cannot read {}", path.display()))?;
            host.ssh.key = Some(text.into());
        }
        host.ssh.user = self
            .ssh_user
            .clone()
            .or_else(|| host.run_as.as_ref().map(|u| u.name.clone()));
        Ok(host)
    }
}

/// Threads for tokio when `--runtime-threads` is not given: every core but
/// one, which the store's writer keeps busy under load. On two cores, one
/// runtime thread measured 1.12-1.18x the events per second of two: two
/// and the writer contend for both cores, and tasks moving between them
/// free memory across threads (docs/benchmarks.md). Blocking work (reads
/// for the API, password hashing) runs on tokio's blocking pool besides.
pub(crate) fn default_runtime_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

impl ServeArgs {
    /// Serve `dirs` too (`squall dev`'s packs).
    pub(crate) fn add_packs(&mut self, dirs: &[PathBuf]) {
        self.packs.extend(dirs.iter().cloned());
    }
}

pub(crate) fn serve(data_dir: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    serve_with(data_dir, args, None)
}

/// [`serve`]; with `dev`, those pack directories are watched, rebuilt and
/// reloaded on every change (`squall dev`).
pub(crate) fn serve_with(
    data_dir: &Path,
    args: ServeArgs,
    dev: Option<Vec<PathBuf>>,
) -> anyhow::Result<ExitCode> {
    let threads = args
        .runtime_threads
        .map_or_else(default_runtime_threads, usize::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(run(data_dir, args, dev))
}

async fn run(
    data_dir: &Path,
    args: ServeArgs,
    dev: Option<Vec<PathBuf>>,
) -> anyhow::Result<ExitCode> {
    if let Some(days) = args.purge_after_days
        && !(0.0..=crate::commands::MAX_RETENTION_DAYS).contains(&days)
    {
        anyhow::bail!(
            "--purge-after-days must be a number from 0 to {}, got {days}",
            crate::commands::MAX_RETENTION_DAYS
        );
    }
    let store_config = squall_store::StoreConfig {
        commit_interval: std::time::Duration::from_micros(args.commit_interval_us),
        ..Default::default()
    };
    // On PostgreSQL every node serves, and one leads (docs/cluster.md): a
    // node whose build's schema is newer waits to lead to migrate it.
    let serving = match crate::commands::DATABASE.get().cloned().flatten() {
        Some(db) => {
            let pg = lease_store(&db).await?;
            let ttl = std::time::Duration::from_secs(args.lease_seconds);
            let node = crate::node::Node::new(pg, ttl);
            node.ready().await;
            let member = node.join();
            tracing::info!(node = node.name(), "serving the database");
            Some((member, node))
        }
        None => None,
    };
    let mut store = open_store_with(
        data_dir,
        &store_config,
        usize::from(args.database_connections),
        serving.as_ref().map(|(_, node)| (node.name(), node.ttl())),
    )?
    .with_kv_quota(args.tenant_max_kv_mib.map(|m| m << 20));
    // Nothing is sent to the database once the node's lease statement is
    // overdue (a process paused, or the database out of reach).
    if let Some((_, node)) = &serving {
        store = store.under_lease(node.lease_clock());
    }
    if let Some(pg) = store.postgres() {
        pg.check_secret_key().await?;
    }
    // The streams' reads of the event log, through a pool of their own.
    let event_log = match crate::commands::DATABASE.get().cloned().flatten() {
        Some(db) => Some(
            squall_store::pg::PgStore::connect_with_ca(
                &db.url,
                STREAM_CONNECTIONS,
                db.ca.as_deref(),
            )
            .await?,
        ),
        None => None,
    };
    let sandbox = Arc::new(open_sandbox(data_dir, 2000)?);
    let mut allowed = Vec::new();
    for dir in &args.allow_dirs {
        allowed.push(std::fs::canonicalize(dir).with_context(|| {
            format!("--allow-dir '{}' is not a usable directory", dir.display())
        })?);
    }
    // A broken pack is refused, loudly, and the server runs on the others.
    let fixed_paths = pack_paths(args.packs);
    let (mut packs, mut refused) = PackSet::load_each(&fixed_paths);
    // Packs installed through the API, by tenant; the default tenant's
    // join those of --packs (which they cannot replace).
    let pack_store = PackStore::open(&data_dir.join("packs"))?;
    // On PostgreSQL, the packs installed through any node's API.
    if let Some(pg) = store.postgres() {
        let synced = pack_store.sync_with_database(pg).await?;
        tracing::info!(
            installed = synced.installed.len(),
            removed = synced.removed.len(),
            "packs synced with the database"
        );
    }
    let (installed, bad) = pack_store.load_all();
    refused.extend(bad);
    let mut tenants = Vec::new();
    for (tenant, list) in installed {
        let mut set = if tenant == TenantId::default_tenant() {
            std::mem::take(&mut packs)
        } else {
            PackSet::default()
        };
        for pack in list {
            let dir = pack.dir.clone();
            if let Err(error) = set.add(pack) {
                refused.push(squall_reactor::Refusal { dir, error });
            }
        }
        if tenant == TenantId::default_tenant() {
            packs = set;
        } else {
            tenants.push((tenant, set));
        }
    }
    // Configs set through the API, in place of the packs' config.yaml.
    let (packs, more) =
        packs.with_stored_configs(&store.pack_configs(&TenantId::default_tenant())?);
    refused.extend(more);
    let templates = Templates::new();
    let (packs, more) = vet_packs(packs, &sandbox, &allowed, &templates);
    refused.extend(more);
    let mut others = Vec::new();
    for (tenant, set) in tenants {
        let (set, more) = set.with_stored_configs(&store.pack_configs(&tenant)?);
        refused.extend(more);
        let (set, more) = vet_packs(set, &sandbox, &allowed, &templates);
        refused.extend(more);
        others.push((tenant, set));
    }
    for r in &refused {
        eprintln!("error: pack '{}' refused: {}", r.dir.display(), r.error);
        tracing::error!(pack = %r.dir.display(), error = %r.error, "pack refused");
    }
    tracing::info!(allocator = ?sandbox.allocator(), packs = packs.packs().count(), tenants_with_packs = others.len() + 1, refused = refused.len(), "starting");
    let limits = Limits {
        result_bytes: args.max_result_mib.max(1) << 20,
        ..Limits::default()
    };
    // Every action's component, loaded (and on a cold cache compiled) now on
    // the blocking pool, rather than by its first execution on a runtime
    // thread, which would hold up everything else that thread serves.
    // (A set: a pack's actions usually share one component.)
    let components: std::collections::BTreeSet<PathBuf> = std::iter::once(&packs)
        .chain(others.iter().map(|(_, set)| set))
        .flat_map(|set| set.packs())
        .flat_map(|pack| {
            pack.component_actions()
                .filter_map(|meta| pack.component_path(meta).ok())
        })
        .collect();
    let warming = Arc::clone(&sandbox);
    tokio::task::spawn_blocking(move || {
        for path in components {
            // A component that does not load fails its executions, saying why.
            if let Err(e) = warming.load_action(&path) {
                tracing::debug!(path = %path.display(), error = %e, "action component not loaded ahead");
            }
        }
    });
    let runner = Runner::new(sandbox, store.clone(), Arc::new(packs), limits)
        .with_allowed_dirs(allowed)
        .with_egress(args.egress.egress());
    for (tenant, set) in others {
        runner.registry().replace(tenant, Arc::new(set));
    }
    let mut sensors = SensorConfig::default();
    sensors.limits.call_timeout = Duration::from_secs(args.sensor_call_timeout.max(1));
    // Bound before the reactor starts, so workflows know the API's address
    // (`ctx().st2.api_url`); nothing is accepted until the API serves.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let api_url = format!("http://{addr}/api/v1");
    let runner = runner.with_host_runners(args.host.settings(data_dir, &api_url)?);
    let config = ReactorConfig {
        workers: args.workers.max(1),
        tenant_max_running: args.tenant_max_running,
        sensors,
        pack_store: Some(pack_store),
        quotas: squall_reactor::Quotas {
            pack_bytes: args.tenant_max_pack_mib.map(|m| m << 20),
            executions_per_minute: args.tenant_executions_per_minute,
        },
        max_workflow_tasks: args.max_workflow_tasks.max(1),
        api_url,
        pack_builder: (args.build_timeout > 0).then(|| {
            Arc::new(crate::python::ServerBuilder {
                limits: crate::python::BuildLimits {
                    cpu_seconds: args.build_cpu_seconds,
                    memory_bytes: args.build_memory_mib.saturating_mul(1 << 20),
                    wall: Duration::from_secs(args.build_timeout),
                },
            }) as Arc<dyn squall_reactor::PackBuilder>
        }),
        // On PostgreSQL: the executions this node writes are claimed in its
        // name; those previous nodes left are taken over once their claims
        // ran out (at once after a graceful stop), and from then on the
        // database refuses their writes.
        cluster: serving
            .as_ref()
            .map(|(_, node)| squall_reactor::ClusterNode {
                name: node.name().to_owned(),
                claim_ttl: node.ttl(),
                // Once the node leads: see below.
                leads: false,
            }),
        ..ReactorConfig::default()
    };
    let reactor = Reactor::start(store.clone(), runner, &config).await?;
    // On PostgreSQL, what other nodes (or any writer of the database)
    // change for a tenant comes into force here.
    reactor.follow_changes();
    // What must run once: at once alone (SQLite), once this node leads on
    // PostgreSQL.
    let housekeeping = {
        let (reactor, store) = (reactor.clone(), store.clone());
        let (purge_days, log_hours) = (args.purge_after_days, args.event_log_hours);
        async move {
            reactor.lead();
            if let Some(days) = purge_days {
                tokio::spawn(purge_every_hour(store.clone(), days));
            }
            if let Some(pg) = store.postgres() {
                tokio::spawn(trim_event_log(
                    pg.clone(),
                    Duration::from_secs(log_hours * 3600),
                ));
            }
        }
    };
    match &serving {
        Some((member, _)) => {
            let mut leading = member.leading();
            tokio::spawn(async move {
                if leading.wait_for(|leads| *leads).await.is_ok() {
                    housekeeping.await;
                }
            });
        }
        None => housekeeping.await,
    }
    // Install the signal handlers before announcing the address, so a
    // SIGTERM sent right after the announcement is a graceful stop.
    let shutdown = {
        let (signal, reactor) = (shutdown_signal()?, reactor.clone());
        // An upload being built would hold the graceful stop up to the
        // build's deadline: it is stopped as the stop begins.
        async move {
            signal.await;
            reactor.cancel_builds();
        }
    };
    // SIGHUP reads the --packs packs again (StackStorm's `st2ctl reload`).
    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(reactor.clone(), fixed_paths.clone())?);
    // Watching before the announcement: a change saved right after it is
    // seen.
    if let Some(dirs) = dev {
        crate::dev::start(reactor.clone(), dirs, fixed_paths.clone())?;
    }
    // One line on stdout that scripts and tests can wait for.
    println!("squall: listening on http://{addr}");
    if !store.any_api_key()? {
        eprintln!(
            "squall: no API keys yet; every request needs one. Make the first with: squall --data-dir {} apikey create --role admin",
            data_dir.display()
        );
    }
    std::io::stdout().flush()?;
    let mut state = squall_api::AppState::new(reactor.clone());
    state.upload_limit = args.max_upload_mib.max(1) << 20;
    state.pack_paths = Some(fixed_paths);
    state.secure_cookies = args.secure_cookies;
    state.event_log = event_log;
    squall_api::serve(state, listener, shutdown).await?;
    tracing::info!("stopped accepting requests; finishing work in flight");
    reactor
        .shutdown(Duration::from_secs(args.shutdown_grace))
        .await;
    reactor.release_claims().await;
    if let Some((member, _)) = serving {
        member.leave().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The store of this node's lease on the database. A database that
/// cannot be reached yet is waited for, and said once; a URL, TLS setting
/// or schema that cannot work is an error at once.
async fn lease_store(db: &crate::commands::Database) -> anyhow::Result<squall_store::pg::PgStore> {
    use squall_store::pg::{PgError, PgStore};
    let mut said = false;
    loop {
        match PgStore::connect_for_lease(&db.url, db.ca.as_deref()).await {
            Ok(pg) => return Ok(pg),
            Err(e @ (PgError::Connect(_) | PgError::Query(_))) => {
                if !said {
                    eprintln!(
                        "squall: the database at {} cannot be reached ({e}); trying again",
                        squall_store::pg::redacted(&db.url)
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "failed to open the database at {}",
                    squall_store::pg::redacted(&db.url)
                )));
            }
        }
    }
}

/// Connections the streams read the event log through, on PostgreSQL.
const STREAM_CONNECTIONS: usize = 4;

/// Retention: purge what is older than `days`, now and every hour.
async fn purge_every_hour(store: squall_store::Store, days: f64) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = squall_core::time::rfc3339_ago(Duration::from_secs_f64(days * 86_400.0));
        match store.purge(&before, 1000).await {
            Ok((e, t, r)) => tracing::info!(
                before,
                executions = e,
                trigger_instances = t,
                enforcements = r,
                "purged"
            ),
            Err(e) => tracing::error!(error = %e, "purge failed"),
        }
    }
}

/// The event log's window on PostgreSQL: events older than `keep` go, now
/// and every ten minutes; so do rules' throttle windows that have closed.
async fn trim_event_log(pg: squall_store::pg::PgStore, keep: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match pg.purge_events(keep, 10_000).await {
            Ok(n) => tracing::debug!(purged = n, "event log trimmed"),
            Err(e) => tracing::warn!(error = %e, "could not trim the event log"),
        }
        match pg.purge_throttle_windows().await {
            Ok(n) => tracing::debug!(purged = n, "closed throttle windows forgotten"),
            Err(e) => tracing::warn!(error = %e, "could not forget closed throttle windows"),
        }
    }
}

/// Reload the server's own packs on every SIGHUP, saying on stderr what
/// changed and what was refused. The handler is registered when this is
/// called.
#[cfg(unix)]
fn reload_on_hangup(
    reactor: Reactor,
    paths: Vec<PathBuf>,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            match reactor.reload_packs(&paths).await {
                Ok(report) => print_reload(&report),
                Err(e) => eprintln!("error: reload failed: {e}"),
            }
        }
    })
}

/// What a reload did, on stderr: one line for what is in force, one per
/// refusal.
pub(crate) fn print_reload(report: &squall_reactor::Reloaded) {
    let names = |refs: &[squall_core::PackRef]| {
        refs.iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "squall: packs reloaded: {}{}",
        if report.reloaded.is_empty() {
            "none".to_owned()
        } else {
            names(&report.reloaded)
        },
        if report.removed.is_empty() {
            String::new()
        } else {
            format!("; removed: {}", names(&report.removed))
        }
    );
    for r in &report.refused {
        eprintln!(
            "error: pack '{}' refused (the version in force, if any, stays): {}",
            r.dir.display(),
            r.error
        );
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are registered when this is
/// called, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
