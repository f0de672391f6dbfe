//! Take one action from a request to a finished, durable execution record.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use squall_core::execution::CapturedOutput;
use squall_core::kv::KvStore;
use squall_core::params::ParamError;
use squall_core::time::now_rfc3339;
use squall_core::{ActionRef, Execution, ExecutionId, ExecutionStatus, StatusChange, TenantId};
use squall_sandbox::{ActionComponent, Invocation, Limits, Outcome, Sandbox};

use crate::scheduler::Live;
use squall_store::{Lane, Store};

use crate::packs::{PackError, PackRegistry, PackSet};
use squall_core::manifest::RunnerType;

/// The longest `delay` an execution may ask for: 30 days.
pub const MAX_DELAY_MS: u64 = 30 * 24 * 3600 * 1000;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub tenant: TenantId,
    pub action: ActionRef,
    pub parameters: Map<String, Value>,
    pub trace_tag: Option<String>,
    /// StackStorm's execution context (`user`, `re-run`, `policies`, ...).
    pub context: Map<String, Value>,
    /// Milliseconds to wait before running.
    pub delay: Option<u64>,
}

impl RunRequest {
    pub fn new(tenant: TenantId, action: ActionRef, parameters: Map<String, Value>) -> Self {
        Self {
            tenant,
            action,
            parameters,
            trace_tag: None,
            context: Map::new(),
            delay: None,
        }
    }
}

/// Why an execution was not started. When one of these is returned, no
/// execution record exists.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("action '{0}' is disabled")]
    Disabled(ActionRef),
    #[error("invalid parameters for '{action}': {cause}")]
    Parameters {
        action: ActionRef,
        cause: ParamError,
    },
    #[error("action '{action}': {cause}")]
    Component {
        action: ActionRef,
        cause: squall_sandbox::Error,
    },
    #[error(
        "action '{0}': an execution with secret parameters cannot be resumed after a restart (secrets are not stored in clear)"
    )]
    SecretsNotStored(ActionRef),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Rerun(String),
    #[error("{0}")]
    Quota(String),
    /// A host runner's action for a tenant without host runners.
    #[error("{0}")]
    HostRunnersOff(String),
    /// A host command that cannot be made from its parameters.
    #[error("{0}")]
    Host(String),
    #[error("delay {0} ms is too long (at most {MAX_DELAY_MS} ms, 30 days)")]
    Delay(u64),
    #[error(transparent)]
    Store(#[from] squall_store::Error),
}

/// Runs actions in the sandbox and records them in the store.
#[derive(Debug, Clone)]
pub struct Runner {
    sandbox: Arc<Sandbox>,
    store: Store,
    packs: Arc<PackRegistry>,
    limits: Limits,
    /// Host directories packs may have opened to their guests.
    allowed_dirs: Arc<[std::path::PathBuf]>,
    /// The server's outbound HTTP settings; each pack adds its hosts.
    egress: squall_sandbox::Egress,
    /// Which tenants may run commands on hosts, and how.
    host: Arc<crate::host::HostRunners>,
}

impl Runner {
    /// `limits` are the defaults for every execution; an execution's
    /// `timeout` parameter overrides the timeout. `packs` are the default
    /// tenant's; others install theirs through [`Runner::registry`].
    pub fn new(sandbox: Arc<Sandbox>, store: Store, packs: Arc<PackSet>, limits: Limits) -> Self {
        Self {
            sandbox,
            store,
            packs: Arc::new(PackRegistry::with(TenantId::default_tenant(), packs)),
            limits,
            allowed_dirs: Arc::new([]),
            egress: squall_sandbox::Egress::default(),
            host: Arc::default(),
        }
    }

    /// Turn host runners (`core.local`, `core.remote`) on for the tenants
    /// `host` names (`squall serve --host-runners`); off for all others.
    pub fn with_host_runners(mut self, host: crate::host::HostRunners) -> Self {
        self.host = Arc::new(host);
        self
    }

    /// Which tenants may run commands on hosts.
    pub fn host_runners(&self) -> &crate::host::HostRunners {
        &self.host
    }

