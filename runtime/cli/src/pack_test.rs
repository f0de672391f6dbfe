//! `squall pack test`: a pack's own tests, run offline with no server.
//!
//! Tests are YAML files in the pack's `tests/` directory, each with up to
//! three lists of cases (see docs/packs.md, "Testing a pack"):
//!
//! - `actions`: run an action with parameters, kv and config as given;
//!   expect a status and a result (a subset of it), or a substring of the
//!   error, and kv values afterwards.
//! - `rules`: a trigger instance's payload against one of the pack's rules;
//!   expect a match or not, and the rendered parameters, which are checked
//!   against the action's parameter schema as the server does.
//! - `sensors`: set a sensor up with a config, kv and files as given, change
//!   files, poll; expect the payloads it dispatches.
//!
//! Every case gets a fresh datastore and a fresh temporary directory, which
//! strings in the case name as `{{ dir }}` and which the pack's guests may
//! open (as `squall serve --allow-dir` allows).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use squall_core::kv::{KvEntry, KvStore as _};
use squall_core::manifest::RunnerType;
use squall_core::rule::{Evaluation, Rule};
use squall_core::template::{RenderContext, Templates};
use squall_core::{ActionRef, TenantId};
use squall_reactor::{LoadedPack, PackSet, RunRequest, Runner};

