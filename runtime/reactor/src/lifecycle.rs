//! An execution's life inside the reactor: requested (by a rule, the API or
//! a retry) → delayed → scheduled (past its policies' gates) → running →
//! completed, with cancel, re-run, retry, notifications and recovery.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};
use squall_core::execution::CapturedOutput;
use squall_core::policy::{OverLimit, PolicyKind};
use squall_core::template::KvLookup;
use squall_core::time::now_rfc3339;
use squall_core::trigger::{
    ACTION_TRIGGER, NOTIFY_TRIGGER, TriggerInstance, TriggerInstanceStatus, new_id,
};
use squall_core::{Execution, ExecutionId, ExecutionStatus, TenantId};
use squall_store::Lane;
use tokio::sync::mpsc;

use crate::dispatch::{Reactor, StoreKv};
use crate::runner::{Prepared, RunError, RunRequest};
use crate::scheduler::{Admission, GateKey, Phase};

/// Spawned futures that lead back to themselves (admit → complete →
/// enqueue → admit) are boxed, so their types are not infinite.
type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// [`BoxFuture`] borrowing for `'a` (planning an end that moves a
/// workflow, which may end and move its parent).
pub(crate) type BoxFutureRef<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Why an execution request, cancel or re-run was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error("execution '{0}' not found")]
    NotFound(ExecutionId),
    #[error("execution '{id}' cannot be canceled: it already ended as {status}")]
    AlreadyCompleted {
        id: ExecutionId,
        status: ExecutionStatus,
    },
    #[error("execution '{0}' is not a running workflow: only workflows pause and resume")]
    NotAWorkflow(ExecutionId),
    #[error(
        "status '{0}' cannot be set: an execution's status is set to 'pausing' or 'resuming' (a workflow), or it is canceled with DELETE"
    )]
    StatusNotSettable(ExecutionStatus),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Store(#[from] squall_store::Error),
    /// Another node holds the execution and could not do what was asked.
    #[error("execution '{id}' is held by node {node}, which {why}")]
    Elsewhere {
        id: ExecutionId,
        node: String,
        why: String,
    },
}

/// What happened to an execution, for the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionEventKind {
    /// Recorded (StackStorm's `st2.execution__create`).
    Create,
    /// Its status changed (`st2.execution__update`).
    Update,
}

impl ExecutionEventKind {
    /// StackStorm's event name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "st2.execution__create",
            Self::Update => "st2.execution__update",
        }
    }
}

/// One execution event: what happened and the execution as it is now.
#[derive(Debug, Clone)]
pub struct ExecutionEvent {
    pub kind: ExecutionEventKind,
    pub execution: Arc<Execution>,
}

