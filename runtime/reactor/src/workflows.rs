//! Workflows inside the reactor: the conductor's decisions made durable.
//!
//! A workflow execution (`runner_type: orquesta`) starts when a worker
//! picks it up: its conductor starts, and the execution turning `running`,
//! the workflow's state and its first tasks' executions are written in one
//! transaction. From then on every task action's end is written with what
//! it moves: the conductor's step (task records, the workflow's head), the
//! executions it starts, and, when the workflow ends, the workflow
//! execution's own end and everything *that* moves, up to the root. A
//! crash therefore never separates an end from its consequences; after a
//! restart each running workflow is read back ([`Reactor::recover_workflows`])
//! and actions left running end `abandoned`, which its transitions handle
//! like any failure.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use squall_core::kv::KvScope;
use squall_core::time::now_rfc3339;
use squall_core::trigger::{RuleEnforcement, TriggerInstance};
use squall_core::{Execution, ExecutionId, ExecutionStatus, StatusChange, TenantId};
use squall_store::{Batch, Completion, Emission, Lane, Store, WorkflowWrite};
use squall_workflow::conductor::{
    Conductor, Head, ItemEnd, Limits, Run, State, Step, TaskExecution, WorkflowStatus,
    task_status_of,
};
use squall_workflow::yaql::Host;
use tokio::sync::OwnedMutexGuard;

use crate::dispatch::Reactor;
use crate::lifecycle::ExecutionEventKind;
use crate::runner::{Prepared, RunRequest, Work};

/// One running workflow: its conductor and its execution's record.
pub(crate) struct Flow {
    conductor: Conductor,
    /// The workflow's own execution, as last recorded.
    execution: Execution,
    /// The executions of its active runs, by (task execution, item).
    children: HashMap<(usize, Option<usize>), ExecutionId>,
}

type FlowRef = Arc<tokio::sync::Mutex<Flow>>;

/// The running workflows of this process, by their execution's id.
#[derive(Default)]
pub(crate) struct Flows(std::sync::Mutex<HashMap<ExecutionId, FlowRef>>);

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("running", &self.len())
            .finish()
    }
}

impl Flows {
    fn get(&self, id: &ExecutionId) -> Option<FlowRef> {
        self.0.lock().expect("flows lock poisoned").get(id).cloned()
    }

    fn insert(&self, id: ExecutionId, flow: FlowRef) {
        self.0.lock().expect("flows lock poisoned").insert(id, flow);
    }

    fn remove(&self, id: &ExecutionId) {
        self.0.lock().expect("flows lock poisoned").remove(id);
    }

    pub(crate) fn contains(&self, id: &ExecutionId) -> bool {
        self.0.lock().expect("flows lock poisoned").contains_key(id)
    }

    /// Workflows running now.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().expect("flows lock poisoned").len()
    }
}

/// Where a task's execution belongs: (workflow execution, task execution,
/// item), read from its context.
pub(crate) fn task_of(e: &Execution) -> Option<(ExecutionId, usize, Option<usize>)> {
    let o = e.context.get("orquesta")?;
    let workflow = o.get("workflow_execution_id")?.as_str()?.parse().ok()?;
    let task = o
        .get("task_execution_id")?
        .as_str()?
        .rsplit_once('.')?
        .1
        .parse()
        .ok()?;
    let item = o.get("item_id").and_then(Value::as_u64).map(|i| i as usize);
    Some((workflow, task, item))
}

/// What a restored workflow's task runs' executions say beyond its state
/// (see [`Conductor::reconcile`]).
struct Reconcile {
    /// Runs whose subworkflow is paused: (task execution, item).
    paused: Vec<(usize, Option<usize>)>,
    /// Runs whose inquiry is pending.
    pending: Vec<(usize, Option<usize>)>,
    /// Ends recorded for running task runs without their step: (task
    /// execution, item, status, result).
    late: Vec<(usize, Option<usize>, String, Value)>,
}

/// One execution's end, with what it emits and the retry it asks for.
pub(crate) struct Ending {
    pub(crate) execution: Execution,
    pub(crate) instances: Vec<TriggerInstance>,
    pub(crate) decided: Vec<(Vec<RuleEnforcement>, Vec<Prepared>)>,
    pub(crate) retry: Option<Prepared>,
}

/// Everything one event writes, gathered before the one write.
#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) endings: Vec<Ending>,
    /// Status changes that are not ends (a workflow running, canceling).
    updates: Vec<Execution>,
    /// Task executions to run once written.
    children: Vec<Prepared>,
    /// New records written as they are: task executions that could not
    /// even start (ended), a re-run's workflow execution.
    records: Vec<Execution>,
    workflows: Vec<WorkflowWrite>,
    /// Workflows held until the write is queued, so their writes land in
    /// the order of their steps.
    guards: Vec<OwnedMutexGuard<Flow>>,
    /// Workflows that ended: dropped once written.
    finished: Vec<ExecutionId>,
    /// Executions to cancel once written (a canceling workflow's tasks).
    cancels: Vec<(TenantId, ExecutionId)>,
}

/// How a plan's write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// The deciding record had already ended: nothing was written.
    Superseded,
    /// The write failed (the deciding end may have been recorded alone).
    Failed,
}

