//! Host runners: StackStorm's `local-shell-cmd`, `local-shell-script`,
//! `remote-shell-cmd` and `remote-shell-script` (`core.local`,
//! `core.remote`, their `_sudo` forms).
//!
//! A shell on a host is the opposite of a sandbox, so these runners are
//! off unless the operator turns them on per tenant
//! ([`HostRunners::allows`], checked when an action is prepared and when a
//! pack is installed). A local command runs as the configured user, with a
//! scrubbed environment, in a process group of its own that is killed when
//! the command ends, times out or is canceled, so nothing it started is
//! left behind. Output is capped as a guest's is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value, json};
use squall_core::manifest::{ActionMeta, RunnerType};
use squall_core::{ExecutionStatus, TenantId};
use squall_sandbox::{Cancel, LiveOutput};
use tokio::io::AsyncReadExt;

/// `PATH` of a host command.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which tenants may run commands on hosts, and how.
#[derive(Debug, Clone, Default)]
pub struct HostRunners {
    tenants: BTreeSet<TenantId>,
    /// The user local commands run as; `None`: the server's own.
    pub run_as: Option<RunAs>,
    /// What remote commands may reach and how they log in.
    pub ssh: crate::ssh::SshSettings,
    /// The API's address, given to commands as `ST2_ACTION_API_URL`.
    pub api_url: String,
}

impl HostRunners {
    /// Host runners for `tenants` only.
    pub fn for_tenants(tenants: impl IntoIterator<Item = TenantId>) -> Self {
        Self {
            tenants: tenants.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether `tenant` may run host commands.
    pub fn allows(&self, tenant: &TenantId) -> bool {
        self.tenants.contains(tenant)
    }

    /// The tenants that may.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantId> {
        self.tenants.iter()
    }

    /// Why `tenant` may not run `action` (a host runner's), or `None`.
    pub fn refusal(&self, tenant: &TenantId, meta: &ActionMeta) -> Option<String> {
        (meta.runner.is_host() && !self.allows(tenant)).then(|| {
            format!(
                "action '{}' uses the '{}' runner, which runs commands on hosts outside the sandbox: this server has not turned host runners on for tenant '{tenant}' (the operator's `squall serve --host-runners {tenant}`)",
                meta.action_ref,
                meta.runner.as_str()
            )
        })
    }
}

/// A user that local commands run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// A user by name (read from `/etc/passwd`) or as `UID:GID`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        if let Some((uid, gid)) = spec.split_once(':') {
            let number = |s: &str, what: &str| {
                s.parse::<u32>().map_err(|_| {
                    format!("'{spec}': {what} '{s}' is not a number (give a user name or UID:GID)")
                })
            };
            return Ok(Self {
                name: spec.to_owned(),
                uid: number(uid, "uid")?,
                gid: number(gid, "gid")?,
                home: PathBuf::from("/"),
            });
        }
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(|e| format!("cannot read /etc/passwd to find user '{spec}': {e}"))?;
        passwd
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 7 && f[0] == spec).then(|| {
                    Some(Self {
                        name: spec.to_owned(),
                        uid: f[2].parse().ok()?,
                        gid: f[3].parse().ok()?,
                        home: PathBuf::from(f[5]),
                    })
                })?
            })
            .next()
            .ok_or_else(|| format!("no user '{spec}' in /etc/passwd (give a user name or UID:GID)"))
    }
}

/// A host command, worked out when its execution is prepared.
#[derive(Debug, Clone)]
pub(crate) struct HostCommand {
    pub(crate) runner: RunnerType,
    /// The command line, run by `/bin/sh -c` (a script: its quoted path
    /// and arguments).
    pub(crate) line: String,
    pub(crate) sudo: bool,
    pub(crate) cwd: Option<String>,
    pub(crate) env: BTreeMap<String, String>,
    /// Where a remote command runs.
    pub(crate) remote: Option<crate::ssh::Target>,
    /// A remote script's text, read when prepared: it is sent to each
    /// host on the command's stdin, run from a temporary file there, and
    /// removed.
    pub(crate) script: Option<std::sync::Arc<[u8]>>,
}

