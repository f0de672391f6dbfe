//! Pack manifests in StackStorm's formats: `pack.yaml`, `actions/*.yaml` and
//! `config.schema.yaml`.
//!
//! Each file is parsed in two stages: serde reads the raw YAML into a `Raw*`
//! struct, and one `TryFrom`-style constructor turns it into the validated
//! type that everything downstream takes. Errors name the file and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::params::{ParamError, ParamSchema};
use crate::{ActionRef, PackRef};

/// The only runner Squall has: a WebAssembly component in the `action` world.
pub const WASM_RUNNER: &str = "wasm";

/// Default of the `timeout` runner parameter, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// Where `squall pack build` output is looked for when pack.yaml says nothing.
pub const DEFAULT_BUILD_OUTPUT: &str = "target/wasm32-wasip2/release";

/// A manifest that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}: field '{field}': {}",
                self.file.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl ManifestError {
    fn field(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn yaml(file: &Path, err: &serde_yaml::Error) -> Self {
        Self {
            file: file.to_owned(),
            field: None,
            message: format!("invalid YAML: {err}"),
        }
    }
}

/// Read `text` as YAML (an error here is a syntax error), then as a `T` (an
/// error here names what is missing or mistyped: `missing field` becomes
/// that field's error).
fn parse_yaml<T: for<'de> Deserialize<'de>>(text: &str, file: &Path) -> Result<T, ManifestError> {
    serde_yaml::from_str::<serde_yaml::Value>(text).map_err(|e| ManifestError::yaml(file, &e))?;
    // Read again from the text, for errors with a line and column.
    serde_yaml::from_str(text).map_err(|e| {
        let message = e.to_string();
        match message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((field, _)) => ManifestError::field(file, field, "is required"),
            None => ManifestError {
                file: file.to_owned(),
                field: None,
                message,
            },
        }
    })
}

// ---------------------------------------------------------------------------
// pack.yaml

#[derive(Deserialize)]
struct RawPack {
    #[serde(rename = "ref")]
    pack_ref: Option<String>,
    name: String,
    version: String,
    description: String,
    author: String,
    email: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    build: Option<RawBuild>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: String,
    output: Option<String>,
}

/// How to build a pack's components from source (`squall pack build`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// A shell command run in the pack's directory.
    pub command: String,
    /// Where the built `.wasm` files land, relative to the pack directory.
    pub output: PathBuf,
}

/// A validated `pack.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackManifest {
    pub pack_ref: PackRef,
    pub name: String,
    pub version: String,
    pub description: String,
    pub author: String,
    pub email: Option<String>,
    pub keywords: Vec<String>,
    pub build: Option<BuildSpec>,
    /// Where the pack's guests may send HTTP requests.
    pub allowed_hosts: Vec<crate::egress::HostPattern>,
}

impl PackManifest {
    pub fn parse(text: &str, file: &Path) -> Result<Self, ManifestError> {
        let raw: RawPack = parse_yaml(text, file)?;
        // StackStorm uses `ref` when given and falls back to `name`.
        let (field, candidate) = match &raw.pack_ref {
            Some(r) => ("ref", r.clone()),
            None => ("name", raw.name.clone()),
        };
        let pack_ref = PackRef::new(candidate.clone()).map_err(|_| {
            ManifestError::field(
                file,
                field,
                format!(
                    "'{candidate}' is not a valid pack ref (use lowercase letters, digits and '_')"
                ),
            )
        })?;
        if semver::Version::parse(&raw.version).is_err() {
            return Err(ManifestError::field(
                file,
                "version",
                format!(
                    "'{}' is not a semantic version (expected e.g. 1.0.0)",
                    raw.version
                ),
            ));
        }
        let build = raw
            .build
            .map(|b| -> Result<BuildSpec, ManifestError> {
                if b.command.trim().is_empty() {
                    return Err(ManifestError::field(
                        file,
                        "build.command",
                        "must not be empty",
                    ));
                }
                let output = b.output.unwrap_or_else(|| DEFAULT_BUILD_OUTPUT.to_owned());
                let output = relative_path(&output)
                    .map_err(|m| ManifestError::field(file, "build.output", m))?;
                Ok(BuildSpec {
                    command: b.command,
                    output,
                })
            })
            .transpose()?;
        let allowed_hosts = raw
            .allowed_hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                crate::egress::HostPattern::parse(h)
                    .map_err(|m| ManifestError::field(file, format!("allowed_hosts[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            pack_ref,
            name: raw.name,
            version: raw.version,
            description: raw.description,
            author: raw.author,
            email: raw.email,
            keywords: raw.keywords,
            build,
            allowed_hosts,
        })
    }

    /// Where built components are found, relative to the pack directory.
    pub fn build_output(&self) -> PathBuf {
        self.build
            .as_ref()
            .map(|b| b.output.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BUILD_OUTPUT))
    }
}

