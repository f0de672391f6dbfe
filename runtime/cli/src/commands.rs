//! The client-side verbs: run, execution list/get, pack build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Map;
use squall_core::manifest::PackManifest;
use squall_core::{ActionRef, Execution, ExecutionId, ExecutionStatus, TenantId};
use squall_reactor::{PackSet, RunRequest, Runner};
use squall_sandbox::{Limits, Sandbox, SandboxConfig};
use squall_store::{ExecutionFilter, Store, StoreConfig};

use crate::client::{self, Client, Remote};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The action, as `<pack>.<action>` (e.g. core.echo).
    action: String,
    /// Parameters as `key=value`.
    params: Vec<String>,
    /// A pack directory, or a directory of packs (repeatable). Default: ./packs
    #[arg(long = "packs", value_name = "DIR")]
    packs: Vec<PathBuf>,
    /// Print the whole execution record as JSON.
    #[arg(long)]
    json: bool,
    /// Trace tag recorded with the execution.
    #[arg(long)]
    trace_tag: Option<String>,
    /// With --url: print the requested execution and return at once.
    #[arg(short = 'a', long = "async")]
    no_wait: bool,
    /// With --url: milliseconds to wait before running.
    #[arg(long)]
    delay: Option<u64>,
    /// Build the action's pack first (its `build.command`, as `squall pack
    /// build` does). Without it, a pack whose sources are newer than the
    /// component gets a warning.
    #[arg(long, conflicts_with_all = ["no_wait", "delay"])]
    build: bool,
    #[command(flatten)]
    egress: EgressArgs,
}

/// Outbound HTTP settings (`serve` and in-process `run`).
#[derive(Debug, Args)]
pub(crate) struct EgressArgs {
    /// Let guests reach loopback, private (RFC 1918), link-local and
    /// unique-local addresses — for tests and on-premise services. Off by
    /// default: an allowed name that resolves there is refused.
    #[arg(long)]
    allow_private_network: bool,
    /// Let `*` in a pack's allowed_hosts mean any host.
    #[arg(long)]
    allow_any_host: bool,
    /// Seconds to connect to an HTTP server.
    #[arg(long, default_value_t = 10, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    http_connect_timeout: u64,
    /// Seconds from sending an HTTP request to the end of its response.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    http_timeout: u64,
    /// Largest HTTP response a guest may receive, in MiB.
    #[arg(long, default_value_t = 16, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    http_max_response_mib: u64,
}