impl HostCommand {
    /// The command `meta` (a host runner's action of the pack in
    /// `pack_dir`) runs with `params` (resolved, secrets in clear).
    pub(crate) fn prepare(
        meta: &ActionMeta,
        pack_dir: &Path,
        params: &Map<String, Value>,
    ) -> Result<Self, String> {
        let runner = meta.runner;
        let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
        let mut body = None;
        let line = if runner.runs_script() {
            let script = pack_dir.join("actions").join(&meta.entry_point);
            let missing = || {
                format!(
                    "its script '{}' is not in the pack",
                    meta.entry_point.display()
                )
            };
            if !script.is_file() {
                return Err(missing());
            }
            // Remote: the script's copy on the host, `$f` (see
            // `shell_line`); local: the pack's file, run in place.
            let path = if runner.is_remote() {
                body = Some(std::fs::read(&script).map_err(|_| missing())?.into());
                "\"$f\"".to_owned()
            } else {
                quote(&script.to_string_lossy())?
            };
            let args = script_arguments(meta, params)?;
            if args.is_empty() {
                path
            } else {
                format!("{path} {args}")
            }
        } else {
            text("cmd")
                .filter(|c| !c.trim().is_empty())
                .ok_or("parameter 'cmd' is required: the command to run")?
        };
        let env = match params.get("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), value)
                })
                .collect(),
            Some(other) => return Err(format!("parameter 'env' must be an object, got {other}")),
        };
        let remote = if runner.is_remote() {
            Some(crate::ssh::Target::from_parameters(params)?)
        } else {
            None
        };
        Ok(Self {
            runner,
            line,
            sudo: params.get("sudo").and_then(Value::as_bool).unwrap_or(false),
            cwd: text("cwd").filter(|c| !c.is_empty()),
            env,
            remote,
            script: body,
        })
    }

    /// What `/bin/sh -c` runs: the line, under `sudo` when asked. A remote
    /// script is first copied from stdin into a temporary file, `$f`,
    /// removed once it ran.
    pub(crate) fn shell_line(&self) -> Result<String, String> {
        let line = if self.sudo {
            match self.script {
                // `$f` is the outer shell's.
                Some(_) => format!("sudo -n -E -- {}", self.line),
                None => format!("sudo -n -E -- /bin/sh -c {}", quote(&self.line)?),
            }
        } else {
            self.line.clone()
        };
        Ok(match self.script {
            Some(_) => format!(
                "f=$(mktemp) && cat > \"$f\" && chmod 700 \"$f\" && {{ {line}; }}; rc=$?; rm -f \"$f\"; exit $rc"
            ),
            None => line,
        })
    }
}

/// `s` quoted for a POSIX shell.
pub(crate) fn quote(s: &str) -> Result<String, String> {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .map_err(|_| format!("'{}' contains a NUL byte", s.escape_debug()))
}

