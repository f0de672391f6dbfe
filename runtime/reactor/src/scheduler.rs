//! In-memory scheduling state: which executions this process holds (and can
//! cancel or tail), and the concurrency gates that policies and tenant
//! limits put in front of the workers.
//!
//! The durable queue is the executions table itself (`requested`,
//! `scheduled`, `delayed` rows, read back at start); this module only
//! decides, without a query, what may run now.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use squall_core::ExecutionId;
use squall_core::policy::OverLimit;
use squall_sandbox::{Cancel, LiveOutput};

use crate::runner::Prepared;

/// Where an execution held by this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Requested, delayed, parked at a gate or queued for a worker.
    Waiting,
    Running,
    /// Canceled before it ran; whoever holds its `Prepared` drops it.
    Canceled,
}

/// One execution held by this process: its cancel signal, its output so
/// far, and its phase.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) cancel: Cancel,
    pub(crate) output: LiveOutput,
    phase: Mutex<Phase>,
    /// When a cancel reached it while running (RFC 3339), for its log.
    canceling_at: Mutex<Option<String>>,
}

impl Live {
    pub(crate) fn new(output_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            cancel: Cancel::new(),
            output: LiveOutput::new(output_bytes),
            phase: Mutex::new(Phase::Waiting),
            canceling_at: Mutex::new(None),
        })
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().expect("execution phase lock poisoned")
    }

    /// Waiting → running; false when it was canceled first.
    pub(crate) fn start(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Canceled {
            return false;
        }
        *phase = Phase::Running;
        true
    }

    pub(crate) fn is_canceled(&self) -> bool {
        *self.phase() == Phase::Canceled
    }

    /// Ask it to stop. Returns the phase it was in: `Waiting` (now
    /// canceled: the caller records it), `Running` (the guest is being
    /// interrupted: the worker records the end) or `Canceled` (already).
    pub(crate) fn request_cancel(&self, at: &str) -> Phase {
        let mut phase = self.phase();
        let was = *phase;
        match was {
            Phase::Waiting => *phase = Phase::Canceled,
            Phase::Running => {
                let mut canceling = self.canceling_at.lock().expect("lock poisoned");
                if canceling.is_none() {
                    *canceling = Some(at.to_owned());
                }
                self.cancel.cancel();
            }
            Phase::Canceled => {}
        }
        was
    }

    /// When it was asked to stop while running, if it was.
    pub(crate) fn canceling_at(&self) -> Option<String> {
        self.canceling_at.lock().expect("lock poisoned").clone()
    }
}

/// A concurrency limit one execution is subject to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GateKey {
    pub(crate) key: String,
    pub(crate) threshold: usize,
    pub(crate) over: OverLimit,
    /// Who set it, for the record of a canceled execution.
    pub(crate) by: String,
}

#[derive(Debug, Default)]
struct Gate {
    /// Executions scheduled or running under this key.
    held: usize,
    /// The threshold last asked for under this key.
    threshold: usize,
    /// Executions waiting for a slot, oldest first.
    waiting: VecDeque<Prepared>,
}

/// The oldest waiter of `gate` that was not canceled, marked woken by `key`.
fn next_waiter(gate: &mut Gate, key: &str) -> Option<Prepared> {
    while let Some(mut p) = gate.waiting.pop_front() {
        if p.live.is_canceled() {
            continue;
        }
        p.woken_by = Some(key.to_owned());
        return Some(p);
    }
    None
}

/// What [`Scheduler::acquire`] decided.
pub(crate) enum Admission {
    /// Every gate had room; the slots are held (see `Prepared::held`).
    Admitted(Prepared),
    /// A gate is full and says cancel.
    Cancel(Prepared, GateKey),
    /// A gate is full and says delay, and the caller asked not to park.
    Full(Prepared),
    /// Parked at a full gate; woken by a release.
    Parked,
}

#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    live: Mutex<HashMap<ExecutionId, Arc<Live>>>,
    gates: Mutex<HashMap<String, Gate>>,
    /// The gates are counted in the database, across nodes (see
    /// [`Scheduler::shared`]).
    shared: bool,
    /// Numbers waiters in the order they first waited.
    next_waiter: std::sync::atomic::AtomicU64,
}