/// `st2kv()` and the other functions StackStorm adds to expressions.
struct St2Host {
    store: Store,
    tenant: TenantId,
    user: String,
}

impl Host for St2Host {
    fn call(
        &self,
        name: &str,
        args: &[Value],
        named: &[(String, Value)],
    ) -> Option<Result<Value, String>> {
        match name {
            "st2kv" => Some(self.st2kv(args, named)),
            _ => None,
        }
    }
}

impl St2Host {
    /// `st2kv(key, decrypt=false, default=...)`: the user's key unless the
    /// name starts with `system.`.
    fn st2kv(&self, args: &[Value], named: &[(String, Value)]) -> Result<Value, String> {
        let Some(Value::String(key)) = args.first() else {
            return Err("st2kv() takes a key name".into());
        };
        let arg = |n: &str, at: usize| {
            named
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| args.get(at).cloned())
        };
        let decrypt = arg("decrypt", 1).is_some_and(|v| v == Value::Bool(true));
        let default = arg("default", 2);
        let (scope, name) = match key.strip_prefix("system.") {
            Some(name) => (KvScope::System, name),
            None => (KvScope::User(self.user.clone()), key.as_str()),
        };
        let stored = self
            .store
            .kv_get_blocking(&self.tenant, &scope.storage_key(name))
            .map_err(|e| format!("st2kv('{key}'): {e}"))?;
        match stored {
            Some(entry) if entry.secret && !decrypt => Err(format!(
                "st2kv('{key}'): the key is a secret; read it with decrypt=true"
            )),
            Some(entry) => Ok(Value::String(entry.value)),
            None => {
                default.ok_or_else(|| format!("st2kv('{key}'): no such key in {}", scope.name()))
            }
        }
    }
}

/// A stored workflow's conductor state (with-items tasks' item ends left
/// empty: they are read from the item executions).
fn state_of(stored: &squall_store::StoredWorkflow) -> Result<State, String> {
    let ctx: Map<String, Value> =
        serde_json::from_str(&stored.context).map_err(|e| format!("context: {e}"))?;
    let head: Head = serde_json::from_str(&stored.head).map_err(|e| format!("head: {e}"))?;
    let mut tasks: Vec<TaskExecution> = Vec::with_capacity(stored.tasks.len());
    for (seq, body) in &stored.tasks {
        if *seq as usize != tasks.len() {
            return Err(format!("task execution {seq} is out of order"));
        }
        tasks.push(serde_json::from_str(body).map_err(|e| format!("task {seq}: {e}"))?);
    }
    Ok(State { ctx, head, tasks })
}

impl Reactor {
    fn limits(&self) -> Limits {
        Limits {
            max_tasks: self.inner.config.max_workflow_tasks,
        }
    }