/// A script's arguments as StackStorm passes them: the action's own
/// parameters without a `position` as `<kwarg_op>name=value` (a `true`
/// boolean as the bare name, `false` and empty values left out), then
/// those with one, in order, booleans as `1`/`0`, arrays comma-joined,
/// objects as JSON.
fn script_arguments(meta: &ActionMeta, params: &Map<String, Value>) -> Result<String, String> {
    let runner_params = meta.runner.parameters();
    let kwarg_op = params
        .get("kwarg_op")
        .and_then(Value::as_str)
        .unwrap_or("--");
    let own = || {
        meta.parameters
            .specs()
            .filter(|s| !runner_params.contains_key(&s.name))
    };
    let mut parts = Vec::new();
    for spec in own().filter(|s| s.position.is_none()) {
        let value = match params.get(&spec.name) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => continue,
            Some(Value::String(s)) if s.is_empty() => continue,
            Some(Value::Bool(true)) => {
                parts.push(quote(&format!("{kwarg_op}{}", spec.name))?);
                continue;
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        parts.push(format!(
            "{}={}",
            quote(&format!("{kwarg_op}{}", spec.name))?,
            quote(&value)?
        ));
    }
    let mut positional: Vec<_> = own().filter_map(|s| Some((s.position?, s))).collect();
    positional.sort_by_key(|(p, _)| *p);
    for (_, spec) in positional {
        let value = match params.get(&spec.name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_owned(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            Some(other) => other.to_string(),
        };
        parts.push(quote(&value)?);
    }
    Ok(parts.join(" "))
}

/// What a host command's run gives its execution.
pub(crate) struct HostOutcome {
    pub(crate) status: ExecutionStatus,
    pub(crate) result: Value,
}

/// StackStorm's shell result: `{stdout, stderr, return_code, succeeded,
/// failed}`, stdout without its last line break and parsed as JSON when
/// it parses.
pub(crate) fn shell_result(stdout: &str, stderr: &str, code: i64) -> Value {
    let strip = |s: &str| {
        s.strip_suffix("\r\n")
            .or_else(|| s.strip_suffix('\n'))
            .unwrap_or(s)
            .to_owned()
    };
    let out = strip(stdout);
    let parsed = serde_json::from_str::<Value>(&out)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
        .unwrap_or(Value::String(out));
    json!({
        "stdout": parsed,
        "stderr": strip(stderr),
        "return_code": code,
        "succeeded": code == 0,
        "failed": code != 0,
    })
}

/// The environment of a host command: nothing of the server's, then
/// `PATH`, `HOME`, `USER`, `LANG`, StackStorm's `ST2_ACTION_*`, then the
/// action's `env`.
pub(crate) fn environment(
    cmd: &HostCommand,
    run: &HostRun<'_>,
    home: &Path,
    user: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), PATH.to_owned());
    env.insert("HOME".to_owned(), home.to_string_lossy().into_owned());
    env.insert("USER".to_owned(), user.to_owned());
    env.insert("LOGNAME".to_owned(), user.to_owned());
    env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
    env.insert("ST2_ACTION_PACK_NAME".to_owned(), run.pack.to_owned());
    env.insert(
        "ST2_ACTION_EXECUTION_ID".to_owned(),
        run.execution_id.to_owned(),
    );
    env.insert("ST2_ACTION_API_URL".to_owned(), run.api_url.to_owned());
    env.extend(cmd.env.clone());
    env
}

/// One run of a host command: what it needs beside the command.
pub(crate) struct HostRun<'a> {
    pub(crate) execution_id: &'a str,
    pub(crate) pack: &'a str,
    pub(crate) api_url: &'a str,
    pub(crate) timeout: Duration,
    pub(crate) cancel: &'a Cancel,
    pub(crate) output: &'a LiveOutput,
    /// Bytes of stdout and of stderr kept (per host for a remote command).
    pub(crate) output_cap: usize,
}

/// How a process ended.
enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut,
    Canceled,
}

