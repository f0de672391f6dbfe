//! The sensor container: one supervised, long-lived instance per enabled
//! sensor — setup, polls on schedule, the triggers its rules use, restarts
//! with backoff, and a state anyone can read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};
use squall_core::events::EventSink;
use squall_core::execution::GuestLogLine;
use squall_core::kv::KvStore;
use squall_core::manifest::SensorMeta;
use squall_core::metrics::{SensorLabel, metrics};
use squall_core::time::rfc3339_in;
use squall_core::{PackRef, TenantId};
use squall_sandbox::{
    Preopen, Sandbox, SensorCallError, SensorComponent, SensorInstance, SensorLimits, SensorLog,
    SensorSetup, SensorTrigger,
};
use tokio::sync::mpsc;

use crate::dispatch::{DispatchError, Reactor};
use crate::packs::{PackError, PackSet};
use crate::rules::RuleIndex;

/// How sensors are run.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    pub limits: SensorLimits,
    /// First wait before restarting a sensor that failed; doubles each time.
    pub backoff: Duration,
    /// Longest wait between restarts.
    pub backoff_cap: Duration,
    /// Failures in a row (without a healthy run between them) after which a
    /// sensor is marked `failed` and left stopped until enabled again.
    pub max_failures: u32,
    /// Bytes of recent log lines kept per sensor.
    pub log_bytes: usize,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            limits: SensorLimits::default(),
            backoff: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            max_failures: 8,
            log_bytes: 64 << 10,
        }
    }
}

/// Where a sensor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorState {
    Starting,
    Running,
    BackingOff,
    Failed,
    Disabled,
}

impl SensorState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::BackingOff => "backing_off",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
        }
    }
}

/// A sensor as the API and CLI show it.
#[derive(Debug, Clone)]
pub struct SensorView {
    pub tenant: TenantId,
    pub meta: SensorMeta,
    pub enabled: bool,
    pub state: SensorState,
    pub last_error: Option<String>,
    pub restarts: u64,
    pub dispatched: u64,
    pub invalid_payloads: u64,
    pub poll_errors: u64,
    /// When the next start is due, while backing off.
    pub next_start: Option<String>,
    /// The triggers announced to it: (id, type, parameters).
    pub triggers: Vec<(String, String, Value)>,
    pub log: Vec<GuestLogLine>,
}

#[derive(Debug)]
struct Status {
    enabled: bool,
    state: SensorState,
    last_error: Option<String>,
    restarts: u64,
    next_start: Option<String>,
}

/// One sensor known to the server.
#[derive(Debug)]
pub(crate) struct SensorEntry {
    tenant: TenantId,
    pub(crate) meta: SensorMeta,
    /// Loaded and checked once, when the pack was loaded: a file changed on
    /// disk later does not change a running server's sensor.
    component: Arc<SensorComponent>,
    config: Arc<str>,
    dirs: Vec<Preopen>,
    egress: squall_sandbox::Egress,
    status: Mutex<Status>,
    log: SensorLog,
    dispatched: AtomicU64,
    invalid_payloads: AtomicU64,
    poll_errors: AtomicU64,
    /// Triggers the rules want announced, by key (type + parameters).
    desired: Mutex<BTreeMap<String, SensorTrigger>>,
    /// Triggers announced to the running instance, by key.
    announced: Mutex<BTreeMap<String, SensorTrigger>>,
    /// The running supervisor's mailbox; `Some` while a supervisor runs.
    mailbox: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    /// Numbers the triggers announced, so an id is never given twice.
    next_trigger: AtomicU64,
    /// Taken out of the table (its pack was replaced or removed): its
    /// supervisor stops for good, whatever `enabled` says.
    retired: AtomicBool,
}

#[derive(Debug)]
enum Command {
    /// The desired triggers changed.
    Sync,
    /// Clean up and stop (unless enabled again meanwhile).
    Stop,
    /// Enabled again: a supervisor about to give up starts over instead.
    Enable,
}