    /// The server's outbound HTTP settings (private networks, `*`,
    /// timeouts, response size); packs' `allowed_hosts` fill in the rest.
    pub fn with_egress(mut self, egress: squall_sandbox::Egress) -> Self {
        self.egress = egress;
        self
    }

    /// The outbound HTTP policy of `pack`'s guests.
    pub fn egress_for(&self, pack: &crate::packs::LoadedPack) -> squall_sandbox::Egress {
        squall_sandbox::Egress {
            pack: pack.manifest.pack_ref.to_string(),
            allowed_hosts: pack.manifest.allowed_hosts.clone().into(),
            ..self.egress.clone()
        }
    }

    /// Let packs' configs open directories under `dirs` to their guests
    /// (`squall serve --allow-dir`). Nothing is opened otherwise.
    /// Each is compared by its canonical path (symlinks resolved).
    pub fn with_allowed_dirs(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.allowed_dirs = dirs
            .into_iter()
            .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
            .collect::<Vec<_>>()
            .into();
        self
    }

    pub fn allowed_dirs(&self) -> &[std::path::PathBuf] {
        &self.allowed_dirs
    }

    /// The directories `tenant`'s packs may open: every `--allow-dir` for
    /// the default tenant (the server's own), `<allow-dir>/<tenant>` for
    /// the others, so tenants never share a directory.
    pub fn allowed_dirs_for(
        &self,
        tenant: &TenantId,
    ) -> std::borrow::Cow<'_, [std::path::PathBuf]> {
        if *tenant == TenantId::default_tenant() {
            std::borrow::Cow::Borrowed(&self.allowed_dirs)
        } else {
            std::borrow::Cow::Owned(
                self.allowed_dirs
                    .iter()
                    .map(|d| d.join(tenant.as_str()))
                    .collect(),
            )
        }
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `tenant`'s packs as they are now.
    pub fn packs(&self, tenant: &TenantId) -> Arc<PackSet> {
        self.packs.of(tenant)
    }

    /// Every tenant's packs.
    pub fn registry(&self) -> &Arc<PackRegistry> {
        &self.packs
    }

    /// Validate, record, run and record again. Returns the finished execution;
    /// an `Err` means nothing ran and nothing was recorded.
    pub async fn run(&self, req: RunRequest) -> Result<Execution, RunError> {
        let prepared = self.prepare(req, None)?;
        self.store.insert_execution(&prepared.execution).await?;
        self.execute(prepared).await
    }

    /// The default limits of every execution.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes of stdout, stderr and log kept per execution.
    pub fn output_bytes(&self) -> usize {
        self.limits.output_bytes
    }