/// A path that stays inside the pack: relative, without `..`.
pub fn relative_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    let inside = !s.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(path)
    } else {
        Err(format!(
            "'{s}' must be a relative path inside the pack (no '..', not absolute)"
        ))
    }
}

// ---------------------------------------------------------------------------
// actions/*.yaml

#[derive(Deserialize)]
struct RawAction {
    name: String,
    runner_type: String,
    entry_point: String,
    pack: Option<String>,
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    parameters: Map<String, Value>,
    output_schema: Option<Value>,
    #[serde(default)]
    notify: Notify,
}

/// StackStorm's `notify` block of an action: what to announce through
/// `core.st2.generic.notifytrigger` when an execution ends.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(rename = "on-complete")]
    pub on_complete: Option<NotifySpec>,
    #[serde(rename = "on-success")]
    pub on_success: Option<NotifySpec>,
    #[serde(rename = "on-failure")]
    pub on_failure: Option<NotifySpec>,
}

/// One `on-*` entry of [`Notify`]: a message and data (templates) sent to
/// each route (StackStorm's older name for routes is `channels`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    pub message: Option<String>,
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default, alias = "channels")]
    pub routes: Vec<String>,
}

impl Notify {
    /// The entries that apply to an execution that ended `succeeded` or not,
    /// with their names (`on-complete` always; then the one for the outcome).
    pub fn applicable(&self, succeeded: bool) -> Vec<(&'static str, &NotifySpec)> {
        let mut out = Vec::new();
        if let Some(spec) = &self.on_complete {
            out.push(("on-complete", spec));
        }
        let specific = if succeeded {
            self.on_success.as_ref().map(|s| ("on-success", s))
        } else {
            self.on_failure.as_ref().map(|s| ("on-failure", s))
        };
        out.extend(specific);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.on_complete.is_none() && self.on_success.is_none() && self.on_failure.is_none()
    }
}

fn yes() -> bool {
    true
}

/// Options of the `wasm` runner that a caller may set per execution. They are
/// consumed by Squall and never passed to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    pub timeout: Duration,
}

/// StackStorm's runner of `core.ask`.
pub const INQUIRER_RUNNER: &str = "inquirer";

/// StackStorm's runner names for a workflow in Orquesta's language.
pub const ORQUESTA_RUNNERS: [&str; 2] = ["orquesta", "orchestra"];

/// What runs an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerType {
    /// A WebAssembly component (`runner_type: wasm`).
    Wasm,
    /// A workflow in Orquesta's language (`runner_type: orquesta`).
    Orquesta,
    /// A question to a person (`runner_type: inquirer`, StackStorm's
    /// `core.ask`): the execution waits `pending` for an answer.
    Inquirer,
    /// A shell command on the server's host (`local-shell-cmd`,
    /// StackStorm's `core.local`); only for tenants the operator allows.
    LocalShellCmd,
    /// A script of the pack run on the server's host (`local-shell-script`).
    LocalShellScript,
    /// A shell command on remote hosts over SSH (`remote-shell-cmd`,
    /// `core.remote`).
    RemoteShellCmd,
    /// A script of the pack run on remote hosts over SSH
    /// (`remote-shell-script`).
    RemoteShellScript,
    /// A Python action, StackStorm's way (`python-script`, older
    /// `run-python`): a module with one subclass of `Action`, built with the
    /// pack's other Python actions into one component, [`PYTHON_COMPONENT`].
    PythonScript,
}

/// The component `squall pack build` makes of a pack's Python actions, in
/// its `actions/` directory.
pub const PYTHON_COMPONENT: &str = "python_actions.wasm";

/// The component `squall pack build` makes of a pack's Python sensors, in
/// its `sensors/` directory: one for all of them, told which sensor it is
/// by its environment (`SQUALL_SENSOR`, the class name).
pub const PYTHON_SENSORS_COMPONENT: &str = "python_sensors.wasm";

impl RunnerType {
    /// The name records and the API show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wasm => WASM_RUNNER,
            Self::Orquesta => "orquesta",
            Self::Inquirer => INQUIRER_RUNNER,
            Self::LocalShellCmd => "local-shell-cmd",
            Self::LocalShellScript => "local-shell-script",
            Self::RemoteShellCmd => "remote-shell-cmd",
            Self::RemoteShellScript => "remote-shell-script",
            Self::PythonScript => "python-script",
        }
    }

    /// Every runner, in the order `/api/v1/runnertypes` lists them.
    pub const ALL: [RunnerType; 8] = [
        Self::Wasm,
        Self::PythonScript,
        Self::Orquesta,
        Self::Inquirer,
        Self::LocalShellCmd,
        Self::LocalShellScript,
        Self::RemoteShellCmd,
        Self::RemoteShellScript,
    ];

    /// Whether it runs commands on a host (the server's, or over SSH)
    /// rather than in the sandbox: only for tenants the operator allows.
    pub fn is_host(self) -> bool {
        matches!(
            self,
            Self::LocalShellCmd
                | Self::LocalShellScript
                | Self::RemoteShellCmd
                | Self::RemoteShellScript
        )
    }

    /// Whether its entry point is a script of the pack.
    pub fn runs_script(self) -> bool {
        matches!(self, Self::LocalShellScript | Self::RemoteShellScript)
    }

    /// Whether it runs over SSH.
    pub fn is_remote(self) -> bool {
        matches!(self, Self::RemoteShellCmd | Self::RemoteShellScript)
    }

    /// The parameters the runner adds to its actions', with StackStorm's
    /// defaults.
    pub fn parameters(self) -> Map<String, Value> {
        match self {
            Self::Wasm | Self::PythonScript => runner_parameters(),
            Self::Orquesta => Map::new(),
            Self::Inquirer => inquirer_parameters(),
            _ => shell_parameters(self),
        }
    }
}