impl SensorEntry {
    fn view(&self) -> SensorView {
        let status = self.status.lock().expect("sensor lock poisoned");
        SensorView {
            tenant: self.tenant.clone(),
            meta: self.meta.clone(),
            enabled: status.enabled,
            state: status.state,
            last_error: status.last_error.clone(),
            restarts: status.restarts,
            dispatched: self.dispatched.load(Ordering::Relaxed),
            invalid_payloads: self.invalid_payloads.load(Ordering::Relaxed),
            poll_errors: self.poll_errors.load(Ordering::Relaxed),
            next_start: status.next_start.clone(),
            triggers: self
                .announced
                .lock()
                .expect("sensor lock poisoned")
                .values()
                .map(|t| {
                    (
                        t.id.clone(),
                        t.trigger_type.clone(),
                        serde_json::from_str(&t.parameters).unwrap_or(Value::Null),
                    )
                })
                .collect(),
            log: self.log.lines(),
        }
    }

    pub(crate) fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Enabled, of a pack in force.
    pub(crate) fn is_enabled(&self) -> bool {
        !self.retired.load(Ordering::Acquire)
            && self.status.lock().expect("sensor lock poisoned").enabled
    }

    /// A supervisor runs it (starting, running, backing off or stopping).
    pub(crate) fn is_supervised(&self) -> bool {
        self.mailbox.lock().expect("sensor lock poisoned").is_some()
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.set(|s| s.enabled = enabled);
    }

    fn set(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("sensor lock poisoned"));
    }

    fn tell(&self, command: Command) {
        if let Some(tx) = self.mailbox.lock().expect("sensor lock poisoned").as_ref() {
            let _ = tx.send(command);
        }
    }
}

/// Every sensor of the loaded packs, by (tenant, ref); entries come and go
/// as packs are installed and removed.
#[derive(Debug, Default)]
pub(crate) struct Sensors {
    entries: Mutex<BTreeMap<(TenantId, String), Arc<SensorEntry>>>,
    /// The supervisors with their entries (retired ones too, while they
    /// clean up), stopped and awaited at shutdown.
    tasks: Mutex<Vec<(Arc<SensorEntry>, tokio::task::JoinHandle<()>)>>,
    /// One per (tenant, sensor ref), outliving the entries: held by the
    /// supervisor whose instance is alive, so a replaced pack's instance has
    /// cleaned up and gone before its successor starts.
    slots: Mutex<HashMap<(TenantId, String), Slot>>,
}

/// Held by the supervisor whose instance of a sensor is alive.
type Slot = Arc<tokio::sync::Mutex<()>>;

/// The key of a trigger: its type and canonical parameters.
fn trigger_key(trigger_type: &str, parameters: &Map<String, Value>) -> String {
    format!("{trigger_type}\0{}", Value::Object(parameters.clone()))
}