    fn host(&self, e: &Execution) -> Arc<dyn Host + Send + Sync> {
        Arc::new(St2Host {
            store: self.inner.store.clone(),
            tenant: e.tenant.clone(),
            user: e
                .context
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }

    /// Start a workflow execution a worker picked up.
    pub(crate) async fn start_workflow(&self, job: Prepared) {
        let Work::Workflow(spec) = &job.work else {
            return;
        };
        let mut execution = job.execution.clone();
        if execution.status != ExecutionStatus::Scheduled {
            execution.transition(ExecutionStatus::Scheduled);
        }
        execution.transition(ExecutionStatus::Running);
        let user = execution
            .context
            .get("user")
            .cloned()
            .unwrap_or(Value::Null);
        let mut extra = Map::new();
        extra.insert(
            "st2".into(),
            json!({
                "action_execution_id": execution.id.as_str(),
                "workflow_execution_id": execution.id.as_str(),
                "user": user,
                "pack": execution.action.pack().as_str(),
                "action": execution.action.to_string(),
                "runner": "orquesta",
                "api_url": self.inner.config.api_url,
            }),
        );
        if let Some(parent) = execution.context.get("parent") {
            extra.insert("parent".into(), parent.clone());
        }
        let (conductor, step) = Conductor::start(
            spec.clone(),
            self.host(&execution),
            self.limits(),
            job.parameters(),
            extra,
        );
        let id = execution.id.clone();
        let flow = Arc::new(tokio::sync::Mutex::new(Flow {
            conductor,
            execution: execution.clone(),
            children: HashMap::new(),
        }));
        self.inner.flows.insert(id.clone(), flow.clone());
        let mut guard = flow.lock_owned().await;
        let mut plan = Plan::default();
        plan.updates.push(execution.clone());
        let context = serde_json::to_string(&guard.conductor.state.ctx).unwrap_or_default();
        self.apply_step(&mut guard, step, Some(context), &mut plan)
            .await;
        plan.guards.push(guard);
        if !self.commit(plan).await {
            self.inner.flows.remove(&id);
            return;
        }
        // A cancel that came while it started found no workflow yet.
        if job.live.is_canceled() {
            self.cancel_workflow(&id).await;
        }
    }

    /// Turn a step into writes: the tasks' executions, the workflow's
    /// state, and, when the workflow ended, its execution's end.
    fn apply_step<'a>(
        &'a self,
        flow: &'a mut Flow,
        step: Step,
        context: Option<String>,
        plan: &'a mut Plan,
    ) -> crate::lifecycle::BoxFutureRef<'a> {
        Box::pin(async move {
            let Step {
                mut runs,
                mut changed,
                mut resumed,
            } = step;
            while !runs.is_empty() {
                let mut refused = Vec::new();
                for run in runs.drain(..) {
                    match self.prepare_task(flow, &run) {
                        Ok(p) => {
                            flow.children
                                .insert((run.task, run.item), p.execution.id.clone());
                            plan.children.push(p);
                        }
                        Err(refused_run) => {
                            let (record, error) = *refused_run;
                            plan.records.push(record);
                            refused.push((run, error));
                        }
                    }
                }
                for (run, error) in refused {
                    let s = flow.conductor.action_ended(
                        run.task,
                        run.item,
                        "failed",
                        json!({ "error": error }),
                    );
                    runs.extend(s.runs);
                    changed.extend(s.changed);
                    resumed |= s.resumed;
                }
            }
            let state = &flow.conductor.state;
            let status = state.head.status;
            plan.workflows.push(WorkflowWrite {
                id: flow.execution.id.clone(),
                tenant: flow.execution.tenant.clone(),
                context,
                head: serde_json::to_string(&state.head).unwrap_or_default(),
                completed: status.is_completed(),
                tasks: changed
                    .into_iter()
                    .map(|i| {
                        (
                            i as u64,
                            serde_json::to_string(&state.tasks[i]).unwrap_or_default(),
                        )
                    })
                    .collect(),
            });
            match status {
                // Ended in an earlier step whose write is under way (an
                // answer or a timeout that came after a fail-fast end found
                // nothing to do): that step records the end, once.
                WorkflowStatus::Succeeded | WorkflowStatus::Failed | WorkflowStatus::Canceled
                    if flow.execution.status.is_completed() => {}
                WorkflowStatus::Succeeded | WorkflowStatus::Failed | WorkflowStatus::Canceled => {
                    let mut ended = flow.execution.clone();
                    let to = match status {
                        WorkflowStatus::Succeeded => ExecutionStatus::Succeeded,
                        WorkflowStatus::Failed => ExecutionStatus::Failed,
                        _ => ExecutionStatus::Canceled,
                    };
                    if ended.status == ExecutionStatus::Paused {
                        // Resumed and ended in one step (an answer, a
                        // subworkflow going on): logged as StackStorm does.
                        ended.transition(ExecutionStatus::Resuming);
                        ended.transition(ExecutionStatus::Running);
                    }
                    if !ended.transition(to) {
                        tracing::error!(execution_id = %ended.id, from = %ended.status, to = %to, "workflow end not recordable from its status");
                    }
                    ended.result = Some(flow.conductor.result());
                    flow.execution = ended.clone();
                    // What still runs when it ends (a paused subworkflow,
                    // when another branch failed) is not waited for.
                    for id in flow.children.values() {
                        plan.cancels.push((ended.tenant.clone(), id.clone()));
                    }
                    plan.finished.push(ended.id.clone());
                    self.plan_ending(ended, None, plan).await;
                }
                WorkflowStatus::Running
                | WorkflowStatus::Pausing
                | WorkflowStatus::Paused
                | WorkflowStatus::Canceling => {
                    let now = match status {
                        WorkflowStatus::Pausing => ExecutionStatus::Pausing,
                        WorkflowStatus::Paused => ExecutionStatus::Paused,
                        WorkflowStatus::Canceling => ExecutionStatus::Canceling,
                        _ => ExecutionStatus::Running,
                    };
                    let e = &mut flow.execution;
                    let was = e.status;
                    // Went on from `paused` and held again in the same step
                    // (one of two inquiries answered): logged all the same.
                    let again = resumed && was == ExecutionStatus::Paused;
                    if e.status != now || again {
                        // Resumed: `resuming`, then `running`, as StackStorm logs it.
                        let through: &[ExecutionStatus] = match (was, now) {
                            (
                                ExecutionStatus::Paused | ExecutionStatus::Pausing,
                                ExecutionStatus::Running,
                            ) => &[ExecutionStatus::Resuming],
                            _ if again => &[ExecutionStatus::Resuming, ExecutionStatus::Running],
                            _ => &[],
                        };
                        for &s in through.iter().chain([&now]) {
                            e.status = s;
                            e.log.push(StatusChange {
                                status: s,
                                timestamp: now_rfc3339(),
                            });
                        }
                        plan.updates.push(e.clone());
                    }
                    if status == WorkflowStatus::Canceling {
                        for id in flow.children.values() {
                            plan.cancels
                                .push((flow.execution.tenant.clone(), id.clone()));
                        }
                    }
                    // Went on: running (or pausing) again; a canceling one
                    // stays held until its end arrives.
                    let went_on = was == ExecutionStatus::Paused
                        && matches!(now, ExecutionStatus::Running | ExecutionStatus::Pausing);
                    if went_on || (now == ExecutionStatus::Paused && was != now) {
                        self.tell_parent_paused(&flow.execution, !went_on, plan)
                            .await;
                    }
                }
            }
        })
    }

