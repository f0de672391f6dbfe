//! One execution: a fresh `Store`, limits, the call, and the mapping of every
//! ending to an [`Outcome`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_core::kv::KvStore;
use squall_core::{ActionRef, ExecutionId, TenantId};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use crate::bindings::squall::automation::types::{ActionError, Context};
use crate::host::{HostState, MemoryLimiter};
use crate::live::{Cancel, LiveOutput};
use crate::{ActionComponent, Failure, FailureKind, Outcome, RunReport, Sandbox};

/// Per-execution limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time before the guest is stopped.
    pub timeout: Duration,
    /// Linear memory the guest may grow to.
    pub memory_bytes: usize,
    /// Bytes kept of each of stdout, stderr and the guest log.
    pub output_bytes: usize,
    /// Largest result accepted.
    pub result_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(squall_core::manifest::DEFAULT_TIMEOUT_SECS),
            memory_bytes: 128 << 20,
            output_bytes: 1 << 20,
            result_bytes: 16 << 20,
        }
    }
}

/// Everything one execution needs.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub execution_id: ExecutionId,
    pub tenant: TenantId,
    pub action: ActionRef,
    /// The resolved parameters object.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// The pack's config as JSON text.
    pub config: Arc<str>,
    pub kv: Option<Arc<dyn KvStore>>,
    pub trace_tag: Option<String>,
    pub limits: Limits,
    /// Stops the execution when canceled.
    pub cancel: Cancel,
    /// Where stdout, stderr and log lines go, readable while it runs. Its
    /// caps are the caller's; `limits.output_bytes` sizes a fresh one.
    pub output: Option<LiveOutput>,
    /// Host directories opened to the guest (at the same paths).
    pub dirs: Vec<Preopen>,
    /// Where the guest may send HTTP requests.
    pub egress: crate::Egress,
}

/// A host directory opened to a guest at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub path: std::path::PathBuf,
    pub writable: bool,
}

/// The epoch callback of guest code: at every tick, interrupt the guest
/// once `deadline` has passed or `cancel` fired, otherwise yield through
/// tokio, so a busy guest cannot starve the runtime's other tasks (a plain
/// `Yield` may be rescheduled at once from the LIFO slot).
fn yield_until(
    deadline: Instant,
    cancel: Option<Cancel>,
) -> impl FnMut(wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline>
+ Send
+ Sync
+ 'static {
    move |_| {
        if Instant::now() >= deadline || cancel.as_ref().is_some_and(|c| c.is_canceled()) {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    }
}

impl Sandbox {
    /// Instantiate `component` once in a fresh instance with nothing
    /// granted, and drop it: a component that traps while it starts, loops
    /// there or needs more memory than `limits` allow fails here, before
    /// it is installed, with the reason.
    pub async fn check_instantiation(
        &self,
        component: &ActionComponent,
        limits: Limits,
    ) -> std::result::Result<(), String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the instance semaphore is never closed");
        let timeout = limits.timeout.max(self.engine.tick);
        let mut store = Store::new(&self.engine.engine, HostState::bare(limits.memory_bytes));
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(yield_until(Instant::now() + timeout, None));
        let started = tokio::time::timeout(timeout, component.pre.instantiate_async(&mut store));
        match started.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!(
                "instantiation did not finish within {:.1} s",
                timeout.as_secs_f64()
            )),
        }
    }

    /// Run one execution of `component` in a fresh instance.
    #[tracing::instrument(skip_all, fields(execution_id = %inv.execution_id, action = %inv.action))]
    pub async fn run_action(&self, component: &ActionComponent, inv: Invocation) -> RunReport {
        let started = Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the instance semaphore is never closed");
        let limits = inv.limits;
        // A zero timeout would expire before the first instruction.
        let timeout = limits.timeout.max(self.engine.tick);
        let live = inv
            .output
            .clone()
            .unwrap_or_else(|| LiveOutput::new(limits.output_bytes));
        let cancel = inv.cancel.clone();
        // No env, no args, no sockets; directories only as granted.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(live.stdout.clone()).stderr(live.stderr.clone());
        if let Err(message) = crate::preopen(&mut wasi, &inv.dirs) {
            return RunReport {
                outcome: Outcome::Failed(Failure {
                    kind: FailureKind::Instantiation,
                    message,
                }),
                output: live.snapshot(),
                elapsed: started.elapsed(),
            };
        }
        let wasi = wasi.build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limits.memory_bytes,
                refused: None,
            },
            tenant: inv.tenant.clone(),
            config: inv.config.clone(),
            kv: inv.kv.clone(),
            kv_prefix: String::new(),
            log: live.log.clone(),
            events: None,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            egress: crate::host::egress::EgressHooks {
                policy: inv.egress.clone(),
                log: live.log.clone(),
            },
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = started + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(yield_until(deadline, Some(cancel.clone())));

        let ctx = Context {
            execution_id: inv.execution_id.to_string(),
            tenant: inv.tenant.to_string(),
            pack: inv.action.pack().to_string(),
            action: inv.action.name().to_owned(),
            api_url: None,
            auth_token: None,
            trace_tag: inv.trace_tag.clone(),
        };
        let params = serde_json::Value::Object(inv.parameters).to_string();

        let call = async {
            let instantiating = Instant::now();
            let instance = component
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(CallError::Instantiate)?;
            squall_core::metrics::metrics()
                .sandbox_instantiation_seconds
                .observe(instantiating.elapsed().as_secs_f64());
            instance
                .call_run(&mut store, &ctx, &params)
                .await
                .map_err(CallError::Trap)
        };
        // The epoch callback stops guests that compute; this stops guests that
        // wait inside a host call (sleeping, kv), where epochs are not checked.
        // A cancel interrupts both kinds the same way.
        let called = tokio::select! {
            called = tokio::time::timeout_at(deadline.into(), call) => called,
            () = cancel.canceled() => Ok(Err(CallError::Canceled)),
        };

        let refused_memory = store.data().limiter.refused;
        drop(store);
        // A copy: the live buffers stay readable until the record is written.
        let output = live.snapshot();
        let outcome = match called {
            Err(_elapsed) => Outcome::Timeout { after: timeout },
            Ok(Err(CallError::Canceled)) => Outcome::Canceled,
            Ok(Ok(Ok(json))) => parse_result(&json, limits.result_bytes),
            Ok(Ok(Err(action_error))) => Outcome::Failed(from_action_error(action_error)),
            Ok(Err(CallError::Instantiate(e))) => Outcome::Failed(Failure {
                kind: FailureKind::Instantiation,
                message: format!("failed to start the action: {e:#}"),
            }),
            // The epoch callback interrupted it because of the cancel (not
            // the deadline). A run that ended on its own keeps its outcome.
            Ok(Err(CallError::Trap(e)))
                if cancel.is_canceled()
                    && e.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
                    && Instant::now() < deadline =>
            {
                Outcome::Canceled
            }
            Ok(Err(CallError::Trap(e))) => {
                classify_trap(&e, refused_memory, limits, &output.stderr, timeout)
            }
        };
        RunReport {
            outcome,
            output,
            elapsed: started.elapsed(),
        }
    }
}