impl Sensors {
    /// The sensors of `tenant`'s packs for which `wanted` holds, each
    /// component checked against the `sensor` world and its directories
    /// against the allowed ones. Not yet added nor started. The error names
    /// the sensor's file.
    pub(crate) fn entries_of(
        tenant: &TenantId,
        packs: &PackSet,
        wanted: impl Fn(&PackRef) -> bool,
        runner: &crate::Runner,
        log_bytes: usize,
    ) -> Result<Vec<Arc<SensorEntry>>, PackError> {
        let sandbox: &Sandbox = runner.sandbox();
        let allowed = runner.allowed_dirs_for(tenant);
        let mut entries = Vec::new();
        for pack in packs.packs() {
            if pack.sensors.is_empty() || !wanted(&pack.manifest.pack_ref) {
                continue;
            }
            let dirs = pack.preopens(&allowed)?;
            for (file, meta) in &pack.sensors {
                let path = pack.sensor_component_path(meta)?;
                let component =
                    sandbox
                        .load_sensor(&path)
                        .map_err(|cause| PackError::SensorComponent {
                            file: file.clone(),
                            cause,
                        })?;
                let entry = SensorEntry {
                    tenant: tenant.clone(),
                    meta: meta.clone(),
                    component,
                    config: pack.config.clone(),
                    dirs: dirs.clone(),
                    egress: runner.egress_for(pack),
                    status: Mutex::new(Status {
                        enabled: meta.enabled,
                        state: SensorState::Disabled,
                        last_error: None,
                        restarts: 0,
                        next_start: None,
                    }),
                    log: SensorLog::new(log_bytes),
                    dispatched: AtomicU64::new(0),
                    invalid_payloads: AtomicU64::new(0),
                    poll_errors: AtomicU64::new(0),
                    desired: Mutex::default(),
                    announced: Mutex::default(),
                    mailbox: Mutex::new(None),
                    next_trigger: AtomicU64::new(1),
                    retired: AtomicBool::new(false),
                };
                entries.push(Arc::new(entry));
            }
        }
        Ok(entries)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(TenantId, String), Arc<SensorEntry>>> {
        self.entries.lock().expect("sensor table lock poisoned")
    }

    /// Add entries (made by [`Sensors::entries_of`]).
    pub(crate) fn insert(&self, entries: Vec<Arc<SensorEntry>>) {
        let mut all = self.lock();
        for e in entries {
            all.insert((e.tenant.clone(), e.meta.sensor_ref()), e);
        }
    }

    /// Take out `tenant`'s sensors of the packs for which `gone` holds.
    pub(crate) fn remove(
        &self,
        tenant: &TenantId,
        gone: impl Fn(&PackRef) -> bool,
    ) -> Vec<Arc<SensorEntry>> {
        let mut all = self.lock();
        let keys: Vec<_> = all
            .iter()
            .filter(|((t, _), e)| t == tenant && gone(&e.meta.pack))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| all.remove(k)).collect()
    }

    pub(crate) fn get(&self, tenant: &TenantId, sensor_ref: &str) -> Option<Arc<SensorEntry>> {
        self.lock()
            .get(&(tenant.clone(), sensor_ref.to_owned()))
            .cloned()
    }

