//! Sensors: one long-lived instance each, every call under a time limit.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use squall_core::TenantId;
use squall_core::events::EventSink;
use squall_core::kv::KvStore;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::bindings::sensor::exports::sensor::Trigger;
use crate::bindings::sensor::{Sensor, SensorPre};
use crate::host::{HostState, MemoryLimiter};
use crate::live::{LogBuffer, SensorLog};
use crate::{Error, Preopen, Result, Sandbox, cache};

/// A component checked against the `sensor` world.
pub struct SensorComponent {
    path: PathBuf,
    pre: SensorPre<HostState>,
}

impl std::fmt::Debug for SensorComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorComponent")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Limits of one sensor instance.
#[derive(Debug, Clone, Copy)]
pub struct SensorLimits {
    /// Longest a single call (`setup`, `poll`, a trigger change) may run.
    pub call_timeout: Duration,
    /// Linear memory the instance may grow to.
    pub memory_bytes: usize,
}

impl Default for SensorLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            memory_bytes: 128 << 20,
        }
    }
}

/// Everything a sensor instance needs.
#[derive(Debug, Clone)]
pub struct SensorSetup {
    pub tenant: TenantId,
    /// The sensor's `class_name`: its instance's environment holds it as
    /// `SQUALL_SENSOR`, so a component that implements several sensors
    /// (a pack's Python sensors) knows which one to be.
    pub class_name: String,
    /// `<pack>.<class_name>:` — the sensor's own kv keys live under it.
    pub kv_prefix: String,
    pub config: Arc<str>,
    pub kv: Option<Arc<dyn KvStore>>,
    pub events: Arc<dyn EventSink>,
    pub log: SensorLog,
    pub limits: SensorLimits,
    pub dirs: Vec<Preopen>,
    /// Where the sensor may send HTTP requests.
    pub egress: crate::Egress,
}

/// How a call into a sensor went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SensorCallError {
    /// The sensor returned `err`; the instance is fine.
    #[error("{0}")]
    Returned(String),
    /// The instance trapped, ran past its time limit or could not start;
    /// it is gone and must be started again.
    #[error("{0}")]
    Died(String),
}

/// A running sensor instance. Calls take `&mut self`: one at a time.
pub struct SensorInstance {
    /// Its slot among the instances the engine allows, held for life.
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Log lines before this sequence number predate the current call.
    call_started_at: u64,
    store: Store<HostState>,
    bindings: Sensor,
    deadline: Arc<Deadline>,
    limits: SensorLimits,
    log: SensorLog,
}

impl std::fmt::Debug for SensorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorInstance").finish_non_exhaustive()
    }
}

/// A trigger as announced to a sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorTrigger {
    pub id: String,
    pub trigger_type: String,
    /// A JSON object, as text.
    pub parameters: String,
}

impl Sandbox {
    /// Load a sensor component: compile it once (or map it from the cache)
    /// and check it against the `sensor` world.
    /// Components are shared: a thousand sensors built from one `.wasm`
    /// map its code once.
    pub fn load_sensor(&self, path: &Path) -> Result<Arc<SensorComponent>> {
        let bytes = std::fs::read(path).map_err(|cause| Error::Read {
            path: path.to_owned(),
            cause,
        })?;
        let digest = cache::sha256_hex(&bytes);
        let mut loaded = self.sensors.lock().expect("sensor map lock poisoned");
        if let Some(known) = loaded.get(&digest) {
            return Ok(known.clone());
        }
        let component = self
            .cache
            .load_or_compile(&self.engine.engine, path, &bytes, &digest)?;
        let wrong_world = |e: wasmtime::Error| Error::WrongSensorWorld {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .sensor_linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = SensorPre::new(instance_pre).map_err(wrong_world)?;
        let component = Arc::new(SensorComponent {
            path: path.to_owned(),
            pre,
        });
        loaded.insert(digest, component.clone());
        Ok(component)
    }

    /// Instantiate a sensor (under its call limit). `setup` is not called.
    pub async fn start_sensor(
        &self,
        component: &SensorComponent,
        setup: SensorSetup,
    ) -> std::result::Result<SensorInstance, SensorCallError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            SensorCallError::Died(
                "no instance slot is free (the server's instance limit is reached)".into(),
            )
        })?;
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LinePipe::new(&setup.log, "stdout"))
            .stderr(LinePipe::new(&setup.log, "stderr"))
            .env("SQUALL_SENSOR", &setup.class_name);
        crate::preopen(&mut wasi, &setup.dirs).map_err(SensorCallError::Died)?;
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: setup.limits.memory_bytes,
                refused: None,
            },
            tenant: setup.tenant.clone(),
            config: setup.config.clone(),
            kv: setup.kv.clone(),
            kv_prefix: setup.kv_prefix.clone(),
            log: setup.log.0.clone(),
            events: Some(setup.events.clone()),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            egress: crate::host::egress::EgressHooks {
                policy: setup.egress.clone(),
                log: setup.log.0.clone(),
            },
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = Arc::new(Deadline {
            at: Mutex::new(Instant::now() + setup.limits.call_timeout),
            cut: tokio::sync::Notify::new(),
            was_cut: std::sync::atomic::AtomicBool::new(false),
        });
        let watch = deadline.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= watch.at() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        let limits = setup.limits;
        let started = tokio::time::timeout(
            limits.call_timeout,
            component.pre.instantiate_async(&mut store),
        )
        .await;
        let bindings = match started {
            Ok(Ok(bindings)) => bindings,
            Ok(Err(e)) => {
                return Err(SensorCallError::Died(format!(
                    "failed to start the sensor: {e:#}"
                )));
            }
            Err(_) => {
                return Err(SensorCallError::Died(format!(
                    "the sensor did not start within {:.1} s",
                    limits.call_timeout.as_secs_f64()
                )));
            }
        };
        Ok(SensorInstance {
            _permit: permit,
            call_started_at: 0,
            store,
            bindings,
            deadline,
            limits,
            log: setup.log,
        })
    }
}