/// What `{{ dir }}` stands for in a case.
const DIR: &str = "{{ dir }}";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionCase {
    /// Read before the case is (to report a case that does not parse).
    #[serde(rename = "name")]
    _name: Option<String>,
    /// The action's name in the pack, or a full ref.
    action: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// The pack's config for this case, in place of its `config.yaml`.
    config: Option<Value>,
    /// Datastore keys (the tenant's) set before the run.
    #[serde(default)]
    kv: BTreeMap<String, String>,
    #[serde(default)]
    expect: ActionExpect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionExpect {
    /// `succeeded` unless said.
    status: Option<String>,
    /// A subset of the result: objects need the keys given, lists and
    /// scalars are equal.
    result: Option<Value>,
    /// A substring of the error (the result's text, or stderr).
    error: Option<String>,
    /// Datastore keys afterwards; `null` for a key that must be absent.
    kv: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleCase {
    /// Read before the case is (to report a case that does not parse).
    #[serde(rename = "name")]
    _name: Option<String>,
    /// The rule's name in the pack.
    rule: String,
    /// The trigger type, when it is not the rule's.
    trigger: Option<String>,
    #[serde(default)]
    payload: Value,
    expect: RuleExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleExpect {
    #[serde(rename = "match")]
    matched: bool,
    /// The rendered action parameters, exactly.
    parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorCase {
    /// Read before the case is (to report a case that does not parse).
    #[serde(rename = "name")]
    _name: Option<String>,
    /// The sensor's class name.
    sensor: String,
    config: Option<Value>,
    #[serde(default)]
    kv: BTreeMap<String, String>,
    /// Files (relative to `{{ dir }}`) there before `setup`.
    #[serde(default)]
    files_before: BTreeMap<String, String>,
    /// Files written (or, with `null`, deleted) after `setup`, before the
    /// polls.
    #[serde(default)]
    files: BTreeMap<String, Option<String>>,
    /// How many polls (1 unless said).
    polls: Option<u32>,
    expect: SensorExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorExpect {
    /// Every dispatch, in order: its trigger type's ref and a subset of
    /// its payload.
    dispatched: Vec<Dispatched>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Dispatched {
    trigger: String,
    #[serde(default)]
    payload: Value,
}

/// One case's outcome.
struct Outcome {
    file: String,
    kind: &'static str,
    name: String,
    failure: Option<String>,
}

/// Everything the cases share.
struct Bench {
    dir: PathBuf,
    /// Other packs the pack's actions and rules use.
    others: Vec<PathBuf>,
    sandbox: Arc<squall_sandbox::Sandbox>,
    runtime: tokio::runtime::Runtime,
}

pub(crate) fn test(
    data_dir: &Path,
    dir: &Path,
    others: Vec<PathBuf>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let tests = dir.join("tests");
    let files = squall_reactor::packs::yaml_files(&tests)?;
    if files.is_empty() {
        bail!(
            "{}: no tests (YAML files in tests/ with `actions`, `rules` or `sensors` cases; see docs/packs.md)",
            dir.display()
        );
    }
    // The pack must load as it is before any case changes its config.
    LoadedPack::load(dir)?;
    // Compiled components are cached beside the local runs' ones.
    let bench = Bench {
        dir: dir.to_owned(),
        others,
        sandbox: Arc::new(crate::commands::open_sandbox(data_dir, 16)?),
        runtime: crate::commands::runtime()?,
    };
    let mut outcomes = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read '{}'", file.display()))?;
        let shown = file.strip_prefix(dir).unwrap_or(file).display().to_string();
        let doc: Value = serde_yaml::from_str(&text).with_context(|| shown.clone())?;
        let Value::Object(mut sections) = doc else {
            bail!("{shown}: a test file is a mapping with `actions`, `rules` or `sensors`");
        };
        for (kind, run) in [
            ("actions", Bench::action_case as CaseFn),
            ("rules", Bench::rule_case as CaseFn),
            ("sensors", Bench::sensor_case as CaseFn),
        ] {
            let cases = match sections.remove(kind) {
                None => continue,
                Some(Value::Array(cases)) => cases,
                Some(_) => bail!("{shown}: `{kind}` is not a list of cases"),
            };
            for (i, case) in cases.into_iter().enumerate() {
                let name = case
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("{kind}[{i}]"), str::to_owned);
                let failure = run(&bench, case).err().map(|e| format!("{e:#}"));
                let outcome = Outcome {
                    file: shown.clone(),
                    kind,
                    name,
                    failure,
                };
                if !json_out {
                    report(&outcome);
                }
                outcomes.push(outcome);
            }
        }
        if let Some(key) = sections.keys().next() {
            bail!("{shown}: unknown section `{key}` (expected actions, rules or sensors)");
        }
    }
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    if json_out {
        let cases: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                json!({"file": o.file, "kind": o.kind, "name": o.name,
                       "passed": o.failure.is_none(), "failure": o.failure})
            })
            .collect();
        let summary = json!({"passed": outcomes.len() - failed, "failed": failed, "cases": cases});
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "\ntest result: {}. {} passed; {failed} failed",
            if failed == 0 { "ok" } else { "FAILED" },
            outcomes.len() - failed
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

type CaseFn = fn(&Bench, Value) -> anyhow::Result<()>;

fn report(o: &Outcome) {
    match &o.failure {
        None => println!("ok      {} {}: {}", o.file, o.kind, o.name),
        Some(why) => {
            println!("FAILED  {} {}: {}", o.file, o.kind, o.name);
            for line in why.lines() {
                println!("        {line}");
            }
        }
    }
}

/// A case's scratch space: `work` is `{{ dir }}`, `data` its datastore.
struct Scratch {
    work: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            work: tempfile::tempdir()?,
            data: tempfile::tempdir()?,
        })
    }

    fn dir(&self) -> String {
        self.work.path().to_string_lossy().into_owned()
    }

    /// `case` with `{{ dir }}` replaced in every string, read as `T`.
    fn read<T: serde::de::DeserializeOwned>(&self, case: Value) -> anyhow::Result<T> {
        Ok(serde_json::from_value(substitute(case, &self.dir()))?)
    }

    fn file(&self, relative: &str) -> anyhow::Result<PathBuf> {
        let path = squall_core::manifest::relative_path(relative)
            .map_err(|m| anyhow::anyhow!("file '{relative}': {m}"))?;
        Ok(self.work.path().join(path))
    }
}

fn substitute(value: Value, dir: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace(DIR, dir)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| substitute(v, dir)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace(DIR, dir), substitute(v, dir)))
                .collect(),
        ),
        other => other,
    }
}

impl Bench {
    /// The pack (with `config` in place of its `config.yaml`, when given)
    /// and the other packs.
    fn packs(&self, config: Option<&Value>) -> anyhow::Result<(Arc<LoadedPack>, PackSet)> {
        let pack = match config {
            Some(config) => LoadedPack::load_with_config(
                &self.dir,
                &serde_json::to_string(config)?,
                Path::new("the case's config"),
            )?,
            None => LoadedPack::load(&self.dir)?,
        };
        let pack = Arc::new(pack);
        let mut set = PackSet::load(&self.others)?;
        set.remove(&pack.manifest.pack_ref);
        set.put(pack.clone());
        Ok((pack, set))
    }