impl Reactor {
    /// Execution events from now on (a slow reader misses some, and is
    /// told how many).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ExecutionEvent> {
        self.inner.events.subscribe()
    }

    /// Tell subscribers, if there are any (nothing is copied otherwise).
    pub(crate) fn publish(&self, kind: ExecutionEventKind, e: &Execution) {
        if self.inner.events.receiver_count() > 0 {
            let _ = self.inner.events.send(ExecutionEvent {
                kind,
                execution: Arc::new(e.clone()),
            });
        }
    }

    /// Executions running now.
    pub fn running_now(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Executions queued for a worker now (taken by one that waits for
    /// a slot included).
    pub fn queue_depth(&self) -> usize {
        self.inner.jobs.max_capacity() - self.inner.jobs.capacity()
            + self.inner.awaiting_slot.load(Ordering::Acquire)
    }

    /// Worker slots free now, less what waits for one.
    pub(crate) fn idle_workers(&self) -> usize {
        self.inner
            .slots
            .available_permits()
            .saturating_sub(self.queue_depth())
    }

    /// Whether `p` may run as soon as it is recorded: a component or a
    /// host command, with no delay and no concurrency gate to pass, while
    /// this process is not shutting down.
    pub(crate) fn runs_at_once(&self, p: &Prepared) -> bool {
        !self.inner.closed.load(Ordering::Acquire)
            && matches!(
                p.work,
                crate::runner::Work::Component(_) | crate::runner::Work::Host(_)
            )
            && p.not_before().is_none()
            && self.gate_keys(p).is_empty()
    }

    /// Mark `running` each of `prepared` that may run at once while a
    /// worker slot is free for it and nothing waits in the queue, taking
    /// that slot: the write that records these executions then records
    /// them started, and [`Reactor::hand_to_workers`] runs each in its
    /// slot, with no write of its start and no trip through admission.
    /// What a crash between the write and the run leaves is what it
    /// leaves of any execution that started: `running`, abandoned at the
    /// next start (as for a workflow's next task, see
    /// `Reactor::commit_claiming`). Returns the slots, one per execution
    /// marked, in order; when the write fails, drop them and
    /// [`Reactor::unreserve`] as many.
    pub(crate) fn claim_idle_workers(
        &self,
        prepared: &mut [Prepared],
    ) -> Vec<tokio::sync::OwnedSemaphorePermit> {
        let mut slots = Vec::new();
        for p in prepared.iter_mut() {
            if !self.runs_at_once(p) {
                continue;
            }
            // What waits for a worker goes first.
            if self.queue_depth() > 0 {
                break;
            }
            let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
                break;
            };
            // `start` fails when it was canceled meanwhile.
            if !p.live.start() {
                continue;
            }
            p.execution.transition(ExecutionStatus::Scheduled);
            p.execution.transition(ExecutionStatus::Running);
            self.inner.reserved.fetch_add(1, Ordering::AcqRel);
            slots.push(slot);
        }
        slots
    }

    /// No longer count `n` executions of [`Reactor::claim_idle_workers`]
    /// as about to run.
    pub(crate) fn unreserve(&self, n: usize) {
        if n > 0 {
            self.inner.reserved.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Run, each in its own task and slot, the executions
    /// [`Reactor::claim_idle_workers`] recorded `running` (`slots` in the
    /// same order).
    pub(crate) fn hand_to_workers(
        &self,
        claimed: Vec<Prepared>,
        slots: Vec<tokio::sync::OwnedSemaphorePermit>,
    ) {
        for (p, slot) in claimed.into_iter().zip(slots) {
            record_start_delay(&p.execution);
            // Counted running before it stops counting as about to, so
            // a shutdown waiting for both never sees neither.
            self.inner.running.fetch_add(1, Ordering::AcqRel);
            self.unreserve(1);
            let reactor = self.clone();
            tokio::spawn(async move {
                reactor.work_through(p, true).await;
                drop(slot);
            });
        }
    }

    /// Request an execution (`POST /api/v1/executions`, `squall run --url`):
    /// validated, recorded `requested` (or `delayed`), then scheduled.
    ///
    /// Returns once the record is durable and the execution is queued (or
    /// waiting out its delay or a policy): a caller faster than the workers
    /// waits for room in the queue, as webhooks do. The write and the
    /// queueing run in a task of their own, so a caller that hangs up
    /// cannot strand a recorded execution.
    pub async fn request_execution(&self, req: RunRequest) -> Result<Execution, RunError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(RunError::ShuttingDown);
        }
        self.take_execution_quota(&req.tenant)?;
        let prepared = self.inner.runner.prepare(req, None)?;
        self.track(&prepared);
        let reactor = self.clone();
        tokio::spawn(async move {
            if let Err(e) = reactor
                .inner
                .store
                .insert_execution(&prepared.execution)
                .await
            {
                reactor.inner.scheduler.forget(&prepared.execution.id);
                return Err(e.into());
            }
            let execution = prepared.execution.clone();
            reactor.publish(ExecutionEventKind::Create, &execution);
            reactor.enqueue(vec![prepared]).await;
            Ok(execution)
        })
        .await
        .map_err(|e| {
            RunError::Store(squall_store::Error::Corrupt(format!(
                "request task failed: {e}"
            )))
        })?
    }

    /// Run an execution's action again with its parameters, `overrides` on
    /// top (StackStorm's `re_run`). The new execution's context names the
    /// original under `re-run`.
    pub async fn re_run(
        &self,
        caller: &squall_core::auth::Principal,
        id: &ExecutionId,
        overrides: Map<String, Value>,
        delay: Option<u64>,
    ) -> Result<Execution, ExecutionError> {
        let tenant = &caller.tenant;
        let original = self
            .inner
            .store
            .get_execution(tenant, id)?
            .ok_or_else(|| ExecutionError::NotFound(id.clone()))?;
        let given = self
            .inner
            .runner
            .stored_request_parameters(&original, &overrides)?;
        let mut req = RunRequest::new(tenant.clone(), original.action.clone(), given);
        req.context
            .insert("re-run".into(), json!({"ref": original.id.as_str()}));
        req.context.insert("user".into(), json!(caller.user));
        req.delay = delay;
        Ok(self.request_execution(req).await?)
    }

    /// Cancel an execution. One not yet running ends `canceled` at once; a
    /// running one is interrupted (at the guest's next epoch tick) and is
    /// returned `canceling`, ending `canceled` moments later.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: &ExecutionId,
    ) -> Result<Execution, ExecutionError> {
        // In a task of its own: once the cancel starts, a caller that hangs
        // up must not leave it half done.
        let (reactor, tenant, id) = (self.clone(), tenant.clone(), id.clone());
        tokio::spawn(async move { reactor.cancel_now(&tenant, &id).await })
            .await
            .map_err(|e| {
                ExecutionError::Store(squall_store::Error::Corrupt(format!(
                    "cancel task failed: {e}"
                )))
            })?
    }

    async fn cancel_now(
        &self,
        tenant: &TenantId,
        id: &ExecutionId,
    ) -> Result<Execution, ExecutionError> {
        let mut stored = self
            .inner
            .store
            .get_execution(tenant, id)?
            .ok_or_else(|| ExecutionError::NotFound(id.clone()))?;
        if stored.status.is_completed() {
            return Err(ExecutionError::AlreadyCompleted {
                id: id.clone(),
                status: stored.status,
            });
        }
        // Another node holds it (it may have taken it while it waited
        // here): that node cancels it.
        if let Some(node) = self.held_elsewhere(id).await? {
            return self.cancel_on(node, tenant, id).await;
        }
        if let Some(record) = self.cancel_workflow(id).await {
            return Ok(record);
        }
        let at = now_rfc3339();
        let phase = match self.inner.scheduler.live(id) {
            Some(live) => live.request_cancel(&at),
            None => Phase::Waiting,
        };
        match phase {
            Phase::Running => {
                if stored.status.can_become(ExecutionStatus::Canceling) {
                    stored.status = ExecutionStatus::Canceling;
                    stored.log.push(squall_core::StatusChange {
                        status: ExecutionStatus::Canceling,
                        timestamp: at,
                    });
                    self.inner.store.mark_canceling(&stored).await?;
                    self.publish(ExecutionEventKind::Update, &stored);
                } else {
                    // The `running` record is still on its way to disk.
                    stored.status = ExecutionStatus::Canceling;
                }
                Ok(stored)
            }
            Phase::Waiting => {
                self.inner.scheduler.forget(id);
                let waited = stored.status == ExecutionStatus::Pending;
                stored.transition(ExecutionStatus::Canceled);
                if waited {
                    // An inquiry: its question stays on the record.
                    stored.result = Some(crate::inquiries::canceled_result(stored.result.take()));
                } else {
                    stored.result = Some(json!({"error": "canceled before it ran"}));
                }
                if self.complete(stored.clone(), None).await {
                    Ok(stored)
                } else if let Some(node) = self.held_elsewhere(id).await? {
                    // Taken by another node just now: the write here was
                    // refused, and that node cancels it.
                    self.cancel_on(node, tenant, id).await
                } else {
                    // It completed meanwhile, or the write failed: say how
                    // the record stands now.
                    self.inner
                        .store
                        .get_execution(tenant, id)?
                        .ok_or_else(|| ExecutionError::NotFound(id.clone()))
                }
            }
            Phase::Canceled => Ok(stored),
        }
    }

    /// What a running execution has printed and logged so far; `None` when
    /// this process is not running it (read the record instead).
    pub fn live_output(&self, id: &ExecutionId) -> Option<CapturedOutput> {
        self.inner
            .scheduler
            .live(id)
            .map(|live| live.output.snapshot())
    }

    /// Executions running in this process now.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    pub(crate) fn track(&self, p: &Prepared) {
        self.inner.scheduler.track(&p.execution.id, &p.live);
    }

    /// Admit recorded executions in a task of their own (never makes the
    /// caller wait for room in the queue).
    pub(crate) fn spawn_enqueue(&self, prepared: Vec<Prepared>) {
        if prepared.is_empty() {
            return;
        }
        let reactor = self.clone();
        tokio::spawn(async move { reactor.enqueue(prepared).await });
    }

    /// Admit recorded executions, in order; waits when the queue is full.
    pub(crate) async fn enqueue(&self, prepared: Vec<Prepared>) {
        for p in prepared {
            self.admit(p).await;
        }
    }

    /// Take one recorded execution towards a worker: wait out its `delay`,
    /// pass its concurrency gates (delaying or canceling as the policy
    /// says), then queue it `scheduled`.
    fn admit(&self, p: Prepared) -> BoxFuture {
        let reactor = self.clone();
        Box::pin(async move { reactor.admit_now(p).await })
    }

    async fn admit_now(&self, p: Prepared) {
        let woken_by = p.woken_by.clone();
        // Waits at a gate full across the cluster: woken by slots freed
        // anywhere, not by this one.
        let Some(holds) = self.try_admit(p).await else {
            return;
        };
        let Some(key) = woken_by else {
            return;
        };
        // Woken by a release but did not take that slot (canceled, stopped
        // at another gate, its policy changed): wake the next waiter, or the
        // slot would sit idle. Shared, a woken one that took its slot wakes
        // the next too: slots freed on other nodes may have made more room.
        if (!holds.contains(&key) || self.inner.scheduler.is_shared())
            && let Some(next) = self.inner.scheduler.wake_if_room(&key)
        {
            self.spawn_enqueue(vec![next]);
        }
    }

    /// [`Reactor::admit_now`]'s work; returns the gate keys whose slots the
    /// execution now holds (empty unless it was queued for a worker), or
    /// `None` when it waits at a gate the cluster fills.
    async fn try_admit(&self, mut p: Prepared) -> Option<Vec<String>> {
        if p.live.is_canceled() {
            return Some(Vec::new());
        }
        if let Some(at) = p.not_before() {
            let reactor = self.clone();
            let wait = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if !reactor.inner.closed.load(Ordering::Acquire) {
                    reactor.admit(p).await;
                }
            });
            return Some(Vec::new());
        }
        let keys = self.gate_keys(&p);
        let mut park = p.execution.status == ExecutionStatus::Delayed;
        let mut p = loop {
            match self.inner.scheduler.acquire(&keys, p, park) {
                Admission::Admitted(p) => match self.pass_shared_gates(&keys, p).await {
                    Some(p) => break p,
                    None => return None,
                },
                Admission::Parked => return Some(Vec::new()),
                Admission::Full(mut waiting) => {
                    // Durably `delayed` before it waits, then try again: the
                    // gate may have freed meanwhile.
                    waiting.execution.transition(ExecutionStatus::Delayed);
                    if let Err(e) = self.inner.store.update_execution(&waiting.execution).await {
                        tracing::error!(error = %e, execution_id = %waiting.execution.id, "could not record delayed");
                    }
                    park = true;
                    p = waiting;
                }
                Admission::Cancel(canceled, key) => {
                    self.cancel_at_gate(canceled, &key).await;
                    return Some(Vec::new());
                }
            }
        };
        p.execution.transition(ExecutionStatus::Scheduled);
        let held = p.held.clone();
        if let Err(refused) = self.inner.jobs.send(p).await {
            let p = refused.0;
            tracing::warn!(execution_id = %p.execution.id, "execution queue closed; it stays recorded and resumes at the next start");
            self.inner.scheduler.release(&p.held);
            return Some(Vec::new());
        }
        Some(held)
    }

    /// End `canceled` at the full gate `key`, whose policy says cancel.
    async fn cancel_at_gate(&self, mut canceled: Prepared, key: &GateKey) {
        self.inner.scheduler.forget(&canceled.execution.id);
        let e = &mut canceled.execution;
        e.transition(ExecutionStatus::Canceled);
        e.result = Some(json!({"error": format!(
            "canceled by policy '{}': {} execution(s) of {} already scheduled or running",
            key.by, key.threshold, e.action
        )}));
        self.complete(canceled.execution, None).await;
    }

    /// On PostgreSQL, take in the database the slots `p` took here, across
    /// every node ([`squall_store::pg::PgStore::take_gates`]). Returns `p`
    /// when it holds them all (or there are none to take); else it gave
    /// back its slots here and was canceled, or waits at the full gate
    /// (recorded `delayed`) until slots are freed somewhere.
    async fn pass_shared_gates(&self, keys: &[GateKey], mut p: Prepared) -> Option<Prepared> {
        let Some(pg) = self.inner.store.postgres() else {
            return Some(p);
        };
        if keys.is_empty() {
            return Some(p);
        }
        let gates: Vec<(&str, usize)> =
            keys.iter().map(|k| (k.key.as_str(), k.threshold)).collect();
        let e = &p.execution;
        let full = match pg.take_gates(&e.tenant, &e.id, &gates).await {
            Ok(None) => return Some(p),
            Ok(Some(i)) => keys[i].clone(),
            Err(err) => {
                // Not known to have room: it waits, and tries again when
                // the gates are looked at next (within a second).
                tracing::warn!(execution_id = %e.id, error = %err, "could not take a concurrency slot in the database; the execution waits and tries again");
                GateKey {
                    over: OverLimit::Delay,
                    ..keys[0].clone()
                }
            }
        };
        self.inner.scheduler.unhold(&std::mem::take(&mut p.held));
        if full.over == OverLimit::Cancel {
            self.cancel_at_gate(p, &full).await;
            return None;
        }
        if p.execution.status != ExecutionStatus::Delayed {
            p.execution.transition(ExecutionStatus::Delayed);
            if let Err(e) = self.inner.store.update_execution(&p.execution).await {
                tracing::error!(error = %e, execution_id = %p.execution.id, "could not record delayed");
            }
        }
        self.inner.scheduler.park(&full, p);
        None
    }

    /// Slots of gates shared across the cluster were freed, of `tenant`'s
    /// gates (any tenant's: `None`): what waits at one with room here
    /// tries again.
    pub(crate) fn wake_shared_gates(&self, tenant: Option<&TenantId>) {
        let woken = self
            .inner
            .scheduler
            .wake_with_room(tenant.map(TenantId::as_str));
        self.spawn_enqueue(woken);
    }

    /// Free the slots `e` holds (`held` here) before it ends: a workflow
    /// that started, a question asked. Returns the executions woken here.
    async fn release_early(&self, e: &Execution, held: &[String]) -> Vec<Prepared> {
        if let Some(pg) = self.inner.store.postgres()
            && !held.is_empty()
            && let Err(err) = pg.free_gates(&e.tenant, &e.id).await
        {
            tracing::warn!(execution_id = %e.id, error = %err, "could not free its concurrency slots in the database; they are freed when it ends");
        }
        self.inner.scheduler.release(held)
    }

    /// After a policy change: every execution waiting at a gate goes
    /// through admission again, under the policies now in force.
    pub(crate) fn readmit_waiting(&self) {
        let waiting = self.inner.scheduler.drain_waiting();
        self.spawn_enqueue(waiting);
    }

    /// The concurrency gates `p` must pass: its action's concurrency
    /// policies, then its tenant's limit on running executions.
    pub(crate) fn gate_keys(&self, p: &Prepared) -> Vec<GateKey> {
        let e = &p.execution;
        let policies = self.inner.policies.snapshot();
        let mut keys: Vec<GateKey> = policies
            .of(&e.tenant, &e.action)
            .iter()
            .filter_map(|policy| {
                let PolicyKind::Concurrency {
                    threshold, action, ..
                } = &policy.kind
                else {
                    return None;
                };
                let key = policy.concurrency_key(e.parameters.as_object()?)?;
                Some(GateKey {
                    key: format!("{}\0{key}", e.tenant),
                    threshold: *threshold,
                    over: *action,
                    by: policy.policy_ref(),
                })
            })
            .collect();
        if let Some(limit) = self.inner.config.tenant_max_running {
            keys.push(GateKey {
                key: format!("{}\0", e.tenant),
                threshold: limit.max(1),
                over: OverLimit::Delay,
                by: format!("tenant '{}' running limit", e.tenant),
            });
        }
        keys
    }

    pub(crate) async fn work(&self, jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Prepared>>>) {
        loop {
            let Some(job) = jobs.lock().await.recv().await else {
                return;
            };
            // Counted as queued until it has a slot: one that an
            // execution claimed at its creation holds is not free.
            self.inner.awaiting_slot.fetch_add(1, Ordering::AcqRel);
            let slot = self.inner.slots.clone().acquire_owned().await;
            self.inner.awaiting_slot.fetch_sub(1, Ordering::AcqRel);
            let Ok(slot) = slot else {
                return;
            };
            self.work_through(job, false).await;
            drop(slot);
        }
    }

    /// Run `job` (`counted`: already counted running), then each next
    /// task of its workflow that its end hands back, already recorded
    /// `running` and counted running.
    async fn work_through(&self, job: Prepared, counted: bool) {
        let mut next = Some(job);
        let mut counted = counted;
        while let Some(job) = next.take() {
            next = self.work_on(job, counted).await;
            counted = next.is_some();
        }
    }

    /// Run one job to its end; returns the execution its end claimed for
    /// this worker, if any (see [`Reactor::commit_claiming`]), still
    /// counted in `running`: for shutdown, which waits for nothing to be
    /// running, it never stopped. `counted`: `job` is such an execution.
    async fn work_on(&self, mut job: Prepared, counted: bool) -> Option<Prepared> {
        let mut next = None;
        if matches!(job.work, crate::runner::Work::Inquiry) {
            // An inquiry holds no worker either: it is recorded `pending`
            // and waits for its answer.
            if job.live.start() {
                let held = std::mem::take(&mut job.held);
                let e = job.execution.clone();
                self.ask(job).await;
                let woken = self.release_early(&e, &held).await;
                self.spawn_enqueue(woken);
                return None;
            }
        } else if matches!(job.work, crate::runner::Work::Workflow(_)) {
            // A workflow holds no worker: it starts, and its tasks run as
            // executions of their own.
            if job.live.start() {
                let e = job.execution.clone();
                let held = std::mem::take(&mut job.held);
                self.start_workflow(job).await;
                self.inner.scheduler.forget(&e.id);
                let woken = self.release_early(&e, &held).await;
                self.spawn_enqueue(woken);
                return None;
            }
        } else if job.live.start() {
            // Alone in this process: its writes are the only ones its
            // next step waits on (see `Lane::Here`). Among others, they
            // are batched with theirs. Chosen again for its end's write.
            let alone = |running: usize| match running {
                1 => Lane::Here,
                _ => Lane::Queued,
            };
            let count = &self.inner.running;
            let lane = match counted {
                true => alone(count.load(Ordering::Acquire)),
                false => alone(count.fetch_add(1, Ordering::AcqRel) + 1),
            };
            let running = self.inner.runner.run_to_end_with(&mut job, lane, |e| {
                record_start_delay(e);
                self.publish(ExecutionEventKind::Update, e)
            });
            match running.await {
                Ok(true) => {
                    let given = std::mem::take(&mut job.given);
                    let mut plan = crate::workflows::Plan::default();
                    self.plan_ending(job.execution.clone(), Some(given), &mut plan)
                        .await;
                    let lane = alone(count.load(Ordering::Acquire));
                    next = self.commit_claiming(plan, lane).await.1;
                }
                // Canceled meanwhile; the cancel recorded it.
                Ok(false) => {}
                // Taken by a node with room while it waited here (see
                // `Reactor::share_work`): that node runs it.
                Err(RunError::Store(e)) if e.is_fenced() => {
                    tracing::debug!(execution_id = %job.execution.id, "taken by another node while it waited here");
                    // A cancel that reached it here meanwhile goes on to
                    // the node that has it now.
                    if job.live.canceling_at().is_some() {
                        self.forward_cancel(&job.execution);
                    }
                }
                Err(e) => tracing::error!(error = %e, "execution could not be recorded"),
            }
            if next.is_none() {
                count.fetch_sub(1, Ordering::AcqRel);
            }
        } else if counted {
            // Claimed, then canceled before it started.
            self.inner.running.fetch_sub(1, Ordering::AcqRel);
        }
        self.inner.scheduler.forget(&job.execution.id);
        let woken = self.inner.scheduler.release(&job.held);
        self.spawn_enqueue(woken);
        next
    }

    /// Record a finished execution together with what its completion emits
    /// — `core.st2.generic.actiontrigger`, the action's `notify` triggers,
    /// each matched like any event — and the retry its policy asks for, in
    /// one write; then queue what that requested. `given` (the parameters
    /// in clear) is what a retry runs with. Returns false when the record
    /// had already completed (nothing written).
    pub(crate) async fn complete(&self, e: Execution, given: Option<Map<String, Value>>) -> bool {
        let mut plan = crate::workflows::Plan::default();
        self.plan_ending(e, given, &mut plan).await;
        self.commit(plan).await
    }

    pub(crate) fn forget_all(&self, prepared: &[Prepared]) {
        for p in prepared {
            self.inner.scheduler.forget(&p.execution.id);
        }
    }

    pub(crate) fn emitted(
        &self,
        e: &Execution,
        trigger_type: &str,
        payload: Value,
    ) -> TriggerInstance {
        let id = new_id();
        TriggerInstance {
            trace_tag: e.trace_tag.clone().unwrap_or_else(|| id.clone()),
            id,
            tenant: e.tenant.clone(),
            trigger_type: trigger_type.to_owned(),
            trigger_parameters: Map::new(),
            payload,
            occurrence_time: now_rfc3339(),
            status: TriggerInstanceStatus::Processed,
        }
    }

    pub(crate) fn action_trigger(&self, e: &Execution) -> TriggerInstance {
        let payload = json!({
            "execution_id": e.id.as_str(),
            "status": e.status.as_str(),
            "start_timestamp": e.start_timestamp,
            "action_name": e.action.name(),
            "action_ref": e.action.to_string(),
            "runner_ref": e.runner(),
            "parameters": e.parameters,
            "result": e.result,
        });
        self.emitted(e, ACTION_TRIGGER, payload)
    }

    /// StackStorm's `notify`: one `core.st2.generic.notifytrigger` per
    /// route of each applicable entry, its message and data rendered with
    /// `action_results`, `action_parameters` and `action_context`.
    pub(crate) fn notify_triggers(&self, e: &Execution) -> Vec<TriggerInstance> {
        let set = self.inner.runner.packs(&e.tenant);
        let Ok((_, meta)) = set.action(&e.action) else {
            return Vec::new();
        };
        if meta.notify.is_empty() {
            return Vec::new();
        }
        let vars = json!({
            "action_results": e.result,
            "action_parameters": e.parameters,
            "action_context": e.context,
            "execution": {"id": e.id.as_str(), "status": e.status.as_str(), "action": e.action.to_string()},
        });
        let kv: Arc<dyn KvLookup> = Arc::new(StoreKv {
            store: self.inner.store.clone(),
            tenant: e.tenant.clone(),
        });
        let render = |v: &Value| {
            self.inner
                .templates
                .render_value_with(v, &vars, Some(kv.clone()))
                .unwrap_or_else(|err| json!(format!("notify template error: {err}")))
        };
        let mut out = Vec::new();
        for (_, spec) in meta
            .notify
            .applicable(e.status == ExecutionStatus::Succeeded)
        {
            let message = spec
                .message
                .as_ref()
                .map(|m| render(&json!(m)))
                .unwrap_or(Value::Null);
            let data = render(&Value::Object(spec.data.clone()));
            let routes: Vec<Option<&String>> = if spec.routes.is_empty() {
                vec![None]
            } else {
                spec.routes.iter().map(Some).collect()
            };
            for route in routes {
                out.push(self.emitted(
                    e,
                    NOTIFY_TRIGGER,
                    json!({
                        "execution_id": e.id.as_str(),
                        "status": e.status.as_str(),
                        "start_timestamp": e.start_timestamp,
                        "end_timestamp": e.end_timestamp,
                        "action_ref": e.action.to_string(),
                        "runner_ref": e.runner(),
                        "channel": route,
                        "route": route,
                        "message": message,
                        "data": data,
                        "context": e.context,
                    }),
                ));
            }
        }
        out
    }

    /// The retry an `action.retry` policy asks for after `e` ended, if any:
    /// a new execution with the same parameters, context
    /// `policies.retry.{retry_count, applied_policy, retried_liveaction_id}`,
    /// delayed by the policy's delay.
    pub(crate) fn retry_of(&self, e: &Execution, given: Map<String, Value>) -> Option<Prepared> {
        let policies = self.inner.policies.snapshot();
        let policy = policies.retry(&e.tenant, &e.action)?;
        let PolicyKind::Retry {
            retry_on,
            max_retry_count,
            delay,
        } = &policy.kind
        else {
            return None;
        };
        if !retry_on.covers(e.status) {
            return None;
        }
        let done = e
            .context
            .get("policies")
            .and_then(|p| p.get("retry"))
            .and_then(|r| r.get("retry_count"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if done >= u64::from(*max_retry_count) {
            return None;
        }
        let mut req = RunRequest::new(e.tenant.clone(), e.action.clone(), given);
        req.trace_tag = e.trace_tag.clone();
        req.context = e.context.clone();
        req.context.insert(
            "policies".into(),
            json!({"retry": {
                "retry_count": done + 1,
                "applied_policy": policy.policy_ref(),
                "retried_liveaction_id": e.id.as_str(),
            }}),
        );
        req.delay = u64::try_from(delay.as_millis()).ok();
        match self.inner.runner.prepare(req, e.origin()) {
            Ok(p) => {
                tracing::info!(execution_id = %e.id, retry = %p.execution.id, attempt = done + 1, "retrying per policy");
                self.track(&p);
                Some(p)
            }
            Err(err) => {
                tracing::warn!(execution_id = %e.id, error = %err, "retry policy could not retry");
                None
            }
        }
    }

    /// Pick up what a previous run left: executions `running` end
    /// `abandoned` (retried when a retry policy covers it — a new,
    /// visible execution, never a silent re-run), `canceling` ones end
    /// `canceled`, and `requested`/`scheduled`/`delayed` ones are admitted
    /// again, delays counted from when they were requested.
    ///
    /// `scope`: only these executions (those this node took over from a
    /// node that died); `None`: every one.
    pub(crate) async fn recover(
        &self,
        scope: Option<&HashSet<ExecutionId>>,
    ) -> Result<(), squall_store::Error> {
        let within = |e: &Execution| scope.is_none_or(|s| s.contains(&e.id));
        // Both lists are read before anything is written: what completing
        // the unfinished ones requests (retries, rule follow-ups, the tasks
        // a resumed workflow starts) is queued by whoever wrote it and must
        // not be read back as left over.
        let mut unfinished = self.inner.store.unfinished_executions()?;
        unfinished.retain(within);
        let mut pending = self.inner.store.pending_executions()?;
        pending.retain(within);
        let workflows = self.recover_workflows(scope).await?;
        if !workflows.is_empty() {
            tracing::info!(
                workflows = workflows.len(),
                "resuming workflows left running"
            );
        }
        let left: Vec<Execution> = unfinished
            .into_iter()
            .filter(|e| !workflows.contains(&e.id))
            .collect();
        if !left.is_empty() {
            tracing::warn!(
                executions = left.len(),
                "executions left running by the previous run end abandoned"
            );
        }
        for mut e in left {
            let (status, error) = if e.status == ExecutionStatus::Canceling {
                (
                    ExecutionStatus::Canceled,
                    "canceled; the server stopped before the action did",
                )
            } else {
                (
                    ExecutionStatus::Abandoned,
                    "the server stopped while the action was running",
                )
            };
            e.transition(status);
            e.result = Some(json!({ "error": error }));
            let given = self
                .inner
                .runner
                .stored_request_parameters(&e, &Map::new())
                .ok();
            self.complete(e, given).await;
        }
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(
            executions = pending.len(),
            "resuming executions left requested, scheduled or delayed"
        );
        let mut resumed = Vec::new();
        for execution in pending {
            match self.inner.runner.resume(execution.clone()) {
                Ok(prepared) => {
                    self.track(&prepared);
                    resumed.push(prepared);
                }
                Err(e) => {
                    let mut failed = execution;
                    failed.transition(ExecutionStatus::Failed);
                    failed.result = Some(
                        json!({"error": format!("could not be resumed after a restart: {e}")}),
                    );
                    self.complete(failed, None).await;
                }
            }
        }
        self.spawn_enqueue(resumed);
        Ok(())
    }
}

/// How long `e` waited from its request to its start here, for the
/// metrics (an execution asked to wait, by its `delay`, is left out).
fn record_start_delay(e: &Execution) {
    if e.delay.unwrap_or(0) > 0 {
        return;
    }
    let Ok(requested) = chrono::DateTime::parse_from_rfc3339(&e.start_timestamp) else {
        return;
    };
    let waited = chrono::Utc::now().signed_duration_since(requested);
    let seconds = waited.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
    squall_core::metrics::metrics()
        .execution_start_delay_seconds
        .observe(seconds);
}