/// Run `cmd` on this host as `run_as` (or the server's user).
pub(crate) async fn run_local(
    cmd: &HostCommand,
    run_as: Option<&RunAs>,
    run: HostRun<'_>,
) -> HostOutcome {
    let failed = |why: String| HostOutcome {
        status: ExecutionStatus::Failed,
        result: json!({"error": why, "stdout": "", "stderr": "", "return_code": null, "succeeded": false, "failed": true}),
    };
    let line = match cmd.shell_line() {
        Ok(line) => line,
        Err(why) => return failed(why),
    };
    let (user, home) = match run_as {
        Some(u) => (u.name.clone(), u.home.clone()),
        None => (
            std::env::var("USER").unwrap_or_else(|_| "root".into()),
            std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
        ),
    };
    let cwd = cmd.cwd.as_ref().map(PathBuf::from).unwrap_or_else(|| {
        if home.is_dir() {
            home.clone()
        } else {
            PathBuf::from("/")
        }
    });
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&line)
        .env_clear()
        .envs(environment(cmd, &run, &home, &user))
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(u) = run_as {
        command.uid(u.uid).gid(u.gid);
    }
    run.output.push_log(
        "info",
        format!(
            "{}: /bin/sh -c {} (as {user}, in {})",
            cmd.runner.as_str(),
            quote(&line).unwrap_or_default(),
            cwd.display()
        ),
    );
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return failed(format!(
                "the command could not start (in '{}', as {user}): {e}",
                cwd.display()
            ));
        }
    };
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| pump(Box::new(s), run.output.clone(), true)),
        child
            .stderr
            .take()
            .map(|s| pump(Box::new(s), run.output.clone(), false)),
    ];
    let ended = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => Ended::Exited(status),
            Err(e) => return failed(format!("waiting for the command failed: {e}")),
        },
        _ = tokio::time::sleep(run.timeout) => Ended::TimedOut,
        _ = run.cancel.canceled() => Ended::Canceled,
    };
    // The whole group goes: on a timeout or a cancel the command itself,
    // and in any case what it left running in the background.
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    if !matches!(ended, Ended::Exited(_)) {
        let _ = child.wait().await;
    }
    for reader in readers.into_iter().flatten() {
        // A process that left the group may hold a pipe open: what it
        // writes after this is not waited for.
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    let captured = run.output.snapshot();
    match ended {
        Ended::Exited(status) => {
            use std::os::unix::process::ExitStatusExt as _;
            let code = status
                .code()
                .map(i64::from)
                .or_else(|| status.signal().map(|s| -i64::from(s)))
                .unwrap_or(-1);
            HostOutcome {
                status: if code == 0 {
                    ExecutionStatus::Succeeded
                } else {
                    ExecutionStatus::Failed
                },
                result: shell_result(&captured.stdout, &captured.stderr, code),
            }
        }
        Ended::TimedOut => {
            let mut result = shell_result(&captured.stdout, &captured.stderr, -9);
            result["error"] = json!(format!(
                "Action failed to complete in {} seconds",
                run.timeout.as_secs()
            ));
            HostOutcome {
                status: ExecutionStatus::Timeout,
                result,
            }
        }
        Ended::Canceled => {
            let mut result = shell_result(&captured.stdout, &captured.stderr, -9);
            result["error"] = json!("canceled while running");
            HostOutcome {
                status: ExecutionStatus::Canceled,
                result,
            }
        }
    }
}

/// Copy a process's stdout (or stderr) into the execution's output as it
/// comes.
fn pump(
    mut from: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    to: LiveOutput,
    stdout: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if stdout => to.push_stdout(&buf[..n]),
                Ok(n) => to.push_stderr(&buf[..n]),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> ActionMeta {
        ActionMeta::parse(
            yaml,
            Path::new("a.yaml"),
            &squall_core::PackRef::new("p".to_owned()).expect("ref"),
        )
        .expect("valid")
    }

    #[test]
    fn script_arguments_are_passed_as_stackstorm_passes_them() {
        let meta = action(
            "name: s\nrunner_type: local-shell-script\nentry_point: s.sh\nparameters:\n  first: {type: string, position: 0}\n  second: {type: array, position: 1}\n  flag: {type: boolean}\n  off: {type: boolean}\n  name: {type: string}\n  empty: {type: string}\n  count: {type: integer}\n",
        );
        let (params, _) = meta
            .resolve(
                json!({"first": "a b", "second": ["x", "y"], "flag": true, "off": false, "name": "it's", "empty": "", "count": 3})
                    .as_object()
                    .cloned()
                    .expect("object"),
            )
            .expect("valid");
        assert_eq!(
            script_arguments(&meta, &params).expect("args"),
            "--count=3 --flag --name=\"it's\" 'a b' 'x,y'"
        );
    }

    #[test]
    fn shell_results_are_stackstorms() {
        assert_eq!(
            shell_result("{\"a\": 1}\n", "warn\n", 0),
            json!({"stdout": {"a": 1}, "stderr": "warn", "return_code": 0, "succeeded": true, "failed": false})
        );
        assert_eq!(
            shell_result("42\n", "", 3)["stdout"],
            "42",
            "only objects and arrays are parsed"
        );
        assert_eq!(shell_result("", "", 3)["failed"], true);
    }

    #[test]
    fn users_are_read_by_name_or_number() {
        let root = RunAs::parse("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(RunAs::parse("65534:65534").expect("numbers").uid, 65534);
        assert!(RunAs::parse("no-such-user-here").is_err());
        assert!(RunAs::parse("x:1").is_err());
    }
}