/// A validated action metadata file.
#[derive(Debug, Clone)]
pub struct ActionMeta {
    pub action_ref: ActionRef,
    pub description: Option<String>,
    pub enabled: bool,
    pub runner: RunnerType,
    /// The component file, relative to the pack (see
    /// [`PackManifest::build_output`]); for a workflow, its definition,
    /// relative to `actions/`.
    pub entry_point: PathBuf,
    /// The action's own parameters merged with the runner's (`timeout`).
    pub parameters: ParamSchema,
    pub output_schema: Option<Value>,
    pub notify: Notify,
}

impl ActionMeta {
    pub fn parse(text: &str, file: &Path, pack: &PackRef) -> Result<Self, ManifestError> {
        let raw: RawAction = parse_yaml(text, file)?;
        let runner = if raw.runner_type == WASM_RUNNER {
            RunnerType::Wasm
        } else if ORQUESTA_RUNNERS.contains(&raw.runner_type.as_str()) {
            RunnerType::Orquesta
        } else if raw.runner_type == "run-python" {
            RunnerType::PythonScript
        } else if let Some(runner) = RunnerType::ALL
            .into_iter()
            .find(|r| r.as_str() == raw.runner_type && *r != RunnerType::Orquesta)
        {
            runner
        } else {
            return Err(ManifestError::field(
                file,
                "runner_type",
                format!(
                    "runner '{}' is not supported: Squall runs actions as WebAssembly components (runner_type: wasm) or Python (python-script), workflows (runner_type: orquesta), inquiries (runner_type: inquirer) and, where the operator allows, shell commands and scripts (local-shell-cmd, local-shell-script, remote-shell-cmd, remote-shell-script)",
                    raw.runner_type
                ),
            ));
        };
        if let Some(p) = &raw.pack
            && p != pack.as_str()
        {
            return Err(ManifestError::field(
                file,
                "pack",
                format!("'{p}' does not match the pack's ref '{pack}'"),
            ));
        }
        let action_ref = ActionRef::new(pack.clone(), raw.name.clone())
            .map_err(|e| ManifestError::field(file, "name", e.to_string()))?;
        // An inquiry runs nothing of the pack's (st2's `core.ask` has
        // `entry_point: ''`).
        let entry_point = match runner {
            RunnerType::Inquirer | RunnerType::LocalShellCmd | RunnerType::RemoteShellCmd => {
                PathBuf::new()
            }
            _ => relative_path(&raw.entry_point)
                .map_err(|m| ManifestError::field(file, "entry_point", m))?,
        };
        let extension = entry_point.extension().and_then(|e| e.to_str());
        match runner {
            RunnerType::Wasm if extension != Some("wasm") => {
                return Err(ManifestError::field(
                    file,
                    "entry_point",
                    format!("'{}' must name a .wasm component", raw.entry_point),
                ));
            }
            RunnerType::PythonScript if extension != Some("py") => {
                return Err(ManifestError::field(
                    file,
                    "entry_point",
                    format!("'{}' must name a Python module (.py)", raw.entry_point),
                ));
            }
            RunnerType::Orquesta if !matches!(extension, Some("yaml" | "yml")) => {
                return Err(ManifestError::field(
                    file,
                    "entry_point",
                    format!(
                        "'{}' must name a workflow definition (workflows/<name>.yaml)",
                        raw.entry_point
                    ),
                ));
            }
            _ => {}
        }
        // A workflow has no runner parameters: its tasks' actions have theirs.
        let mut block = runner.parameters();
        // An action may override a runner parameter's attributes (its
        // timeout's default, `sudo: {immutable: true}`), as in StackStorm:
        // the rest of the runner's declaration stays.
        for (name, given) in raw.parameters {
            match (block.get_mut(&name), given) {
                (Some(Value::Object(runner)), Value::Object(attrs)) => runner.extend(attrs),
                (_, given) => {
                    block.insert(name, given);
                }
            }
        }
        let parameters = ParamSchema::parse(&block)
            .map_err(|e| ManifestError::field(file, format!("parameters.{}", e.name), e.message))?;
        Ok(Self {
            action_ref,
            description: raw.description,
            enabled: raw.enabled,
            runner,
            entry_point,
            parameters,
            output_schema: raw.output_schema,
            notify: raw.notify,
        })
    }