impl Scheduler {
    /// A scheduler whose gates the database counts, across every node on
    /// it: here a gate only keeps its waiters, and lets an execution
    /// through to the database's count
    /// (`squall_store::pg::PgStore::take_gates`), which decides. A
    /// newcomer waits behind the gate's waiters; one woken (by a release
    /// here, or slots freed anywhere: [`Scheduler::wake_with_room`]) or
    /// resumed from its record (it may hold its slots in the database
    /// already) goes straight to the count.
    pub(crate) fn shared() -> Self {
        Self {
            shared: true,
            ..Self::default()
        }
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    pub(crate) fn track(&self, id: &ExecutionId, live: &Arc<Live>) {
        self.live
            .lock()
            .expect("live map lock poisoned")
            .insert(id.clone(), live.clone());
    }

    pub(crate) fn forget(&self, id: &ExecutionId) {
        self.live.lock().expect("live map lock poisoned").remove(id);
    }

    pub(crate) fn live(&self, id: &ExecutionId) -> Option<Arc<Live>> {
        self.live
            .lock()
            .expect("live map lock poisoned")
            .get(id)
            .cloned()
    }

    /// Take a slot in every gate of `keys`, all or none. When one is full:
    /// cancel if it says so, else park (`park`) or hand the execution back.
    pub(crate) fn acquire(&self, keys: &[GateKey], mut p: Prepared, park: bool) -> Admission {
        let mut gates = self.gates.lock().expect("gate lock poisoned");
        // Shared, the database counts; a gate others wait at is full to a
        // newcomer: they were there first.
        let full = keys.iter().find(|k| {
            gates.get(&k.key).is_some_and(|g| match self.shared {
                false => g.held >= k.threshold,
                true => {
                    p.woken_by.is_none()
                        && !p.resumed
                        && g.waiting.iter().any(|w| !w.live.is_canceled())
                }
            })
        });
        if let Some(full) = full {
            return match full.over {
                OverLimit::Cancel => Admission::Cancel(p, full.clone()),
                OverLimit::Delay if !park => Admission::Full(p),
                OverLimit::Delay => {
                    self.park_at(&mut gates, full, p);
                    Admission::Parked
                }
            };
        }
        for k in keys {
            let gate = gates.entry(k.key.clone()).or_default();
            gate.held += 1;
            gate.threshold = k.threshold;
        }
        p.held = keys.iter().map(|k| k.key.clone()).collect();
        Admission::Admitted(p)
    }

    /// Give back the slots `held` here without waking anyone: their
    /// execution found a gate full across the cluster and waits.
    pub(crate) fn unhold(&self, held: &[String]) {
        let mut gates = self.gates.lock().expect("gate lock poisoned");
        for key in held {
            if let Some(gate) = gates.get_mut(key) {
                gate.held = gate.held.saturating_sub(1);
                if gate.held == 0 && gate.waiting.is_empty() {
                    gates.remove(key);
                }
            }
        }
    }

    /// Let `p` wait at `key`'s gate, which is full across the cluster.
    pub(crate) fn park(&self, key: &GateKey, p: Prepared) {
        let mut gates = self.gates.lock().expect("gate lock poisoned");
        self.park_at(&mut gates, key, p);
    }

    /// Let `p` wait at `key`'s gate, in the order waiters first waited.
    fn park_at(&self, gates: &mut HashMap<String, Gate>, key: &GateKey, mut p: Prepared) {
        let since = *p.waiting_since.get_or_insert_with(|| {
            self.next_waiter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        let gate = gates.entry(key.key.clone()).or_default();
        gate.threshold = key.threshold;
        let at = gate
            .waiting
            .partition_point(|w| w.waiting_since.is_some_and(|s| s < since));
        gate.waiting.insert(at, p);
    }

    /// The oldest live waiters of `tenant`'s gates (all: `None`), as many
    /// of each as its threshold: slots were freed somewhere in the
    /// cluster, and they try the database's count again.
    pub(crate) fn wake_with_room(&self, tenant: Option<&str>) -> Vec<Prepared> {
        let mut gates = self.gates.lock().expect("gate lock poisoned");
        let mut woken = Vec::new();
        for (key, gate) in gates.iter_mut() {
            let of_tenant = tenant.is_none_or(|t| {
                key.strip_prefix(t)
                    .is_some_and(|rest| rest.starts_with('\0'))
            });
            if !of_tenant {
                continue;
            }
            for _ in 0..gate.threshold.max(1) {
                let Some(p) = next_waiter(gate, key) else {
                    break;
                };
                woken.push(p);
            }
        }
        gates.retain(|_, g| g.held > 0 || !g.waiting.is_empty());
        woken
    }

    /// The next live waiter of `key`, if the gate has room for it. Called
    /// when an execution woken by `key` did not take the slot (it was
    /// canceled, or stopped at another gate), so the slot is not lost.
    pub(crate) fn wake_if_room(&self, key: &str) -> Option<Prepared> {
        let mut gates = self.gates.lock().expect("gate lock poisoned");
        let gate = gates.get_mut(key)?;
        // Shared, the database's count decides.
        if !self.shared && gate.held >= gate.threshold {
            return None;
        }
        let woken = next_waiter(gate, key);
        if gate.held == 0 && gate.waiting.is_empty() {
            gates.remove(key);
        }
        woken
    }

    /// Every waiter of every gate, for admission again (after a policy
    /// change: their keys or thresholds may be different now).
    pub(crate) fn drain_waiting(&self) -> Vec<Prepared> {
        let mut gates = self.gates.lock().expect("gate lock poisoned");
        let mut out = Vec::new();
        for gate in gates.values_mut() {
            out.extend(gate.waiting.drain(..).filter(|p| !p.live.is_canceled()));
        }
        gates.retain(|_, g| g.held > 0);
        out
    }

    /// Give back the slots `held`; returns the executions woken (one per
    /// freed gate with waiters), to be admitted again.
    pub(crate) fn release(&self, held: &[String]) -> Vec<Prepared> {
        let mut woken = Vec::new();
        let mut gates = self.gates.lock().expect("gate lock poisoned");
        for key in held {
            let Some(gate) = gates.get_mut(key) else {
                continue;
            };
            gate.held = gate.held.saturating_sub(1);
            woken.extend(next_waiter(gate, key));
            if gate.held == 0 && gate.waiting.is_empty() {
                gates.remove(key);
            }
        }
        woken
    }
}
