//! The conductor: Orquesta's semantics as a pure state machine.
//!
//! Events go in (the workflow starts, an action ended, pause, resume,
//! cancel); the new state and what to do come out (actions to run, task
//! records that changed). The conductor does no IO: the reactor persists
//! each [`Step`] in the transaction that records the event, and runs what
//! it asks for.
//!
//! State is kept so that it grows with the data, not with the events: one
//! [`TaskExecution`] per task run (written when it starts and when it ends),
//! and a small [`Head`] (status, join barriers, routes, errors). The items
//! of a with-items task live in the item executions' own records; the
//! reactor hands them back with [`Conductor::restore`] after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::render::{Scope, render};
use crate::spec::{Join, Retry, Target, Task, TaskInput, Workflow};
use crate::yaql::{self, Host};

/// The most items a with-items task may run over. More fail the task: a
/// list that long belongs in a loop of batches, not in one task.
pub const MAX_ITEMS: usize = 100_000;

/// The default bound on task executions (tasks and items) per workflow.
pub const DEFAULT_MAX_TASKS: u64 = 100_000;

/// A workflow's status, as StackStorm names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Running,
    Pausing,
    Paused,
    Canceling,
    Canceled,
    Succeeded,
    Failed,
}

impl WorkflowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// Whether the workflow has ended.
    pub fn is_completed(self) -> bool {
        matches!(self, Self::Canceled | Self::Succeeded | Self::Failed)
    }
}

/// A task execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Ready, held back while the workflow is paused.
    Staged,
    /// Its action (or its items) requested or running.
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staged => "staged",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn is_completed(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// How an action execution ended (StackStorm's statuses: an action that
/// ended `timeout` or `abandoned` makes its task `failed`).
pub fn task_status_of(action_status: &str) -> TaskStatus {
    match action_status {
        "succeeded" => TaskStatus::Succeeded,
        "canceled" => TaskStatus::Canceled,
        _ => TaskStatus::Failed,
    }
}

/// One run of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskExecution {
    pub name: String,
    pub route: u32,
    pub status: TaskStatus,
    /// What its branch published before it: its context beyond the
    /// workflow's own.
    pub ctx: Map<String, Value>,
    /// 0 for the first attempt, then one more per retry.
    pub attempt: u32,
    /// The action's result; a list of the items' results for a with-items
    /// task.
    pub result: Option<Value>,
    /// A later attempt replaced this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    /// For a task after which no task ran: its context with what it
    /// published, for the workflow's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Items>,
}

/// The items of a with-items task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Items {
    pub values: Vec<Value>,
    /// How many may be active at once.
    pub concurrency: usize,
    /// Each started item's end, once it ended. Not persisted with the task:
    /// the item executions hold it ([`Conductor::restore`]).
    #[serde(skip)]
    pub ends: Vec<Option<ItemEnd>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemEnd {
    /// Succeeded, failed or canceled ([`task_status_of`] its execution's).
    pub status: TaskStatus,
    pub result: Value,
}

impl Items {
    fn active(&self) -> usize {
        self.ends.iter().filter(|e| e.is_none()).count()
    }

    /// An item did not succeed: no more start.
    fn any_failed(&self) -> bool {
        self.ends
            .iter()
            .flatten()
            .any(|e| e.status != TaskStatus::Succeeded)
    }

    /// An item was canceled: its task is canceled once the others end.
    fn any_canceled(&self) -> bool {
        self.ends
            .iter()
            .flatten()
            .any(|e| e.status == TaskStatus::Canceled)
    }
}

/// A join barrier waiting for its inbound branches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Barrier {
    /// (task arrived from, what its branch published), in arrival order.
    /// A `join: all` barrier starts empty again once it fires: on a cycle,
    /// the next time round waits for every inbound branch again.
    pub arrivals: Vec<(String, Map<String, Value>)>,
    /// How many times the joined task ran.
    pub fired: u32,
    /// The arrivals that last fired a `join: all` barrier: a re-run from
    /// some of its branches keeps the others'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fired_with: Vec<(String, Map<String, Value>)>,
}

/// The workflow's own state beside its task executions: small, written
/// with every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub status: WorkflowStatus,
    /// Join barriers by `task|route`.
    pub barriers: BTreeMap<String, Barrier>,
    /// Route signatures; a route's number is its index.
    pub routes: Vec<String>,
    /// Errors in StackStorm's shape, remediated ones included.
    pub errors: Vec<Value>,
    pub output: Option<Value>,
    /// A failure was not remediated: no new task starts.
    pub failing: bool,
    /// Task executions and items started so far.
    pub launched: u64,
    /// Paused because someone asked ([`Conductor::pause`]), not only for
    /// a pending inquiry or a paused subworkflow: after a restart, its
    /// subworkflows are asked to pause again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_requested: bool,
}

/// Everything the conductor knows.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The workflow's own context: input, vars and what the caller adds
    /// (`st2`, `parent`).
    pub ctx: Map<String, Value>,
    pub head: Head,
    pub tasks: Vec<TaskExecution>,
}

/// An action to run for a task (or one of its items).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The task execution's index.
    pub task: usize,
    pub name: String,
    pub route: u32,
    pub item: Option<usize>,
    pub action: squall_core::ActionRef,
    pub input: Map<String, Value>,
    /// Seconds to wait first.
    pub delay: Option<u64>,
}

/// What one event changed and asks for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Step {
    pub runs: Vec<Run>,
    /// Task executions to write (new or changed), by index.
    pub changed: BTreeSet<usize>,
    /// The workflow went on from `paused` in this step, whatever its
    /// status is at the step's end (an answer to one of two inquiries
    /// resumes it, and the other pauses it again).
    pub resumed: bool,
}

/// Bounds on one workflow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tasks: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tasks: DEFAULT_MAX_TASKS,
        }
    }
}