    /// Resolve the caller's parameters, then split off the runner's options.
    pub fn resolve(
        &self,
        given: Map<String, Value>,
    ) -> Result<(Map<String, Value>, RunnerOptions), ParamError> {
        let mut params = self.parameters.resolve(given)?;
        let timeout = params
            .remove("timeout")
            .and_then(|v| v.as_u64())
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        Ok((
            params,
            RunnerOptions {
                timeout: Duration::from_secs(timeout),
            },
        ))
    }
}

/// The `wasm` runner's parameters, as StackStorm runners declare theirs.
fn runner_parameters() -> Map<String, Value> {
    let Value::Object(block) = serde_json::json!({
        "timeout": {
            "type": "integer",
            "minimum": 1,
            "default": DEFAULT_TIMEOUT_SECS,
            "description": "Seconds before the execution is stopped and marked timeout.",
        }
    }) else {
        unreachable!("literal object")
    };
    block
}

/// Seconds a shell command may run by default (StackStorm's).
pub const SHELL_TIMEOUT_SECS: u64 = 60;

/// The parameters of StackStorm's shell runners, with its defaults.
fn shell_parameters(runner: RunnerType) -> Map<String, Value> {
    let Value::Object(mut block) = serde_json::json!({
        "cwd": {"type": "string", "description": "Working directory the command runs in."},
        "env": {"type": "object", "description": "Environment variables the command gets, besides ST2_ACTION_*."},
        "kwarg_op": {"type": "string", "default": "--", "description": "What precedes a named argument of a script (--name=value)."},
        "sudo": {"type": "boolean", "default": false, "description": "Run the command with sudo (passwordless sudo for the runner's user)."},
        "timeout": {"type": "integer", "minimum": 1, "default": SHELL_TIMEOUT_SECS, "description": "Seconds before the command is stopped and marked timeout."},
    }) else {
        unreachable!("literal object")
    };
    if !runner.runs_script() {
        block.insert(
            "cmd".into(),
            serde_json::json!({"type": "string", "description": "The command to run (by /bin/sh -c)."}),
        );
    }
    if runner.is_remote() {
        let Value::Object(remote) = serde_json::json!({
            "hosts": {"type": "string", "required": true, "description": "Comma-separated hosts to run on (host or host:port)."},
            "username": {"type": "string", "description": "User to log in as (default: the server's --ssh-user)."},
            "private_key": {"type": "string", "secret": true, "description": "The private key (PEM/OpenSSH text) to log in with, e.g. {{ st2kv.system.ssh_key | decrypt_kv }}; default: the server's --ssh-key."},
            "passphrase": {"type": "string", "secret": true, "description": "The private key's passphrase."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 22, "description": "SSH port of hosts that do not name one."},
            "parallel": {"type": "boolean", "default": false, "description": "Run on all hosts at once (else one after the other)."},
            "bastion_host": {"type": "string", "description": "A host (host[:port]) every connection goes through; the hosts behind it are checked against the allow-list by name."},
        }) else {
            unreachable!("literal object")
        };
        block.extend(remote);
    }
    block
}

/// The `inquirer` runner's parameters, with StackStorm's defaults.
/// `ttl` is a number here (st2: an integer), so an inquiry may also
/// wait a fraction of a minute.
pub fn inquirer_parameters() -> Map<String, Value> {
    let Value::Object(block) = serde_json::json!({
        "schema": {
            "type": "object",
            "description": "JSON schema the response must satisfy.",
            "default": {
                "title": "response_data",
                "type": "object",
                "properties": {
                    "continue": {
                        "type": "boolean",
                        "description": "Would you like to continue the workflow?",
                        "required": true,
                    }
                },
            },
        },
        "ttl": {
            "type": "number",
            "minimum": 0,
            "default": 1440,
            "description": "Minutes before an unanswered inquiry times out; 0 waits for ever.",
        },
        "users": {
            "type": "array",
            "items": {"type": "string"},
            "default": [],
            "description": "Users who may respond (none listed: anyone who may write).",
        },
        "roles": {
            "type": "array",
            "items": {"type": "string"},
            "default": [],
            "description": "Roles that may respond: viewer, operator, admin (none listed: any).",
        },
        "route": {
            "type": "string",
            "default": "",
            "description": "A tag for rules that route the question (the inquiry trigger's `route`).",
        },
    }) else {
        unreachable!("literal object")
    };
    block
}

// ---------------------------------------------------------------------------
// config.schema.yaml and config.yaml

/// A pack's `config.schema.yaml`: the same property format as action
/// parameters.
#[derive(Debug, Clone)]
pub struct ConfigSchema(ParamSchema);

