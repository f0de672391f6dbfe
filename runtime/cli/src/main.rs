//! `squall`: the one binary. Run actions, read executions, build packs,
//! measure the sandbox.

#![forbid(unsafe_code)]

mod accounts;
mod bench;
mod bench_api;
mod bench_cluster;
mod bench_dev;
mod bench_executions;
mod bench_http;
mod bench_queue;
mod bench_reactor;
mod bench_sensors;
mod bench_ui;
mod bench_workflows;
mod client;
mod commands;
mod dev;
mod inquiry;
mod node;
mod pack_test;
mod python;
mod remote;
mod rules;
mod scaffold;
mod sensor;
mod serve;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the server allocates and frees many
/// small JSON values and rows from many threads, where glibc spent a fifth
/// of all CPU (free, consolidation, arena locks); see docs/benchmarks.md.
/// On Linux it is built with `override`, so the C code linked in (SQLite)
/// allocates through it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Event-driven automation in the model of StackStorm, with every action a
/// WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "squall", version, about, long_about = None)]
struct Cli {
    /// Directory holding the database and the compile cache.
    #[arg(
        long,
        global = true,
        env = "SQUALL_DATA_DIR",
        default_value = ".squall"
    )]
    data_dir: PathBuf,

    /// A running server to talk to (e.g. http://127.0.0.1:9101): `run` and
    /// `execution` then go through its API instead of this process.
    #[arg(long, global = true, env = "SQUALL_URL")]
    url: Option<String>,

    /// The API key to send to the server given by --url (St2-Api-Key).
    #[arg(long, global = true, env = "SQUALL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// A PostgreSQL database to keep everything in, in place of the SQLite
    /// file in the data directory (postgres://user:password@host:port/db).
    /// `serve`, and the commands that open the store (apikey, user,
    /// tenant, key, purge, run without --url), use it. See docs/cluster.md.
    #[arg(
        long,
        global = true,
        env = "SQUALL_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database: Option<String>,

    /// Certificates (PEM) to trust for the database's TLS, besides the
    /// public roots: a private or managed database's CA. TLS is used when
    /// the URL asks for it (`?sslmode=require`).
    #[arg(long, global = true, env = "SQUALL_DATABASE_CA", value_name = "FILE")]
    database_ca: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the HTTP API, webhooks, timers, rules and workers.
    Serve(Box<serve::ServeArgs>),
    /// Develop packs: serve them on a local server, and on every save
    /// rebuild the pack and swap the new version in (running executions
    /// finish on the old one; sensors restart on the new one). Build
    /// errors, failed executions and sensor failures are printed here.
    ///
    /// Example: squall dev packs/mypack --packs packs/core --listen 127.0.0.1:0
    Dev(Box<dev::DevArgs>),
    /// Rules: test one offline; list, get, create, enable, disable and
    /// delete on a server (--url).
    #[command(subcommand)]
    Rule(rules::RuleCommand),
    /// Actions on a server (--url): list, get.
    #[command(subcommand)]
    Action(remote::ActionCommand),
    /// Trigger types on a server (--url): list, get.
    #[command(subcommand)]
    Trigger(remote::TriggerCommand),
    /// Trigger instances on a server (--url): list, get, re-emit.
    #[command(subcommand, name = "trigger-instance")]
    TriggerInstance(remote::TriggerInstanceCommand),
    /// Run an action and print its execution: in this process, or on the
    /// server given by --url / SQUALL_URL (st2's run: request, then wait).
    ///
    /// Parameters use `st2 run` syntax: `key=value`, converted to the type the
    /// action declares (JSON for arrays and objects, or comma-separated
    /// arrays). `timeout=SECONDS` sets the execution's timeout.
    ///
    /// Example: squall run core.echo message=hello --packs packs
    Run(commands::RunArgs),
    /// Read, cancel, re-run and tail executions (from the local store, or
    /// through the server given by --url / SQUALL_URL).
    #[command(subcommand)]
    Execution(commands::ExecutionCommand),
    /// The datastore, with secrets: through the server with --url, else in
    /// the local data directory.
    #[command(subcommand)]
    Key(commands::KeyCommand),
    /// Delete completed executions, trigger instances and rule enforcements
    /// older than some days from the local store, in small batches.
    Purge(commands::PurgeArgs),
    /// Sensors on a running server (needs --url): state, errors, logs,
    /// enable and disable.
    #[command(subcommand)]
    Sensor(sensor::SensorCommand),
    /// Work with packs.
    #[command(subcommand)]
    Pack(commands::PackCommand),
    /// Read traces: a trigger instance, its enforcements and executions.
    #[command(subcommand)]
    Trace(commands::TraceCommand),
    /// Tenants: create and list (admin).
    #[command(subcommand)]
    Tenant(accounts::TenantCommand),
    /// API keys: create (shown once), list, delete.
    #[command(subcommand)]
    Apikey(accounts::ApikeyCommand),
    /// Users with passwords, for tokens (POST /auth/v1/tokens).
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Inquiries on a server (--url): list, get, respond (st2 inquiry).
    #[command(subcommand)]
    Inquiry(inquiry::InquiryCommand),
    /// Orquesta workflows: inspect a definition without running it.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// Print performance figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// A reader that stops early (`squall execution list | head`) closes the
/// pipe: end quietly, as `head` expects, instead of with a panic message.
/// (Rust ignores SIGPIPE, so the write fails and `println!` panics.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            // 128 + SIGPIPE, as a shell reports a process the signal ended.
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SQUALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    commands::DATABASE
        .set(cli.database.clone().map(|url| commands::Database {
            url,
            ca: cli.database_ca.clone(),
        }))
        .expect("the database is set once, at start");
    let remote = client::Remote {
        url: cli.url.clone(),
        api_key: cli.api_key.clone(),
    };
    let outcome = match cli.command {
        Command::Serve(args) => serve::serve(&cli.data_dir, *args),
        Command::Dev(args) => dev::dev(&cli.data_dir, *args),
        Command::Rule(cmd) => rules::rule(&remote, cmd),
        Command::Action(cmd) => remote::action(&remote, cmd),
        Command::Trigger(cmd) => remote::trigger(&remote, cmd),
        Command::TriggerInstance(cmd) => remote::trigger_instance(&remote, cmd),
        Command::Trace(cmd) => commands::trace(&cli.data_dir, &remote, cmd),
        Command::Run(args) => commands::run(&cli.data_dir, &remote, args),
        Command::Execution(cmd) => commands::execution(&cli.data_dir, &remote, cmd),
        Command::Purge(args) => commands::purge(&cli.data_dir, args),
        Command::Key(cmd) => commands::key(&cli.data_dir, &remote, cmd),
        Command::Sensor(cmd) => sensor::sensor(&remote, cmd),
        Command::Pack(cmd) => commands::pack(&cli.data_dir, &remote, cmd),
        Command::Tenant(cmd) => accounts::tenant(&cli.data_dir, &remote, cmd),
        Command::Apikey(cmd) => accounts::apikey(&cli.data_dir, &remote, cmd),
        Command::User(cmd) => accounts::user(&cli.data_dir, cmd),
        Command::Workflow(cmd) => workflow::workflow(cmd),
        Command::Inquiry(cmd) => inquiry::inquiry(&remote, cmd),
        Command::Bench(cmd) => bench::bench(&cli.data_dir, cmd),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // One line that names the problem; details only with SQUALL_LOG.
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