/// One workflow's state machine.
pub struct Conductor {
    spec: Arc<Workflow>,
    host: Arc<dyn Host + Send + Sync>,
    limits: Limits,
    /// Task executions that may not have ended (staged or running), so
    /// that settling after an event looks at a few, not at every task run.
    open: Vec<usize>,
    /// Runs whose action (a subworkflow) is paused: out, but not active.
    /// Not persisted: the runs' executions hold it ([`Conductor::reconcile`]).
    paused: std::collections::BTreeSet<(usize, Option<usize>)>,
    /// Runs whose action (an inquiry) is pending, waiting for its answer:
    /// out, not active, and the workflow pausing. Not persisted either.
    pending: std::collections::BTreeSet<(usize, Option<usize>)>,
    pub state: State,
    step: Step,
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn error_entry(message: impl Into<String>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!("error"));
    m.insert("message".into(), json!(message.into()));
    m
}

const FAILED_MESSAGE: &str = "Execution failed. See result for details.";

impl Conductor {
    fn new(
        spec: Arc<Workflow>,
        host: Arc<dyn Host + Send + Sync>,
        limits: Limits,
        state: State,
    ) -> Self {
        let open = state
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.status.is_completed())
            .map(|(i, _)| i)
            .collect();
        Self {
            spec,
            host,
            limits,
            open,
            paused: Default::default(),
            pending: Default::default(),
            state,
            step: Step::default(),
        }
    }

    /// Start a workflow: input (given values, else defaults, in order),
    /// vars, then the start tasks. `extra` joins the context as is
    /// (StackStorm's `st2` and `parent`).
    pub fn start(
        spec: Arc<Workflow>,
        host: Arc<dyn Host + Send + Sync>,
        limits: Limits,
        given: &Map<String, Value>,
        extra: Map<String, Value>,
    ) -> (Self, Step) {
        let state = State {
            ctx: extra,
            head: Head {
                status: WorkflowStatus::Running,
                barriers: BTreeMap::new(),
                routes: vec![String::new()],
                errors: Vec::new(),
                output: None,
                failing: false,
                launched: 0,
                pause_requested: false,
            },
            tasks: Vec::new(),
        };
        let mut c = Self::new(spec.clone(), host, limits, state);
        let mut failed = None;
        for (name, default) in &spec.input {
            let value = match (given.get(name), default) {
                (Some(v), _) => Ok(v.clone()),
                (None, Some(d)) => render(d, &c.scope(&Map::new(), None)),
                (None, None) => Ok(Value::Null),
            };
            match value {
                Ok(v) => {
                    c.state.ctx.insert(name.clone(), v);
                }
                Err(e) => {
                    failed = Some(format!("input.{name}: {e}"));
                    break;
                }
            }
        }
        if failed.is_none() {
            for (name, template) in &spec.vars {
                match render(template, &c.scope(&Map::new(), None)) {
                    Ok(v) => {
                        c.state.ctx.insert(name.clone(), v);
                    }
                    Err(e) => {
                        failed = Some(format!("vars.{name}: {e}"));
                        break;
                    }
                }
            }
        }
        match failed {
            Some(message) => {
                c.state
                    .head
                    .errors
                    .push(Value::Object(error_entry(message)));
                c.state.head.failing = true;
            }
            None => {
                for name in spec.start_tasks() {
                    c.arrive(name, 0, Map::new(), None);
                }
            }
        }
        c.settle();
        let step = std::mem::take(&mut c.step);
        (c, step)
    }

    /// Run a completed workflow again from `tasks` (StackStorm's re-run
    /// with `--tasks`): the tasks that ran before them and beside them
    /// keep their records and what they published; each of `tasks` starts
    /// again with the context it had; what lies downstream of them runs
    /// again as it is reached. A task downstream of another one asked for
    /// is left to be reached. A with-items task runs all its items again.
    pub fn rerun(
        spec: Arc<Workflow>,
        host: Arc<dyn Host + Send + Sync>,
        limits: Limits,
        old: &State,
        tasks: &[String],
    ) -> Result<(Self, Step), String> {
        if tasks.is_empty() {
            return Err("no task to re-run".into());
        }
        for t in tasks {
            if !spec.tasks.contains_key(t) {
                return Err(format!("task '{t}' is not in the workflow"));
            }
            if !old.tasks.iter().any(|r| r.name == *t) {
                return Err(format!("task '{t}' did not run in this workflow"));
            }
        }
        let below = |t: &str| {
            tasks
                .iter()
                .any(|other| other != t && reaches(&spec, other, t))
        };
        let starts: Vec<&String> = tasks.iter().filter(|t| !below(t)).collect();
        let mut again: BTreeSet<String> = BTreeSet::new();
        for name in spec.tasks.keys() {
            if tasks.contains(name) || tasks.iter().any(|t| reaches(&spec, t, name)) {
                again.insert(name.clone());
            }
        }
        let kept: Vec<TaskExecution> = old
            .tasks
            .iter()
            .filter(|t| !again.contains(&t.name) && t.status.is_completed())
            .cloned()
            .collect();
        let mut head = old.head.clone();
        head.status = WorkflowStatus::Running;
        head.errors.clear();
        head.failing = false;
        head.output = None;
        head.launched = kept.len() as u64;
        for (key, barrier) in head.barriers.iter_mut() {
            let task = key.rsplit_once('|').map_or(key.as_str(), |(t, _)| t);
            if again.contains(task) {
                if barrier.arrivals.is_empty() {
                    barrier.arrivals = std::mem::take(&mut barrier.fired_with);
                }
                barrier.fired_with.clear();
                barrier.arrivals.retain(|(from, _)| !again.contains(from));
                barrier.fired = 0;
            }
        }
        let first = kept.len();
        let state = State {
            ctx: old.ctx.clone(),
            head,
            tasks: kept,
        };
        let mut c = Self::new(spec, host, limits, state);
        for name in starts {
            // The latest run of the task on each route, with its context.
            let mut routes: BTreeMap<u32, Map<String, Value>> = BTreeMap::new();
            for r in old.tasks.iter().filter(|r| r.name == *name) {
                routes.insert(r.route, r.ctx.clone());
            }
            for (route, ctx) in routes {
                c.create(name, route, ctx);
            }
        }
        c.step.changed.extend(0..first);
        c.settle();
        let step = std::mem::take(&mut c.step);
        Ok((c, step))
    }

    /// A conductor for a state read back after a restart. Each with-items
    /// task's `items.ends` must hold what its item executions say: one
    /// entry per item started, `None` while it has not ended.
    pub fn restore(
        spec: Arc<Workflow>,
        host: Arc<dyn Host + Send + Sync>,
        limits: Limits,
        state: State,
    ) -> Self {
        Self::new(spec, host, limits, state)
    }

    /// After [`Conductor::restore`]: move on what a lost step left behind.
    /// `paused` are the running task runs whose action is a paused
    /// subworkflow, `pending` those whose action is a pending inquiry;
    /// `ended` are the ends recorded for running task runs without their
    /// step (task, item, status, result); then a with-items task whose
    /// items all ended ends, and one with room starts its next items.
    pub fn reconcile(
        &mut self,
        paused: Vec<(usize, Option<usize>)>,
        pending: Vec<(usize, Option<usize>)>,
        ended: Vec<(usize, Option<usize>, String, Value)>,
    ) -> Step {
        self.paused.extend(paused);
        self.pending.extend(pending);
        let mut step = Step::default();
        // Held, not asked to pause: what held it was a run whose end was
        // recorded without its step (an answer whose write failed): that
        // end resumes it, as it would have.
        let head = &self.state.head;
        let held = matches!(
            head.status,
            WorkflowStatus::Pausing | WorkflowStatus::Paused
        ) && !head.pause_requested;
        for (task, item, status, result) in ended {
            if held {
                self.pending.insert((task, item));
            }
            let s = self.action_ended(task, item, &status, result);
            step.runs.extend(s.runs);
            step.changed.extend(s.changed);
            step.resumed |= s.resumed;
        }
        for i in 0..self.state.tasks.len() {
            if self.state.tasks[i].status == TaskStatus::Running
                && self.state.tasks[i].items.is_some()
            {
                self.pump_items(i);
            }
        }
        self.settle();
        let s = std::mem::take(&mut self.step);
        step.runs.extend(s.runs);
        step.changed.extend(s.changed);
        step.resumed |= s.resumed;
        step
    }

    pub fn status(&self) -> WorkflowStatus {
        self.state.head.status
    }

    /// The workflow's result as StackStorm shapes it: `{output}`, with
    /// `errors` when it failed.
    pub fn result(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "output".into(),
            self.state.head.output.clone().unwrap_or(Value::Null),
        );
        if self.state.head.status == WorkflowStatus::Failed {
            m.insert(
                "errors".into(),
                Value::Array(self.state.head.errors.clone()),
            );
        }
        Value::Object(m)
    }

    /// The actions running for this workflow now: (task index, item).
    pub fn active_runs(&self) -> Vec<(usize, Option<usize>)> {
        let mut out = Vec::new();
        for (i, t) in self.state.tasks.iter().enumerate() {
            if t.status != TaskStatus::Running {
                continue;
            }
            match &t.items {
                Some(items) => out.extend(
                    items
                        .ends
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.is_none())
                        .map(|(k, _)| (i, Some(k))),
                ),
                None => out.push((i, None)),
            }
        }
        out
    }

    /// An action run for task execution `task` (item `item`) ended with
    /// `status` (StackStorm's execution status) and `result`. An end for a
    /// task or item that is not running is ignored (an empty step).
    /// `pending` is not an end: the run waits for an answer (an inquiry),
    /// and the workflow pauses; its end then resumes the workflow.
    pub fn action_ended(
        &mut self,
        task: usize,
        item: Option<usize>,
        status: &str,
        result: Value,
    ) -> Step {
        let running = self
            .state
            .tasks
            .get(task)
            .is_some_and(|t| t.status == TaskStatus::Running);
        if !running {
            return Step::default();
        }
        if status == "pending" {
            return self.action_pending(task, item);
        }
        let was_paused = self.paused.remove(&(task, item));
        let was_pending = self.pending.remove(&(task, item));
        let head = self.state.head.status;
        if (was_pending && matches!(head, WorkflowStatus::Pausing | WorkflowStatus::Paused))
            || (was_paused && head == WorkflowStatus::Paused && status != "canceled")
        {
            // An answer (or a timeout) resumes the workflow first, then
            // ends its task: the other runs still pending pause it again
            // once nothing else is active. So does a subworkflow that went
            // on and ended in one step (its task was running again).
            self.go_on();
        }
        let Some(t) = self.state.tasks.get_mut(task) else {
            return Step::default();
        };
        let ended = task_status_of(status);
        match (item, t.items.as_mut()) {
            (Some(k), Some(items)) => {
                let Some(slot @ None) = items.ends.get_mut(k) else {
                    return Step::default();
                };
                *slot = Some(ItemEnd {
                    status: ended,
                    result,
                });
                self.pump_items(task);
            }
            (None, None) => {
                t.status = ended;
                t.result = Some(result);
                self.step.changed.insert(task);
                self.task_ended(task);
            }
            _ => return Step::default(),
        }
        self.settle();
        std::mem::take(&mut self.step)
    }

    /// A run's action, an inquiry, is pending (Orquesta's task `pending`):
    /// the workflow is `pausing` while other runs are active, then
    /// `paused`; the run's end, when the inquiry is answered or times out,
    /// resumes it ([`Conductor::action_ended`]).
    fn action_pending(&mut self, task: usize, item: Option<usize>) -> Step {
        if self.may_hold(task, item) {
            self.pending.insert((task, item));
            if self.state.head.status == WorkflowStatus::Running {
                self.state.head.status = WorkflowStatus::Pausing;
            }
        }
        self.settle();
        std::mem::take(&mut self.step)
    }

    /// Whether run (`task`, `item`) may be held paused or pending: it is
    /// running, and the workflow neither ended nor is canceling (a cancel
    /// waits for every held run's end).
    fn may_hold(&self, task: usize, item: Option<usize>) -> bool {
        let head = self.state.head.status;
        self.state
            .tasks
            .get(task)
            .is_some_and(|t| t.status == TaskStatus::Running && t.items.is_some() == item.is_some())
            && !head.is_completed()
            && head != WorkflowStatus::Canceling
    }

    /// A run's action, a subworkflow, paused (`paused`) or went on again.
    /// A paused run is not active: a workflow with nothing else active is
    /// `paused` (whether or not it was asked to pause), and one that was
    /// `paused` runs again when such a run goes on, as Orquesta does when a
    /// child is resumed alone. Its other paused runs stay paused.
    pub fn action_paused(&mut self, task: usize, item: Option<usize>, paused: bool) -> Step {
        let running = self.state.tasks.get(task).is_some_and(|t| {
            t.status == TaskStatus::Running && t.items.is_some() == item.is_some()
        });
        if !running {
            return Step::default();
        }
        if !paused {
            self.paused.remove(&(task, item));
            if self.state.head.status == WorkflowStatus::Paused {
                self.go_on();
            } else if item.is_some() && self.state.head.status == WorkflowStatus::Running {
                // Its other items may start again.
                self.pump_items(task);
            }
        } else if self.may_hold(task, item) {
            self.paused.insert((task, item));
        }
        self.settle();
        std::mem::take(&mut self.step)
    }

    /// Pause: `pausing` while tasks are active, `paused` when none is. New
    /// tasks wait, staged, for [`Conductor::resume`].
    pub fn pause(&mut self) -> Step {
        if matches!(self.state.head.status, WorkflowStatus::Running) {
            self.state.head.status = WorkflowStatus::Pausing;
        }
        if matches!(
            self.state.head.status,
            WorkflowStatus::Pausing | WorkflowStatus::Paused
        ) {
            self.state.head.pause_requested = true;
        }
        self.settle();
        std::mem::take(&mut self.step)
    }

    /// Resume a paused or pausing workflow: staged tasks start.
    pub fn resume(&mut self) -> Step {
        if matches!(
            self.state.head.status,
            WorkflowStatus::Pausing | WorkflowStatus::Paused
        ) {
            self.go_on();
        }
        self.settle();
        std::mem::take(&mut self.step)
    }

    /// Running again: staged tasks start, with-items tasks start their
    /// next items.
    fn go_on(&mut self) {
        if self.state.head.status == WorkflowStatus::Paused {
            self.step.resumed = true;
        }
        self.state.head.status = WorkflowStatus::Running;
        self.state.head.pause_requested = false;
        for i in 0..self.state.tasks.len() {
            match self.state.tasks[i].status {
                TaskStatus::Staged => self.launch(i),
                TaskStatus::Running if self.state.tasks[i].items.is_some() => self.pump_items(i),
                _ => {}
            }
        }
    }

    /// Cancel: staged tasks and unstarted items never run; the workflow is
    /// `canceling` until its active actions end (the caller cancels them),
    /// then `canceled`.
    pub fn cancel(&mut self) -> Step {
        if self.state.head.status.is_completed() {
            return Step::default();
        }
        self.state.head.status = WorkflowStatus::Canceling;
        // Paused subworkflows and pending inquiries are canceled with the
        // other active runs, and their ends are awaited.
        self.paused.clear();
        self.pending.clear();
        for i in 0..self.state.tasks.len() {
            match self.state.tasks[i].status {
                TaskStatus::Staged => {
                    self.state.tasks[i].status = TaskStatus::Canceled;
                    self.step.changed.insert(i);
                }
                // Unstarted items never start; one with none out ends now.
                TaskStatus::Running if self.state.tasks[i].items.is_some() => self.pump_items(i),
                _ => {}
            }
        }
        self.settle();
        std::mem::take(&mut self.step)
    }

    /// The scope of a task's branch: the workflow's context with `delta`.
    fn scope(&self, delta: &Map<String, Value>, current: Option<(&str, u32)>) -> Scope {
        let mut ctx = self.state.ctx.clone();
        for (k, v) in delta {
            ctx.insert(k.clone(), v.clone());
        }
        let host: Arc<dyn Host + Send + Sync> = if self.spec.graph.reads_tasks {
            Arc::new(TaskHost {
                tasks: self.task_views(),
                routes: self.route_parents(),
                current: current.map(|(n, _)| n.to_owned()),
                route: current.map_or(0, |(_, r)| r),
                inner: self.host.clone(),
            })
        } else {
            self.host.clone()
        };
        Scope {
            ctx: Value::Object(ctx),
            result: None,
            item: None,
            status: None,
            host,
        }
    }

    /// `task()`'s view of every task execution, in order.
    fn task_views(&self) -> Vec<(String, u32, Value)> {
        self.state
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let result = match (&t.items, &t.result) {
                    (Some(items), Some(Value::Array(results))) => json!({
                        "items": results
                            .iter()
                            .enumerate()
                            .map(|(k, r)| {
                                // Item ends are not kept past a re-run: the
                                // task's own status stands for them then.
                                let status = match items.ends.get(k) {
                                    Some(Some(e)) => e.status,
                                    Some(None) => TaskStatus::Running,
                                    None if t.status == TaskStatus::Succeeded => t.status,
                                    None => TaskStatus::Failed,
                                };
                                json!({
                                    "status": status.as_str(),
                                    "result": r,
                                })
                            })
                            .collect::<Vec<_>>()
                    }),
                    (_, r) => r.clone().unwrap_or(Value::Null),
                };
                (
                    t.name.clone(),
                    t.route,
                    json!({
                        "task_execution_id": i,
                        "task_name": t.name,
                        "task_id": t.name,
                        "route": t.route,
                        "status": t.status.as_str(),
                        "result": result,
                    }),
                )
            })
            .collect()
    }

    /// Each route's parent route (the route it split from).
    fn route_parents(&self) -> Vec<u32> {
        self.state
            .head
            .routes
            .iter()
            .map(|sig| {
                sig.split_once('/')
                    .and_then(|(parent, _)| parent.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    fn fail(&mut self, entry: Map<String, Value>) {
        self.log_error(entry);
        self.state.head.failing = true;
    }

    /// Add an error entry once (StackStorm de-duplicates them).
    fn log_error(&mut self, entry: Map<String, Value>) {
        let entry = Value::Object(entry);
        if !self.state.head.errors.contains(&entry) {
            self.state.head.errors.push(entry);
        }
    }

    /// A transition's `when` or `publish` failed: the workflow fails, the
    /// error naming the transition (`<next task>__t<index>`).
    fn transition_failed(&mut self, t: &TaskExecution, what: &str, transition: String) {
        let mut entry = error_entry(format!("tasks.{}.{what}", t.name));
        entry.insert("task_id".into(), json!(t.name));
        entry.insert("route".into(), json!(t.route));
        entry.insert("task_transition_id".into(), json!(transition));
        self.fail(entry);
    }

    fn expression_error(&mut self, task: &str, route: u32, field: &str, e: &str) {
        let mut entry = error_entry(format!("tasks.{task}.{field}: {e}"));
        entry.insert("task_id".into(), json!(task));
        entry.insert("route".into(), json!(route));
        self.fail(entry);
    }

    /// A branch arrives at `name` with what it published. `from` is the
    /// task it came from and the index of the transition.
    fn arrive(
        &mut self,
        name: &str,
        route: u32,
        delta: Map<String, Value>,
        from: Option<(&str, usize)>,
    ) {
        let Some(task) = self.spec.tasks.get(name) else {
            return;
        };
        let spec = self.spec.clone();
        let inbound = spec.graph.inbound.get(name);
        if let Some(join) = task.join {
            let needed = match join {
                Join::All => inbound.map_or(0, |i| i.tasks.len()),
                Join::Count(n) => n as usize,
            };
            let key = format!("{name}|{route}");
            let barrier = self.state.head.barriers.entry(key.clone()).or_default();
            barrier
                .arrivals
                .push((from.map(|(f, _)| f.to_owned()).unwrap_or_default(), delta));
            let distinct: BTreeSet<&str> =
                barrier.arrivals.iter().map(|(f, _)| f.as_str()).collect();
            if distinct.len() < needed.max(1) {
                return;
            }
            // Each branch's delta layered in arrival order: the last wins.
            let mut merged = Map::new();
            for (_, d) in &barrier.arrivals {
                for (k, v) in d {
                    merged.insert(k.clone(), v.clone());
                }
            }
            if barrier.fired > 0 && join != Join::All {
                // join: N — a later branch runs the task again with its own.
                merged = barrier
                    .arrivals
                    .last()
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default();
            }
            barrier.fired += 1;
            if join == Join::All {
                barrier.fired_with = std::mem::take(&mut barrier.arrivals);
            }
            self.create(name, route, merged);
            return;
        }
        // Reached by several transitions without a join: each arrival is
        // a branch (route) of its own.
        let route = match (from, inbound) {
            (Some((f, idx)), Some(i)) if i.transitions > 1 && !i.in_cycle => {
                let signature = format!("{route}/{f}.{idx}");
                match self.state.head.routes.iter().position(|r| *r == signature) {
                    Some(r) => r as u32,
                    None => {
                        self.state.head.routes.push(signature);
                        (self.state.head.routes.len() - 1) as u32
                    }
                }
            }
            _ => route,
        };
        self.create(name, route, delta);
    }

    /// A new task execution, launched unless the workflow is paused.
    fn create(&mut self, name: &str, route: u32, ctx: Map<String, Value>) {
        self.push_task(TaskExecution {
            name: name.to_owned(),
            route,
            status: TaskStatus::Staged,
            ctx,
            attempt: 0,
            result: None,
            retried: false,
            out: None,
            items: None,
        });
    }

    fn push_task(&mut self, t: TaskExecution) {
        if self.state.head.failing
            || matches!(
                self.state.head.status,
                WorkflowStatus::Canceling | WorkflowStatus::Canceled
            )
        {
            return;
        }
        self.state.head.launched += 1;
        if self.state.head.launched > self.limits.max_tasks {
            self.over_limit();
            return;
        }
        self.state.tasks.push(t);
        let i = self.state.tasks.len() - 1;
        self.open.push(i);
        self.step.changed.insert(i);
        if self.state.head.status == WorkflowStatus::Running {
            self.launch(i);
        }
    }

    fn over_limit(&mut self) {
        let max = self.limits.max_tasks;
        self.fail(error_entry(format!(
            "the workflow reached its limit of {max} task executions (--max-workflow-tasks); does it loop for ever?"
        )));
    }

    /// Start task execution `i`: render its action and input and ask for
    /// the run; an action-less task succeeds at once.
    fn launch(&mut self, i: usize) {
        let spec = self.spec.clone();
        let (name, route) = (self.state.tasks[i].name.clone(), self.state.tasks[i].route);
        let task = &spec.tasks[&name];
        self.state.tasks[i].status = TaskStatus::Running;
        self.step.changed.insert(i);
        if task.action.is_none() {
            self.state.tasks[i].status = TaskStatus::Succeeded;
            self.state.tasks[i].result = Some(Value::Null);
            self.task_ended(i);
            return;
        }
        let scope = self.scope(&self.state.tasks[i].ctx.clone(), Some((&name, route)));
        let delay = match self.delay_of(task, i, &scope) {
            Ok(d) => d,
            Err(e) => return self.launch_failed(i, "delay", &e),
        };
        let Some(with) = &task.with else {
            match run_of(task, &scope) {
                Ok((action, input)) => self.step.runs.push(Run {
                    task: i,
                    name,
                    route,
                    item: None,
                    action,
                    input,
                    delay,
                }),
                Err((field, e)) => self.launch_failed(i, field, &e),
            }
            return;
        };
        let values = match render(&with.items, &scope) {
            Ok(Value::Array(values)) => values,
            Ok(other) => {
                return self.launch_failed(
                    i,
                    "with.items",
                    &format!("expected a list of items, got {}", kind(&other)),
                );
            }
            Err(e) => return self.launch_failed(i, "with.items", &e),
        };
        if values.len() > MAX_ITEMS {
            return self.launch_failed(
                i,
                "with.items",
                &format!(
                    "{} items is more than a task may run over (at most {MAX_ITEMS})",
                    values.len()
                ),
            );
        }
        let values = if with.names.is_empty() {
            values
        } else {
            values
                .into_iter()
                .map(|v| name_item(&with.names, v))
                .collect()
        };
        let concurrency = match &with.concurrency {
            None => values.len().max(1),
            Some(c) => match render(c, &scope) {
                Ok(v) => match v.as_i64() {
                    Some(n) => n.max(1) as usize,
                    None if v.is_null() => values.len().max(1),
                    None => {
                        return self.launch_failed(
                            i,
                            "with.concurrency",
                            &format!("expected an integer, got {}", kind(&v)),
                        );
                    }
                },
                Err(e) => return self.launch_failed(i, "with.concurrency", &e),
            },
        };
        self.state.tasks[i].items = Some(Items {
            values,
            concurrency,
            ends: Vec::new(),
        });
        self.pump_items_with(i, delay);
    }

    fn delay_of(&self, task: &Task, i: usize, scope: &Scope) -> Result<Option<u64>, String> {
        let t = &self.state.tasks[i];
        let template = match (&task.retry, t.attempt) {
            (Some(Retry { delay: Some(d), .. }), 1..) => Some(d),
            _ => task.delay.as_ref(),
        };
        let Some(template) = template else {
            return Ok(None);
        };
        let v = render(template, scope)?;
        match v.as_u64() {
            Some(s) => Ok(Some(s)),
            None if v.is_null() => Ok(None),
            None => Err(format!("expected a whole number of seconds, got {v}")),
        }
    }

    fn launch_failed(&mut self, i: usize, field: &str, e: &str) {
        let t = &mut self.state.tasks[i];
        t.status = TaskStatus::Failed;
        t.result = Some(Value::Null);
        let (name, route) = (t.name.clone(), t.route);
        self.step.changed.insert(i);
        self.expression_error(&name, route, field, e);
    }

    /// Start what items may start now; end the task once none is active
    /// and no more will start.
    fn pump_items(&mut self, i: usize) {
        self.pump_items_with(i, None);
    }

    fn pump_items_with(&mut self, i: usize, delay: Option<u64>) {
        let spec = self.spec.clone();
        let name = self.state.tasks[i].name.clone();
        let route = self.state.tasks[i].route;
        let task = &spec.tasks[&name];
        // An item's subworkflow paused or its inquiry pending holds the
        // rest back, as Orquesta's task pausing does.
        let held = self
            .paused
            .iter()
            .chain(&self.pending)
            .any(|&(t, k)| t == i && k.is_some());
        let halted = held
            || self.state.head.failing
            || !matches!(self.state.head.status, WorkflowStatus::Running);
        loop {
            let t = &self.state.tasks[i];
            let items = t.items.as_ref().expect("a with-items task");
            let stop = items.any_failed() || halted;
            let started = items.ends.len();
            if stop || started >= items.values.len() || items.active() >= items.concurrency {
                break;
            }
            self.state.head.launched += 1;
            if self.state.head.launched > self.limits.max_tasks {
                self.over_limit();
                break;
            }
            let mut scope = self.scope(&t.ctx.clone(), Some((&name, route)));
            scope.item = Some(items.values[started].clone());
            let run = run_of(task, &scope);
            let items = self.state.tasks[i]
                .items
                .as_mut()
                .expect("a with-items task");
            match run {
                Ok((action, input)) => {
                    items.ends.push(None);
                    self.step.runs.push(Run {
                        task: i,
                        name: name.clone(),
                        route,
                        item: Some(started),
                        action,
                        input,
                        delay,
                    });
                }
                Err((field, e)) => {
                    // No item starts after it, and it is not one of the
                    // task's results: nothing records it but the error.
                    self.expression_error(&name, route, field, &e);
                    break;
                }
            }
        }
        let t = &mut self.state.tasks[i];
        let items = t.items.as_ref().expect("a with-items task");
        let all_started = items.ends.len() == items.values.len();
        let stopped = items.any_failed() || self.state.head.failing;
        let canceling = matches!(self.state.head.status, WorkflowStatus::Canceling);
        if items.active() > 0 || !(all_started || stopped || canceling) {
            return;
        }
        let canceled = items.any_canceled() || (canceling && !all_started);
        let results: Vec<Value> = items
            .ends
            .iter()
            .flatten()
            .map(|e| e.result.clone())
            .collect();
        t.status = if canceled {
            TaskStatus::Canceled
        } else if items.any_failed() || !all_started {
            TaskStatus::Failed
        } else {
            TaskStatus::Succeeded
        };
        t.result = Some(Value::Array(results));
        self.step.changed.insert(i);
        self.task_ended(i);
    }

    /// Task execution `i` ended: retry it, or follow its transitions, and
    /// apply the fail-fast rule.
    fn task_ended(&mut self, i: usize) {
        let spec = self.spec.clone();
        let t = self.state.tasks[i].clone();
        let task = &spec.tasks[&t.name];
        if matches!(
            self.state.head.status,
            WorkflowStatus::Canceling | WorkflowStatus::Canceled
        ) {
            return;
        }
        let status = t.status.as_str();
        let mut scope = self.scope(&t.ctx, Some((&t.name, t.route)));
        scope.result = t.result.clone();
        scope.status = Some(status.to_owned());
        if t.status == TaskStatus::Canceled {
            // A canceled task cancels its workflow.
            self.state.head.status = WorkflowStatus::Canceling;
            return;
        }
        // Retry, before anything else.
        if let Some((retry, via)) = retry_of(task) {
            let count = match render(&retry.count, &scope) {
                Ok(v) => v.as_u64().unwrap_or(0),
                Err(e) => {
                    return self.expression_error(&t.name, t.route, "retry.count", &e);
                }
            };
            let wanted = match &retry.when {
                Some(when) => match render(when, &scope) {
                    Ok(v) => yaql::truthy(&v),
                    Err(e) => {
                        let field =
                            via.map_or("retry.when".to_owned(), |k| format!("next[{k}].when"));
                        return self.expression_error(&t.name, t.route, &field, &e);
                    }
                },
                None => t.status == TaskStatus::Failed,
            };
            if wanted && u64::from(t.attempt) < count && !self.state.head.failing {
                self.state.tasks[i].retried = true;
                self.step.changed.insert(i);
                self.push_task(TaskExecution {
                    attempt: t.attempt + 1,
                    status: TaskStatus::Staged,
                    result: None,
                    retried: false,
                    out: None,
                    items: None,
                    ..t
                });
                return;
            }
        }
        if self.state.head.failing {
            return;
        }
        let mut remediated = false;
        let mut arrivals = Vec::new();
        let mut out = t.ctx.clone();
        let mut fired_task = false;
        let mut fail = false;
        for (k, transition) in task.next.iter().enumerate() {
            if transition.targets.contains(&Target::Retry) {
                continue;
            }
            let transition_id = |targets: &[Target]| {
                let first = targets
                    .iter()
                    .find_map(|t| match t {
                        Target::Task(n) => Some(n.as_str()),
                        Target::Fail => Some("fail"),
                        Target::Noop => Some("noop"),
                        _ => None,
                    })
                    .unwrap_or("continue");
                format!("{first}__t{k}")
            };
            let fires = match &transition.when {
                None => true,
                Some(when) => match render(when, &scope) {
                    Ok(v) => yaql::truthy(&v),
                    Err(e) => {
                        let id = transition_id(&transition.targets);
                        return self.transition_failed(&t, &format!("next[{k}].when: {e}"), id);
                    }
                },
            };
            if !fires {
                continue;
            }
            let mut delta = t.ctx.clone();
            for (name, template) in &transition.publish {
                let mut s = self.scope(&delta, Some((&t.name, t.route)));
                s.result = t.result.clone();
                s.status = Some(status.to_owned());
                match render(template, &s) {
                    Ok(v) => {
                        delta.insert(name.clone(), v);
                    }
                    Err(e) => {
                        let id = transition_id(&transition.targets);
                        let at = format!("next[{k}].publish.{name}: {e}");
                        return self.transition_failed(&t, &at, id);
                    }
                }
            }
            for (name, v) in &delta {
                out.insert(name.clone(), v.clone());
            }
            for target in &transition.targets {
                match target {
                    Target::Task(next) => {
                        remediated = true;
                        fired_task = true;
                        arrivals.push((next.clone(), delta.clone(), k));
                    }
                    Target::Noop => remediated = true,
                    Target::Fail => fail = true,
                    Target::Continue | Target::Retry => {}
                }
            }
        }
        if t.status == TaskStatus::Failed {
            let mut entry = error_entry(FAILED_MESSAGE);
            entry.insert("task_id".into(), json!(t.name));
            entry.insert("route".into(), json!(t.route));
            entry.insert("result".into(), t.result.clone().unwrap_or(Value::Null));
            self.log_error(entry);
        }
        if fail {
            let mut entry = error_entry(FAILED_MESSAGE);
            entry.insert("task_id".into(), json!("fail"));
            self.log_error(entry);
        }
        if !fired_task {
            self.state.tasks[i].out = Some(out);
            self.step.changed.insert(i);
        }
        // What fired runs, the siblings of `fail` included (StackStorm's
        // run_on_fail); then an unremediated failure or `fail` stops the
        // workflow from starting anything more.
        for (next, delta, k) in arrivals {
            self.arrive(&next, t.route, delta, Some((&t.name, k)));
        }
        if fail || (t.status == TaskStatus::Failed && !remediated) {
            self.state.head.failing = true;
        }
    }

    /// After an event: move the workflow's status on (paused, canceled,
    /// finished) when nothing is active any more.
    fn settle(&mut self) {
        if self.state.head.status.is_completed() {
            return;
        }
        let tasks = &self.state.tasks;
        self.open.retain(|&i| !tasks[i].status.is_completed());
        // Running: an action (or an item's) is out and not paused. A
        // with-items task with none out waits, as a staged task does, for a
        // resume.
        let held =
            |run: &(usize, Option<usize>)| self.paused.contains(run) || self.pending.contains(run);
        let out = |i: usize| {
            let t = &tasks[i];
            t.status == TaskStatus::Running
                && match &t.items {
                    None => !held(&(i, None)),
                    Some(it) => it
                        .ends
                        .iter()
                        .enumerate()
                        .any(|(k, e)| e.is_none() && !held(&(i, Some(k)))),
                }
        };
        if self.open.iter().any(|&i| out(i)) {
            return;
        }
        let staged = !self.open.is_empty();
        if staged && self.state.head.failing {
            // Fail-fast: what waited for a resume never runs, and a paused
            // subworkflow is not waited for (the caller cancels it).
            for i in self.open.clone() {
                self.state.tasks[i].status = TaskStatus::Canceled;
                self.step.changed.insert(i);
            }
            self.open.clear();
            self.paused.clear();
            self.pending.clear();
            self.render_output();
            self.state.head.status = WorkflowStatus::Failed;
            return;
        }
        let head = &self.state.head;
        match head.status {
            // Nothing active but a paused subworkflow or a pending
            // inquiry: paused too.
            WorkflowStatus::Running | WorkflowStatus::Pausing | WorkflowStatus::Paused
                if !self.paused.is_empty() || !self.pending.is_empty() =>
            {
                self.state.head.status = WorkflowStatus::Paused;
                return;
            }
            WorkflowStatus::Pausing | WorkflowStatus::Paused if staged => {
                self.state.head.status = WorkflowStatus::Paused;
                return;
            }
            WorkflowStatus::Canceling => {
                self.state.head.status = WorkflowStatus::Canceled;
                self.render_output();
                return;
            }
            _ => {}
        }
        if !self.state.head.failing {
            // Arrivals waiting: every one for a `join: N` that never fired,
            // this time round's for a `join: all`.
            let spec = &self.spec;
            let partial: Vec<String> = self
                .state
                .head
                .barriers
                .iter()
                .filter(|(key, b)| {
                    let task = key.rsplit_once('|').map_or(key.as_str(), |(t, _)| t);
                    let all = spec.tasks.get(task).and_then(|t| t.join) == Some(Join::All);
                    !b.arrivals.is_empty() && (b.fired == 0 || all)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in partial {
                self.fail(error_entry(format!(
                    "UnreachableJoinError: The join task|route \"{key}\" is partially satisfied but unreachable."
                )));
            }
        }
        self.render_output();
        self.state.head.status = if self.state.head.failing {
            WorkflowStatus::Failed
        } else {
            WorkflowStatus::Succeeded
        };
    }

    /// Render `output` in the context of the tasks the workflow ended on.
    fn render_output(&mut self) {
        if self.spec.output.is_empty() {
            return;
        }
        let mut delta = Map::new();
        for t in &self.state.tasks {
            if let Some(out) = &t.out {
                for (k, v) in out {
                    delta.insert(k.clone(), v.clone());
                }
            }
        }
        let mut output = Map::new();
        for (name, template) in &self.spec.output.clone() {
            let mut layered = delta.clone();
            for (k, v) in &output {
                layered.insert(k.clone(), v.clone());
            }
            match render(template, &self.scope(&layered, None)) {
                Ok(v) => {
                    output.insert(name.clone(), v);
                }
                Err(e) => {
                    if self.state.head.status != WorkflowStatus::Canceling {
                        self.fail(error_entry(format!("output.{name}: {e}")));
                    }
                    break;
                }
            }
        }
        self.state.head.output = Some(Value::Object(output));
    }
}

/// The retry in force for `task`: its `retry`, else one compiled from a
/// transition that does `retry` (with that transition's `when`, or
/// `completed()`; 3 more attempts). The index is that transition's.
fn retry_of(task: &Task) -> Option<(Retry, Option<usize>)> {
    if let Some(r) = &task.retry {
        return Some((r.clone(), None));
    }
    task.next.iter().enumerate().find_map(|(k, t)| {
        t.targets.contains(&Target::Retry).then(|| {
            (
                Retry {
                    when: Some(t.when.clone().unwrap_or_else(|| json!("<% completed() %>"))),
                    count: json!(3),
                    delay: None,
                },
                Some(k),
            )
        })
    })
}

/// A field of a task and what is wrong with it.
type FieldError = (&'static str, String);

/// The action and input of a task in `scope`; errors name the field.
fn run_of(
    task: &Task,
    scope: &Scope,
) -> Result<(squall_core::ActionRef, Map<String, Value>), FieldError> {
    let action = match task.action.as_ref().map(|a| render(a, scope)) {
        Some(Ok(Value::String(a))) => match a.parse() {
            Ok(action) => action,
            Err(e) => return Err(("action", format!("'{a}' is not an action ref: {e}"))),
        },
        Some(Ok(other)) => {
            return Err((
                "action",
                format!("expected an action ref, got {}", kind(&other)),
            ));
        }
        Some(Err(e)) => return Err(("action", e)),
        None => return Err(("action", "the task has no action".to_owned())),
    };
    let input = match &task.input {
        TaskInput::Map(pairs) => {
            let mut input = Map::new();
            for (name, template) in pairs {
                match render(template, scope) {
                    Ok(v) => {
                        input.insert(name.clone(), v);
                    }
                    Err(e) => return Err(("input", format!("{name}: {e}"))),
                }
            }
            input
        }
        TaskInput::Expr(template) => match render(template, scope) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(other) => {
                return Err((
                    "input",
                    format!("expected a map of parameters, got {}", kind(&other)),
                ));
            }
            Err(e) => return Err(("input", e)),
        },
    };
    Ok((action, input))
}

/// `x, y in ...`: an item named by its parts.
fn name_item(names: &[String], v: Value) -> Value {
    let parts = match (names.len(), v) {
        (1, v) => vec![v],
        (_, Value::Array(parts)) => parts,
        (_, v) => vec![v],
    };
    let mut m = Map::new();
    for (k, name) in names.iter().enumerate() {
        m.insert(name.clone(), parts.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(m)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// `task()` and `task_status()` over a snapshot of the task executions.
struct TaskHost {
    /// (name, route, view), in the order they were made.
    tasks: Vec<(String, u32, Value)>,
    /// Each route's parent.
    routes: Vec<u32>,
    current: Option<String>,
    /// The route of the branch asking.
    route: u32,
    inner: Arc<dyn Host + Send + Sync>,
}

impl TaskHost {
    /// The latest run of `name` on `route`, else on the routes it split
    /// from.
    fn find(&self, name: &str, route: u32) -> Option<&Value> {
        let mut at = route;
        loop {
            if let Some((_, _, v)) = self
                .tasks
                .iter()
                .rev()
                .find(|(n, r, _)| n == name && *r == at)
            {
                return Some(v);
            }
            if at == 0 {
                return None;
            }
            at = self.routes.get(at as usize).copied().unwrap_or(0);
        }
    }
}

impl Host for TaskHost {
    fn call(
        &self,
        name: &str,
        args: &[Value],
        named: &[(String, Value)],
    ) -> Option<Result<Value, String>> {
        if name != "task" && name != "task_status" {
            return self.inner.call(name, args, named);
        }
        let wanted = match args.first() {
            Some(Value::String(n)) => n.clone(),
            None => match &self.current {
                Some(n) => n.clone(),
                None => return Some(Err(format!("{name}() needs a task name here"))),
            },
            Some(other) => return Some(Err(format!("a task name is a string, not {other}"))),
        };
        let route = named
            .iter()
            .find(|(k, _)| k == "route")
            .map(|(_, v)| v)
            .or(args.get(1))
            .and_then(Value::as_u64)
            .map_or(self.route, |r| r as u32);
        let found = self.find(&wanted, route);
        Some(match name {
            "task" => found
                .cloned()
                .ok_or_else(|| format!("task '{wanted}' (route {route}) has not run")),
            _ => Ok(found
                .and_then(|t| t.get("status").cloned())
                .unwrap_or(Value::Null)),
        })
    }
}

/// Whether `to` can be reached from `from` by one transition or more.
fn reaches(spec: &Workflow, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(at) = stack.pop() {
        let Some(task) = spec.tasks.get(&at) else {
            continue;
        };
        for t in &task.next {
            for target in &t.targets {
                if let Target::Task(next) = target {
                    if next == to {
                        return true;
                    }
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
        }
    }
    false
}