    fn action_case(&self, case: Value) -> anyhow::Result<()> {
        let scratch = Scratch::new()?;
        let case: ActionCase = scratch.read(case)?;
        let (pack, packs) = self.packs(case.config.as_ref())?;
        let action: ActionRef = if case.action.contains('.') {
            case.action.parse()?
        } else {
            format!("{}.{}", pack.manifest.pack_ref, case.action).parse()?
        };
        let store = crate::commands::open_store(scratch.data.path())?;
        let tenant = TenantId::default_tenant();
        let workflow = packs.action(&action)?.1.runner == RunnerType::Orquesta;
        let runner = Runner::new(
            self.sandbox.clone(),
            store.clone(),
            Arc::new(packs),
            squall_sandbox::Limits::default(),
        )
        .with_allowed_dirs(vec![scratch.work.path().to_owned()]);
        let execution = self.runtime.block_on(async {
            seed_kv(&store, &tenant, &case.kv).await?;
            let req = RunRequest::new(tenant.clone(), action, case.parameters);
            anyhow::Ok(if workflow {
                crate::commands::run_workflow(runner, req).await?
            } else {
                runner.run(req).await?
            })
        })?;
        let want = case.expect.status.as_deref().unwrap_or("succeeded");
        let result = execution.result.clone().unwrap_or(Value::Null);
        if execution.status.as_str() != want {
            bail!(
                "status: expected {want}, got {}\nresult: {result}\nstderr: {}",
                execution.status.as_str(),
                execution.output.stderr.trim_end()
            );
        }
        if let Some(expected) = &case.expect.result {
            contains(expected, &result, "result")
                .map_err(|e| anyhow::anyhow!("{e}\nresult: {result}"))?;
        }
        if let Some(needle) = &case.expect.error {
            let text = format!("{result}\n{}", execution.output.stderr);
            let shown = match &result {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !text.contains(needle.as_str()) && !shown.contains(needle.as_str()) {
                bail!("error: {needle:?} is not in the result or stderr\nresult: {result}");
            }
        }
        if let Some(keys) = &case.expect.kv {
            for (key, expected) in keys {
                let got = self
                    .runtime
                    .block_on(store.get(&tenant, key))?
                    .map(|e| e.value);
                if &got != expected {
                    bail!("kv '{key}': expected {expected:?}, got {got:?}");
                }
            }
        }
        Ok(())
    }

    fn rule_case(&self, case: Value) -> anyhow::Result<()> {
        let scratch = Scratch::new()?;
        let case: RuleCase = scratch.read(case)?;
        let (pack, packs) = self.packs(None)?;
        let pack = &pack.manifest.pack_ref;
        let file = ["yaml", "yml"]
            .iter()
            .map(|ext| self.dir.join("rules").join(format!("{}.{ext}", case.rule)))
            .find(|f| f.is_file());
        let file = match file {
            Some(f) => f,
            None => find_rule(&self.dir, &case.rule)?,
        };
        let verdict = check_rule(&file, pack, Some(&packs), case.trigger, &case.payload)?;
        let rendered = match (case.expect.matched, verdict) {
            (false, Verdict::NoMatch(_)) => return Ok(()),
            (true, Verdict::NoMatch(why)) => bail!("expected a match; no match: {why}"),
            (false, _) => bail!("expected no match; it matched"),
            (true, Verdict::Invalid { problem, .. }) => bail!("{problem}"),
            (true, Verdict::Matched { parameters, .. }) => parameters,
        };
        if let Some(expected) = &case.expect.parameters
            && expected != &rendered
        {
            bail!(
                "parameters: expected {}, got {}",
                Value::Object(expected.clone()),
                Value::Object(rendered)
            );
        }
        Ok(())
    }

    fn sensor_case(&self, case: Value) -> anyhow::Result<()> {
        let scratch = Scratch::new()?;
        let case: SensorCase = scratch.read(case)?;
        let (pack, _) = self.packs(case.config.as_ref())?;
        let Some((_, meta)) = pack
            .sensors
            .iter()
            .find(|(_, s)| s.class_name == case.sensor)
        else {
            let names: Vec<_> = pack
                .sensors
                .iter()
                .map(|(_, s)| s.class_name.as_str())
                .collect();
            bail!(
                "sensor '{}' is not in the pack (it has: {})",
                case.sensor,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
        };
        for (relative, text) in &case.files_before {
            write_file(&scratch.file(relative)?, text)?;
        }
        let store = crate::commands::open_store(scratch.data.path())?;
        let tenant = TenantId::default_tenant();
        let component = self
            .sandbox
            .load_sensor(&pack.sensor_component_path(meta)?)?;
        let sink = Arc::new(Collect {
            meta: meta.clone(),
            got: Mutex::new(Vec::new()),
        });
        let allowed = [std::fs::canonicalize(scratch.work.path())?];
        let log = squall_sandbox::SensorLog::new(64 << 10);
        let setup = squall_sandbox::SensorSetup {
            tenant: tenant.clone(),
            class_name: meta.class_name.clone(),
            kv_prefix: format!("{}:", meta.sensor_ref()),
            config: pack.config.clone(),
            kv: Some(Arc::new(store.clone())),
            events: sink.clone(),
            log: log.clone(),
            limits: squall_sandbox::SensorLimits::default(),
            dirs: pack.preopens(&allowed)?,
            egress: squall_sandbox::Egress::default(),
        };
        let polls = case.polls.unwrap_or(1);
        let outcome: anyhow::Result<()> = self.runtime.block_on(async {
            seed_kv(&store, &tenant, &case.kv).await?;
            let mut instance = self
                .sandbox
                .start_sensor(&component, setup)
                .await
                .map_err(|e| anyhow::anyhow!("the sensor did not start: {e}"))?;
            instance
                .setup()
                .await
                .map_err(|e| anyhow::anyhow!("setup failed: {e}"))?;
            for (relative, text) in &case.files {
                let path = scratch.file(relative)?;
                match text {
                    Some(text) => write_file(&path, text)?,
                    None => std::fs::remove_file(&path)
                        .with_context(|| format!("cannot delete {relative}"))?,
                }
            }
            for _ in 0..polls {
                instance
                    .poll()
                    .await
                    .map_err(|e| anyhow::anyhow!("poll failed: {e}"))?;
            }
            instance.cleanup().await.ok();
            Ok(())
        });
        outcome.map_err(|e| {
            let lines: Vec<String> = log
                .lines()
                .iter()
                .map(|l| format!("[{}] {}", l.level, l.message))
                .collect();
            anyhow::anyhow!("{e:#}\nsensor log:\n{}", lines.join("\n"))
        })?;
        let got = sink.got.lock().expect("lock").clone();
        let expected = &case.expect.dispatched;
        let shown = || serde_json::to_string(&got).unwrap_or_default();
        if got.len() != expected.len() {
            bail!(
                "expected {} dispatches, got {}: {}",
                expected.len(),
                got.len(),
                shown()
            );
        }
        for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
            if want.trigger != have.trigger {
                bail!(
                    "dispatch {i}: expected trigger {}, got {}: {}",
                    want.trigger,
                    have.trigger,
                    shown()
                );
            }
            contains(
                &want.payload,
                &have.payload,
                &format!("dispatch {i}: payload"),
            )
            .map_err(|e| anyhow::anyhow!("{e}\ndispatched: {}", shown()))?;
        }
        Ok(())
    }
}

/// The rule file whose `name` is `name`.
fn find_rule(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    for file in squall_reactor::packs::yaml_files(&dir.join("rules"))? {
        let text = std::fs::read_to_string(&file)?;
        let doc: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
        if doc.get("name").and_then(Value::as_str) == Some(name) {
            return Ok(file);
        }
    }
    bail!("rule '{name}' is not in the pack's rules/")
}

/// What a rule decides for a trigger instance.
pub(crate) enum Verdict {
    /// It does not match: why.
    NoMatch(String),
    /// It matches, and its action would run with `parameters`.
    Matched {
        rule: String,
        action: ActionRef,
        parameters: Map<String, Value>,
    },
    /// It matches, but the server would refuse its parameters.
    Invalid {
        rule: String,
        action: ActionRef,
        parameters: Map<String, Value>,
        problem: String,
    },
}

/// Decide the rule in `file` (of the pack `pack`) for a trigger instance
/// of `trigger` (the rule's own type when `None`) with `payload`. With
/// `packs`, the rendered parameters are checked against the action's
/// schema, as the server checks them.
pub(crate) fn check_rule(
    file: &Path,
    pack: &squall_core::PackRef,
    packs: Option<&PackSet>,
    trigger: Option<String>,
    payload: &Value,
) -> anyhow::Result<Verdict> {
    let templates = Templates::new();
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read '{}'", file.display()))?;
    let rule = Rule::parse(&text, file, pack, &templates)?;
    let trigger = trigger.unwrap_or_else(|| rule.trigger_type.clone());
    if trigger != rule.trigger_type {
        return Ok(Verdict::NoMatch(format!(
            "the rule listens to '{}', the instance is of '{trigger}'",
            rule.trigger_type
        )));
    }
    let ctx = RenderContext {
        trigger: payload,
        rule: rule.template_view(),
        kv: None,
    };
    match rule.evaluate(payload, &templates, &ctx)? {
        Evaluation::NotMatched { key } => {
            Ok(Verdict::NoMatch(format!("criterion '{key}' does not hold")))
        }
        Evaluation::Matched => {
            let parameters = rule.render_parameters(&templates, &ctx)?;
            let action = rule.action.clone();
            let rule = rule.rule_ref();
            Ok(
                match packs.map(|p| check_parameters(p, &action, &parameters)) {
                    Some(Err(problem)) => Verdict::Invalid {
                        rule,
                        action,
                        parameters,
                        problem,
                    },
                    _ => Verdict::Matched {
                        rule,
                        action,
                        parameters,
                    },
                },
            )
        }
    }
}

/// Whether `parameters` would be accepted for `action` by a server that has
/// `packs`.
pub(crate) fn check_parameters(
    packs: &PackSet,
    action: &ActionRef,
    parameters: &Map<String, Value>,
) -> Result<(), String> {
    let (_, meta) = packs.action(action).map_err(|e| e.to_string())?;
    meta.resolve(parameters.clone())
        .map(|_| ())
        .map_err(|e| format!("invalid parameters for '{action}': {e}"))
}

/// Whether `actual` holds `expected`: objects need the keys given (each
/// holding the expected value), everything else is equal.
fn contains(expected: &Value, actual: &Value, at: &str) -> anyhow::Result<()> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let Some(got) = have.get(key) else {
                    bail!("{at}.{key}: missing (expected {value})");
                };
                contains(value, got, &format!("{at}.{key}"))?;
            }
            Ok(())
        }
        (want, have) if want == have => Ok(()),
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => Ok(()),
        (want, have) => bail!("{at}: expected {want}, got {have}"),
    }
}

/// Set a case's datastore keys (the tenant's, plain values).
async fn seed_kv(
    store: &squall_store::Store,
    tenant: &TenantId,
    kv: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    for (key, value) in kv {
        let entry = KvEntry {
            key: key.clone(),
            value: value.clone(),
            expires_at: None,
            secret: false,
        };
        store.set(tenant, entry).await?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Collects a sensor's dispatches, checked as the server checks them.
#[derive(Debug)]
struct Collect {
    meta: squall_core::manifest::SensorMeta,
    got: Mutex<Vec<Dispatched>>,
}

#[async_trait::async_trait]
impl squall_core::events::EventSink for Collect {
    async fn dispatch(
        &self,
        trigger: &str,
        payload: &str,
        _trace_tag: Option<String>,
    ) -> Result<(), String> {
        let Some(declared) = self.meta.declared_trigger(trigger) else {
            return Err(format!(
                "unknown trigger '{trigger}': this sensor declares {}",
                self.meta.declared_refs()
            ));
        };
        let payload: Value =
            serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        declared.validate_payload(&payload)?;
        self.got.lock().expect("lock").push(Dispatched {
            trigger: declared.trigger_ref.clone(),
            payload,
        });
        Ok(())
    }
}