impl ConfigSchema {
    pub fn parse(text: &str, file: &Path) -> Result<Self, ManifestError> {
        let block: Option<Map<String, Value>> = parse_yaml(text, file)?;
        let schema = ParamSchema::parse(&block.unwrap_or_default())
            .map_err(|e| ManifestError::field(file, e.name, e.message))?;
        Ok(Self(schema))
    }

    /// Validate a `config.yaml` against this schema and apply its defaults.
    pub fn resolve(&self, text: &str, file: &Path) -> Result<Map<String, Value>, ManifestError> {
        let values: Option<Map<String, Value>> = parse_yaml(text, file)?;
        self.0
            .resolve(values.unwrap_or_default())
            .map_err(|e| ManifestError {
                file: file.to_owned(),
                field: None,
                message: e.to_string(),
            })
    }

    /// The config when the pack has no `config.yaml`: defaults only.
    pub fn defaults(&self, file: &Path) -> Result<Map<String, Value>, ManifestError> {
        self.resolve("{}", file)
    }
}

impl ConfigSchema {
    /// The directories the pack's guests need, from properties that say
    /// `directory: read-only|read-write` (the value names directories) or
    /// `file: read-only|read-write` (the value names files: their parent
    /// directories), read from a resolved `config`. Properties of nested
    /// objects count too (`sensor: {type: object, properties: {directories:
    /// {directory: read-only}}}`). Whether they are opened to the guests is
    /// the server's decision (`--allow-dir`).
    pub fn directories(
        &self,
        config: &Map<String, Value>,
        file: &Path,
    ) -> Result<Vec<DirectoryGrant>, ManifestError> {
        let mut out = Vec::new();
        collect_grants(self.0.source(), config, "", file, &mut out)?;
        Ok(out)
    }
}

