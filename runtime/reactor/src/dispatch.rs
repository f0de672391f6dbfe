//! The reactor's core loop: dispatch → rules → trigger instance +
//! enforcements + requested executions (one write, before the caller's 2xx)
//! → bounded queue → workers → `core.st2.generic.actiontrigger` back into
//! dispatch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use squall_core::policy::Policy;
use squall_core::rule::Rule;
use squall_core::template::{KvLookup, Templates};
use squall_core::time::now_rfc3339;
use squall_core::trigger::{
    EnforcementStatus, RuleEnforcement, TriggerInstance, TriggerInstanceStatus, TriggerType, new_id,
};
use squall_core::{Execution, ExecutionStatus, TenantId};
use squall_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::engine::{Decision, decide};
use crate::file_watch::{Watchers, watch_of};
use crate::packs::PackError;
use crate::policies::{PolicyIndex, PolicyRegistry, check_policy, load_policies};
use crate::rules::{RuleIndex, RuleRegistry, check_rule, load_rules, trigger_types_of};
use crate::runner::{Prepared, RunError, RunRequest, Runner};
use crate::scheduler::Scheduler;
use crate::sensors::{SensorConfig, Sensors};
use crate::timers::{self, TimerKey, Timers};

/// Settings for [`Reactor::start`].
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Executions running at once. A worker also waits for the commits
    /// recording its execution's start and end, so there are many more
    /// workers than cores.
    pub workers: usize,
    /// Executions waiting for a worker before dispatch waits too.
    pub queue: usize,
    /// Executions one tenant may have scheduled or running at once (more
    /// wait, `delayed`); `None`: only the workers limit.
    pub tenant_max_running: Option<usize>,
    /// How sensors run and restart.
    pub sensors: SensorConfig,
    /// Where packs installed through the API are kept; `None`: installs
    /// are refused.
    pub pack_store: Option<crate::install::PackStore>,
    /// What one tenant may use.
    pub quotas: Quotas,
    /// Task executions (tasks and items) one workflow may start before it
    /// is failed as a loop that never ends.
    pub max_workflow_tasks: u64,
    /// The API's address as workflows see it (`ctx().st2.api_url`).
    pub api_url: String,
    /// Run only what is asked for: no rules, sensors or timers, and
    /// nothing picked up from a previous run (`squall run` of a workflow).
    pub standalone: bool,
    /// Builds what an uploaded pack ships only as sources (its Python
    /// code); `None`: such a pack is refused for the components it lacks.
    pub pack_builder: Option<Arc<dyn crate::install::PackBuilder>>,
    /// This node among others on one PostgreSQL database: the executions
    /// it writes are claimed in its name (the store's connections say it,
    /// `Store::connect_as`), it renews those claims, and it takes over the
    /// executions of nodes whose claims ran out. `None`: the store is this
    /// server's alone, and what a previous run left is taken over at start.
    pub cluster: Option<ClusterNode>,
}

/// A node's name and how long its claims hold unrenewed (see
/// [`ReactorConfig::cluster`]).
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// As the store's connections give it.
    pub name: String,
    /// How long a claim holds unrenewed: the longest another node waits
    /// before it takes over the executions of a node that died. Renewed
    /// six times in that time.
    pub claim_ttl: std::time::Duration,
    /// Whether it runs what must run once (sensors, timers, file watches)
    /// from the start; else only once [`Reactor::lead`] is called.
    pub leads: bool,
}

/// Per-tenant limits (`None`: no limit). Exceeding one refuses the request
/// that would (HTTP 429, or a failed enforcement for a rule) and never
/// affects other tenants. Executions running at once are bounded by
/// [`ReactorConfig::tenant_max_running`] (more wait, `delayed`); datastore
/// bytes by the store (`Store::with_kv_quota`).
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    /// Bytes of a tenant's installed packs together.
    pub pack_bytes: Option<u64>,
    /// Executions a tenant may request per minute.
    pub executions_per_minute: Option<u32>,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        Self {
            workers: 256,
            queue: 4096,
            tenant_max_running: None,
            sensors: SensorConfig::default(),
            pack_store: None,
            quotas: Quotas::default(),
            max_workflow_tasks: squall_workflow::conductor::DEFAULT_MAX_TASKS,
            api_url: "http://127.0.0.1:9101/v1".to_owned(),
            standalone: false,
            pack_builder: None,
            cluster: None,
        }
    }
}

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("unknown trigger type '{0}'")]
    UnknownTriggerType(String),
    #[error("invalid {trigger_type} event: {message}")]
    Invalid {
        trigger_type: String,
        message: String,
    },
    #[error("the reactor is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] squall_store::Error),
}