    /// A subworkflow paused or went on: its task in the parent workflow
    /// is paused or active again, which may pause the parent or set it
    /// running (see [`Conductor::action_paused`]).
    async fn tell_parent_paused(&self, child: &Execution, paused: bool, plan: &mut Plan) {
        let Some((parent, task, item)) = task_of(child) else {
            return;
        };
        let Some(flow) = self.inner.flows.get(&parent) else {
            return;
        };
        let mut guard = flow.lock_owned().await;
        if guard.children.get(&(task, item)) != Some(&child.id) {
            return;
        }
        let step = guard.conductor.action_paused(task, item, paused);
        self.apply_step(&mut guard, step, None, plan).await;
        plan.guards.push(guard);
    }

    /// The execution of one task run, ready to write; when it cannot be
    /// made (an unknown action, invalid parameters), its record ended
    /// `failed` and the reason.
    fn prepare_task(&self, flow: &Flow, run: &Run) -> Result<Prepared, Box<(Execution, String)>> {
        let wf = &flow.execution;
        let mut context = Map::new();
        if let Some(user) = wf.context.get("user") {
            context.insert("user".into(), user.clone());
        }
        context.insert(
            "parent".into(),
            json!({
                "execution_id": wf.id.as_str(),
                "user": wf.context.get("user"),
                "pack": wf.action.pack().as_str(),
            }),
        );
        let mut orquesta = json!({
            "workflow_execution_id": wf.id.as_str(),
            "task_execution_id": format!("{}.{}", wf.id, run.task),
            "task_name": run.name,
            "task_id": run.name,
            "task_route": run.route,
        });
        if let Some(item) = run.item {
            orquesta["item_id"] = json!(item);
        }
        context.insert("orquesta".into(), orquesta);
        let trace_tag = wf.trace_tag.clone().or_else(|| Some(wf.id.to_string()));
        let refused = |error: String, action: squall_core::ActionRef| {
            let now = now_rfc3339();
            let record = Execution {
                id: ExecutionId::generate(),
                tenant: wf.tenant.clone(),
                action,
                status: ExecutionStatus::Failed,
                parameters: Value::Object(run.input.clone()),
                result: Some(json!({ "error": error })),
                output: Default::default(),
                start_timestamp: now.clone(),
                end_timestamp: Some(now.clone()),
                log: vec![
                    StatusChange {
                        status: ExecutionStatus::Requested,
                        timestamp: now.clone(),
                    },
                    StatusChange {
                        status: ExecutionStatus::Failed,
                        timestamp: now,
                    },
                ],
                trace_tag: trace_tag.clone(),
                trigger_instance_id: None,
                rule_ref: None,
                trigger_type: None,
                context: context.clone(),
                delay: None,
            };
            Box::new((record, error))
        };
        let action = run.action.clone();
        let mut req = RunRequest::new(wf.tenant.clone(), action.clone(), run.input.clone());
        req.trace_tag = trace_tag.clone();
        req.context = context.clone();
        req.delay = run.delay.map(|s| s.saturating_mul(1000));
        match self.inner.runner.prepare(req, None) {
            Ok(p) => {
                self.track(&p);
                Ok(p)
            }
            Err(e) => Err(refused(format!("tasks.{}: {e}", run.name), action)),
        }
    }