impl EgressArgs {
    pub(crate) fn egress(&self) -> squall_sandbox::Egress {
        squall_sandbox::Egress {
            allow_private: self.allow_private_network,
            allow_any_host: self.allow_any_host,
            connect_timeout: Duration::from_secs(self.http_connect_timeout),
            total_timeout: Duration::from_secs(self.http_timeout),
            max_response_bytes: usize::try_from(self.http_max_response_mib << 20)
                .unwrap_or(usize::MAX),
            ..squall_sandbox::Egress::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Store a value, encrypted with --encrypt under the server's key.
    Set {
        name: String,
        value: String,
        #[arg(long)]
        encrypt: bool,
        /// Seconds until it expires.
        #[arg(long)]
        ttl: Option<u32>,
        /// st2kv.system (the tenant's) or st2kv.user (the key's user's).
        #[arg(long, default_value = "st2kv.system")]
        scope: String,
    },
    /// Print a value; a secret needs --decrypt.
    Get {
        name: String,
        #[arg(long)]
        decrypt: bool,
        #[arg(long, default_value = "st2kv.system")]
        scope: String,
    },
    /// List keys (values of secrets masked unless --decrypt).
    List {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        decrypt: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete a key.
    Delete {
        name: String,
        #[arg(long, default_value = "st2kv.system")]
        scope: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Delete what ended (or was recorded) more than this many days ago.
    #[arg(long, value_name = "N")]
    days: f64,
    /// Rows deleted per write.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExecutionCommand {
    /// List executions, newest first.
    List {
        /// Only this action (e.g. core.echo).
        #[arg(long)]
        action: Option<String>,
        /// Only this status (e.g. failed).
        #[arg(long)]
        status: Option<String>,
        /// How many to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one execution.
    Get {
        /// The execution id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel an execution (needs --url): one waiting ends canceled, a
    /// running one is interrupted.
    Cancel {
        /// The execution id.
        id: String,
    },
    /// Run an execution's action again with its parameters, `key=value`
    /// overrides on top; for a workflow, `--tasks` re-runs it from those
    /// tasks, keeping what ran before them (needs --url).
    ReRun {
        /// The execution id.
        id: String,
        /// Parameter overrides as `key=value` (values parsed as JSON when
        /// they are JSON, else taken as strings).
        params: Vec<String>,
        /// Workflow tasks to re-run from.
        #[arg(long, num_args = 1..)]
        tasks: Vec<String>,
    },
    /// Pause a workflow: `pausing` while tasks run, then `paused` (needs
    /// --url).
    Pause {
        /// The workflow's execution id.
        id: String,
    },
    /// Resume a paused workflow (needs --url).
    Resume {
        /// The workflow's execution id.
        id: String,
    },
    /// Print an execution's stdout, stderr and log lines; with --follow
    /// (and --url) keep printing until it completes.
    Tail {
        /// The execution id.
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TraceCommand {
    /// Show everything recorded under a trace tag.
    Get {
        /// The trace tag (the webhook's St2-Trace-Tag, or the trigger instance id).
        tag: String,
    },
}

pub(crate) fn trace(
    data_dir: &Path,
    remote: &Remote,
    cmd: TraceCommand,
) -> anyhow::Result<ExitCode> {
    let TraceCommand::Get { tag } = cmd;
    if let Some(client) = remote.client()? {
        let t = runtime()?
            .block_on(client.get_json(&format!("/api/v1/traces/{}", url_component(&tag))))?;
        println!("trace: {tag}");
        let list = |key: &str| t[key].as_array().cloned().unwrap_or_default();
        for ti in list("trigger_instances") {
            println!(
                "  trigger instance {}  {}",
                ti["object_id"].as_str().unwrap_or_default(),
                ti["ref"].as_str().unwrap_or_default()
            );
        }
        for re in list("rules") {
            println!(
                "  rule {}  -> execution {}",
                re["ref"].as_str().unwrap_or_default(),
                re["execution_id"].as_str().unwrap_or("(none)")
            );
        }
        for e in list("action_executions") {
            println!(
                "  execution {}  {}  {}",
                e["object_id"].as_str().unwrap_or_default(),
                e["ref"].as_str().unwrap_or_default(),
                e["status"].as_str().unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(data_dir)?;
    let trace = store.trace(&TenantId::default_tenant(), &tag)?;
    if trace.trigger_instances.is_empty() && trace.executions.is_empty() {
        bail!("trace '{tag}' not found");
    }
    println!("trace: {tag}");
    for ti in &trace.trigger_instances {
        println!(
            "  trigger instance {}  {}  {}",
            ti.id,
            ti.trigger_type,
            ti.status.as_str()
        );
    }
    for re in &trace.rule_enforcements {
        let outcome = match (&re.execution_id, &re.failure_reason) {
            (Some(id), _) => format!("-> execution {id}"),
            (None, Some(reason)) => format!("failed: {reason}"),
            (None, None) => String::new(),
        };
        println!(
            "  rule {}  on {}  {outcome}",
            re.rule_ref, re.trigger_instance_id
        );
    }
    for e in &trace.executions {
        println!("  execution {}  {}  {}", e.id, e.action, e.status);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub(crate) enum PackCommand {
    /// Build a pack's components with the `build.command` of its pack.yaml,
    /// then check that every action's entry point exists.
    ///
    /// The command runs in the pack directory with CARGO_TARGET_DIR set to
    /// the pack's `target/`, so the `.wasm` files land in `build.output`.
    Build {
        /// The pack directories, built in order.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Install a pack on the server given by --url, for the API key's
    /// tenant: a built pack directory (its metadata and components are
    /// archived) or a .tar.gz of one. Replaces the installed version, if
    /// any; executions already running finish on the old one.
    Install {
        path: PathBuf,
        /// Print the installed pack as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Uninstall a pack installed through the API. Rules made through the
    /// API that use its actions stay, disabled, saying why.
    Remove { pack: String },
    /// List the packs of the API key's tenant.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one pack.
    Get {
        pack: String,
        #[arg(long)]
        json: bool,
    },
    /// Read the server's own packs (`squall serve --packs`) again and put
    /// them in force, on the server given by --url (admin; StackStorm's
    /// `st2ctl reload`). Executions already running finish on the version
    /// they started on; the packs' sensors restart. A pack that fails its
    /// checks keeps the version in force. `kill -HUP` of the server does
    /// the same.
    Reload {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a new pack that builds, runs and passes its own tests at once:
    /// an action, a sensor, a rule, a config schema, tests and a README,
    /// in Python (the default, as for StackStorm) or Rust.
    ///
    /// Example: squall pack new mypack && squall pack build mypack && squall pack test mypack
    New(crate::scaffold::NewArgs),
    /// Run a pack's tests (YAML cases in its `tests/`) offline, with no
    /// server: actions with given parameters, kv and config; rules against
    /// trigger instances; sensors polling given files. Prints one line per
    /// case and exits 1 when one fails. Build the pack first.
    ///
    /// Example: squall pack test packs/pyexamples
    Test {
        /// The pack directory.
        dir: PathBuf,
        /// Other packs the pack's rules and workflows use (core, ...).
        #[arg(long = "packs", value_name = "DIR")]
        packs: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    open_store_with(data_dir, &StoreConfig::default(), COMMAND_CONNECTIONS, None)
}

/// The PostgreSQL database given by `--database` (or
/// `SQUALL_DATABASE_URL`), set once at start; without one the store is the
/// SQLite file in the data directory.
pub(crate) static DATABASE: std::sync::OnceLock<Option<Database>> = std::sync::OnceLock::new();

/// Where the store is when it is PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    pub(crate) url: String,
    /// Certificates to trust for TLS besides the public roots.
    pub(crate) ca: Option<PathBuf>,
}

/// Connections a command other than `serve` opens to PostgreSQL.
const COMMAND_CONNECTIONS: usize = 2;

/// The store: the SQLite file in `data_dir` with `config`, or the
/// PostgreSQL database of `--database` with at most `connections`
/// connections, writing as `node` when given (a serving node's name, whose
/// executions are claimed in it, and how long its claims last unrenewed).
pub(crate) fn open_store_with(
    data_dir: &Path,
    config: &StoreConfig,
    connections: usize,
    node: Option<(&str, std::time::Duration)>,
) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create data directory '{}'", data_dir.display()))?;
    let store = match DATABASE.get().cloned().flatten() {
        // On a thread of its own, with a runtime of its own: callers may
        // be inside a runtime already, where none can be started.
        Some(Database { url, ca }) => std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<Store> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let ca = ca.as_deref();
                    let connected = match node {
                        Some((node, ttl)) => {
                            Store::connect_as(&url, connections, ca, node, ttl).await
                        }
                        None => Store::connect_with_ca(&url, connections, ca).await,
                    };
                    connected.with_context(|| {
                        format!(
                            "failed to open the database at {}",
                            squall_store::pg::redacted(&url)
                        )
                    })
                })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?,
        None => Store::open(&data_dir.join("squall.db"), config)?,
    };
    Ok(store.with_secret_key(secret_key(data_dir)?))
}

/// The datastore key: `SQUALL_SECRET_KEY` (64 hex digits), else
/// `<data dir>/secret.key`, created (mode 0600) on first use.
fn secret_key(data_dir: &Path) -> anyhow::Result<squall_store::SecretKey> {
    let decode = |hex_text: &str, from: &str| -> anyhow::Result<squall_store::SecretKey> {
        let bytes: [u8; 32] = hex::decode(hex_text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow::anyhow!("{from} must hold 64 hex digits (a 256-bit key)"))?;
        Ok(squall_store::SecretKey::from_bytes(&bytes))
    };
    if let Ok(text) = std::env::var("SQUALL_SECRET_KEY") {
        return decode(&text, "SQUALL_SECRET_KEY");
    }
    let path = data_dir.join("secret.key");
    if !path.exists() {
        // Written whole to a private temporary file, then linked into place:
        // a concurrent start finds either no key or a complete one.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = data_dir.join(format!("secret.key.{}.tmp", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("failed to create '{}'", tmp.display()))?;
        writeln!(file, "{}", hex::encode(squall_store::SecretKey::generate()))?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("failed to create '{}'", path.display()));
            }
        }
        let _ = std::fs::remove_file(&tmp);
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "'{}' can be read by others (mode {:o}); make it private: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read '{}'", path.display()))?;
    decode(&text, &path.display().to_string())
}

pub(crate) fn open_sandbox(data_dir: &Path, max_instances: u32) -> anyhow::Result<Sandbox> {
    let mut config = SandboxConfig::new(data_dir.join("cache"));
    config.max_instances = max_instances;
    Ok(Sandbox::new(&config)?)
}

pub(crate) fn pack_paths(given: Vec<PathBuf>) -> Vec<PathBuf> {
    if given.is_empty() {
        vec![PathBuf::from("packs")]
    } else {
        given
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub(crate) fn run(data_dir: &Path, remote: &Remote, args: RunArgs) -> anyhow::Result<ExitCode> {
    let action: ActionRef = args.action.parse()?;
    if let Some(client) = remote.client()? {
        if args.build {
            bail!(
                "--build builds a local pack; a server runs the packs it has (install a new build with `squall pack install`)"
            );
        }
        let e = runtime()?.block_on(client.run(
            &args.action,
            &args.params,
            args.trace_tag,
            args.delay,
            !args.no_wait,
        ))?;
        return client::print(&e, args.json, true);
    }
    if args.no_wait || args.delay.is_some() {
        bail!("--async and --delay need a server: pass --url or set SQUALL_URL");
    }
    let paths = pack_paths(args.packs);
    let mut packs = load_for_run(&paths, &action, true)?;
    if args.build {
        let dir = packs.action(&action)?.0.dir.clone();
        run_build(&dir)?;
        packs = load_for_run(&paths, &action, false)?;
    }
    let (pack, meta) = packs.action(&action)?;
    if meta.runner == squall_core::manifest::RunnerType::Inquirer {
        bail!(
            "'{action}' asks a person and waits for the response, which comes through a server's API: run it on a server (`squall --url URL run {action}`), then answer it with `squall inquiry respond`"
        );
    }
    // (Not after --build: a build that had nothing to do leaves the
    // component's time as it was.)
    if let Some((source, component)) = stale_sources(pack, meta).filter(|_| !args.build) {
        eprintln!(
            "warning: {} is newer than {}: the action runs the old build (`squall pack build {}`, or `squall run --build`)",
            source.display(),
            component.display(),
            pack.dir.display()
        );
    }
    let mut parameters = Map::new();
    for pair in &args.params {
        let Some((name, text)) = pair.split_once('=') else {
            bail!("parameter '{pair}' is not in key=value form");
        };
        let value = meta
            .parameters
            .coerce_cli(name, text)
            .map_err(|e| anyhow::anyhow!("invalid parameters for '{action}': {e}"))?;
        parameters.insert(name.to_owned(), value);
    }
    let workflow = meta.runner == squall_core::manifest::RunnerType::Orquesta;
    let store = open_store(data_dir)?;
    let sandbox = Arc::new(open_sandbox(data_dir, 16)?);
    // In this process, as the user who runs it: `core.local` runs what
    // that user could type. (A server turns host runners on per tenant.)
    let runner = Runner::new(sandbox, store.clone(), Arc::new(packs), Limits::default())
        .with_egress(args.egress.egress())
        .with_host_runners(squall_reactor::HostRunners::for_tenants([
            TenantId::default_tenant(),
        ]));
    let mut req = RunRequest::new(TenantId::default_tenant(), action, parameters);
    req.trace_tag = args.trace_tag;
    let execution = if workflow {
        runtime()?.block_on(run_workflow(runner, req))?
    } else {
        runtime()?.block_on(runner.run(req))?
    };
    print_execution(&execution, args.json)?;
    if workflow && !args.json {
        let mut lines = Vec::new();
        local_task_lines(&store, &execution.tenant, &execution.id, 0, &mut lines)?;
        print_task_table(&lines);
    }
    Ok(if execution.status == ExecutionStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run a workflow to its end in a reactor of its own: no rules, sensors or
/// timers, only the workflow and its tasks.
pub(crate) async fn run_workflow(runner: Runner, req: RunRequest) -> anyhow::Result<Execution> {
    let config = squall_reactor::ReactorConfig {
        standalone: true,
        workers: 64,
        ..Default::default()
    };
    let store = runner.store().clone();
    let reactor = squall_reactor::Reactor::start(store.clone(), runner, &config).await?;
    let mut events = reactor.subscribe();
    let started = reactor.request_execution(req).await?;
    let ended = loop {
        let now = store
            .get_execution(&started.tenant, &started.id)?
            .with_context(|| format!("execution {} vanished", started.id))?;
        if now.status.is_completed() {
            break now;
        }
        // Paused in this process: an inquiry waits, and no one here can
        // answer it.
        if now.status == squall_core::ExecutionStatus::Paused {
            reactor.shutdown(Duration::from_secs(5)).await;
            bail!(
                "workflow execution {} is paused: a task waits for a person's response (core.ask), which comes through a server's API; run the workflow on a server (`squall --url URL run ...`)",
                now.id
            );
        }
        // An event, or a look at the record now and then (events may be
        // missed by a slow reader).
        let _ = tokio::time::timeout(Duration::from_millis(250), events.recv()).await;
    };
    reactor.shutdown(Duration::from_secs(5)).await;
    Ok(ended)
}

/// One line of a workflow's task table.
pub(crate) struct TaskLine {
    pub(crate) depth: usize,
    pub(crate) id: String,
    pub(crate) status: String,
    /// The task's name, with `[item]` for an item of a with-items task.
    pub(crate) task: String,
    pub(crate) action: String,
    pub(crate) start: String,
}

impl TaskLine {
    /// A task execution's line from its record's JSON (the API's shape).
    pub(crate) fn of(e: &serde_json::Value, depth: usize) -> Self {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let o = &e["context"]["orquesta"];
        let item = o["item_id"]
            .as_u64()
            .map(|i| format!("[{i}]"))
            .unwrap_or_default();
        Self {
            depth,
            id: text(&e["id"]),
            status: text(&e["status"]),
            task: format!("{}{item}", text(&o["task_name"])),
            action: text(&e["action"]["ref"]),
            start: text(&e["start_timestamp"]),
        }
    }
}

/// A workflow's tasks as `st2 execution get` shows them: id, status, task,
/// action and start, a subworkflow's tasks indented below its own.
pub(crate) fn print_task_table(lines: &[TaskLine]) {
    if lines.is_empty() {
        return;
    }
    println!(
        "{:<36}  {:<10}  {:<20}  {:<24}  START",
        "ID", "STATUS", "TASK", "ACTION"
    );
    for l in lines {
        println!(
            "{:<36}  {:<10}  {:<20}  {:<24}  {}",
            format!("{}+ {}", "  ".repeat(l.depth), l.id),
            l.status,
            l.task,
            l.action,
            l.start
        );
    }
}

/// The task table of a workflow in the local store, subworkflows nested.
fn local_task_lines(
    store: &Store,
    tenant: &TenantId,
    id: &ExecutionId,
    depth: usize,
    out: &mut Vec<TaskLine>,
) -> anyhow::Result<()> {
    for t in store.children(tenant, id)? {
        let shape = serde_json::json!({
            "id": t.id.as_str(),
            "status": t.status.as_str(),
            "context": t.context,
            "action": {"ref": t.action.to_string()},
            "start_timestamp": t.start_timestamp,
        });
        out.push(TaskLine::of(&shape, depth));
        local_task_lines(store, tenant, &t.id, depth + 1, out)?;
    }
    Ok(())
}

/// A workflow's task table from `/children?depth=-1` (descendants in
/// the order they were made): each nested under its parent.
pub(crate) fn remote_task_lines(root: &str, all: &[serde_json::Value]) -> Vec<TaskLine> {
    fn walk(parent: &str, all: &[serde_json::Value], depth: usize, out: &mut Vec<TaskLine>) {
        for e in all.iter().filter(|e| e["parent"] == parent) {
            out.push(TaskLine::of(e, depth));
            if let Some(id) = e["id"].as_str() {
                walk(id, all, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, all, 0, &mut out);
    out
}

/// The packs at `paths` for running `action`: a broken pack is skipped
/// with a line saying why (`report`), unless it is the action's own.
fn load_for_run(paths: &[PathBuf], action: &ActionRef, report: bool) -> anyhow::Result<PackSet> {
    let (packs, refused) = PackSet::load_each(paths);
    // The action's own pack, or one that may be it (its ref unreadable
    // while the action's pack is nowhere else).
    let missing = packs.get(action.pack()).is_none();
    let claims: Vec<Option<String>> = refused.iter().map(|r| refused_pack_ref(&r.dir)).collect();
    let own = claims
        .iter()
        .position(|c| c.as_deref() == Some(action.pack().as_str()))
        .or_else(|| claims.iter().position(|c| c.is_none() && missing));
    if let Some(own) = own {
        bail!("{}", refused[own].error);
    }
    if report {
        for r in &refused {
            eprintln!("warning: pack '{}' skipped: {}", r.dir.display(), r.error);
        }
    }
    Ok(packs)
}

/// The ref a refused pack's `pack.yaml` claims (`ref`, else `name`), if it
/// can be read.
fn refused_pack_ref(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("pack.yaml")).ok()?;
    let yaml = serde_yaml::from_str::<serde_yaml::Value>(&text).ok()?;
    ["ref", "name"]
        .iter()
        .find_map(|k| yaml.get(k).and_then(|v| v.as_str()).map(str::to_owned))
}

/// When `pack` is built from sources and one of them changed after the
/// component of `action` was built: (the newest source, the component).
/// Sources are the pack's files but its metadata (`*.yaml`), components,
/// docs, and what is under `target/`, the build output or hidden
/// directories.
fn stale_sources(
    pack: &squall_reactor::LoadedPack,
    action: &squall_core::manifest::ActionMeta,
) -> Option<(PathBuf, PathBuf)> {
    use squall_core::manifest::RunnerType;
    match action.runner {
        RunnerType::Wasm => {
            pack.manifest.build.as_ref()?;
        }
        RunnerType::PythonScript => {}
        _ => return None,
    }
    let component = pack.component_path(action).ok()?;
    let built = std::fs::metadata(&component).ok()?.modified().ok()?;
    let output = pack.dir.join(pack.manifest.build_output());
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![pack.dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !name.starts_with('.') && name != "target" && path != output {
                    stack.push(path);
                }
                continue;
            }
            let skipped = ["yaml", "yml", "wasm", "cwasm", "md"]
                .iter()
                .any(|ext| path.extension().is_some_and(|e| e == *ext));
            if skipped || !kind.is_file() {
                continue;
            }
            if let Ok(at) = entry.metadata().and_then(|m| m.modified())
                && at > built
                && newest.as_ref().is_none_or(|(n, _)| at > *n)
            {
                newest = Some((at, path));
            }
        }
    }
    newest.map(|(_, source)| (source, component))
}

pub(crate) fn execution(
    data_dir: &Path,
    remote: &Remote,
    cmd: ExecutionCommand,
) -> anyhow::Result<ExitCode> {
    if let Some(client) = remote.client()? {
        return remote_execution(&client, cmd);
    }
    let store = open_store(data_dir)?;
    let tenant = TenantId::default_tenant();
    match cmd {
        ExecutionCommand::List {
            action,
            status,
            limit,
            json,
        } => {
            let mut filter = ExecutionFilter::for_tenant(tenant);
            filter.limit = limit;
            filter.action = action.map(|a| a.parse()).transpose()?;
            filter.status = status.map(|s| s.parse()).transpose()?;
            let executions = store.list_executions(&filter)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&executions)?);
            } else {
                print_execution_rows(executions.iter().map(|e| {
                    [
                        e.id.as_str().to_owned(),
                        e.action.to_string(),
                        e.status.as_str().to_owned(),
                        e.start_timestamp.clone(),
                    ]
                }));
            }
        }
        ExecutionCommand::Get { id, json } => {
            let id: ExecutionId = id.parse()?;
            let Some(execution) = store.get_execution(&tenant, &id)? else {
                bail!("execution '{id}' not found");
            };
            print_execution(&execution, json)?;
            if !json {
                let mut lines = Vec::new();
                local_task_lines(&store, &tenant, &id, 0, &mut lines)?;
                print_task_table(&lines);
            }
        }
        ExecutionCommand::Tail { id, follow } => {
            if follow {
                bail!("--follow needs a server: pass --url or set SQUALL_URL");
            }
            let id: ExecutionId = id.parse()?;
            let Some(e) = store.get_execution(&tenant, &id)? else {
                bail!("execution '{id}' not found");
            };
            print!("{}{}", e.output.stdout, e.output.stderr);
            for line in &e.output.log {
                println!("[{}] {}", line.level, line.message);
            }
        }
        ExecutionCommand::Cancel { .. }
        | ExecutionCommand::ReRun { .. }
        | ExecutionCommand::Pause { .. }
        | ExecutionCommand::Resume { .. } => {
            bail!("this needs a server: pass --url or set SQUALL_URL");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `squall execution list`'s table: id, action, status, start.
fn print_execution_rows(rows: impl Iterator<Item = [String; 4]>) {
    println!("{:<32}  {:<24}  {:<10}  START", "ID", "ACTION", "STATUS");
    for [id, action, status, start] in rows {
        println!("{id:<32}  {action:<24}  {status:<10}  {start}");
    }
}

/// Pause or resume a workflow through the API.
fn set_status(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    id: &str,
    status: &str,
) -> anyhow::Result<ExitCode> {
    let id: ExecutionId = id.parse()?;
    let e = rt.block_on(client.put_path(
        &format!("/api/v1/executions/{id}"),
        &serde_json::json!({ "status": status }),
    ))?;
    client::print(&e, false, false)
}

fn remote_execution(client: &Client, cmd: ExecutionCommand) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        ExecutionCommand::List {
            action,
            status,
            limit,
            json,
        } => {
            let list = rt.block_on(client.list(action.as_deref(), status.as_deref(), limit))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_execution_rows(list.as_array().into_iter().flatten().map(|e| {
                    ["/id", "/action/ref", "/status", "/start_timestamp"].map(|p| {
                        e.pointer(p)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned()
                    })
                }));
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecutionCommand::Get { id, json } => {
            let id: ExecutionId = id.parse()?;
            let e = rt.block_on(client.get(id.as_str()))?;
            let code = client::print(&e, json, false)?;
            if !json && e["runner"]["name"] == "orquesta" {
                let all = rt.block_on(
                    client.get_json(&format!("/api/v1/executions/{id}/children?depth=-1")),
                )?;
                let all = all.as_array().cloned().unwrap_or_default();
                print_task_table(&remote_task_lines(id.as_str(), &all));
            }
            Ok(code)
        }
        ExecutionCommand::Pause { id } => set_status(client, &rt, &id, "pausing"),
        ExecutionCommand::Resume { id } => set_status(client, &rt, &id, "resuming"),
        ExecutionCommand::Cancel { id } => {
            let id: ExecutionId = id.parse()?;
            client::print(&rt.block_on(client.cancel(id.as_str()))?, false, false)
        }
        ExecutionCommand::ReRun { id, params, tasks } => {
            let id: ExecutionId = id.parse()?;
            if !tasks.is_empty() {
                if !params.is_empty() {
                    bail!("--tasks re-runs a workflow with its own parameters: give no key=value");
                }
                let e = rt.block_on(client.post_path(
                    &format!("/api/v1/executions/{id}/re_run"),
                    &serde_json::json!({ "tasks": tasks }),
                ))?;
                return client::print(&e, false, false);
            }
            let mut overrides = Map::new();
            for pair in &params {
                let Some((name, text)) = pair.split_once('=') else {
                    bail!("parameter '{pair}' is not in key=value form");
                };
                let value = serde_json::from_str(text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()));
                overrides.insert(name.to_owned(), value);
            }
            client::print(
                &rt.block_on(client.re_run(id.as_str(), overrides))?,
                false,
                false,
            )
        }
        ExecutionCommand::Tail { id, follow } => {
            let id: ExecutionId = id.parse()?;
            rt.block_on(client.tail(id.as_str(), follow))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The largest retention accepted, in days (a hundred years).
pub(crate) const MAX_RETENTION_DAYS: f64 = 36_500.0;

/// The datastore: through the server with --url (the API key's tenant and
/// user), else in the local data directory (the default tenant).
pub(crate) fn key(data_dir: &Path, remote: &Remote, cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    use squall_core::kv::{KvEntry, KvScope, KvStore, check_key};
    let rt = runtime()?;
    if let Some(client) = remote.client()? {
        let path = |name: &str| -> anyhow::Result<String> {
            check_key(name)?;
            Ok(format!("/api/v1/keys/{}", url_component(name)))
        };
        match cmd {
            KeyCommand::Set {
                name,
                value,
                encrypt,
                ttl,
                scope,
            } => {
                let body = serde_json::json!({"name": name, "value": value, "secret": encrypt, "ttl": ttl, "scope": scope});
                rt.block_on(client.put_path(&path(&name)?, &body))?;
            }
            KeyCommand::Get {
                name,
                decrypt,
                scope,
            } => {
                let got = rt.block_on(client.get_json(&format!(
                    "{}?decrypt={decrypt}&scope={}",
                    path(&name)?,
                    url_component(&scope)
                )))?;
                println!("{}", got["value"].as_str().unwrap_or_default());
            }
            KeyCommand::List {
                prefix,
                decrypt,
                json,
            } => {
                let list = rt.block_on(client.get_json(&format!(
                    "/api/v1/keys?limit=1000&decrypt={decrypt}&prefix={}",
                    url_component(&prefix)
                )))?;
                let rows = list.as_array().cloned().unwrap_or_default();
                crate::client::print_rows(
                    &rows,
                    &["name", "value", "secret", "scope", "expire_timestamp"],
                    json,
                )?;
            }
            KeyCommand::Delete { name, scope } => {
                rt.block_on(client.delete_path(&format!(
                    "{}?scope={}",
                    path(&name)?,
                    url_component(&scope)
                )))?;
                println!("deleted key {name}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(data_dir)?;
    let tenant = TenantId::default_tenant();
    let system_only = |scope: &str| -> anyhow::Result<()> {
        match KvScope::parse(scope, "") {
            Ok(KvScope::System) => Ok(()),
            _ => bail!(
                "scope '{scope}': the local datastore has st2kv.system only (use --url for user keys)"
            ),
        }
    };
    match cmd {
        KeyCommand::Set {
            name,
            value,
            encrypt,
            ttl,
            scope,
        } => {
            system_only(&scope)?;
            check_key(&name)?;
            let entry = KvEntry {
                key: name,
                value,
                expires_at: ttl.map(|t| squall_core::time::unix_now() + u64::from(t)),
                secret: encrypt,
            };
            rt.block_on(store.set(&tenant, entry))?;
        }
        KeyCommand::Get {
            name,
            decrypt,
            scope,
        } => {
            system_only(&scope)?;
            let Some(entry) = rt.block_on(store.get(&tenant, &name))? else {
                bail!("key '{name}' not found");
            };
            if entry.secret && !decrypt {
                println!("********");
            } else {
                println!("{}", entry.value);
            }
        }
        KeyCommand::List {
            prefix,
            decrypt,
            json,
        } => {
            let entries = rt.block_on(store.kv_list(&tenant, &prefix, decrypt))?;
            let rows: Vec<serde_json::Value> = entries
                .into_iter()
                .filter(|e| KvScope::of_storage_key(&e.key).0 == KvScope::System)
                .map(|e| serde_json::json!({"name": e.key, "value": e.value, "secret": e.secret, "scope": KvScope::SYSTEM}))
                .collect();
            crate::client::print_rows(&rows, &["name", "value", "secret", "scope"], json)?;
        }
        KeyCommand::Delete { name, scope } => {
            system_only(&scope)?;
            if !rt.block_on(store.delete(&tenant, &name))? {
                bail!("key '{name}' not found");
            }
            println!("deleted key {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encode a query or path component (RFC 3986 unreserved kept).
pub(crate) fn url_component(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

pub(crate) fn purge(data_dir: &Path, args: PurgeArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=MAX_RETENTION_DAYS).contains(&args.days) {
        bail!(
            "--days must be a number from 0 to {MAX_RETENTION_DAYS}, got {}",
            args.days
        );
    }
    let store = open_store(data_dir)?;
    let before = squall_core::time::rfc3339_ago(Duration::from_secs_f64(args.days * 86_400.0));
    let (executions, instances, enforcements) =
        runtime()?.block_on(store.purge(&before, args.batch))?;
    println!(
        "purged before {before}: {executions} executions, {instances} trigger instances, {enforcements} rule enforcements"
    );
    Ok(ExitCode::SUCCESS)
}

/// Print an execution the way `st2 execution get` does: a few fields, then
/// the result as YAML.
fn print_execution(e: &Execution, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(e)?);
        return Ok(());
    }
    println!("id: {}", e.id);
    println!("action.ref: {}", e.action);
    println!("status: {}", e.status);
    println!("start_timestamp: {}", e.start_timestamp);
    if let Some(end) = &e.end_timestamp {
        println!("end_timestamp: {end}");
    }
    if e.parameters.as_object().is_some_and(|p| !p.is_empty()) {
        println!(
            "parameters:\n{}",
            indent(&serde_yaml::to_string(&e.parameters)?)
        );
    }
    if let Some(result) = &e.result {
        println!("result:\n{}", indent(&serde_yaml::to_string(result)?));
    }
    for (name, text) in [("stdout", &e.output.stdout), ("stderr", &e.output.stderr)] {
        if !text.is_empty() {
            println!("{name}: |\n{}", indent(text));
        }
    }
    if !e.output.log.is_empty() {
        println!("log:");
        for line in &e.output.log {
            println!("  [{}] {}", line.level, line.message);
        }
    }
    if e.output.truncated {
        println!("output_truncated: true");
    }
    Ok(())
}

pub(crate) fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn pack(data_dir: &Path, remote: &Remote, cmd: PackCommand) -> anyhow::Result<ExitCode> {
    let columns = [
        "ref",
        "version",
        "installed_version",
        "actions",
        "description",
    ];
    match cmd {
        PackCommand::Reload { json } => {
            let client = remote.require("squall pack reload")?;
            let report = runtime()?
                .block_on(client.post_path("/api/v1/packs/register", &serde_json::json!({})))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let names = |key: &str| {
                    report[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let reloaded = names("reloaded");
                println!(
                    "reloaded: {}",
                    if reloaded.is_empty() {
                        "none"
                    } else {
                        &reloaded
                    }
                );
                let removed = names("removed");
                if !removed.is_empty() {
                    println!("removed: {removed}");
                }
                let refused = report["refused"].as_array().cloned().unwrap_or_default();
                for r in &refused {
                    println!(
                        "refused (the version in force, if any, stays): {}: {}",
                        r["dir"].as_str().unwrap_or_default(),
                        r["error"].as_str().unwrap_or_default()
                    );
                }
                if !refused.is_empty() {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        PackCommand::New(args) => return crate::scaffold::new_pack(args),
        PackCommand::Test { dir, packs, json } => {
            return crate::pack_test::test(data_dir, &dir, packs, json);
        }
        PackCommand::Build { dirs } => {
            for dir in dirs {
                build_pack(data_dir, &dir)?;
            }
        }
        PackCommand::Install { path, json } => {
            let client = remote.require("squall pack install")?;
            let archive = if path.is_dir() {
                // A component older than its sources would ship code that
                // is not what the pack's files say.
                let pack = squall_reactor::LoadedPack::load(&path)?;
                let stale = crate::python::stale_worlds(&pack);
                if !stale.is_empty() {
                    eprintln!(
                        "the Python {} of pack '{}' changed since built: building again",
                        stale
                            .iter()
                            .map(|w| format!("{w}s"))
                            .collect::<Vec<_>>()
                            .join(" and "),
                        pack.manifest.pack_ref
                    );
                    crate::python::build_worlds(&pack, &stale)?;
                }
                squall_reactor::install::archive_pack(&path)?
            } else {
                std::fs::read(&path)
                    .with_context(|| format!("failed to read '{}'", path.display()))?
            };
            let pack = runtime()?.block_on(client.upload_pack(archive))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pack)?);
            } else {
                println!(
                    "installed pack {} {} (version {}, {} actions)",
                    pack["ref"].as_str().unwrap_or_default(),
                    pack["version"].as_str().unwrap_or_default(),
                    pack["installed_version"].as_str().unwrap_or_default(),
                    pack["actions"]
                );
                let refused: Vec<&str> = pack["refused_actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["ref"].as_str())
                    .collect();
                if !refused.is_empty() {
                    println!(
                        "refused when run: {} (they run commands on hosts; this server has not turned host runners on for your tenant)",
                        refused.join(", ")
                    );
                }
            }
        }
        PackCommand::Remove { pack } => {
            let pack = squall_core::PackRef::new(pack)?;
            let client = remote.require("squall pack remove")?;
            runtime()?.block_on(client.delete_path(&format!("/api/v1/packs/{pack}")))?;
            println!("removed pack {pack}");
        }
        PackCommand::List { json } => {
            let client = remote.require("squall pack list")?;
            let list = runtime()?.block_on(client.get_json("/api/v1/packs?limit=1000"))?;
            let rows = list.as_array().cloned().unwrap_or_default();
            crate::client::print_rows(&rows, &columns, json)?;
        }
        PackCommand::Get { pack, json } => {
            let pack = squall_core::PackRef::new(pack)?;
            let client = remote.require("squall pack get")?;
            let one = runtime()?.block_on(client.get_json(&format!("/api/v1/packs/{pack}")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&one)?);
            } else {
                crate::client::print_rows(&[one], &columns, false)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Build one pack with its `build.command` and its Python code, then say
/// where each action's and sensor's component is. A component that is not
/// of its entry point's world (an action's `action`, a sensor's `sensor`)
/// is refused here, at build time, not when it first runs. Components are
/// compiled into `data_dir`'s cache on the way.
fn build_pack(data_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    run_build(dir)?;
    let sandbox = open_sandbox(data_dir, 1)?;
    let packs = PackSet::load(&[dir.to_owned()])?;
    for pack in packs.packs() {
        for meta in pack.component_actions() {
            let path = pack.component_path(meta)?;
            sandbox
                .load_action(&path)
                .with_context(|| format!("action '{}'", meta.action_ref))?;
            println!("{}: {}", meta.action_ref, path.display());
        }
        for (_, sensor) in &pack.sensors {
            let path = pack.sensor_component_path(sensor)?;
            sandbox
                .load_sensor(&path)
                .with_context(|| format!("sensor '{}'", sensor.sensor_ref()))?;
            println!("{}: {}", sensor.sensor_ref(), path.display());
        }
    }
    Ok(())
}

/// Build the pack in `dir`: its `build.command` (Rust components), then its
/// Python actions into one component, saying so on stderr.
pub(crate) fn run_build(dir: &Path) -> anyhow::Result<()> {
    if !build_any(dir, &crate::python::ALL_WORLDS)? {
        bail!(
            "{}: no `build` section and no Python actions or sensors: nothing to build (add build.command, e.g. cargo build --target wasm32-wasip2 --release)",
            dir.join("pack.yaml").display()
        );
    }
    Ok(())
}

/// Build what the pack in `dir` has to build: its `build.command`, and
/// its Python components of `worlds` (`squall dev` rebuilds the one whose
/// sources changed). Whether it had anything to build.
pub(crate) fn build_any(dir: &Path, worlds: &[&str]) -> anyhow::Result<bool> {
    let pack = squall_reactor::LoadedPack::load(dir)?;
    let python = crate::python::has_python(&pack);
    if pack.manifest.build.is_none() && !python {
        return Ok(false);
    }
    if let Some(build) = &pack.manifest.build {
        run_build_command(dir, &pack.manifest, build)?;
    }
    crate::python::build_worlds(&pack, worlds)?;
    Ok(true)
}

/// Run the `build.command` of the pack in `dir`.
fn run_build_command(
    dir: &Path,
    manifest: &PackManifest,
    build: &squall_core::manifest::BuildSpec,
) -> anyhow::Result<()> {
    eprintln!("building pack '{}': {}", manifest.pack_ref, build.command);
    let target_dir = std::path::absolute(dir.join("target"))?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&build.command)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        // What the build prints is for the person, not for a `--json`
        // reader of stdout.
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("failed to start `{}`", build.command))?;
    if !status.success() {
        bail!("build of pack '{}' failed ({status})", manifest.pack_ref);
    }
    Ok(())
}