    pub(crate) fn views(&self, tenant: &TenantId) -> Vec<SensorView> {
        self.lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, e)| e.view())
            .collect()
    }

    /// Work out, from the enabled rules, which triggers each sensor must
    /// know about, and tell the running ones.
    pub(crate) fn sync(&self, index: &RuleIndex) {
        let mut by_type: HashMap<(TenantId, String), BTreeMap<String, SensorTrigger>> =
            HashMap::new();
        for (tenant, rule) in index.enabled() {
            let wanted = by_type
                .entry((tenant.clone(), rule.trigger_type.clone()))
                .or_default();
            wanted.insert(
                trigger_key(&rule.trigger_type, &rule.trigger_parameters),
                SensorTrigger {
                    // Given when announced (see `sync_triggers`).
                    id: String::new(),
                    trigger_type: rule.trigger_type.clone(),
                    parameters: Value::Object(rule.trigger_parameters.clone()).to_string(),
                },
            );
        }
        for ((tenant, _), entry) in self.lock().iter() {
            let mut desired = BTreeMap::new();
            for tt in &entry.meta.trigger_types {
                if let Some(wanted) = by_type.get(&(tenant.clone(), tt.trigger_ref.clone())) {
                    desired.extend(wanted.clone());
                }
            }
            let changed = {
                let mut current = entry.desired.lock().expect("sensor lock poisoned");
                let changed = *current != desired;
                *current = desired;
                changed
            };
            if changed {
                entry.tell(Command::Sync);
            }
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<SensorEntry>> {
        self.lock().values().cloned().collect()
    }

    /// The slot of `entry`'s (tenant, sensor ref).
    fn slot(&self, entry: &SensorEntry) -> Slot {
        self.slots
            .lock()
            .expect("sensor slot lock poisoned")
            .entry((entry.tenant.clone(), entry.meta.sensor_ref()))
            .or_default()
            .clone()
    }
}

/// A live sensor instance, counted in `squall_sensor_instances` from its
/// instantiation until it is dropped.
struct Live {
    instance: SensorInstance,
    label: SensorLabel,
}

impl Live {
    fn new(instance: SensorInstance, entry: &SensorEntry) -> Self {
        let label = SensorLabel {
            tenant: entry.tenant.to_string(),
            sensor: entry.meta.sensor_ref(),
        };
        metrics().sensor_instances.get_or_create(&label).inc();
        Self { instance, label }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        metrics().sensor_instances.get_or_create(&self.label).dec();
    }
}

/// The `events` a sensor's guest calls: to the reactor's dispatch.
#[derive(Debug)]
struct SensorSink {
    reactor: Reactor,
    entry: Arc<SensorEntry>,
}

#[async_trait]
impl EventSink for SensorSink {
    async fn dispatch(
        &self,
        trigger: &str,
        payload: &str,
        trace_tag: Option<String>,
    ) -> Result<(), String> {
        let entry = &self.entry;
        let (trigger_type, parameters) = match entry.meta.declared_trigger(trigger) {
            Some(t) => (t.trigger_ref.clone(), Map::new()),
            None => {
                let announced = entry.announced.lock().expect("sensor lock poisoned");
                let Some(t) = announced.values().find(|t| t.id == trigger) else {
                    return Err(format!(
                        "unknown trigger '{trigger}': this sensor declares {} (or dispatch to the id of a trigger announced to it)",
                        entry.meta.declared_refs()
                    ));
                };
                let params = serde_json::from_str(&t.parameters).unwrap_or_default();
                (t.trigger_type.clone(), params)
            }
        };
        let payload: Value =
            serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        match self
            .reactor
            .dispatch(&entry.tenant, &trigger_type, parameters, payload, trace_tag)
            .await
        {
            Ok(_) => {
                entry.dispatched.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(DispatchError::Invalid { message, .. }) => {
                entry.invalid_payloads.fetch_add(1, Ordering::Relaxed);
                let message = format!("{trigger_type} payload refused: {message}");
                tracing::warn!(sensor = %entry.meta.sensor_ref(), %message, "sensor payload refused");
                entry.log.host("warn", message.clone());
                Err(message)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Reactor {
    /// Every sensor of `tenant`, with its state.
    pub fn sensors(&self, tenant: &TenantId) -> Vec<SensorView> {
        self.inner.sensors.views(tenant)
    }

    /// One sensor, by `<pack>.<class_name>`.
    pub fn sensor(&self, tenant: &TenantId, sensor_ref: &str) -> Option<SensorView> {
        self.inner.sensors.get(tenant, sensor_ref).map(|e| e.view())
    }

    /// Enable or disable a sensor without a restart; remembered across
    /// restarts. Enabling a `failed` sensor starts it afresh.
    pub async fn set_sensor_enabled(
        &self,
        tenant: &TenantId,
        sensor_ref: &str,
        enabled: bool,
    ) -> Result<SensorView, squall_store::Error> {
        let Some(entry) = self.inner.sensors.get(tenant, sensor_ref) else {
            return Err(squall_store::Error::Corrupt(format!(
                "sensor '{sensor_ref}' not found"
            )));
        };
        self.inner
            .store
            .put_sensor_enabled(tenant, sensor_ref, enabled)
            .await?;
        self.switch_sensor(&entry, enabled);
        Ok(entry.view())
    }

    /// Switch a sensor on or off here, now.
    fn switch_sensor(&self, entry: &Arc<SensorEntry>, enabled: bool) {
        entry.set(|s| s.enabled = enabled);
        if enabled {
            // Starts one unless a supervisor runs; one that is stopping or
            // giving up starts over when it sees `Enable`.
            entry.tell(Command::Enable);
            self.start_sensor(entry.clone());
        } else {
            entry.tell(Command::Stop);
        }
    }

    /// Switch `tenant`'s sensors as the store says (a switch made through
    /// another node); those already so are left alone.
    pub(crate) fn apply_sensor_switches(
        &self,
        tenant: &TenantId,
    ) -> Result<(), squall_store::Error> {
        for (t, sensor_ref, enabled) in self.inner.store.sensor_overrides()? {
            if &t != tenant {
                continue;
            }
            let Some(entry) = self.inner.sensors.get(tenant, &sensor_ref) else {
                continue;
            };
            let was = entry.status.lock().expect("sensor lock poisoned").enabled;
            if was != enabled {
                self.switch_sensor(&entry, enabled);
            }
        }
        Ok(())
    }

    /// Start every enabled sensor (at start-up).
    pub(crate) fn start_sensors(&self) {
        for entry in self.inner.sensors.all() {
            self.start_if_enabled(entry);
        }
    }

    pub(crate) fn start_if_enabled(&self, entry: Arc<SensorEntry>) {
        let enabled = entry.status.lock().expect("sensor lock poisoned").enabled;
        if enabled {
            self.start_sensor(entry);
        }
    }

    /// Stop `entries` (taken out of the table) for good; their supervisors
    /// clean up in the background, and a successor's instance starts only
    /// once theirs is gone.
    pub(crate) fn stop_entries(&self, entries: &[Arc<SensorEntry>]) {
        for entry in entries {
            entry.retired.store(true, Ordering::Release);
            entry.tell(Command::Stop);
        }
    }

    /// Stop every sensor and wait for each to clean up: a call in progress
    /// gets [`STOP_GRACE`], then `cleanup` its own limit. Called at
    /// shutdown, with the reactor already closed.
    pub(crate) async fn stop_sensors(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.sensors.tasks.lock().expect("task lock poisoned"));
        for (entry, _) in &tasks {
            entry.tell(Command::Stop);
        }
        let grace =
            STOP_GRACE + self.inner.sensor_config.limits.call_timeout + Duration::from_secs(1);
        let all = async {
            for (_, task) in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("some sensors did not finish cleaning up in time");
        }
    }

    /// Start a supervisor for `entry` unless one runs.
    fn start_sensor(&self, entry: Arc<SensorEntry>) {
        let mut mailbox = entry.mailbox.lock().expect("sensor lock poisoned");
        // A retired entry (its pack replaced or removed meanwhile) or a
        // server shutting down starts nothing: no one would stop it.
        if mailbox.is_some() {
            return;
        }
        if self.must_stop(&entry) {
            // Another node may run it; if none does, this one may take it.
            if !entry.retired.load(Ordering::Acquire) {
                self.want_sensor();
            }
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *mailbox = Some(tx);
        drop(mailbox);
        entry.set(|s| {
            s.state = SensorState::Starting;
            s.last_error = None;
            s.next_start = None;
        });
        let reactor = self.clone();
        let supervised = entry.clone();
        let task = tokio::spawn(async move { reactor.supervise(supervised, rx).await });
        let mut tasks = self.inner.sensors.tasks.lock().expect("task lock poisoned");
        tasks.retain(|(_, t)| !t.is_finished());
        tasks.push((entry, task));
    }

    /// Whether a supervisor told to stop really stops: not if the sensor
    /// was enabled again meanwhile (unless it was retired or the server is
    /// shutting down). When it stops, its mailbox is cleared under the same
    /// lock, so a new enable starts a new supervisor.
    fn stop_now(&self, entry: &SensorEntry) -> bool {
        let mut mailbox = entry.mailbox.lock().expect("sensor lock poisoned");
        let enabled = entry.status.lock().expect("sensor lock poisoned").enabled;
        if enabled && !self.must_stop(entry) {
            return false;
        }
        *mailbox = None;
        entry.set(|s| {
            s.state = SensorState::Disabled;
            s.next_start = None;
        });
        true
    }

    /// The supervisor: start, run, and restart with backoff on failure.
    async fn supervise(&self, entry: Arc<SensorEntry>, mut rx: mpsc::UnboundedReceiver<Command>) {
        let config = self.inner.sensor_config.clone();
        let sensor_ref = entry.meta.sensor_ref();
        let slot = self.inner.sensors.slot(&entry);
        let mut failures: u32 = 0;
        loop {
            entry.set(|s| s.state = SensorState::Starting);
            // The instance of a replaced version of this sensor may still
            // be cleaning up: wait for it (keeping the place in the queue),
            // still listening for a stop.
            let lock = slot.clone().lock_owned();
            tokio::pin!(lock);
            let held = loop {
                tokio::select! {
                    held = &mut lock => break held,
                    command = rx.recv() => match command {
                        Some(Command::Sync | Command::Enable) => {}
                        Some(Command::Stop) | None => {
                            if self.stop_now(&entry) {
                                return;
                            }
                        }
                    },
                }
            };
            // Retired or shut down while it waited.
            if self.must_stop(&entry) && self.stop_now(&entry) {
                return;
            }
            let started = Instant::now();
            let (ending, healthy) = match self.start_instance(&entry).await {
                Ok(mut live) => {
                    entry.set(|s| s.state = SensorState::Running);
                    let run = self.run_instance(&entry, &mut live.instance, &mut rx).await;
                    drop(live);
                    run
                }
                Err(e) => (Ending::Failed(e), false),
            };
            drop(held);
            entry
                .announced
                .lock()
                .expect("sensor lock poisoned")
                .clear();
            let message = match ending {
                Ending::Stopped if self.stop_now(&entry) => return,
                Ending::Stopped => {
                    failures = 0;
                    continue;
                }
                Ending::Failed(message) => message,
            };
            if healthy || started.elapsed() >= config.backoff_cap {
                failures = 0;
            }
            failures += 1;
            tracing::warn!(sensor = %sensor_ref, failures, error = %message, "sensor failed");
            entry.log.host("error", format!("sensor failed: {message}"));
            if failures >= config.max_failures {
                entry.set(|s| {
                    s.state = SensorState::Failed;
                    s.last_error = Some(message.clone());
                });
                entry.log.host(
                    "error",
                    format!(
                        "{failures} failures in a row: marked failed; enable it again to retry"
                    ),
                );
                let mut mailbox = entry.mailbox.lock().expect("sensor lock poisoned");
                // Enabled again while it was failing: start over.
                let mut again = false;
                while let Ok(command) = rx.try_recv() {
                    again |= matches!(command, Command::Enable);
                }
                if again && !self.must_stop(&entry) {
                    drop(mailbox);
                    failures = 0;
                    continue;
                }
                *mailbox = None;
                return;
            }
            let wait = config
                .backoff
                .saturating_mul(1 << (failures - 1).min(16))
                .min(config.backoff_cap);
            entry.set(|s| {
                s.state = SensorState::BackingOff;
                s.last_error = Some(message.clone());
                s.restarts += 1;
                s.next_start = Some(rfc3339_in(wait));
            });
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    command = rx.recv() => match command {
                        Some(Command::Sync | Command::Enable) => {}
                        Some(Command::Stop) | None => {
                            if self.stop_now(&entry) {
                                return;
                            }
                        }
                    },
                }
            }
            entry.set(|s| s.next_start = None);
        }
    }

    /// Whether `entry`'s supervisor must stop whatever `enabled` says:
    /// retired, shutting down, or not this node's to run.
    fn must_stop(&self, entry: &SensorEntry) -> bool {
        entry.retired.load(Ordering::Acquire)
            || self.inner.closed.load(Ordering::Acquire)
            || !self.runs_sensor(entry)
    }

    /// Stop `entry` here, enabled or not: another node runs it now.
    pub(crate) fn stop_here(&self, entry: &SensorEntry) {
        entry.tell(Command::Stop);
    }

    async fn start_instance(&self, entry: &Arc<SensorEntry>) -> Result<Live, String> {
        let sandbox = self.inner.runner.sandbox().clone();
        let component = entry.component.clone();
        let setup = SensorSetup {
            tenant: entry.tenant.clone(),
            class_name: entry.meta.class_name.clone(),
            kv_prefix: format!("{}:", entry.meta.sensor_ref()),
            config: entry.config.clone(),
            kv: Some(Arc::new(self.inner.store.clone()) as Arc<dyn KvStore>),
            events: Arc::new(SensorSink {
                reactor: self.clone(),
                entry: entry.clone(),
            }),
            log: entry.log.clone(),
            limits: self.inner.sensor_config.limits,
            dirs: entry.dirs.clone(),
            egress: entry.egress.clone(),
        };
        let mut live = Live::new(
            sandbox
                .start_sensor(&component, setup)
                .await
                .map_err(|e| e.to_string())?,
            entry,
        );
        match live.instance.setup().await {
            Ok(()) => Ok(live),
            Err(SensorCallError::Returned(m)) => Err(format!("setup failed: {m}")),
            Err(SensorCallError::Died(m)) => Err(m),
        }
    }

    /// Poll on schedule and keep the triggers in step until the instance
    /// dies or is stopped. Returns how it ended and whether it was healthy
    /// (a poll succeeded, or it ran a while).
    async fn run_instance(
        &self,
        entry: &Arc<SensorEntry>,
        instance: &mut SensorInstance,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> (Ending, bool) {
        let mut healthy = false;
        if let Err(m) = sync_triggers(entry, instance).await {
            return (Ending::Failed(m), healthy);
        }
        let interval = entry.meta.poll_interval;
        let mut next_poll = interval.map(|i| tokio::time::Instant::now() + i);
        loop {
            let poll_due = async {
                match next_poll {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = poll_due => {
                    let (polled, stopping, synced) = poll_listening(instance, rx).await;
                    if stopping {
                        return match polled {
                            Err(SensorCallError::Died(m)) => {
                                entry.log.host(
                                    "warn",
                                    format!("stopped during a poll, without cleanup: {m}"),
                                );
                                (Ending::Stopped, healthy)
                            }
                            _ => {
                                let _ = instance.cleanup().await;
                                (Ending::Stopped, healthy)
                            }
                        };
                    }
                    match polled {
                        Ok(()) => healthy = true,
                        Err(SensorCallError::Returned(m)) => {
                            entry.poll_errors.fetch_add(1, Ordering::Relaxed);
                            entry.log.host("warn", format!("poll failed: {m}"));
                            entry.set(|s| s.last_error = Some(format!("poll failed: {m}")));
                        }
                        Err(SensorCallError::Died(m)) => return (Ending::Failed(m), healthy),
                    }
                    if synced && let Err(m) = sync_triggers(entry, instance).await {
                        return (Ending::Failed(m), healthy);
                    }
                    // The next poll is an interval after this one ended: a
                    // slow poll does not pile up calls.
                    next_poll = interval.map(|i| tokio::time::Instant::now() + i);
                }
                command = rx.recv() => match command {
                    Some(Command::Sync) => {
                        if let Err(m) = sync_triggers(entry, instance).await {
                            return (Ending::Failed(m), healthy);
                        }
                    }
                    Some(Command::Enable) => {}
                    Some(Command::Stop) | None => {
                        let _ = instance.cleanup().await;
                        return (Ending::Stopped, healthy);
                    }
                },
            }
        }
    }
}

/// How long a call in progress may go on once its sensor is told to stop.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);

/// Poll `instance` while still reading `rx`: a stop during the poll cuts it
/// to [`STOP_GRACE`]. Returns the poll's outcome, whether a stop came and
/// whether the triggers changed meanwhile.
async fn poll_listening(
    instance: &mut SensorInstance,
    rx: &mut mpsc::UnboundedReceiver<Command>,
) -> (Result<(), SensorCallError>, bool, bool) {
    let interrupt = instance.interrupt();
    let poll = instance.poll();
    tokio::pin!(poll);
    let (mut stopping, mut synced) = (false, false);
    let outcome = loop {
        tokio::select! {
            // The poll first: its first poll arms its deadline, which a
            // stop then cuts (not the other way round).
            biased;
            outcome = &mut poll => break outcome,
            command = rx.recv(), if !stopping => match command {
                Some(Command::Sync) => synced = true,
                Some(Command::Enable) => {}
                Some(Command::Stop) | None => {
                    stopping = true;
                    interrupt.cut_to(STOP_GRACE);
                }
            },
        }
    };
    (outcome, stopping, synced)
}

enum Ending {
    Stopped,
    Failed(String),
}

/// Announce what changed between the desired and the announced triggers.
/// Both are keyed by type and parameters. When, for one trigger type,
/// exactly one trigger went and one came (a rule's parameters were edited),
/// that is an update: the trigger keeps its id and gets the new
/// parameters. Otherwise removals go first, then additions.
async fn sync_triggers(
    entry: &Arc<SensorEntry>,
    instance: &mut SensorInstance,
) -> Result<(), String> {
    let desired = entry.desired.lock().expect("sensor lock poisoned").clone();
    let announced = entry
        .announced
        .lock()
        .expect("sensor lock poisoned")
        .clone();
    let gone: Vec<(&String, &SensorTrigger)> = announced
        .iter()
        .filter(|(k, _)| !desired.contains_key(*k))
        .collect();
    let came: Vec<(&String, &SensorTrigger)> = desired
        .iter()
        .filter(|(k, _)| !announced.contains_key(*k))
        .collect();
    let mut updates = Vec::new();
    for (old_key, old) in &gone {
        let same_type = |t: &SensorTrigger| t.trigger_type == old.trigger_type;
        let gone_of_type = gone.iter().filter(|(_, t)| same_type(t)).count();
        let came_of_type: Vec<_> = came.iter().filter(|(_, t)| same_type(t)).collect();
        if gone_of_type == 1 && came_of_type.len() == 1 {
            let (new_key, new) = came_of_type[0];
            updates.push((
                (*old_key).clone(),
                (*new_key).clone(),
                SensorTrigger {
                    id: old.id.clone(),
                    ..(*new).clone()
                },
            ));
        }
    }
    let updated_old: Vec<&String> = updates.iter().map(|(o, _, _)| o).collect();
    let updated_new: Vec<&String> = updates.iter().map(|(_, n, _)| n).collect();
    for (key, t) in &gone {
        if !updated_old.contains(key) {
            entry
                .announced
                .lock()
                .expect("sensor lock poisoned")
                .remove(*key);
            instance
                .remove_trigger(t)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    for (old_key, new_key, t) in &updates {
        {
            let mut announced = entry.announced.lock().expect("sensor lock poisoned");
            announced.remove(old_key);
            announced.insert(new_key.clone(), t.clone());
        }
        instance
            .update_trigger(t)
            .await
            .map_err(|e| e.to_string())?;
    }
    for (key, t) in &came {
        if !updated_new.contains(key) {
            let t = SensorTrigger {
                id: format!(
                    "{}#{}",
                    t.trigger_type,
                    entry.next_trigger.fetch_add(1, Ordering::Relaxed)
                ),
                ..(*t).clone()
            };
            // Known before the call, so a dispatch from inside it resolves.
            entry
                .announced
                .lock()
                .expect("sensor lock poisoned")
                .insert((*key).clone(), t.clone());
            instance.add_trigger(&t).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