/// Run one call into the instance under its time limit and map how it
/// ended. `$call` is a method of the sensor interface, `$name` how the
/// error names it.
macro_rules! guarded {
    ($self:ident, $name:literal, |$guest:ident, $store:ident| $call:expr) => {{
        $self.arm();
        let timeout = $self.limits.call_timeout;
        let $guest = $self.bindings.sensor();
        let $store = &mut $self.store;
        let deadline = $self.deadline.clone();
        let outcome = watch(&deadline, tokio::time::timeout(timeout, $call)).await;
        $self.finish($name, outcome)
    }};
}

/// When the instance's current call must end: read by the epoch callback
/// (a guest running wasm traps past it) and by [`watch`] (a guest waiting
/// in a host call is dropped past it, once cut).
#[derive(Debug)]
struct Deadline {
    at: Mutex<Instant>,
    /// Woken when the deadline is cut short.
    cut: tokio::sync::Notify,
    was_cut: std::sync::atomic::AtomicBool,
}

impl Deadline {
    fn at(&self) -> Instant {
        *self.at.lock().expect("deadline lock poisoned")
    }
}

/// How a call ended.
enum Ended<T> {
    Returned(wasmtime::Result<T>),
    /// Past its time limit while waiting in a host call.
    TimedOut,
    /// Cut short from outside ([`SensorInterrupt`]).
    Cut,
}

/// Drive `call`; once the deadline is cut, only until the cut deadline.
async fn watch<T>(
    deadline: &Deadline,
    call: impl std::future::Future<
        Output = std::result::Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    >,
) -> Ended<T> {
    let done = |r: std::result::Result<wasmtime::Result<T>, _>| match r {
        Ok(r) => Ended::Returned(r),
        Err(_) => Ended::TimedOut,
    };
    tokio::pin!(call);
    tokio::select! {
        biased;
        r = &mut call => return done(r),
        () = deadline.cut.notified() => {}
    }
    let until = tokio::time::Instant::from_std(deadline.at());
    tokio::select! {
        biased;
        r = &mut call => done(r),
        () = tokio::time::sleep_until(until) => Ended::Cut,
    }
}

/// Cuts short the call a [`SensorInstance`] is making, from outside it.
#[derive(Debug, Clone)]
pub struct SensorInterrupt(Arc<Deadline>);

impl SensorInterrupt {
    /// Let the call in progress (if any) run at most `within` more: past
    /// that, a guest running wasm traps at the next epoch tick, one waiting
    /// in a host call is dropped, and the instance is gone.
    pub fn cut_to(&self, within: Duration) {
        {
            let mut at = self.0.at.lock().expect("deadline lock poisoned");
            *at = (*at).min(Instant::now() + within);
        }
        self.0
            .was_cut
            .store(true, std::sync::atomic::Ordering::Release);
        self.0.cut.notify_one();
    }
}

impl SensorInstance {
    /// A handle that can cut short the instance's current call.
    pub fn interrupt(&self) -> SensorInterrupt {
        SensorInterrupt(self.deadline.clone())
    }

    fn arm(&mut self) {
        *self.deadline.at.lock().expect("deadline lock poisoned") =
            Instant::now() + self.limits.call_timeout;
        self.store.set_epoch_deadline(1);
        self.call_started_at = self.log.next_seq();
    }