/// The grants `properties` (a schema's `properties` block) ask for, read
/// from `config`; nested objects are walked with `prefix` naming where.
fn collect_grants(
    properties: &Map<String, Value>,
    config: &Map<String, Value>,
    prefix: &str,
    file: &Path,
    out: &mut Vec<DirectoryGrant>,
) -> Result<(), ManifestError> {
    for (key, raw) in properties {
        let name = format!("{prefix}{key}");
        if let (Some(Value::Object(inner)), Some(Value::Object(values))) =
            (raw.get("properties"), config.get(key))
        {
            collect_grants(inner, values, &format!("{name}."), file, out)?;
        }
        for (keyword, parent) in [("directory", false), ("file", true)] {
            let Some(mode) = raw.get(keyword) else {
                continue;
            };
            let writable = match mode.as_str() {
                Some("read-only") => false,
                Some("read-write") => true,
                _ => {
                    return Err(ManifestError::field(
                        file,
                        format!("{name}.{keyword}"),
                        format!("{mode} is not one of read-only, read-write"),
                    ));
                }
            };
            let values = match config.get(key) {
                None | Some(Value::Null) => vec![],
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(other) => {
                    return Err(ManifestError::field(
                        file,
                        name.clone(),
                        format!("{other} is not a path or a list of paths"),
                    ));
                }
            };
            for value in values {
                let path = PathBuf::from(&value);
                if !path.is_absolute() {
                    return Err(ManifestError::field(
                        file,
                        name.clone(),
                        format!("'{value}' must be an absolute path"),
                    ));
                }
                let dir = if parent {
                    path.parent().map(Path::to_path_buf).unwrap_or(path)
                } else {
                    path
                };
                out.push(DirectoryGrant {
                    path: dir,
                    writable,
                    config_key: name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A directory a pack's config asks to be opened to its guests, at the same
/// path inside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryGrant {
    pub path: PathBuf,
    pub writable: bool,
    /// The config key that named it, for error messages.
    pub config_key: String,
}

// ---------------------------------------------------------------------------
// sensors/*.yaml

/// A validated sensor metadata file (StackStorm's format).
#[derive(Debug, Clone)]
pub struct SensorMeta {
    pub pack: PackRef,
    pub class_name: String,
    pub description: Option<String>,
    pub enabled: bool,
    /// The component, relative to `sensors/` (or the pack's build output),
    /// or the Python module that defines `class_name`.
    pub entry_point: PathBuf,
    /// How often `poll` is called; `None` for a sensor that only reacts to
    /// its triggers.
    pub poll_interval: Option<Duration>,
    pub trigger_types: Vec<crate::trigger::TriggerType>,
}

impl SensorMeta {
    /// `<pack>.<class_name>`.
    pub fn sensor_ref(&self) -> String {
        format!("{}.{}", self.pack, self.class_name)
    }

    /// Whether the sensor is a Python class (`entry_point: <module>.py`),
    /// run from the pack's [`PYTHON_SENSORS_COMPONENT`].
    pub fn is_python(&self) -> bool {
        self.entry_point.extension().and_then(|e| e.to_str()) == Some("py")
    }

    /// The component file the sensor runs from.
    pub fn component_file(&self) -> &Path {
        if self.is_python() {
            Path::new(PYTHON_SENSORS_COMPONENT)
        } else {
            &self.entry_point
        }
    }

    /// The trigger type the sensor declares as `trigger`: its full ref, or
    /// its name inside the sensor's pack.
    pub fn declared_trigger(&self, trigger: &str) -> Option<&crate::trigger::TriggerType> {
        self.trigger_types.iter().find(|t| {
            t.trigger_ref == trigger
                || t.trigger_ref
                    .strip_prefix(self.pack.as_str())
                    .and_then(|rest| rest.strip_prefix('.'))
                    == Some(trigger)
        })
    }

    /// The refs of the trigger types it declares, comma-separated, or
    /// "no trigger types": for errors that name what it may dispatch.
    pub fn declared_refs(&self) -> String {
        if self.trigger_types.is_empty() {
            return "no trigger types".to_owned();
        }
        let refs: Vec<_> = self
            .trigger_types
            .iter()
            .map(|t| t.trigger_ref.as_str())
            .collect();
        refs.join(", ")
    }

    pub fn parse(text: &str, file: &Path, pack: &PackRef) -> Result<Self, ManifestError> {
        let doc: Value = parse_yaml(text, file)?;
        let field = |f: &str, m: String| ManifestError::field(file, f, m);
        let Value::Object(doc) = doc else {
            return Err(ManifestError {
                file: file.to_owned(),
                field: None,
                message: "a sensor file is a mapping".into(),
            });
        };
        let text_of = |key: &str| doc.get(key).and_then(Value::as_str).map(str::to_owned);
        let class_name = text_of("class_name")
            .ok_or_else(|| field("class_name", "missing (the sensor's name)".into()))?;
        if class_name.is_empty()
            || !class_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(field(
                "class_name",
                format!("'{class_name}' is not a valid name (letters, digits, '_' or '-')"),
            ));
        }
        let entry = text_of("entry_point").ok_or_else(|| {
            field(
                "entry_point",
                "missing (the sensor's .wasm component or .py module, relative to sensors/)".into(),
            )
        })?;
        let entry_point = relative_path(&entry).map_err(|m| field("entry_point", m))?;
        if !matches!(
            entry_point.extension().and_then(|e| e.to_str()),
            Some("wasm" | "py")
        ) {
            return Err(field(
                "entry_point",
                format!("'{entry}' must name a .wasm component or a Python module (.py)"),
            ));
        }
        let poll_interval = match doc.get("poll_interval") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|s| *s > 0.0 && *s <= 86_400.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        field(
                            "poll_interval",
                            format!("{v} is not a number of seconds from 0 to 86400"),
                        )
                    })?,
            ),
        };
        let enabled = match doc.get("enabled") {
            None => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| field("enabled", format!("{v} is not true or false")))?,
        };
        let mut trigger_types = Vec::new();
        let items = match doc.get("trigger_types") {
            None => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => {
                return Err(field(
                    "trigger_types",
                    format!("{other} is not a list of trigger types"),
                ));
            }
        };
        for (i, item) in items.iter().enumerate() {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| field(&format!("trigger_types[{i}].name"), "missing".into()))?;
            let schema = |key: &str| {
                item.get(key)
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"}))
            };
            let description = item
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let tt = crate::trigger::TriggerType::new(
                &format!("{pack}.{name}"),
                description,
                schema("payload_schema"),
                schema("parameters_schema"),
            )
            .map_err(|m| field(&format!("trigger_types[{i}]"), m))?;
            trigger_types.push(tt);
        }
        Ok(Self {
            pack: pack.clone(),
            class_name,
            description: text_of("description"),
            enabled,
            entry_point,
            poll_interval,
            trigger_types,
        })
    }
}