    /// Gather an execution's end and everything it moves: what it emits,
    /// the retry its policy asks for, and, for a workflow's task, the
    /// workflow's step (and, if that ends the workflow, the same again one
    /// level up).
    pub(crate) fn plan_ending<'a>(
        &'a self,
        e: Execution,
        given: Option<Map<String, Value>>,
        plan: &'a mut Plan,
    ) -> crate::lifecycle::BoxFutureRef<'a> {
        Box::pin(async move {
            // An inquiry waiting for its answer has not ended: it asks
            // (`core.st2.generic.inquiry`), and its task waits `pending`.
            let waits = e.status == ExecutionStatus::Pending;
            let instances = if waits {
                vec![self.inquiry_trigger(&e)]
            } else {
                let mut instances = vec![self.action_trigger(&e)];
                instances.extend(self.notify_triggers(&e));
                instances
            };
            let mut decided = Vec::with_capacity(instances.len());
            for instance in &instances {
                decided.push(self.decide_and_prepare(instance).await);
            }
            let retry = given
                .filter(|_| !waits)
                .and_then(|given| self.retry_of(&e, given));
            let task = task_of(&e);
            let retried = retry.as_ref().map(|r| r.execution.id.clone());
            plan.endings.push(Ending {
                execution: e.clone(),
                instances,
                decided,
                retry,
            });
            let Some((workflow, task, item)) = task else {
                return;
            };
            let Some(flow) = self.inner.flows.get(&workflow) else {
                return;
            };
            let mut guard = flow.lock_owned().await;
            if let Some(retry) = retried {
                // The policy's retry carries the task on.
                guard.children.insert((task, item), retry);
                plan.guards.push(guard);
                return;
            }
            if !waits {
                guard.children.remove(&(task, item));
            }
            let result = e.result.clone().unwrap_or(Value::Null);
            let step = guard
                .conductor
                .action_ended(task, item, e.status.as_str(), result);
            self.apply_step(&mut guard, step, None, plan).await;
            plan.guards.push(guard);
        })
    }

    /// Write a plan in one transaction, then tell and queue what it
    /// started. Returns false when the deciding record had already ended
    /// (nothing written).
    ///
    /// Boxed: what it writes may cancel executions, whose cancel commits.
    pub(crate) fn commit(
        &self,
        plan: Plan,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move { self.commit_now(plan, Lane::Queued, false).await.0 == Written::Yes })
    }

    /// [`Reactor::commit`], telling a record that had already ended from
    /// a write that failed.
    pub(crate) async fn commit_reporting(&self, plan: Plan) -> Written {
        self.commit_now(plan, Lane::Queued, false).await.0
    }

    /// [`Reactor::commit`] for a worker that has just run an action: when
    /// the plan starts one task, and it may run at once (a component, no
    /// delay, no concurrency gate), that task's execution is written `running`
    /// in the same transaction and handed back for the worker to run
    /// itself, instead of a second write and a trip through the queue. It
    /// is then as if a worker had started it: a crash before it ends
    /// leaves it `running`, and it is abandoned at the next start. The
    /// write goes by `lane`.
    pub(crate) fn commit_claiming(
        &self,
        plan: Plan,
        lane: Lane,
    ) -> std::pin::Pin<Box<dyn Future<Output = (bool, Option<Prepared>)> + Send + '_>> {
        Box::pin(async move {
            let (written, next) = self.commit_now(plan, lane, true).await;
            (written == Written::Yes, next)
        })
    }

    /// Whether the committing worker runs `children`'s only task itself,
    /// now marked running (see [`Reactor::commit_claiming`]). Never one of
    /// several: parallel branches start together, through the queue,
    /// none ahead of the others.
    fn claim(&self, children: &mut [Prepared]) -> bool {
        let [p] = children else {
            return false;
        };
        // `start` fails when it was canceled meanwhile.
        if !self.runs_at_once(p) || !p.live.start() {
            return false;
        }
        p.execution.transition(ExecutionStatus::Scheduled);
        p.execution.transition(ExecutionStatus::Running);
        true
    }

    /// `claim`: the caller is a worker that can run a task this plan
    /// starts itself (see [`Reactor::commit_claiming`]).
    async fn commit_now(
        &self,
        mut plan: Plan,
        lane: Lane,
        claim: bool,
    ) -> (Written, Option<Prepared>) {
        let claimed = claim && self.claim(&mut plan.children);
        let emissions: Vec<Vec<Emission<'_>>> = plan
            .endings
            .iter()
            .map(|ending| {
                ending
                    .instances
                    .iter()
                    .zip(&ending.decided)
                    .map(|(instance, (enforcements, prepared))| Emission {
                        instance,
                        enforcements: enforcements.clone(),
                        executions: prepared.iter().map(|p| &p.execution).collect(),
                    })
                    .collect()
            })
            .collect();
        let touched: Vec<ExecutionId> = plan.workflows.iter().map(|w| w.id.clone()).collect();
        let mut batch = Batch {
            completions: Vec::with_capacity(plan.endings.len()),
            updates: plan.updates.iter().collect(),
            inserts: plan.children.iter().map(|p| &p.execution).collect(),
            created: plan.records.iter().collect(),
            workflows: std::mem::take(&mut plan.workflows),
        };
        for (ending, emitted) in plan.endings.iter().zip(emissions) {
            batch.completions.push(Completion {
                execution: &ending.execution,
                emitted,
                follow_ups: ending.retry.iter().map(|p| &p.execution).collect(),
            });
        }
        // Written in the order of the workflows' steps: queued while they
        // are held and awaited after they are let go (SQLite's writer keeps
        // the order), or else written while they are held.
        let written = match self.inner.store.submit_batch(&batch, lane) {
            Ok(Some(pending)) => {
                drop(batch);
                plan.guards.clear();
                pending.await
            }
            Ok(None) => {
                let written = self.inner.store.write_batch(&batch).await;
                drop(batch);
                // Not written: the workflows leave memory while still held,
                // so no other step moves on from state the store lacks.
                if written.is_err() {
                    for w in &touched {
                        self.inner.flows.remove(w);
                    }
                }
                plan.guards.clear();
                written
            }
            Err(e) => {
                drop(batch);
                plan.guards.clear();
                Err(e)
            }
        };
        let mut queued: Vec<Prepared> = Vec::new();
        for ending in &mut plan.endings {
            queued.extend(ending.decided.drain(..).flat_map(|(_, p)| p));
            queued.extend(ending.retry.take());
        }
        let next = (claimed && matches!(written, Ok(true))).then(|| plan.children.remove(0));
        queued.append(&mut plan.children);
        match written {
            Ok(true) => {
                for ending in &plan.endings {
                    self.publish(ExecutionEventKind::Update, &ending.execution);
                }
                for e in &plan.updates {
                    self.publish(ExecutionEventKind::Update, e);
                }
                for e in &plan.records {
                    self.publish(ExecutionEventKind::Create, e);
                }
                for p in next.iter().chain(&queued) {
                    self.publish(ExecutionEventKind::Create, &p.execution);
                }
                for id in &plan.finished {
                    self.inner.flows.remove(id);
                }
                self.spawn_enqueue(queued);
                for (tenant, id) in plan.cancels {
                    let reactor = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = reactor.cancel(&tenant, &id).await {
                            tracing::debug!(execution_id = %id, error = %e, "task not canceled");
                        }
                    });
                }
                (Written::Yes, next)
            }
            Ok(false) => {
                self.forget_all(&queued);
                (Written::Superseded, None)
            }
            Err(err) => {
                self.forget_all(&queued);
                // The workflows this step moved are ahead of the store now:
                // let them go; the next start reads them back from it.
                for w in &touched {
                    tracing::error!(execution_id = %w, "workflow dropped from memory after a failed write; it goes on at the next start");
                    self.inner.flows.remove(w);
                }
                let Some(first) = plan.endings.first() else {
                    tracing::error!(error = %err, "failed to record a workflow's step");
                    return (Written::Failed, None);
                };
                let e = &first.execution;
                // Record the end at least, so it does not stay `running`;
                // say exactly what is lost with the rest.
                tracing::error!(error = %err, execution_id = %e.id, "failed to record the end of an execution with its events");
                for p in &queued {
                    tracing::error!(execution_id = %e.id, lost = %p.execution.id, action = %p.execution.action, "lost: execution requested by this completion (rule, retry or workflow task)");
                }
                if let Err(err) = self.inner.store.update_execution(e).await {
                    tracing::error!(error = %err, execution_id = %e.id, "failed to record the end of an execution");
                }
                (Written::Failed, None)
            }
        }
    }

    /// Cancel a running workflow: its staged tasks never run, its active
    /// ones are canceled, and it ends `canceled` once they ended. `None`
    /// when `id` is not a workflow running here.
    ///
    /// Boxed: canceling a workflow cancels its tasks, which may be
    /// workflows.
    pub(crate) fn cancel_workflow<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Execution>> + Send + 'a>> {
        Box::pin(async move {
            let flow = self.inner.flows.get(id)?;
            let mut guard = flow.lock_owned().await;
            let step = guard.conductor.cancel();
            let mut plan = Plan::default();
            self.apply_step(&mut guard, step, None, &mut plan).await;
            let record = guard.execution.clone();
            plan.guards.push(guard);
            self.commit(plan).await;
            Some(record)
        })
    }

    /// Pause a running workflow (`PUT /api/v1/executions/{id}` with
    /// `{"status": "pausing"}`): it is `pausing` while tasks are active,
    /// then `paused`; its running subworkflows pause too. `None` when `id`
    /// is not a workflow running here.
    pub(crate) fn pause_workflow<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Execution>> + Send + 'a>> {
        Box::pin(async move {
            let flow = self.inner.flows.get(id)?;
            let mut guard = flow.lock_owned().await;
            let step = guard.conductor.pause();
            let nested: Vec<ExecutionId> = guard
                .children
                .values()
                .filter(|c| self.inner.flows.contains(c))
                .cloned()
                .collect();
            let mut plan = Plan::default();
            self.apply_step(&mut guard, step, None, &mut plan).await;
            let record = guard.execution.clone();
            plan.guards.push(guard);
            self.commit(plan).await;
            for child in nested {
                self.pause_workflow(&child).await;
            }
            Some(record)
        })
    }

    /// Resume a paused or pausing workflow and its paused subworkflows.
    /// `None` when `id` is not a workflow running here.
    pub(crate) fn resume_workflow<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Execution>> + Send + 'a>> {
        Box::pin(async move {
            let flow = self.inner.flows.get(id)?;
            let nested: Vec<ExecutionId> = {
                let guard = flow.lock().await;
                guard
                    .children
                    .values()
                    .filter(|c| self.inner.flows.contains(c))
                    .cloned()
                    .collect()
            };
            for child in nested {
                self.resume_workflow(&child).await;
            }
            let mut guard = flow.lock_owned().await;
            let step = guard.conductor.resume();
            let mut plan = Plan::default();
            self.apply_step(&mut guard, step, None, &mut plan).await;
            let record = guard.execution.clone();
            plan.guards.push(guard);
            self.commit(plan).await;
            Some(record)
        })
    }

    /// Pause (`pausing`) or resume (`resuming`) `tenant`'s workflow `id`,
    /// as StackStorm's `PUT /api/v1/executions/{id}` with a status does.
    pub async fn set_workflow_status(
        &self,
        tenant: &TenantId,
        id: &ExecutionId,
        status: ExecutionStatus,
    ) -> Result<Execution, crate::ExecutionError> {
        use crate::ExecutionError;
        let stored = self
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
        if !matches!(status, ExecutionStatus::Pausing | ExecutionStatus::Resuming) {
            return Err(ExecutionError::StatusNotSettable(status));
        }
        // Another node runs it: that node pauses or resumes it.
        if !self.inner.flows.contains(id)
            && let Some(node) = self.held_elsewhere(id).await?
        {
            return self.set_status_on(node, tenant, id, status).await;
        }
        let changed = match status {
            ExecutionStatus::Pausing => self.pause_workflow(id).await,
            ExecutionStatus::Resuming => self.resume_workflow(id).await,
            other => return Err(ExecutionError::StatusNotSettable(other)),
        };
        changed.ok_or_else(|| ExecutionError::NotAWorkflow(id.clone()))
    }

    /// Read back the workflows a previous run left running, each with its
    /// tasks' executions. Returns their ids: their own executions are not
    /// abandoned, they go on.
    pub(crate) async fn recover_workflows(
        &self,
        scope: Option<&std::collections::HashSet<ExecutionId>>,
    ) -> Result<Vec<ExecutionId>, squall_store::Error> {
        let mut reconciling = Vec::new();
        let mut resumed = Vec::new();
        let mut unrestorable = Vec::new();
        let mut running = self.inner.store.running_workflows()?;
        running.retain(|w| scope.is_none_or(|s| s.contains(&w.id)));
        for stored in running {
            match self.restore(&stored) {
                Ok((flow, found)) => {
                    resumed.push(stored.id.clone());
                    let flow = Arc::new(tokio::sync::Mutex::new(flow));
                    self.inner.flows.insert(stored.id.clone(), flow.clone());
                    reconciling.push((flow, found));
                }
                Err(e) => {
                    tracing::error!(execution_id = %stored.id, error = %e, "workflow could not be resumed; it ends");
                    unrestorable.push((stored, e));
                }
            }
        }
        // One left running or canceling is abandoned with the other
        // executions left so; one held (paused, pausing, resuming) ends
        // failed here, and what it still waits on is canceled.
        for (stored, why) in unrestorable {
            self.end_unrestorable(&stored, &why).await?;
        }
        // Every flow is registered before any moves: a step may end a
        // workflow and move its parent.
        for (flow, found) in reconciling {
            let mut guard = flow.lock_owned().await;
            // What a canceling or pausing workflow had asked of its tasks
            // may not have reached them before the stop: ask again.
            let tenant = guard.execution.tenant.clone();
            match guard.conductor.status() {
                WorkflowStatus::Canceling => {
                    for child in guard.children.values() {
                        let (reactor, tenant, child) =
                            (self.clone(), tenant.clone(), child.clone());
                        tokio::spawn(async move {
                            let _ = reactor.cancel(&tenant, &child).await;
                        });
                    }
                }
                // Asked to pause (not only held by an inquiry or a paused
                // subworkflow): its subworkflows were asked too.
                WorkflowStatus::Pausing | WorkflowStatus::Paused
                    if guard.conductor.state.head.pause_requested =>
                {
                    for child in guard.children.values() {
                        let (reactor, child) = (self.clone(), child.clone());
                        tokio::spawn(async move {
                            reactor.pause_workflow(&child).await;
                        });
                    }
                }
                _ => {}
            }
            let step = guard
                .conductor
                .reconcile(found.paused, found.pending, found.late);
            if step.runs.is_empty()
                && step.changed.is_empty()
                && !guard.conductor.status().is_completed()
            {
                continue;
            }
            let mut plan = Plan::default();
            self.apply_step(&mut guard, step, None, &mut plan).await;
            plan.guards.push(guard);
            self.commit(plan).await;
        }
        Ok(resumed)
    }

    /// End a held workflow that could not be read back, and cancel its
    /// children still waiting (inquiries, paused subworkflows).
    async fn end_unrestorable(
        &self,
        stored: &squall_store::StoredWorkflow,
        why: &str,
    ) -> Result<(), squall_store::Error> {
        let store = &self.inner.store;
        let Some(mut e) = store.get_execution(&stored.tenant, &stored.id)? else {
            return Ok(());
        };
        if !matches!(
            e.status,
            ExecutionStatus::Paused | ExecutionStatus::Pausing | ExecutionStatus::Resuming
        ) {
            return Ok(());
        }
        for child in store.children(&stored.tenant, &stored.id)? {
            if matches!(
                child.status,
                ExecutionStatus::Pending | ExecutionStatus::Paused
            ) {
                let (reactor, tenant, id) = (self.clone(), child.tenant.clone(), child.id.clone());
                tokio::spawn(async move {
                    let _ = reactor.cancel(&tenant, &id).await;
                });
            }
        }
        e.transition(ExecutionStatus::Failed);
        e.result = Some(json!({"error": format!("could not be resumed after a restart: {why}")}));
        self.complete(e, None).await;
        Ok(())
    }

    /// Run `tenant`'s completed workflow `id` again from `tasks`
    /// (`POST /api/v1/executions/{id}/re_run` with `tasks`): a new
    /// workflow execution that keeps what ran before and beside them.
    pub async fn re_run_tasks(
        &self,
        caller: &squall_core::auth::Principal,
        id: &ExecutionId,
        tasks: &[String],
    ) -> Result<Execution, crate::ExecutionError> {
        use crate::ExecutionError;
        let tenant = &caller.tenant;
        let original = self
            .inner
            .store
            .get_execution(tenant, id)?
            .ok_or_else(|| ExecutionError::NotFound(id.clone()))?;
        let refuse = |why: String| ExecutionError::Run(crate::RunError::Rerun(why));
        if !original.status.is_completed() {
            return Err(refuse(format!(
                "execution '{id}' is {}: a workflow is re-run from tasks once it has ended",
                original.status
            )));
        }
        let stored = self
            .inner
            .store
            .workflow(tenant, id)?
            .ok_or_else(|| refuse(format!("execution '{id}' is not a workflow")))?;
        let old = state_of(&stored).map_err(|e| refuse(format!("its stored state: {e}")))?;
        let given = self
            .inner
            .runner
            .stored_request_parameters(&original, &Map::new())?;
        let mut req = RunRequest::new(tenant.clone(), original.action.clone(), given);
        req.trace_tag = original.trace_tag.clone();
        req.context
            .insert("re-run".into(), json!({"ref": id.as_str(), "tasks": tasks}));
        req.context.insert("user".into(), json!(caller.user));
        let prepared = self.inner.runner.prepare(req, None)?;
        let Work::Workflow(spec) = &prepared.work else {
            return Err(refuse(format!(
                "action '{}' is not a workflow",
                original.action
            )));
        };
        let mut execution = prepared.execution.clone();
        execution.transition(ExecutionStatus::Scheduled);
        execution.transition(ExecutionStatus::Running);
        let mut old = old;
        // The new execution's own ids where the old one's were.
        if let Some(st2) = old.ctx.get_mut("st2").and_then(Value::as_object_mut) {
            st2.insert("action_execution_id".into(), json!(execution.id.as_str()));
            st2.insert("workflow_execution_id".into(), json!(execution.id.as_str()));
        }
        let (conductor, step) = squall_workflow::conductor::Conductor::rerun(
            spec.clone(),
            self.host(&execution),
            self.limits(),
            &old,
            tasks,
        )
        .map_err(refuse)?;
        let flow = Arc::new(tokio::sync::Mutex::new(Flow {
            conductor,
            execution: execution.clone(),
            children: HashMap::new(),
        }));
        self.inner.flows.insert(execution.id.clone(), flow.clone());
        let mut guard = flow.lock_owned().await;
        let mut plan = Plan::default();
        plan.records.push(execution.clone());
        let context = serde_json::to_string(&guard.conductor.state.ctx).unwrap_or_default();
        self.apply_step(&mut guard, step, Some(context), &mut plan)
            .await;
        let now = guard.execution.clone();
        plan.guards.push(guard);
        if !self.commit(plan).await {
            self.inner.flows.remove(&execution.id);
        }
        Ok(now)
    }

    /// A running workflow read back, and what its task runs' executions
    /// say beyond its state.
    fn restore(&self, stored: &squall_store::StoredWorkflow) -> Result<(Flow, Reconcile), String> {
        let store = &self.inner.store;
        let execution = store
            .get_execution(&stored.tenant, &stored.id)
            .map_err(|e| e.to_string())?
            .ok_or("its execution record is gone")?;
        let set = self.inner.runner.packs(&stored.tenant);
        let (pack, _) = set
            .action(&execution.action)
            .map_err(|e| format!("its action: {e}"))?;
        let spec = pack
            .workflows
            .get(execution.action.name())
            .cloned()
            .ok_or("its action is no longer a workflow")?;
        let State {
            ctx,
            head,
            mut tasks,
        } = state_of(stored)?;
        let mut children = HashMap::new();
        let mut latest: HashMap<(usize, Option<usize>), Execution> = HashMap::new();
        for child in store
            .children(&stored.tenant, &stored.id)
            .map_err(|e| e.to_string())?
        {
            let Some((_, task, item)) = task_of(&child) else {
                continue;
            };
            // Oldest first: a policy's retry (a later record of the same
            // task run) replaces the attempt it retries.
            latest.insert((task, item), child);
        }
        let (mut late, mut paused, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        for ((task, item), child) in latest {
            let ended = child.status.is_completed();
            if let (Some(k), Some(items)) =
                (item, tasks.get_mut(task).and_then(|t| t.items.as_mut()))
            {
                if items.ends.len() <= k {
                    items.ends.resize(k + 1, None);
                }
                items.ends[k] = ended.then(|| ItemEnd {
                    status: task_status_of(child.status.as_str()),
                    result: child.result.clone().unwrap_or(Value::Null),
                });
            }
            if !ended {
                match child.status {
                    ExecutionStatus::Paused => paused.push((task, item)),
                    ExecutionStatus::Pending => pending.push((task, item)),
                    _ => {}
                }
                children.insert((task, item), child.id.clone());
            } else if item.is_none()
                && tasks.get(task).is_some_and(|t| {
                    t.status == squall_workflow::conductor::TaskStatus::Running && t.items.is_none()
                })
            {
                // An end recorded without its step (a failed write): hand
                // it to the conductor again.
                late.push((
                    task,
                    None,
                    child.status.as_str().to_owned(),
                    child.result.clone().unwrap_or(Value::Null),
                ));
            }
        }
        let conductor = Conductor::restore(
            spec,
            self.host(&execution),
            self.limits(),
            State { ctx, head, tasks },
        );
        Ok((
            Flow {
                conductor,
                execution,
                children,
            },
            Reconcile {
                paused,
                pending,
                late,
            },
        ))
    }
}