    /// Everything up to the `requested` record, without writing it: look up
    /// the action, validate the parameters, load the component. `origin` is
    /// the trigger instance and rule when a rule asked for the run.
    pub fn prepare(
        &self,
        req: RunRequest,
        origin: Option<squall_core::execution::Origin>,
    ) -> Result<Prepared, RunError> {
        let set = self.packs.of(&req.tenant);
        let (pack, meta) = set.action(&req.action)?;
        if !meta.enabled {
            return Err(RunError::Disabled(req.action));
        }
        let (parameters, options) =
            meta.resolve(req.parameters.clone())
                .map_err(|cause| RunError::Parameters {
                    action: req.action.clone(),
                    cause,
                })?;
        let (work, dirs) = match meta.runner {
            RunnerType::Wasm | RunnerType::PythonScript => {
                let dirs = pack.preopens(&self.allowed_dirs_for(&req.tenant))?;
                let component = self
                    .sandbox
                    .load_action(&pack.component_path(meta)?)
                    .map_err(|cause| RunError::Component {
                        action: req.action.clone(),
                        cause,
                    })?;
                (Work::Component(component), dirs)
            }
            RunnerType::Orquesta => {
                let spec = pack.workflows.get(meta.action_ref.name()).ok_or_else(|| {
                    RunError::Pack(PackError::UnknownAction {
                        action: req.action.clone(),
                        hint: "its workflow definition was not loaded".into(),
                    })
                })?;
                (Work::Workflow(spec.clone()), Vec::new())
            }
            RunnerType::Inquirer => (Work::Inquiry, Vec::new()),
            RunnerType::LocalShellCmd
            | RunnerType::LocalShellScript
            | RunnerType::RemoteShellCmd
            | RunnerType::RemoteShellScript => {
                if let Some(why) = self.host.refusal(&req.tenant, meta) {
                    return Err(RunError::HostRunnersOff(why));
                }
                let command = crate::host::HostCommand::prepare(meta, &pack.dir, &parameters)
                    .map_err(|why| RunError::Host(format!("action '{}': {why}", req.action)))?;
                (Work::Host(Arc::new(command)), Vec::new())
            }
        };
        let now = now_rfc3339();
        let (trigger_instance_id, rule_ref, trigger_type) = match origin {
            Some(o) => (Some(o.trigger_instance), Some(o.rule), Some(o.trigger_type)),
            None => (None, None, None),
        };
        let given = req.parameters;
        let delay = req.delay.filter(|d| *d > 0);
        if let Some(d) = delay.filter(|d| *d > MAX_DELAY_MS) {
            return Err(RunError::Delay(d));
        }
        let mut execution = Execution {
            id: ExecutionId::generate(),
            tenant: req.tenant,
            action: req.action,
            status: ExecutionStatus::Requested,
            parameters: Value::Object(stored_parameters(meta, &parameters, options.timeout)),
            result: None,
            output: CapturedOutput::default(),
            start_timestamp: now.clone(),
            end_timestamp: None,
            log: vec![StatusChange {
                status: ExecutionStatus::Requested,
                timestamp: now,
            }],
            trace_tag: req.trace_tag,
            trigger_instance_id,
            rule_ref,
            trigger_type: trigger_type.filter(|t| !t.is_empty()),
            context: req.context,
            delay,
        };
        if delay.is_some() {
            execution.transition(ExecutionStatus::Delayed);
        }
        if matches!(meta.runner, RunnerType::Inquirer | RunnerType::PythonScript)
            || meta.runner.is_host()
        {
            // What the record's runner is, for those who read it (the API's
            // `runner`, the inquiry listing).
            execution
                .context
                .insert("runner".into(), Value::from(meta.runner.as_str()));
        }
        if meta.runner == RunnerType::Orquesta {
            // StackStorm's mark of a workflow's own execution: its workflow
            // record (here, the same id).
            execution.context.insert(
                "workflow_execution".into(),
                Value::String(execution.id.to_string()),
            );
        }
        Ok(Prepared {
            execution,
            given,
            parameters,
            timeout: options.timeout,
            work,
            config: pack.config.clone(),
            dirs,
            egress: self.egress_for(pack),
            live: Live::new(self.limits.output_bytes),
            held: Vec::new(),
            woken_by: None,
            waiting_since: None,
            resumed: false,
        })
    }

    /// Prepare an execution recorded as `requested` (after a restart) from
    /// its stored parameters. Secret parameters were masked when stored, so
    /// such an execution is refused rather than run with the mask.
    pub fn resume(&self, execution: Execution) -> Result<Prepared, RunError> {
        let given = self.stored_request_parameters(&execution, &Map::new())?;
        let mut req = RunRequest::new(execution.tenant.clone(), execution.action.clone(), given);
        req.trace_tag = execution.trace_tag.clone();
        let mut prepared = self.prepare(req, None)?;
        prepared.execution = execution;
        prepared.resumed = true;
        Ok(prepared)
    }

    /// The parameters to run `execution` again with: its stored ones (minus
    /// immutable ones, which take their defaults again) with `overrides`
    /// on top. Refused when a secret parameter was stored masked and is not
    /// given again in `overrides`.
    pub fn stored_request_parameters(
        &self,
        execution: &Execution,
        overrides: &Map<String, Value>,
    ) -> Result<Map<String, Value>, RunError> {
        let set = self.packs.of(&execution.tenant);
        let (_, meta) = set.action(&execution.action)?;
        let mut given = execution
            .parameters
            .as_object()
            .cloned()
            .unwrap_or_default();
        if meta
            .parameters
            .specs()
            .any(|s| s.secret && given.contains_key(&s.name) && !overrides.contains_key(&s.name))
        {
            return Err(RunError::SecretsNotStored(execution.action.clone()));
        }
        for spec in meta.parameters.specs().filter(|s| s.immutable) {
            given.remove(&spec.name);
        }
        given.extend(overrides.clone());
        Ok(given)
    }