enum CallError {
    Instantiate(wasmtime::Error),
    Trap(wasmtime::Error),
    Canceled,
}

fn parse_result(json: &str, max: usize) -> Outcome {
    if json.len() > max {
        return Outcome::Failed(Failure {
            kind: FailureKind::InvalidResult,
            message: format!(
                "result too large: {} bytes, over the limit of {} bytes (the server's --max-result-mib)",
                json.len(),
                max
            ),
        });
    }
    match serde_json::from_str(json) {
        Ok(value) => Outcome::Succeeded(value),
        Err(e) => Outcome::Failed(Failure {
            kind: FailureKind::InvalidResult,
            message: format!("invalid result: the action returned text that is not JSON ({e})"),
        }),
    }
}

fn from_action_error(e: ActionError) -> Failure {
    let (kind, message) = match e {
        ActionError::InvalidInput(m) => (FailureKind::InvalidInput, format!("invalid input: {m}")),
        ActionError::Failed(m) => (FailureKind::ActionFailed, m),
        ActionError::Retryable(m) => (FailureKind::Retryable, format!("retryable: {m}")),
    };
    Failure { kind, message }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn classify_trap(
    e: &wasmtime::Error,
    refused_memory: Option<usize>,
    limits: Limits,
    stderr: &str,
    timeout: Duration,
) -> Outcome {
    let trap = e.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return Outcome::Timeout { after: timeout };
    }
    let (kind, message) = if let Some(wanted) = refused_memory {
        (
            FailureKind::MemoryLimit,
            format!(
                "memory limit exceeded: the action tried to grow its memory to {}, over its limit of {}",
                mib(wanted),
                mib(limits.memory_bytes)
            ),
        )
    } else if trap == Some(Trap::StackOverflow) {
        (
            FailureKind::StackOverflow,
            "stack overflow: the action recursed too deeply".to_owned(),
        )
    } else if let Some(text) = panic_message(stderr) {
        (FailureKind::Panic, format!("guest panicked: {text}"))
    } else {
        (FailureKind::Trap, format!("guest trapped: {e:#}"))
    };
    Outcome::Failed(Failure { kind, message })
}

/// The message of a Rust panic from the standard library's report on
/// stderr: the lines after `thread '…' panicked at FILE:LINE:COL:` up to the
/// `note:` line.
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let rest = &stderr[start..];
    let (location_line, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let message: Vec<&str> = body
        .lines()
        .take_while(|line| !line.starts_with("note: "))
        .collect();
    let message = message.join("\n").trim().to_owned();
    if message.is_empty() {
        // Older formats put the message on the same line.
        Some(location_line.trim_start_matches("panicked at ").to_owned())
    } else {
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_is_extracted() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:9:5:\nsomething broke: 42\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("something broke: 42")
        );
        assert_eq!(panic_message("no panic here"), None);
    }

    #[test]
    fn results_must_be_json_and_bounded() {
        assert_eq!(
            parse_result("{\"a\":1}", 100),
            Outcome::Succeeded(serde_json::json!({"a": 1}))
        );
        let Outcome::Failed(f) = parse_result("not json", 100) else {
            panic!("must fail")
        };
        assert_eq!(f.kind, FailureKind::InvalidResult);
        let Outcome::Failed(f) = parse_result("\"0123456789\"", 4) else {
            panic!("must fail")
        };
        assert!(f.message.contains("over the limit"), "{}", f.message);
    }
}