    fn finish<T>(
        &mut self,
        name: &str,
        outcome: Ended<T>,
    ) -> std::result::Result<T, SensorCallError> {
        let limit = self.limits.call_timeout.as_secs_f64();
        let cut = self
            .deadline
            .was_cut
            .load(std::sync::atomic::Ordering::Acquire);
        match outcome {
            Ended::Returned(Ok(value)) => Ok(value),
            Ended::Cut => Err(SensorCallError::Died(format!(
                "{name} stopped: the sensor was stopped while it waited"
            ))),
            Ended::TimedOut => Err(SensorCallError::Died(format!(
                "{name} ran past its time limit of {limit:.1} s"
            ))),
            Ended::Returned(Err(e)) => {
                let trap = e.downcast_ref::<Trap>().copied();
                let message = if trap == Some(Trap::Interrupt) && cut {
                    format!("{name} stopped: the sensor was stopped while it ran")
                } else if trap == Some(Trap::Interrupt) {
                    format!("{name} ran past its time limit of {limit:.1} s")
                } else if let Some(wanted) = self.store.data().limiter.refused {
                    format!(
                        "{name}: memory limit exceeded: the sensor tried to grow its memory to {} bytes, over its limit of {} bytes",
                        wanted, self.limits.memory_bytes
                    )
                } else if trap == Some(Trap::StackOverflow) {
                    format!("{name}: stack overflow")
                } else if let Some(text) = crate::run::panic_message(&self.recent_stderr()) {
                    format!("{name}: guest panicked: {text}")
                } else {
                    format!("{name}: guest trapped: {e:#}")
                };
                Err(SensorCallError::Died(message))
            }
        }
    }

    /// The stderr lines of the current call, joined: where a Rust panic's
    /// report lands.
    fn recent_stderr(&self) -> String {
        let mut text = String::new();
        for line in self
            .log
            .lines_since(self.call_started_at)
            .iter()
            .filter(|l| l.level == "stderr")
        {
            text.push_str(&line.message);
            text.push('\n');
        }
        text
    }

    pub async fn setup(&mut self) -> std::result::Result<(), SensorCallError> {
        guarded!(self, "setup", |guest, store| guest.call_setup(store))?
            .map_err(SensorCallError::Returned)
    }

    pub async fn poll(&mut self) -> std::result::Result<(), SensorCallError> {
        guarded!(self, "poll", |guest, store| guest.call_poll(store))?
            .map_err(SensorCallError::Returned)
    }

    pub async fn add_trigger(
        &mut self,
        t: &SensorTrigger,
    ) -> std::result::Result<(), SensorCallError> {
        let t = wit_trigger(t);
        guarded!(self, "add-trigger", |guest, store| guest
            .call_add_trigger(store, &t))
    }

    pub async fn update_trigger(
        &mut self,
        t: &SensorTrigger,
    ) -> std::result::Result<(), SensorCallError> {
        let t = wit_trigger(t);
        guarded!(self, "update-trigger", |guest, store| guest
            .call_update_trigger(store, &t))
    }

    pub async fn remove_trigger(
        &mut self,
        t: &SensorTrigger,
    ) -> std::result::Result<(), SensorCallError> {
        let t = wit_trigger(t);
        guarded!(self, "remove-trigger", |guest, store| guest
            .call_remove_trigger(store, &t))
    }

    pub async fn cleanup(&mut self) -> std::result::Result<(), SensorCallError> {
        guarded!(self, "cleanup", |guest, store| guest.call_cleanup(store))
    }
}

fn wit_trigger(t: &SensorTrigger) -> Trigger {
    Trigger {
        id: t.id.clone(),
        type_: t.trigger_type.clone(),
        parameters: t.parameters.clone(),
    }
}

/// A sensor's stdout or stderr: split into lines in its log ring.
#[derive(Debug, Clone)]
struct LinePipe {
    log: Arc<Mutex<LogBuffer>>,
    level: &'static str,
    partial: Arc<Mutex<Vec<u8>>>,
}

/// Longest line kept whole; longer ones are cut into pieces.
const MAX_LINE: usize = 4096;

impl LinePipe {
    fn new(log: &SensorLog, level: &'static str) -> Self {
        Self {
            log: log.0.clone(),
            level,
            partial: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut partial = self.partial.lock().expect("pipe lock poisoned");
        partial.extend_from_slice(bytes);
        let mut log = self.log.lock().expect("log lock poisoned");
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            log.push(self.level, text);
        }
        while partial.len() > MAX_LINE {
            let piece: Vec<u8> = partial.drain(..MAX_LINE).collect();
            log.push(self.level, String::from_utf8_lossy(&piece).into_owned());
        }
    }
}

impl IsTerminal for LinePipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LinePipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LinePipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LinePipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl AsyncWrite for LinePipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