    /// Run an execution whose `requested` record exists, and record the end.
    #[tracing::instrument(skip_all, fields(execution_id = %prepared.execution.id, action = %prepared.execution.action))]
    pub async fn execute(&self, mut prepared: Prepared) -> Result<Execution, RunError> {
        self.run_to_end_with(&mut prepared, Lane::Here, |_| {})
            .await?;
        self.store.update_execution(&prepared.execution).await?;
        Ok(prepared.execution)
    }

    /// Record `running` (written by `lane`), call `on_running`, run the
    /// guest, and leave `prepared.execution` in its final status — not yet
    /// written, so the caller can write it together with what its
    /// completion causes. Returns false, running nothing, when the record
    /// had completed meanwhile (canceled).
    pub async fn run_to_end_with(
        &self,
        prepared: &mut Prepared,
        lane: Lane,
        on_running: impl FnOnce(&Execution),
    ) -> Result<bool, RunError> {
        let execution = &mut prepared.execution;
        // Already `running`: claimed by the write that created it (a
        // workflow's next task, a rule's execution); a cancel that came
        // after that write ends it before it runs.
        if execution.status == ExecutionStatus::Running && prepared.live.cancel.is_canceled() {
            execution.result = Some(json!({"error": "canceled before it ran"}));
            Self::record_cancel(execution, &prepared.live);
            execution.transition(ExecutionStatus::Canceled);
            return Ok(true);
        }
        if execution.status != ExecutionStatus::Running {
            if execution.status != ExecutionStatus::Scheduled {
                execution.transition(ExecutionStatus::Scheduled);
            }
            execution.transition(ExecutionStatus::Running);
            if !self.store.start_execution(execution, lane).await? {
                return Ok(false);
            }
            on_running(execution);
        }

        let invocation = Invocation {
            execution_id: execution.id.clone(),
            tenant: execution.tenant.clone(),
            action: execution.action.clone(),
            parameters: prepared.parameters.clone(),
            config: prepared.config.clone(),
            kv: Some(Arc::new(self.store.clone()) as Arc<dyn KvStore>),
            trace_tag: execution.trace_tag.clone(),
            limits: Limits {
                timeout: prepared.timeout,
                ..self.limits
            },
            cancel: prepared.live.cancel.clone(),
            output: Some(prepared.live.output.clone()),
            dirs: prepared.dirs.clone(),
            egress: prepared.egress.clone(),
        };
        let component = match &prepared.work {
            Work::Component(component) => component,
            Work::Host(command) => {
                let run = crate::host::HostRun {
                    execution_id: execution.id.as_str(),
                    pack: execution.action.pack().as_str(),
                    api_url: &self.host.api_url,
                    timeout: prepared.timeout,
                    cancel: &prepared.live.cancel,
                    output: &prepared.live.output,
                    output_cap: self.limits.output_bytes,
                };
                let outcome = if command.remote.is_some() {
                    crate::ssh::run_remote(command, &self.host.ssh, run).await
                } else {
                    crate::host::run_local(command, self.host.run_as.as_ref(), run).await
                };
                execution.result = Some(outcome.result);
                execution.output = prepared.live.output.snapshot();
                Self::record_cancel(execution, &prepared.live);
                execution.transition(outcome.status);
                return Ok(true);
            }
            Work::Workflow(_) | Work::Inquiry => {
                return Err(RunError::Store(squall_store::Error::Corrupt(format!(
                    "execution {}: a workflow or an inquiry is handled by the reactor, not run as a component",
                    execution.id
                ))));
            }
        };
        let report = self.sandbox.run_action(component, invocation).await;
        let (status, result) = match report.outcome {
            Outcome::Succeeded(value) => (ExecutionStatus::Succeeded, value),
            // A failure whose message is a JSON object carries the result
            // itself (the SDK's `Error::failed_with`, StackStorm's
            // `(False, result)`); any other message becomes `{"error"}`.
            Outcome::Failed(failure) => (
                ExecutionStatus::Failed,
                match serde_json::from_str::<Map<String, Value>>(&failure.message) {
                    Ok(result) => Value::Object(result),
                    Err(_) => json!({ "error": failure.message }),
                },
            ),
            Outcome::Timeout { after } => (
                ExecutionStatus::Timeout,
                json!({ "error": format!("action timed out after {:.1} s", after.as_secs_f64()) }),
            ),
            Outcome::Canceled => (
                ExecutionStatus::Canceled,
                json!({ "error": "canceled while running" }),
            ),
        };
        execution.result = Some(result);
        execution.output = report.output;
        Self::record_cancel(execution, &prepared.live);
        execution.transition(status);
        tracing::debug!(status = %execution.status, elapsed_us = report.elapsed.as_micros() as u64, "execution finished");
        Ok(true)
    }