/// Why a rule change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleChangeError {
    #[error(transparent)]
    Invalid(#[from] PackError),
    #[error("{0}")]
    Trigger(String),
    #[error("{kind} '{name}' already exists")]
    Exists { kind: &'static str, name: String },
    #[error("{kind} '{name}' not found")]
    NotFound { kind: &'static str, name: String },
    #[error(transparent)]
    Store(#[from] squall_store::Error),
}

/// The running reactor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reactor {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) runner: Runner,
    rules: RuleRegistry,
    pub(crate) policies: PolicyRegistry,
    /// Each tenant's trigger types: the built-ins and its packs'.
    trigger_types: std::sync::RwLock<HashMap<TenantId, Arc<TriggerTypes>>>,
    /// The built-in trigger types alone, for tenants without packs.
    builtin_types: Arc<TriggerTypes>,
    /// Serializes rule and policy changes: check, persist, rebuild.
    rule_changes: tokio::sync::Mutex<()>,
    /// Serializes pack installs and removals.
    pub(crate) installs: tokio::sync::Mutex<()>,
    /// One server-side build of an upload at a time.
    pub(crate) builds: tokio::sync::Semaphore,
    /// Set at shutdown: builds stop, and no more start.
    pub(crate) builds_cancelled: std::sync::atomic::AtomicBool,
    /// Executions requested per tenant, against `quotas.executions_per_minute`.
    rates: crate::quota::RateLimits,
    /// Execution events, for `/stream/v1/stream`.
    pub(crate) events: tokio::sync::broadcast::Sender<crate::lifecycle::ExecutionEvent>,
    pub(crate) templates: Templates,
    pub(crate) jobs: mpsc::Sender<Prepared>,
    pub(crate) scheduler: Scheduler,
    pub(crate) config: ReactorConfig,
    pub(crate) sensors: Sensors,
    pub(crate) sensor_config: SensorConfig,
    /// Executions being run by workers right now.
    pub(crate) running: std::sync::atomic::AtomicUsize,
    /// A worker's turn to run an execution: `workers` of them. A worker
    /// holds one while it runs what it took from the queue; an execution
    /// recorded `running` by the write that creates it holds one from
    /// before that write (see [`Reactor::claim_idle_workers`]).
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Executions holding a slot from before the write that records them,
    /// not yet counted running.
    pub(crate) reserved: std::sync::atomic::AtomicUsize,
    /// Jobs a worker took from the queue and that wait for a slot.
    pub(crate) awaiting_slot: std::sync::atomic::AtomicUsize,
    /// Workflows running.
    pub(crate) flows: crate::workflows::Flows,
    timers: Mutex<Timers>,
    watchers: Mutex<Watchers>,
    /// The sensors this node runs under their leases (in a cluster).
    pub(crate) sensor_leases: Mutex<crate::sensor_leases::SensorLeases>,
    /// Wakes the sensor leases' beat early.
    pub(crate) sensor_beat: tokio::sync::Notify,
    /// The throttle windows this node knows open.
    pub(crate) throttles: Mutex<crate::throttles::Throttles>,
    tasks: Mutex<JoinSet<()>>,
    pub(crate) closed: std::sync::atomic::AtomicBool,
    /// Runs what must run once: sensors, timers, file watches (see
    /// [`ClusterNode::leads`]).
    pub(crate) leading: std::sync::atomic::AtomicBool,
}

/// Trigger types by ref.
pub(crate) type TriggerTypes = HashMap<String, TriggerType>;

/// Everything a tenant's packs bring, loaded and checked, not yet live.
struct TenantLoad {
    types: Arc<TriggerTypes>,
    rules: Vec<Arc<Rule>>,
    policies: std::collections::BTreeMap<(TenantId, String), Arc<Policy>>,
    sensors: Vec<Arc<crate::sensors::SensorEntry>>,
}

/// Load and check what `packs` bring to `tenant`: trigger types, rules
/// (with the API's changes), policies, and the sensors of the packs for
/// which `wanted` holds.
fn load_tenant(
    runner: &Runner,
    store: &Store,
    templates: &Templates,
    log_bytes: usize,
    tenant: &TenantId,
    packs: &crate::packs::PackSet,
    wanted: impl Fn(&squall_core::PackRef) -> bool,
) -> Result<TenantLoad, RuleChangeError> {
    let types = trigger_types_of(packs);
    let rules = load_rules(tenant, packs, &store.rule_changes()?, templates, |rule| {
        check_rule(&types, packs, &runner.allowed_dirs_for(tenant), rule)
    })?;
    let policies = load_policies(tenant, packs, &store.policy_changes()?)?;
    // Every pack's directory grants are checked now, not at its first
    // execution.
    for pack in packs.packs() {
        pack.preopens(&runner.allowed_dirs_for(tenant))?;
    }
    let sensors = Sensors::entries_of(tenant, packs, wanted, runner, log_bytes)?;
    for (t, sensor_ref, enabled) in store.sensor_overrides()? {
        if &t != tenant {
            continue;
        }
        if let Some(entry) = sensors.iter().find(|e| e.meta.sensor_ref() == sensor_ref) {
            entry.set_enabled(enabled);
        }
    }
    Ok(TenantLoad {
        types: Arc::new(types),
        rules,
        policies,
        sensors,
    })
}

/// `st2kv.system.*` for templates, read from the store.
#[derive(Debug)]
pub(crate) struct StoreKv {
    pub(crate) store: Store,
    pub(crate) tenant: TenantId,
}

impl KvLookup for StoreKv {
    fn get(&self, scope: &str, key: &str) -> Option<String> {
        // `st2kv.system` only: rules have no user, and a name no request
        // could use (a user's key, under its control-character prefix) is
        // no key at all.
        if scope != "system" || squall_core::kv::check_key(key).is_err() {
            return None;
        }
        match self.store.kv_get_blocking(&self.tenant, key) {
            // Secrets flow into rule templates only through `decrypt_kv`.
            Ok(entry) => entry.filter(|e| !e.secret).map(|e| e.value),
            Err(e) => {
                tracing::warn!(error = %e, key, "st2kv lookup failed");
                None
            }
        }
    }

    fn secret(&self, scope: &str, key: &str) -> Option<String> {
        if scope != "system" || squall_core::kv::check_key(key).is_err() {
            return None;
        }
        match self.store.kv_get_blocking(&self.tenant, key) {
            Ok(entry) => entry.filter(|e| e.secret).map(|e| e.value),
            Err(e) => {
                tracing::warn!(error = %e, key, "st2kv lookup failed");
                None
            }
        }
    }
}

impl Reactor {
    /// Load rules, start the workers, pick up what a previous run left
    /// (executions `running` become `abandoned`, `requested` ones run), then
    /// start the timers.
    pub async fn start(
        store: Store,
        runner: Runner,
        config: &ReactorConfig,
    ) -> Result<Self, RuleChangeError> {
        let templates = Templates::new();
        let mut rules = Vec::new();
        let mut policies = std::collections::BTreeMap::new();
        let mut trigger_types = HashMap::new();
        let sensors = Sensors::default();
        let tenants = if config.standalone {
            Vec::new()
        } else {
            runner.registry().all()
        };
        for (tenant, packs) in tenants {
            let load = load_tenant(
                &runner,
                &store,
                &templates,
                config.sensors.log_bytes,
                &tenant,
                &packs,
                |_| true,
            )?;
            rules.extend(load.rules.into_iter().map(|r| (tenant.clone(), r)));
            policies.extend(load.policies);
            sensors.insert(load.sensors);
            trigger_types.insert(tenant, load.types);
        }
        let registry = RuleRegistry::default();
        registry.replace(RuleIndex::build(rules));
        let policy_registry = PolicyRegistry::default();
        policy_registry.replace(PolicyIndex::build(policies));
        let (jobs_tx, jobs_rx) = mpsc::channel::<Prepared>(config.queue.max(1));
        // On PostgreSQL the gates hold across every node on the database.
        let scheduler = match store.postgres() {
            Some(_) => Scheduler::shared(),
            None => Scheduler::default(),
        };
        let inner = Arc::new(Inner {
            store,
            runner,
            rules: registry,
            policies: policy_registry,
            scheduler,
            config: config.clone(),
            sensors,
            sensor_config: config.sensors.clone(),
            trigger_types: std::sync::RwLock::new(trigger_types),
            builtin_types: Arc::new(trigger_types_of(&crate::packs::PackSet::default())),
            rule_changes: tokio::sync::Mutex::new(()),
            installs: tokio::sync::Mutex::new(()),
            builds: tokio::sync::Semaphore::new(1),
            builds_cancelled: false.into(),
            rates: Default::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            templates,
            jobs: jobs_tx,
            running: 0.into(),
            slots: Arc::new(tokio::sync::Semaphore::new(config.workers.max(1))),
            reserved: 0.into(),
            awaiting_slot: 0.into(),
            timers: Mutex::new(Timers::default()),
            watchers: Mutex::new(Watchers::default()),
            throttles: Mutex::default(),
            sensor_leases: Mutex::default(),
            sensor_beat: tokio::sync::Notify::new(),
            tasks: Mutex::new(JoinSet::new()),
            closed: false.into(),
            leading: config.cluster.as_ref().is_none_or(|c| c.leads).into(),
            flows: Default::default(),
        });
        let reactor = Self { inner };
        let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
        for _ in 0..config.workers.max(1) {
            let (reactor, rx) = (reactor.clone(), jobs_rx.clone());
            reactor.clone().spawn(async move { reactor.work(rx).await });
        }
        if config.standalone {
            return Ok(reactor);
        }
        // Recover before the timers start, so nothing they request is
        // mistaken for work left by the previous run.
        let left = reactor.claim_left_over().await?;
        reactor.recover(left.as_ref()).await?;
        reactor.recover_inquiries(left.as_ref())?;
        reactor.keep_claims();
        reactor.keep_sensor_leases();
        reactor.reconcile_timers();
        reactor.inner.sensors.sync(&reactor.rules());
        reactor.start_sensors();
        Ok(reactor)
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner
            .tasks
            .lock()
            .expect("task set lock poisoned")
            .spawn(task);
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn runner(&self) -> &Runner {
        &self.inner.runner
    }

    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    /// The current rules.
    pub fn rules(&self) -> Arc<RuleIndex> {
        self.inner.rules.snapshot()
    }

    /// One execution of `tenant`'s per-minute quota, if it has one.
    pub(crate) fn take_execution_quota(&self, tenant: &TenantId) -> Result<(), RunError> {
        match self.inner.config.quotas.executions_per_minute {
            Some(n) => self.inner.rates.take(tenant, n).map_err(RunError::Quota),
            None => Ok(()),
        }
    }

    /// `tenant`'s trigger types, by ref.
    pub(crate) fn types_of(&self, tenant: &TenantId) -> Arc<TriggerTypes> {
        self.inner
            .trigger_types
            .read()
            .expect("trigger type lock poisoned")
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.inner.builtin_types.clone())
    }

    /// `tenant`'s trigger types (the built-ins and its packs'), by ref.
    pub fn trigger_types(&self, tenant: &TenantId) -> Vec<TriggerType> {
        let mut types: Vec<_> = self.types_of(tenant).values().cloned().collect();
        types.sort_by(|a, b| a.trigger_ref.cmp(&b.trigger_ref));
        types
    }

    /// Make `packs` `tenant`'s packs, atomically: trigger types, rules,
    /// policies and the sensors of the packs in `changed` are loaded and
    /// checked first (an error changes nothing), then swapped in together.
    /// Executions already prepared keep the components and config they were
    /// prepared with. Sensors of packs in `changed` restart; others run on.
    pub async fn activate_packs(
        &self,
        tenant: &TenantId,
        packs: Arc<crate::packs::PackSet>,
        changed: &[squall_core::PackRef],
    ) -> Result<(), RuleChangeError> {
        let _serial = self.inner.rule_changes.lock().await;
        let load = {
            let (reactor, tenant, packs, changed) = (
                self.clone(),
                tenant.clone(),
                packs.clone(),
                changed.to_vec(),
            );
            tokio::task::spawn_blocking(move || {
                let inner = &reactor.inner;
                load_tenant(
                    &inner.runner,
                    &inner.store,
                    &inner.templates,
                    inner.sensor_config.log_bytes,
                    &tenant,
                    &packs,
                    |p| changed.contains(p),
                )
            })
            .await
            .map_err(|e| {
                RuleChangeError::Store(squall_store::Error::Corrupt(format!(
                    "pack activation task failed: {e}"
                )))
            })??
        };
        self.inner.runner.registry().replace(tenant.clone(), packs);
        self.inner
            .trigger_types
            .write()
            .expect("trigger type lock poisoned")
            .insert(tenant.clone(), load.types);
        let mut policies = self.policies().all.clone();
        policies.retain(|(t, _), _| t != tenant);
        policies.extend(load.policies);
        self.inner.policies.replace(PolicyIndex::build(policies));
        let stopped = self.inner.sensors.remove(tenant, |p| changed.contains(p));
        self.stop_entries(&stopped);
        let started = load.sensors.clone();
        self.inner.sensors.insert(load.sensors);
        let new_rules = load.rules;
        self.rebuild(|all| {
            all.retain(|(t, _), _| t != tenant);
            for rule in new_rules {
                all.insert((tenant.clone(), rule.rule_ref()), rule);
            }
        })?;
        for entry in started {
            self.start_if_enabled(entry);
        }
        // Waiters on gates of policies that went away must not wait forever.
        self.readmit_waiting();
        Ok(())
    }

    /// Accept one event: validate it, match it, and persist the trigger
    /// instance with its enforcements and requested executions in one
    /// transaction. Returns once all of it is durable; the executions are
    /// then queued for the workers.
    #[tracing::instrument(skip_all, fields(trigger = %trigger_type))]
    pub async fn dispatch(
        &self,
        tenant: &TenantId,
        trigger_type: &str,
        trigger_parameters: Map<String, Value>,
        payload: Value,
        trace_tag: Option<String>,
    ) -> Result<TriggerInstance, DispatchError> {
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(DispatchError::ShuttingDown);
        }
        let types = self.types_of(tenant);
        let tt = types
            .get(trigger_type)
            .ok_or_else(|| DispatchError::UnknownTriggerType(trigger_type.to_owned()))?;
        tt.validate_payload(&payload)
            .map_err(|message| DispatchError::Invalid {
                trigger_type: trigger_type.to_owned(),
                message,
            })?;
        let id = new_id();
        let instance = TriggerInstance {
            trace_tag: trace_tag
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| id.clone()),
            id,
            tenant: tenant.clone(),
            trigger_type: trigger_type.to_owned(),
            trigger_parameters,
            payload,
            occurrence_time: now_rfc3339(),
            status: TriggerInstanceStatus::Processed,
        };
        // The rest runs in its own task: once the write starts, dropping the
        // caller's future (a client that hangs up) must not drop executions
        // that are recorded `requested` but not yet queued.
        let reactor = self.clone();
        tokio::spawn(async move { reactor.record_and_queue(instance).await })
            .await
            .map_err(|e| {
                DispatchError::Store(squall_store::Error::Corrupt(format!(
                    "dispatch task failed: {e}"
                )))
            })?
    }

    /// Match `instance` (in memory), write it with its enforcements and
    /// requested executions in one transaction, then queue the executions.
    /// The instance can never be processed twice.
    async fn record_and_queue(
        &self,
        instance: TriggerInstance,
    ) -> Result<TriggerInstance, DispatchError> {
        let (enforcements, mut prepared) = self.decide_and_prepare(&instance).await;
        let slots = self.claim_idle_workers(&mut prepared);
        let executions: Vec<&Execution> = prepared.iter().map(|p| &p.execution).collect();
        let written = self
            .inner
            .store
            .insert_processed_trigger_instance(&instance, enforcements, &executions)
            .await;
        if let Err(e) = written {
            for p in &prepared {
                self.inner.scheduler.forget(&p.execution.id);
            }
            self.unreserve(slots.len());
            return Err(e.into());
        }
        for p in &prepared {
            self.publish(crate::lifecycle::ExecutionEventKind::Create, &p.execution);
        }
        let (now, later): (Vec<Prepared>, Vec<Prepared>) = prepared
            .into_iter()
            .partition(|p| p.execution.status == ExecutionStatus::Running);
        self.hand_to_workers(now, slots);
        self.enqueue(later).await;
        Ok(instance)
    }

    /// The rules' decisions on `instance`, as enforcement records and
    /// prepared executions.
    pub(crate) async fn decide_and_prepare(
        &self,
        instance: &TriggerInstance,
    ) -> (Vec<RuleEnforcement>, Vec<Prepared>) {
        let index = self.inner.rules.snapshot();
        let kv: Arc<dyn KvLookup> = Arc::new(StoreKv {
            store: self.inner.store.clone(),
            tenant: instance.tenant.clone(),
        });
        let decisions = decide(&index, instance, &self.inner.templates, Some(kv));
        drop(index);
        let mut enforcements = Vec::with_capacity(decisions.len());
        let mut prepared = Vec::new();
        for decision in decisions {
            let (rule, outcome) = match decision {
                Decision::Enforce {
                    rule,
                    parameters,
                    throttle_key,
                } => {
                    let outcome = self
                        .enforce(instance, &rule, parameters, throttle_key.as_deref())
                        .await;
                    (rule, outcome)
                }
                Decision::Fail { rule, reason } => (rule, Err(reason)),
            };
            enforcements.push(enforcement(
                instance,
                &rule,
                outcome.as_ref().map(|p| &p.execution),
            ));
            match outcome {
                Ok(p) => {
                    self.track(&p);
                    prepared.push(p);
                }
                Err(reason) => {
                    tracing::warn!(rule = %rule.rule_ref(), %reason, "rule enforcement failed")
                }
            }
        }
        (enforcements, prepared)
    }

    /// Prepare the execution `rule` requests with `parameters`, unless its
    /// throttle window for `throttle_key` is open: the reason it is not,
    /// when it is not.
    async fn enforce(
        &self,
        instance: &TriggerInstance,
        rule: &Rule,
        parameters: Map<String, Value>,
        throttle_key: Option<&str>,
    ) -> Result<Prepared, String> {
        let window = match throttle_key {
            Some(key) => self.pass_throttle(instance, rule, key).await?,
            None => None,
        };
        let mut req = RunRequest::new(instance.tenant.clone(), rule.action.clone(), parameters);
        req.trace_tag = Some(instance.trace_tag.clone());
        let origin = Some(squall_core::execution::Origin {
            trigger_instance: instance.id.clone(),
            rule: rule.rule_ref(),
            trigger_type: instance.trigger_type.clone(),
        });
        let outcome = self
            .take_execution_quota(&instance.tenant)
            .and_then(|()| self.inner.runner.prepare(req, origin))
            .map_err(|e| e.to_string());
        // The window opens only when an execution is requested.
        if outcome.is_err()
            && let (Some(key), Some(window)) = (throttle_key, window)
        {
            self.give_back_throttle(instance, rule, key, window).await;
        }
        outcome
    }

    /// Create (`replace: false`) or replace (`replace: true`) a rule of
    /// `tenant`: checked, persisted (overriding a pack's copy), then live.
    pub async fn put_rule(
        &self,
        tenant: &TenantId,
        rule: Rule,
        replace: bool,
    ) -> Result<(), RuleChangeError> {
        let rule_ref = rule.rule_ref();
        let _serial = self.inner.rule_changes.lock().await;
        // Existence first: a rule of another tenant is not found, whatever
        // the body says.
        let exists = self
            .rules()
            .all
            .contains_key(&(tenant.clone(), rule_ref.clone()));
        match (exists, replace) {
            (true, false) => {
                return Err(RuleChangeError::Exists {
                    kind: "rule",
                    name: rule_ref,
                });
            }
            (false, true) => {
                return Err(RuleChangeError::NotFound {
                    kind: "rule",
                    name: rule_ref,
                });
            }
            _ => {}
        }
        check_rule(
            &self.types_of(tenant),
            &self.inner.runner.packs(tenant),
            &self.inner.runner.allowed_dirs_for(tenant),
            &rule,
        )
        .map_err(RuleChangeError::Trigger)?;
        self.inner
            .store
            .put_rule(tenant, &rule_ref, Some(rule.source.to_string()))
            .await?;
        self.rebuild(|all| {
            all.insert((tenant.clone(), rule_ref), Arc::new(rule));
        })
    }

    /// Delete a rule.
    pub async fn delete_rule(
        &self,
        tenant: &TenantId,
        rule_ref: &str,
    ) -> Result<(), RuleChangeError> {
        let key = (tenant.clone(), rule_ref.to_owned());
        let _serial = self.inner.rule_changes.lock().await;
        if !self.rules().all.contains_key(&key) {
            return Err(RuleChangeError::NotFound {
                kind: "rule",
                name: rule_ref.to_owned(),
            });
        }
        self.inner.store.put_rule(tenant, rule_ref, None).await?;
        self.rebuild(|all| {
            all.remove(&key);
        })
    }

    /// The current policies.
    pub fn policies(&self) -> Arc<PolicyIndex> {
        self.inner.policies.snapshot()
    }

    /// Create (`replace: false`) or replace a policy of `tenant`: checked,
    /// persisted (overriding a pack's copy), then in force for executions
    /// scheduled from now on.
    pub async fn put_policy(
        &self,
        tenant: &TenantId,
        policy: Policy,
        replace: bool,
    ) -> Result<(), RuleChangeError> {
        check_policy(&self.inner.runner.packs(tenant), &policy)
            .map_err(RuleChangeError::Trigger)?;
        let policy_ref = policy.policy_ref();
        let _serial = self.inner.rule_changes.lock().await;
        let key = (tenant.clone(), policy_ref.clone());
        let exists = self.policies().all.contains_key(&key);
        match (exists, replace) {
            (true, false) => {
                return Err(RuleChangeError::Exists {
                    kind: "policy",
                    name: policy_ref,
                });
            }
            (false, true) => {
                return Err(RuleChangeError::NotFound {
                    kind: "policy",
                    name: policy_ref,
                });
            }
            _ => {}
        }
        self.inner
            .store
            .put_policy(tenant, &policy_ref, Some(policy.source.to_string()))
            .await?;
        let mut all = self.policies().all.clone();
        all.insert(key, Arc::new(policy));
        self.inner.policies.replace(PolicyIndex::build(all));
        self.readmit_waiting();
        Ok(())
    }

    /// Delete a policy.
    pub async fn delete_policy(
        &self,
        tenant: &TenantId,
        policy_ref: &str,
    ) -> Result<(), RuleChangeError> {
        let key = (tenant.clone(), policy_ref.to_owned());
        let _serial = self.inner.rule_changes.lock().await;
        if !self.policies().all.contains_key(&key) {
            return Err(RuleChangeError::NotFound {
                kind: "policy",
                name: policy_ref.to_owned(),
            });
        }
        self.inner
            .store
            .put_policy(tenant, policy_ref, None)
            .await?;
        let mut all = self.policies().all.clone();
        all.remove(&key);
        self.inner.policies.replace(PolicyIndex::build(all));
        self.readmit_waiting();
        Ok(())
    }

    fn rebuild(
        &self,
        change: impl FnOnce(&mut std::collections::BTreeMap<(TenantId, String), Arc<Rule>>),
    ) -> Result<(), RuleChangeError> {
        let mut all = self.rules().all.clone();
        change(&mut all);
        self.inner
            .rules
            .replace(RuleIndex::build(all.into_iter().map(|((t, _), r)| (t, r))));
        self.inner.sensors.sync(&self.rules());
        self.reconcile_timers();
        Ok(())
    }

    /// One timer task per distinct timer trigger among enabled rules, and
    /// one file watcher per distinct `core.file_watch` trigger.
    ///
    /// Every rule was checked when it was made; what fails now (a watched
    /// directory deleted since) is logged and skipped, so one tenant's
    /// vanished directory never blocks another tenant's change.
    pub(crate) fn reconcile_timers(&self) {
        // Another node runs them.
        if !self.leads() {
            return;
        }
        let index = self.rules();
        let mut watches = Vec::new();
        for (tenant, rule) in index.enabled() {
            if rule.trigger_type == squall_core::trigger::FILE_WATCH {
                match watch_of(
                    &rule.trigger_parameters,
                    &self.inner.runner.allowed_dirs_for(tenant),
                ) {
                    Ok(watch) => {
                        watches.push((tenant.clone(), rule.trigger_parameters.clone(), watch))
                    }
                    Err(e) => {
                        tracing::error!(%tenant, rule = %rule.rule_ref(), error = %e, "file watch not started")
                    }
                }
            }
        }
        self.inner
            .watchers
            .lock()
            .expect("watcher lock poisoned")
            .reconcile(watches, self);
        let mut wanted = HashMap::new();
        for (tenant, rule) in index.enabled() {
            if !timers::is_timer(&rule.trigger_type) {
                continue;
            }
            let schedule = match timers::schedule(&rule.trigger_type, &rule.trigger_parameters) {
                Ok(schedule) => schedule,
                Err(e) => {
                    tracing::error!(%tenant, rule = %rule.rule_ref(), error = %e, "timer not started");
                    continue;
                }
            };
            let key: TimerKey = (
                tenant.clone(),
                rule.trigger_type.clone(),
                Value::Object(rule.trigger_parameters.clone()).to_string(),
            );
            wanted.insert(key, (schedule, rule.trigger_parameters.clone()));
        }
        let schedules = wanted
            .iter()
            .map(|(k, (s, _))| (k.clone(), s.clone()))
            .collect();
        let reactor = self.clone();
        // In a cluster, interval timers tick on instants every node agrees
        // on, and each tick is recorded once (see `Reactor::tick_is_ours`).
        let aligned = self.inner.config.cluster.is_some();
        self.inner.timers.lock().expect("timer lock poisoned").reconcile(schedules, |key, schedule| {
            let (tenant, trigger_type, identity) = key.clone();
            let timer = format!("{trigger_type} {identity}");
            let params = wanted.get(key).map(|(_, p)| p.clone()).unwrap_or_default();
            let reactor = reactor.clone();
            tokio::spawn(async move {
                let mut after = chrono::Utc::now();
                while let Some(tick) = schedule.next_fire(after, aligned) {
                    let now = chrono::Utc::now();
                    // A schedule that does not move forward (a cron pattern
                    // across a clock change) is stepped past.
                    if tick <= after {
                        after += chrono::Duration::seconds(1);
                        continue;
                    }
                    // Ticks missed while this task was held up (a stall, a
                    // paused process) are skipped, not fired in a burst.
                    if now - tick > timers::LATE {
                        tracing::warn!(trigger = %trigger_type, tick = %tick, "timer ticks missed while held up; going on from now");
                        after = now;
                        continue;
                    }
                    let delay = (tick - now).to_std().unwrap_or_default();
                    tokio::time::sleep(delay).await;
                    after = tick;
                    if !reactor.tick_is_ours(&tenant, &timer, tick).await {
                        continue;
                    }
                    if let Err(e) = reactor.dispatch(&tenant, &trigger_type, params.clone(), timers::payload(tick), None).await {
                        tracing::error!(error = %e, trigger = %trigger_type, "timer could not dispatch");
                        if matches!(e, DispatchError::ShuttingDown) {
                            return;
                        }
                    }
                    if matches!(schedule, timers::Schedule::At(_)) {
                        return;
                    }
                }
            })
        });
    }

    /// Whether this node fires `timer`'s tick due at `tick`: always alone;
    /// in a cluster, when it is the first to record the tick, so a tick
    /// fires once even while the lead passes from one node to another.
    async fn tick_is_ours(
        &self,
        tenant: &TenantId,
        timer: &str,
        tick: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let Some((node, pg)) = self.cluster() else {
            return true;
        };
        let at = tick.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match pg.record_timer_fire(tenant, timer, &at, &node.name).await {
            Ok(first) => {
                if !first {
                    tracing::info!(%tenant, timer, tick = %at, "another node fired this tick");
                }
                first
            }
            Err(e) => {
                tracing::error!(%tenant, timer, tick = %at, error = %e, "timer tick not fired: it could not be recorded");
                false
            }
        }
    }

    /// Stop accepting events and timers, then wait (up to `grace`) for
    /// executions queued or in flight; whatever is left stays recorded as
    /// `requested` (resumed at the next start) or `running` (abandoned).
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.cancel_builds();
        self.inner
            .timers
            .lock()
            .expect("timer lock poisoned")
            .stop();
        self.stop_sensors().await;
        self.inner
            .watchers
            .lock()
            .expect("watcher lock poisoned")
            .stop();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy = self.queue_depth() > 0
                || self.running_now() > 0
                || self
                    .inner
                    .reserved
                    .load(std::sync::atomic::Ordering::Acquire)
                    > 0;
            if !busy || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.inner
            .tasks
            .lock()
            .expect("task set lock poisoned")
            .abort_all();
    }
}

fn enforcement(
    instance: &TriggerInstance,
    rule: &Rule,
    outcome: Result<&Execution, &String>,
) -> RuleEnforcement {
    let (execution_id, status, failure_reason) = match outcome {
        Ok(e) => (Some(e.id.clone()), EnforcementStatus::Succeeded, None),
        Err(reason) => (None, EnforcementStatus::Failed, Some(reason.clone())),
    };
    RuleEnforcement {
        id: new_id(),
        tenant: instance.tenant.clone(),
        rule_ref: rule.rule_ref(),
        trigger_instance_id: instance.id.clone(),
        execution_id,
        status,
        failure_reason,
        enforced_at: now_rfc3339(),
        trace_tag: instance.trace_tag.clone(),
    }
}