/// Action metadata files of a pack, by action name, for lookups.
pub type ActionIndex = BTreeMap<String, ActionMeta>;

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = "ref: core\nname: core\nversion: 1.0.0\ndescription: d\nauthor: a\n";

    fn pack_err(text: &str) -> String {
        PackManifest::parse(text, Path::new("p/pack.yaml"))
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn sensor_files_parse_and_bad_ones_name_the_field() {
        let pack = PackRef::new("examples").expect("valid");
        let file = Path::new("sensors/dir.yaml");
        let ok = SensorMeta::parse(
            "class_name: DirectorySensor\nentry_point: directory_sensor.wasm\npoll_interval: 30\ntrigger_types:\n  - name: changed_file\n    payload_schema: {type: object, properties: {path: {type: string}}}\n",
            file,
            &pack,
        )
        .expect("valid");
        assert_eq!(ok.sensor_ref(), "examples.DirectorySensor");
        assert_eq!(ok.poll_interval, Some(Duration::from_secs(30)));
        assert_eq!(ok.trigger_types[0].trigger_ref, "examples.changed_file");
        assert!(!ok.is_python());
        assert_eq!(ok.component_file(), Path::new("directory_sensor.wasm"));
        let py = SensorMeta::parse(
            "class_name: DirectorySensor\nentry_point: directory_sensor.py\n",
            file,
            &pack,
        )
        .expect("a Python sensor");
        assert!(py.is_python());
        assert_eq!(py.component_file(), Path::new(PYTHON_SENSORS_COMPONENT));
        for (text, field) in [
            ("entry_point: a.wasm\n", "class_name"),
            ("class_name: A\n", "entry_point"),
            ("class_name: A\nentry_point: ../a.wasm\n", "entry_point"),
            ("class_name: A\nentry_point: a.js\n", "entry_point"),
            (
                "class_name: A\nentry_point: a.wasm\npoll_interval: -1\n",
                "poll_interval",
            ),
            (
                "class_name: A\nentry_point: a.wasm\ntrigger_types: [{name: t, payload_schema: {type: 12}}]\n",
                "trigger_types[0]",
            ),
            (
                "class_name: A\nentry_point: a.wasm\ntrigger_types: [{description: x}]\n",
                "trigger_types[0].name",
            ),
        ] {
            let err = SensorMeta::parse(text, file, &pack).expect_err(text);
            assert_eq!(err.field.as_deref(), Some(field), "{err}");
            assert!(err.to_string().starts_with("sensors/dir.yaml"), "{err}");
        }
    }

    #[test]
    fn config_schemas_declare_directories() {
        let file = Path::new("config.schema.yaml");
        let schema = ConfigSchema::parse(
            "directories: {type: array, items: {type: string}, directory: read-only}\nlog: {type: string, file: read-write}\n",
            file,
        )
        .expect("valid");
        let config = schema
            .resolve(
                "directories: [/srv/a, /srv/b]\nlog: /var/log/out.txt\n",
                file,
            )
            .expect("valid");
        let grants = schema.directories(&config, file).expect("valid");
        let got: Vec<_> = grants
            .iter()
            .map(|g| (g.path.display().to_string(), g.writable))
            .collect();
        assert_eq!(
            got,
            [
                ("/srv/a".to_owned(), false),
                ("/srv/b".to_owned(), false),
                ("/var/log".to_owned(), true)
            ]
        );
        let relative = schema.resolve("directories: [srv]\n", file).expect("valid");
        assert!(schema.directories(&relative, file).is_err());
        let bad =
            ConfigSchema::parse("d: {type: string, directory: sometimes}\n", file).expect("valid");
        let config = bad.resolve("d: /x\n", file).expect("valid");
        let err = bad.directories(&config, file).expect_err("bad mode");
        assert_eq!(err.field.as_deref(), Some("d.directory"));

        // StackStorm packs nest their settings: `sensor: {directories: [...]}`.
        let nested = ConfigSchema::parse(
            "sensor:\n  type: object\n  properties:\n    directories: {type: array, items: {type: string}, directory: read-only}\n",
            file,
        )
        .expect("valid");
        let config = nested
            .resolve("sensor: {directories: [/srv/c]}\n", file)
            .expect("valid");
        let grants = nested.directories(&config, file).expect("valid");
        assert_eq!(grants.len(), 1, "{grants:?}");
        assert_eq!(grants[0].path, Path::new("/srv/c"));
        assert_eq!(grants[0].config_key, "sensor.directories");
        let config = nested
            .resolve("sensor: {directories: [srv]}\n", file)
            .expect("valid");
        let err = nested.directories(&config, file).expect_err("relative");
        assert_eq!(err.field.as_deref(), Some("sensor.directories"));
    }

    #[test]
    fn pack_manifest_parses() {
        let p = PackManifest::parse(PACK, Path::new("pack.yaml")).expect("valid");
        assert_eq!(p.pack_ref.as_str(), "core");
        assert_eq!(p.build_output(), PathBuf::from(DEFAULT_BUILD_OUTPUT));
    }

    #[test]
    fn pack_manifest_errors_name_file_and_field() {
        assert_eq!(
            pack_err("name: core\nversion: one\ndescription: d\nauthor: a\n"),
            "p/pack.yaml: field 'version': 'one' is not a semantic version (expected e.g. 1.0.0)"
        );
        assert_eq!(
            pack_err("name: My Pack\nversion: 1.0.0\ndescription: d\nauthor: a\n"),
            "p/pack.yaml: field 'name': 'My Pack' is not a valid pack ref (use lowercase letters, digits and '_')"
        );
        let missing = pack_err("name: core\ndescription: d\nauthor: a\n");
        assert_eq!(missing, "p/pack.yaml: field 'version': is required");
        let mistyped = pack_err("name: core\nversion: 1.0.0\ndescription: [d]\nauthor: a\n");
        assert!(
            mistyped.starts_with(
                "p/pack.yaml: description: invalid type: sequence, expected a string at line 3"
            ),
            "{mistyped}"
        );
        let syntax = pack_err("name: [core\n");
        assert!(syntax.starts_with("p/pack.yaml: invalid YAML:"), "{syntax}");
        let build = pack_err(&format!("{PACK}build: {{command: make, output: ../x}}\n"));
        assert!(build.contains("field 'build.output'"), "{build}");
    }

    fn core() -> PackRef {
        PackRef::new("core").expect("valid")
    }

    #[test]
    fn action_meta_parses_and_merges_runner_timeout() {
        let text = "name: echo\nrunner_type: wasm\nentry_point: core.wasm\nparameters:\n  message:\n    type: string\n    required: true\n";
        let a = ActionMeta::parse(text, Path::new("echo.yaml"), &core()).expect("valid");
        assert_eq!(a.action_ref.to_string(), "core.echo");
        let given = serde_json::json!({"message": "hi", "timeout": 5});
        let (params, opts) = a
            .resolve(given.as_object().cloned().unwrap_or_default())
            .expect("valid");
        assert_eq!(Value::Object(params), serde_json::json!({"message": "hi"}));
        assert_eq!(opts.timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_workflow_action_has_no_runner_parameters() {
        for runner in ["orquesta", "orchestra"] {
            let text = format!(
                "name: wf\nrunner_type: {runner}\nentry_point: workflows/wf.yaml\nparameters:\n  who: {{type: string}}\n"
            );
            let a = ActionMeta::parse(&text, Path::new("wf.yaml"), &core()).expect("valid");
            assert_eq!(a.runner, RunnerType::Orquesta);
            assert_eq!(a.entry_point, Path::new("workflows/wf.yaml"));
            let names: Vec<&str> = a.parameters.specs().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["who"]);
        }
    }

    #[test]
    fn an_inquiry_takes_stackstorms_parameters_and_defaults() {
        let text = "name: ask\nrunner_type: inquirer\nentry_point: ''\n";
        let a = ActionMeta::parse(text, Path::new("ask.yaml"), &core()).expect("valid");
        assert_eq!(a.runner, RunnerType::Inquirer);
        let (params, _) = a.resolve(Map::new()).expect("defaults");
        assert_eq!(params["ttl"], 1440);
        assert_eq!(params["users"], serde_json::json!([]));
        assert_eq!(params["roles"], serde_json::json!([]));
        assert_eq!(params["route"], "");
        assert_eq!(
            params["schema"]["properties"]["continue"]["type"], "boolean",
            "{params:?}"
        );
        let mut given = Map::new();
        given.insert("ttl".into(), serde_json::json!(-1));
        assert!(a.resolve(given).is_err(), "a negative ttl is refused");
    }

    #[test]
    fn action_meta_errors_name_file_and_field() {
        let err = |text: &str| {
            ActionMeta::parse(text, Path::new("a/x.yaml"), &core())
                .expect_err("must fail")
                .to_string()
        };
        assert_eq!(
            err("name: x\nrunner_type: powershell\nentry_point: x.ps1\n"),
            "a/x.yaml: field 'runner_type': runner 'powershell' is not supported: Squall runs actions as WebAssembly components (runner_type: wasm) or Python (python-script), workflows (runner_type: orquesta), inquiries (runner_type: inquirer) and, where the operator allows, shell commands and scripts (local-shell-cmd, local-shell-script, remote-shell-cmd, remote-shell-script)"
        );
        assert_eq!(
            err("name: x\nrunner_type: orquesta\nentry_point: x.wasm\n"),
            "a/x.yaml: field 'entry_point': 'x.wasm' must name a workflow definition (workflows/<name>.yaml)"
        );
        assert_eq!(
            err("name: x\nrunner_type: wasm\nentry_point: ../x.wasm\n"),
            "a/x.yaml: field 'entry_point': '../x.wasm' must be a relative path inside the pack (no '..', not absolute)"
        );
        assert_eq!(
            err(
                "name: x\nrunner_type: wasm\nentry_point: x.wasm\nparameters:\n  n:\n    type: int\n"
            ),
            "a/x.yaml: field 'parameters.n': field 'type': unknown type 'int' (expected string, integer, number, boolean, array, object or null)"
        );
        assert_eq!(
            err("name: x\nrunner_type: wasm\nentry_point: x.wasm\npack: other\n"),
            "a/x.yaml: field 'pack': 'other' does not match the pack's ref 'core'"
        );
    }

    #[test]
    fn config_schema_applies_defaults_and_validates() {
        let schema = ConfigSchema::parse(
            "directories:\n  type: array\n  default: [/tmp]\nuser:\n  type: string\n  required: true\n",
            Path::new("config.schema.yaml"),
        )
        .expect("valid");
        let cfg = schema
            .resolve("user: bob\n", Path::new("config.yaml"))
            .expect("valid");
        assert_eq!(
            Value::Object(cfg),
            serde_json::json!({"directories": ["/tmp"], "user": "bob"})
        );
        let err = schema
            .resolve("{}", Path::new("config.yaml"))
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "config.yaml: missing required parameter 'user'"
        );
    }
}