    /// A cancel reached a running execution: log when (it may still have
    /// ended on its own first).
    fn record_cancel(execution: &mut Execution, live: &Live) {
        if let Some(at) = live.canceling_at() {
            execution.status = ExecutionStatus::Canceling;
            execution.log.push(StatusChange {
                status: ExecutionStatus::Canceling,
                timestamp: at,
            });
        }
    }
}

/// An execution ready to run: its record and what the guest needs.
#[derive(Debug)]
pub struct Prepared {
    pub execution: Execution,
    /// The parameters as the caller gave them (secrets in clear), for a retry.
    pub(crate) given: Map<String, Value>,
    parameters: Map<String, Value>,
    timeout: std::time::Duration,
    pub(crate) work: Work,
    config: Arc<str>,
    dirs: Vec<squall_sandbox::Preopen>,
    egress: squall_sandbox::Egress,
    /// Its cancel signal, output and phase, shared with the scheduler.
    pub(crate) live: Arc<Live>,
    /// The concurrency gates whose slots it holds once admitted.
    pub(crate) held: Vec<String>,
    /// The gate whose release woke it, after it waited there.
    pub(crate) woken_by: Option<String>,
    /// When it first waited at a gate (a number from the scheduler):
    /// waiters wait in this order.
    pub(crate) waiting_since: Option<u64>,
    /// Prepared again from its record (a restart, a takeover, taken from a
    /// busy node): it may hold gate slots in the database already.
    pub(crate) resumed: bool,
}

/// What an execution runs.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    Component(Arc<ActionComponent>),
    Workflow(Arc<squall_workflow::spec::Workflow>),
    /// A question to a person: recorded `pending` until answered.
    Inquiry,
    /// A command on a host (`core.local`, `core.remote`).
    Host(Arc<crate::host::HostCommand>),
}

impl Prepared {
    /// The parameters the action runs with (secrets in clear).
    pub(crate) fn parameters(&self) -> &Map<String, Value> {
        &self.parameters
    }

    /// When it may run: `start_timestamp` + `delay`, if that is still ahead.
    pub(crate) fn not_before(&self) -> Option<std::time::SystemTime> {
        let delay = self.execution.delay?;
        let start = squall_core::time::parse_rfc3339(&self.execution.start_timestamp)?;
        let at = std::time::SystemTime::from(start) + std::time::Duration::from_millis(delay);
        (at > std::time::SystemTime::now()).then_some(at)
    }
}

/// What an execution record keeps of its parameters: the resolved ones with
/// secrets masked, plus the runner's `timeout`, so the record says how it
/// was run and a resumed execution runs the same way.
fn stored_parameters(
    meta: &squall_core::manifest::ActionMeta,
    parameters: &Map<String, Value>,
    timeout: std::time::Duration,
) -> Map<String, Value> {
    let mut stored = meta.parameters.mask_secrets(parameters);
    if matches!(meta.runner, RunnerType::Wasm | RunnerType::PythonScript) || meta.runner.is_host() {
        stored.insert("timeout".into(), Value::from(timeout.as_secs()));
    }
    stored
}
