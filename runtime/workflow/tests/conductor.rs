//! The conductor's semantics, one test each: the checklist of
//! `reference/orquesta.md` §12 (remediation, transitions, joins,
//! with-items, expression values, pause) and the rest of the language
//! (retry, cancel, limits, errors).
//!
//! A simulated reactor runs every requested action at once, in the order
//! asked, through a table of fake actions.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use squall_workflow::conductor::{Conductor, Limits, MAX_ITEMS, Run, TaskStatus, WorkflowStatus};
use squall_workflow::spec::Workflow;
use squall_workflow::yaql::NoHost;

/// The fake actions: `ok` returns its input, `fail` fails with its input,
/// `echo` returns `{stdout: message}`, anything else fails.
fn act(run: &Run) -> (&'static str, Value) {
    let input = Value::Object(run.input.clone());
    match run.action.to_string().as_str() {
        "test.ok" => ("succeeded", input),
        "test.fail" => ("failed", input),
        "core.echo" => (
            "succeeded",
            json!({"stdout": run.input.get("message").cloned().unwrap_or(Value::Null)}),
        ),
        "test.cancel" => ("canceled", Value::Null),
        // Fails until it is told it may succeed.
        "test.flaky" if run.input.get("ok") == Some(&Value::Bool(true)) => ("succeeded", input),
        "test.flaky" => ("failed", input),
        _ => ("failed", json!({"error": "no such action"})),
    }
}

struct Sim {
    c: Conductor,
    queue: VecDeque<Run>,
    /// Every run, in the order it was asked for.
    ran: Vec<Run>,
}

impl Sim {
    fn start(definition: &str, input: Value) -> Self {
        Self::start_with(definition, input, Limits::default())
    }

    fn start_with(definition: &str, input: Value, limits: Limits) -> Self {
        let spec = Arc::new(Workflow::parse(definition).expect("a valid definition"));
        let input = input.as_object().cloned().unwrap_or_default();
        let (c, step) = Conductor::start(spec, Arc::new(NoHost), limits, &input, Map::new());
        let mut sim = Self {
            c,
            queue: VecDeque::new(),
            ran: Vec::new(),
        };
        sim.take(step.runs);
        sim
    }

    fn take(&mut self, runs: Vec<Run>) {
        self.ran.extend(runs.iter().cloned());
        self.queue.extend(runs);
    }

    /// `old`, a failed run of `definition` with `ok` now true (as a fixed
    /// action would behave), re-run from `task` to its end.
    fn rerun_fixed(definition: &str, old: &Sim, task: &str) -> Self {
        let mut state = old.c.state.clone();
        state.ctx.insert("ok".into(), json!(true));
        let spec = Arc::new(Workflow::parse(definition).expect("valid"));
        let (c, step) = Conductor::rerun(
            spec,
            Arc::new(NoHost),
            Limits::default(),
            &state,
            &[task.to_owned()],
        )
        .expect("re-run");
        let mut sim = Sim {
            c,
            queue: VecDeque::new(),
            ran: Vec::new(),
        };
        sim.take(step.runs);
        sim.finish()
    }

    /// Take `task`'s queued run out of the queue, to end it by hand.
    fn take_run(&mut self, task: &str) -> Run {
        let at = self.queue.iter().position(|r| r.name == task);
        self.queue
            .remove(at.expect("a queued run"))
            .expect("a queued run")
    }

    /// Run one queued action; false when none is queued.
    fn one(&mut self) -> bool {
        let Some(run) = self.queue.pop_front() else {
            return false;
        };
        let (status, result) = act(&run);
        let step = self.c.action_ended(run.task, run.item, status, result);
        self.take(step.runs);
        true
    }

    fn finish(mut self) -> Self {
        while self.one() {}
        self
    }

    fn status(&self) -> WorkflowStatus {
        self.c.status()
    }

    fn output(&self) -> Value {
        self.c.result()["output"].clone()
    }

    fn errors(&self) -> Vec<Value> {
        self.c.result()["errors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Task names in the order their task executions were made.
    fn tasks(&self) -> Vec<String> {
        self.c.state.tasks.iter().map(|t| t.name.clone()).collect()
    }

    fn task(&self, name: &str) -> Vec<&squall_workflow::conductor::TaskExecution> {
        self.c
            .state
            .tasks
            .iter()
            .filter(|t| t.name == name)
            .collect()
    }
}

// §12.1 Remediation.

#[test]
fn a_failure_handled_by_publish_and_continue_still_fails_the_workflow_with_its_output() {
    let sim = Sim::start(
        r#"
version: 1.0
output:
  - seen: <% ctx(seen) %>
tasks:
  t1:
    action: test.fail
    next:
      - when: <% failed() %>
        publish: seen=yes
        do: continue
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    assert_eq!(sim.output(), json!({"seen": "yes"}));
    let errors = sim.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["task_id"], "t1");
    assert_eq!(
        errors[0]["message"],
        "Execution failed. See result for details."
    );
    assert!(errors[0].get("result").is_some());
}

#[test]
fn a_failure_without_next_fails_the_workflow_and_nothing_more_starts() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  a:
    action: test.fail
  b:
    action: test.ok
    next:
      - do: c
  c:
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    // a and b start together; b's end comes after a failed: c never starts.
    assert_eq!(sim.tasks(), ["a", "b"]);
}

#[test]
fn noop_remediates_a_failure_and_the_workflow_succeeds_without_errors() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  t1:
    action: test.fail
    next:
      - when: <% failed() %>
        do: noop
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.c.result(), json!({"output": null}));
}

#[test]
fn a_task_after_a_failure_remediates_it() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  t1:
    action: test.fail
    next:
      - when: <% failed() %>
        do: cleanup
  cleanup:
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.tasks(), ["t1", "cleanup"]);
}

#[test]
fn fail_fails_the_workflow_and_its_siblings_in_the_same_do_still_run() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  t1:
    action: test.fail
    next:
      - when: <% failed() %>
        do: [notify, fail]
  notify:
    action: test.ok
    next:
      - do: after
  after:
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    // notify runs beside fail; nothing starts after it.
    assert_eq!(sim.tasks(), ["t1", "notify"]);
    let errors = sim.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["task_id"], "t1");
    assert_eq!(errors[1]["task_id"], "fail");
    assert!(errors[1].get("result").is_none());
}

// §12.2 Transitions.

#[test]
fn every_transition_whose_when_holds_fires_and_no_when_means_any_completion() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  t1:
    action: test.fail
    next:
      - when: <% failed() %>
        do: a
      - when: <% succeeded() %>
        do: b
      - when: <% completed() %>
        do: c
      - do: d
  a:
    action: test.ok
  b:
    action: test.ok
  c:
    action: test.ok
  d:
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.tasks(), ["t1", "a", "c", "d"]);
}

#[test]
fn publish_reaches_only_its_own_branch_and_each_item_sees_the_ones_before() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  t0:
    action: test.ok
    next:
      - publish:
          - x: 1
          - x2: <% ctx(x) + 1 %>
        do: left
      - publish: y=2
        do: right
  left:
    action: test.ok
    input:
      seen: <% ctx().keys().orderBy($) %>
  right:
    action: test.ok
    input:
      seen: <% ctx().keys().orderBy($) %>
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    let seen = |name: &str| sim.task(name)[0].result.clone().expect("ended")["seen"].clone();
    assert_eq!(seen("left"), json!(["x", "x2"]));
    assert_eq!(seen("right"), json!(["y"]));
    assert_eq!(sim.task("left")[0].ctx["x2"], json!(2));
}

// §12.3 Joins.

const DIAMOND: &str = r#"
version: 1.0
output:
  - v: <% ctx(v) %>
tasks:
  start:
    action: test.ok
    next:
      - do: [a, b]
  a:
    action: test.ok
    next:
      - publish: v=a
        do: end
  b:
    action: test.ok
    next:
      - publish: v=b
        do: end
  end:
    JOIN
    action: test.ok
"#;

#[test]
fn without_join_a_task_runs_once_per_inbound_arrival() {
    let sim = Sim::start(&DIAMOND.replace("JOIN\n", ""), json!({})).finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    let ends = sim.task("end");
    assert_eq!(ends.len(), 2);
    assert_ne!(
        ends[0].route, ends[1].route,
        "each arrival is its own route"
    );
}

#[test]
fn join_all_runs_once_after_every_inbound_branch_and_the_last_arrival_wins() {
    let sim = Sim::start(&DIAMOND.replace("JOIN", "join: all"), json!({})).finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.task("end").len(), 1);
    // a ends first, then b: b's delta is layered last.
    assert_eq!(sim.output(), json!({"v": "b"}));
}

#[test]
fn join_count_runs_at_the_count_and_again_for_a_later_branch() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  start:
    action: test.ok
    next:
      - do: [a, b, c]
  a:
    action: test.ok
    next: [{do: end}]
  b:
    action: test.ok
    next: [{do: end}]
  c:
    action: test.ok
    next: [{do: end}]
  end:
    join: 2
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.task("end").len(), 2);
}

#[test]
fn join_all_on_a_cycle_waits_for_every_inbound_branch_each_time_round() {
    let sim = Sim::start(
        r#"
version: 1.0
vars:
  - n: 0
output:
  - n: <% ctx(n) %>
tasks:
  init:
    action: test.ok
    next: [{do: start}]
  start:
    action: test.ok
    next:
      - do: [a, b]
  a:
    action: test.ok
    next: [{do: end}]
  b:
    action: test.ok
    next: [{do: end}]
  end:
    join: all
    action: test.ok
    next:
      - when: <% ctx(n) < 2 %>
        publish: n=<% ctx(n) + 1 %>
        do: start
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.task("a").len(), 3);
    assert_eq!(sim.task("b").len(), 3);
    // Once per time round: not again for each later arrival.
    assert_eq!(sim.task("end").len(), 3);
    assert_eq!(sim.output(), json!({"n": 2}));
}

#[test]
fn a_join_left_partially_satisfied_fails_the_workflow_as_unreachable() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  start:
    action: test.ok
    next:
      - do: [a, b]
  a:
    action: test.ok
    next: [{do: end}]
  b:
    action: test.ok
    next:
      - when: <% failed() %>
        do: end
  end:
    join: all
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    let errors = sim.errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0]["message"],
        "UnreachableJoinError: The join task|route \"end|0\" is partially satisfied but unreachable."
    );
    assert!(sim.task("end").is_empty());
}

// §12.4 With-items.

#[test]
fn with_items_results_come_in_item_order_and_named_items_are_maps() {
    let sim = Sim::start(
        r#"
version: 1.0
input: [hosts, ports]
output:
  - results: <% ctx(results) %>
tasks:
  each:
    with: host, port in <% zip(ctx(hosts), ctx(ports)) %>
    action: test.ok
    input:
      target: <% item(host) %>:<% item(port) %>
    next:
      - publish: results=<% result().select($.target) %>
"#,
        json!({"hosts": ["a", "b", "c"], "ports": [1, 2, 3]}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.output(), json!({"results": ["a:1", "b:2", "c:3"]}));
    assert_eq!(sim.ran.len(), 3);
}

#[test]
fn a_failed_item_fails_its_task_only_after_the_active_items_end_and_stops_the_rest() {
    let mut sim = Sim::start(
        r#"
version: 1.0
input: [actions]
tasks:
  each:
    with:
      items: <% ctx(actions) %>
      concurrency: 2
    action: <% item() %>
"#,
        json!({"actions": ["test.fail", "test.ok", "test.ok", "test.ok"]}),
    );
    assert_eq!(sim.queue.len(), 2, "concurrency caps the first batch");
    sim.one(); // item 0 fails; item 1 is still running
    assert_eq!(sim.task("each")[0].status, TaskStatus::Running);
    assert!(sim.queue.len() == 1, "no new item starts after a failure");
    let sim = sim.finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    let each = sim.task("each")[0];
    assert_eq!(each.status, TaskStatus::Failed);
    assert_eq!(
        each.result
            .as_ref()
            .expect("ended")
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(sim.ran.len(), 2);
}

/// `sim`'s state as a restart reads it back: the task records as last
/// written (a running task's when it started: no result yet), each
/// with-items task's item ends rebuilt from the item executions (the runs
/// asked for, with the ends the conductor was told).
fn restarted(sim: &Sim, definition: &str) -> Sim {
    let old = &sim.c.state;
    let mut state = read_back(sim);
    for (i, (t, old)) in state.tasks.iter_mut().zip(&old.tasks).enumerate() {
        if t.status == TaskStatus::Running {
            t.result = None;
        }
        let (Some(items), Some(old)) = (t.items.as_mut(), &old.items) else {
            continue;
        };
        for k in sim
            .ran
            .iter()
            .filter(|r| r.task == i)
            .filter_map(|r| r.item)
        {
            if items.ends.len() <= k {
                items.ends.resize(k + 1, None);
            }
            items.ends[k] = old.ends[k].clone();
        }
    }
    let spec = Arc::new(Workflow::parse(definition).expect("a valid definition"));
    let mut c = Conductor::restore(spec, Arc::new(NoHost), Limits::default(), state);
    let step = c.reconcile(Vec::new(), Vec::new(), Vec::new());
    let mut again = Sim {
        c,
        queue: sim.queue.clone(),
        ran: sim.ran.clone(),
    };
    again.take(step.runs);
    again
}

#[test]
fn a_canceled_item_read_back_after_a_restart_still_cancels_its_task() {
    let definition = r#"
version: 1.0
input: [actions]
tasks:
  each:
    with:
      items: <% ctx(actions) %>
      concurrency: 2
    action: <% item() %>
"#;
    let mut sim = Sim::start(
        definition,
        json!({"actions": ["test.cancel", "test.ok", "test.ok"]}),
    );
    sim.one(); // item 0 is canceled; item 1 still runs
    let sim = restarted(&sim, definition).finish();
    assert_eq!(sim.task("each")[0].status, TaskStatus::Canceled);
    assert_eq!(sim.status(), WorkflowStatus::Canceled);
    assert_eq!(sim.ran.len(), 2, "no item starts after a cancel");
}

#[test]
fn an_item_whose_input_fails_to_render_ends_its_task_alike_before_and_after_a_restart() {
    let definition = r#"
version: 1.0
input: [ns]
tasks:
  each:
    with:
      items: <% ctx(ns) %>
      concurrency: 2
    action: test.ok
    input: {n: <% 10 / item() %>}
"#;
    let input = json!({"ns": [1, 2, 0, 5]});
    let mut uninterrupted = Sim::start(definition, input.clone());
    uninterrupted.one(); // item 0 ends; item 2 fails to render, item 1 still runs
    let restarted = restarted(&uninterrupted, definition).finish();
    let uninterrupted = uninterrupted.finish();
    for sim in [&uninterrupted, &restarted] {
        assert_eq!(sim.status(), WorkflowStatus::Failed);
        let each = sim.task("each")[0];
        assert_eq!(each.status, TaskStatus::Failed);
        assert_eq!(each.result, Some(json!([{"n": 10}, {"n": 5}])));
        assert_eq!(sim.ran.len(), 2);
    }
    assert_eq!(uninterrupted.errors(), restarted.errors());
}

#[test]
fn concurrency_keeps_at_most_n_items_active() {
    let mut sim = Sim::start(
        r#"
version: 1.0
tasks:
  each:
    with:
      items: <% range(10) %>
      concurrency: 3
    action: test.ok
    input: {n: <% item() %>}
"#,
        json!({}),
    );
    while !sim.queue.is_empty() {
        assert!(sim.queue.len() <= 3, "{} active", sim.queue.len());
        sim.one();
    }
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    let ns: Vec<Value> = sim.ran.iter().map(|r| r.input["n"].clone()).collect();
    assert_eq!(ns, (0..10).map(Value::from).collect::<Vec<_>>());
}

#[test]
fn an_empty_item_list_succeeds_at_once_with_an_empty_result() {
    let sim = Sim::start(
        r#"
version: 1.0
output:
  - r: <% ctx(r) %>
tasks:
  each:
    with: <% list() %>
    action: test.ok
    next:
      - when: <% succeeded() %>
        publish: r=<% result() %>
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.output(), json!({"r": []}));
    assert!(sim.ran.is_empty());
}

#[test]
fn more_items_than_the_limit_fail_the_task_with_the_limit_named() {
    let sim = Sim::start(
        r#"
version: 1.0
input: [n]
tasks:
  each:
    with: <% range(ctx(n)) %>
    action: test.ok
"#,
        json!({"n": 1_000_000}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    let message = sim.errors()[0]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    assert!(message.starts_with("tasks.each.with.items:"), "{message}");
    assert!(
        message.contains(&format!(
            "1000000 items is more than a task may run over (at most {MAX_ITEMS})"
        )),
        "{message}"
    );
    assert!(sim.ran.is_empty());
}

// §12.5 Expression values.

#[test]
fn one_expression_keeps_its_type_and_embedded_values_are_formatted_as_python() {
    let sim = Sim::start(
        r#"
version: 1.0
input:
  - flag: false
  - data: {a: 1}
tasks:
  t:
    action: test.ok
    input:
      native: <% ctx(flag) %>
      text: "flag=<% ctx(flag) %> data=<% ctx(data) %> none=<% null %>"
      jinja: "{{ ctx('flag') }}"
"#,
        json!({}),
    )
    .finish();
    let input = &sim.ran[0].input;
    assert_eq!(input["native"], json!(false));
    assert_eq!(input["text"], json!("flag=False data={'a': 1} none=None"));
    assert_eq!(input["jinja"], json!(false));
}

#[test]
fn a_result_holding_an_expression_is_data_and_is_not_evaluated_again() {
    let sim = Sim::start(
        r#"
version: 1.0
vars:
  - secret: hidden
output:
  - echoed: <% ctx(echoed) %>
tasks:
  t:
    action: core.echo
    input:
      message: "<% '<' + '% ctx(secret) %' + '>' %>"
    next:
      - publish: echoed=<% result().stdout %>
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.output(), json!({"echoed": "<% ctx(secret) %>"}));
}

#[test]
fn yaql_equality_is_a_single_equals_and_named_arguments_use_arrows() {
    let sim = Sim::start(
        r#"
version: 1.0
input: [n]
tasks:
  t:
    action: test.ok
    input:
      three: <% ctx(n) = 3 %>
      padded: <% zip([1, 2], [3], pad => 0) %>
"#,
        json!({"n": 3}),
    )
    .finish();
    assert_eq!(sim.ran[0].input["three"], json!(true));
    assert_eq!(sim.ran[0].input["padded"], json!([[1, 3], [2, 0]]));
}

// §12.6 Pause.

#[test]
fn pause_is_pausing_while_a_branch_runs_then_paused_and_resume_goes_on() {
    let mut sim = Sim::start(
        r#"
version: 1.0
tasks:
  a:
    action: test.ok
    next: [{do: after_a}]
  b:
    action: test.ok
  after_a:
    action: test.ok
"#,
        json!({}),
    );
    let step = sim.c.pause();
    assert!(step.runs.is_empty());
    assert_eq!(sim.status(), WorkflowStatus::Pausing);
    sim.one(); // a ends: after_a is staged, not run
    assert_eq!(sim.status(), WorkflowStatus::Pausing, "b still runs");
    assert_eq!(sim.task("after_a")[0].status, TaskStatus::Staged);
    sim.one(); // b ends: nothing is active
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    assert!(sim.queue.is_empty());
    let step = sim.c.resume();
    assert_eq!(sim.status(), WorkflowStatus::Running);
    assert_eq!(step.runs.len(), 1);
    sim.take(step.runs);
    let sim = sim.finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
}

#[test]
fn a_paused_subworkflow_pauses_its_parent_once_nothing_else_is_active_and_resuming_it_sets_the_parent_running()
 {
    let mut sim = Sim::start(
        r#"
version: 1.0
tasks:
  sub:
    action: test.ok
    next: [{do: after_sub}]
  other:
    action: test.ok
  after_sub:
    action: test.ok
"#,
        json!({}),
    );
    let sub = sim.take_run("sub");
    // The subworkflow pauses alone: its parent goes on while `other` runs.
    sim.c.action_paused(sub.task, sub.item, true);
    assert_eq!(sim.status(), WorkflowStatus::Running);
    sim.one(); // other ends: nothing is active but the paused sub
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    // Resumed alone, the subworkflow sets its parent running.
    let step = sim.c.action_paused(sub.task, sub.item, false);
    assert!(step.runs.is_empty());
    assert_eq!(sim.status(), WorkflowStatus::Running);
    let step = sim
        .c
        .action_ended(sub.task, sub.item, "succeeded", json!({}));
    sim.take(step.runs);
    let sim = sim.finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.task("after_sub").len(), 1);

    // Canceled while its subworkflow is paused: canceling until that ends.
    let mut sim = Sim::start(
        "version: 1.0\ntasks:\n  sub:\n    action: test.ok\n",
        json!({}),
    );
    let sub = sim.take_run("sub");
    sim.c.action_paused(sub.task, sub.item, true);
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    sim.c.cancel();
    assert_eq!(sim.status(), WorkflowStatus::Canceling);
    sim.c
        .action_ended(sub.task, sub.item, "canceled", Value::Null);
    assert_eq!(sim.status(), WorkflowStatus::Canceled);
}

// §10 Inquiries: a task whose action is pending.

#[test]
fn a_pending_task_pauses_the_workflow_and_its_answer_resumes_it() {
    let definition = r#"
version: 1.0
output:
  - go: <% ctx(go) %>
tasks:
  ask:
    action: test.ok
    next:
      - when: <% succeeded() and result().response.continue %>
        publish: go=<% result().response.continue %>
        do: after
  other:
    action: test.ok
    next: [{do: later}]
  later:
    action: test.ok
  after:
    action: test.ok
"#;
    let mut sim = Sim::start(definition, json!({}));
    let ask = sim.take_run("ask");
    // Pending while `other` runs: pausing, and what `other` leads to waits.
    sim.c.action_ended(ask.task, ask.item, "pending", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Pausing);
    sim.one(); // other ends: later is staged, nothing is active
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    assert_eq!(sim.task("later")[0].status, TaskStatus::Staged);
    assert!(sim.queue.is_empty());
    // The answer resumes the workflow, then ends the task.
    let step = sim.c.action_ended(
        ask.task,
        ask.item,
        "succeeded",
        json!({"response": {"continue": true}}),
    );
    sim.take(step.runs);
    let mut names: Vec<&str> = sim.queue.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["after", "later"]);
    let sim = sim.finish();
    assert_eq!(
        sim.status(),
        WorkflowStatus::Succeeded,
        "{:?}",
        sim.errors()
    );
    assert_eq!(sim.output(), json!({"go": true}));
}

#[test]
fn with_two_pending_tasks_each_answer_resumes_and_the_other_pauses_again() {
    let mut sim = Sim::start(
        "version: 1.0\ntasks:\n  a:\n    action: test.ok\n    next: [{do: a2}]\n  b:\n    action: test.ok\n  a2:\n    action: test.ok\n",
        json!({}),
    );
    let (a, b) = (sim.take_run("a"), sim.take_run("b"));
    sim.c.action_ended(a.task, a.item, "pending", json!({}));
    sim.c.action_ended(b.task, b.item, "pending", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    let step = sim.c.action_ended(a.task, a.item, "succeeded", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Running, "a2 runs");
    assert!(step.resumed);
    sim.take(step.runs);
    sim.one(); // a2 ends: only b's inquiry is left
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    sim.c.action_ended(b.task, b.item, "succeeded", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);

    // Answered with nothing to do after it: resumed and paused again in
    // one step, which says so.
    let mut sim = Sim::start(
        "version: 1.0\ntasks:\n  a:\n    action: test.ok\n  b:\n    action: test.ok\n",
        json!({}),
    );
    let (a, b) = (sim.take_run("a"), sim.take_run("b"));
    sim.c.action_ended(a.task, a.item, "pending", json!({}));
    let step = sim.c.action_ended(b.task, b.item, "pending", json!({}));
    assert!(!step.resumed);
    let step = sim.c.action_ended(a.task, a.item, "succeeded", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    assert!(step.resumed, "{step:?}");

    // An inquiry that times out fails its task: `failed()` can route it.
    let mut sim = Sim::start(
        "version: 1.0\ntasks:\n  ask:\n    action: test.ok\n    next: [{when: <% failed() %>, do: escalate}]\n  escalate:\n    action: test.ok\n",
        json!({}),
    );
    let ask = sim.take_run("ask");
    sim.c.action_ended(ask.task, ask.item, "pending", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    let step = sim.c.action_ended(ask.task, ask.item, "timeout", json!({}));
    sim.take(step.runs);
    let sim = sim.finish();
    assert_eq!(sim.task("ask")[0].status, TaskStatus::Failed);
    assert_eq!(sim.task("escalate").len(), 1);
    assert_eq!(
        sim.status(),
        WorkflowStatus::Succeeded,
        "{:?}",
        sim.errors()
    );
}

#[test]
fn a_paused_subworkflow_that_goes_on_and_ends_in_one_step_sets_its_paused_parent_going() {
    let mut sim = Sim::start(
        "version: 1.0\ntasks:\n  sub:\n    action: test.ok\n    next: [{do: after}]\n  after:\n    action: test.ok\n",
        json!({}),
    );
    let sub = sim.take_run("sub");
    sim.c.action_paused(sub.task, sub.item, true);
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    // Resumed, the subworkflow ended at once: no `running` came first.
    let step = sim
        .c
        .action_ended(sub.task, sub.item, "succeeded", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Running);
    sim.take(step.runs);
    let sim = sim.finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.task("after").len(), 1);
}

#[test]
fn a_paused_item_holds_back_its_task_s_next_items_until_it_goes_on() {
    let mut sim = Sim::start(
        r#"
version: 1.0
tasks:
  each:
    with:
      items: <% range(4) %>
      concurrency: 2
    action: test.ok
"#,
        json!({}),
    );
    let first = sim.queue.pop_front().expect("item 0 runs");
    sim.c.action_paused(first.task, first.item, true);
    sim.one(); // item 1 ends: item 2 does not start while item 0 is paused
    assert!(sim.queue.is_empty());
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    let step = sim.c.action_paused(first.task, first.item, false);
    assert_eq!(sim.status(), WorkflowStatus::Running);
    sim.take(step.runs);
    assert_eq!(sim.queue.len(), 1, "item 2 starts beside item 0");
    let step = sim
        .c
        .action_ended(first.task, first.item, "succeeded", json!({}));
    sim.take(step.runs);
    let sim = sim.finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.ran.len(), 4);
}

#[test]
fn a_paused_subworkflow_beside_a_failure_is_not_waited_for() {
    let mut sim = Sim::start(
        "version: 1.0\ntasks:\n  sub:\n    action: test.ok\n  bad:\n    action: test.fail\n",
        json!({}),
    );
    let sub = sim.take_run("sub");
    sim.c.action_paused(sub.task, sub.item, true);
    sim.one(); // bad fails, unremediated
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    assert_eq!(sim.task("sub")[0].status, TaskStatus::Canceled);
}

#[test]
fn a_with_items_task_between_items_lets_the_workflow_pause_and_cancel() {
    let definition = r#"
version: 1.0
tasks:
  each:
    with:
      items: <% range(3) %>
      concurrency: 1
    action: test.ok
    input: {n: <% item() %>}
"#;
    let mut sim = Sim::start(definition, json!({}));
    sim.c.pause();
    sim.one(); // item 0 ends; no other item starts while pausing
    assert!(sim.queue.is_empty());
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    let step = sim.c.resume();
    sim.take(step.runs);
    let sim = sim.finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.ran.len(), 3);

    let mut sim = Sim::start(definition, json!({}));
    sim.c.pause();
    sim.one();
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    sim.c.cancel();
    assert_eq!(sim.status(), WorkflowStatus::Canceled);
    assert_eq!(sim.task("each")[0].status, TaskStatus::Canceled);
    assert_eq!(sim.ran.len(), 1);
}

#[test]
fn a_failure_while_pausing_fails_the_workflow_and_what_waited_never_runs() {
    let mut sim = Sim::start(
        r#"
version: 1.0
tasks:
  a:
    action: test.ok
    next: [{do: after_a}]
  b:
    action: test.fail
  after_a:
    action: test.ok
"#,
        json!({}),
    );
    sim.c.pause();
    sim.one(); // a ends: after_a is staged
    sim.one(); // b fails, unremediated
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    assert_eq!(sim.task("after_a")[0].status, TaskStatus::Canceled);
    let step = sim.c.resume();
    assert!(step.runs.is_empty(), "nothing runs after a failure");
    assert_eq!(sim.ran.len(), 2);
}

// The rest of the language.

#[test]
fn retry_runs_count_more_attempts_and_the_last_decides() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  flaky:
    action: test.fail
    retry:
      count: 2
      delay: 5
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    let attempts = sim.task("flaky");
    assert_eq!(attempts.len(), 3, "count 2: 3 executions");
    assert!(attempts[0].retried && attempts[1].retried && !attempts[2].retried);
    let delays: Vec<Option<u64>> = sim.ran.iter().map(|r| r.delay).collect();
    assert_eq!(delays, [None, Some(5), Some(5)]);
}

#[test]
fn retry_when_decides_on_the_result_and_do_retry_compiles_to_three_attempts() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  a:
    action: test.ok
    input: {code: 1}
    retry:
      when: <% result().code = 1 %>
      count: 1
  b:
    action: test.fail
    next:
      - when: <% failed() %>
        do: retry
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.task("a").len(), 2);
    assert_eq!(sim.task("b").len(), 4);
    assert_eq!(sim.status(), WorkflowStatus::Failed);
}

#[test]
fn action_less_tasks_succeed_at_once_and_publish() {
    let sim = Sim::start(
        r#"
version: 1.0
output:
  - x: <% ctx(x) %>
tasks:
  decide:
    next:
      - publish: x=42
        do: use
  use:
    action: test.ok
    input: {x: <% ctx(x) %>}
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Succeeded);
    assert_eq!(sim.ran.len(), 1);
    assert_eq!(sim.output(), json!({"x": 42}));
}

#[test]
fn cancel_is_canceling_until_active_actions_end_and_starts_nothing_more() {
    let mut sim = Sim::start(
        r#"
version: 1.0
tasks:
  a:
    action: test.ok
    next: [{do: b}]
  b:
    action: test.ok
"#,
        json!({}),
    );
    sim.c.cancel();
    assert_eq!(sim.status(), WorkflowStatus::Canceling);
    assert_eq!(sim.c.active_runs(), [(0, None)]);
    let sim = sim.finish();
    assert_eq!(sim.status(), WorkflowStatus::Canceled);
    assert_eq!(sim.tasks(), ["a"]);
    assert!(sim.c.result().get("errors").is_none());
}

#[test]
fn a_canceled_task_cancels_its_workflow() {
    let sim = Sim::start(
        "version: 1.0\ntasks:\n  a:\n    action: test.cancel\n    next: [{do: b}]\n  b:\n    action: test.ok\n",
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Canceled);
    assert_eq!(sim.tasks(), ["a"]);
}

#[test]
fn a_loop_for_ever_stops_at_the_task_limit() {
    let sim = Sim::start_with(
        r#"
version: 1.0
tasks:
  init:
    next: [{do: spin}]
  spin:
    action: test.ok
    next: [{do: spin}]
"#,
        json!({}),
        Limits { max_tasks: 50 },
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    assert_eq!(sim.c.state.tasks.len(), 50);
    let message = sim.errors()[0]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.contains("limit of 50 task executions"), "{message}");
}

#[test]
fn an_expression_error_fails_the_workflow_naming_task_field_and_expression() {
    let sim = Sim::start(
        r#"
version: 1.0
input: [data]
tasks:
  t1:
    action: test.ok
    input:
      v: <% ctx(data).missing %>
"#,
        json!({"data": {}}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    let message = sim.errors()[0]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.starts_with("tasks.t1.input: v: "), "{message}");
    assert!(message.contains("ctx(data).missing"), "{message}");
    assert!(message.contains("'missing'"), "{message}");
    assert!(sim.ran.is_empty());
}

#[test]
fn a_transition_error_carries_its_transition_id() {
    let sim = Sim::start(
        r#"
version: 1.0
tasks:
  t1:
    action: test.ok
    next:
      - when: <% result().nope %>
        do: t2
  t2:
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.status(), WorkflowStatus::Failed);
    let e = &sim.errors()[0];
    assert_eq!(e["task_transition_id"], "t2__t0");
    assert_eq!(e["task_id"], "t1");
}

#[test]
fn inputs_take_given_values_else_defaults_in_order_then_vars() {
    let sim = Sim::start(
        r#"
version: 1.0
input:
  - a: 1
  - b: <% ctx(a) + 1 %>
  - c
vars:
  - d: <% ctx(b) * 10 %>
output:
  - all: <% [ctx(a), ctx(b), ctx(c), ctx(d)] %>
tasks:
  t:
    action: test.ok
"#,
        json!({"a": 5}),
    )
    .finish();
    assert_eq!(sim.output(), json!({"all": [5, 6, null, 60]}));
}

#[test]
fn re_run_from_a_task_keeps_what_ran_before_and_beside_it() {
    let definition = r#"
version: 1.0
input: [ok]
output:
  - a: <% ctx(a) %>
  - b: <% ctx(b) %>
tasks:
  t1:
    action: test.ok
    next:
      - publish: a=1
        do: [t2, side]
  side:
    action: test.ok
  t2:
    action: test.flaky
    input: {ok: <% ctx(ok) %>}
    next:
      - when: <% succeeded() %>
        publish: b=<% ctx(a) + 1 %>
        do: t3
  t3:
    action: test.ok
"#;
    let first = Sim::start(definition, json!({"ok": false})).finish();
    assert_eq!(first.status(), WorkflowStatus::Failed);
    assert_eq!(first.tasks(), ["t1", "t2", "side"]);
    // The same definition with t2 now able to succeed.
    let sim = Sim::rerun_fixed(definition, &first, "t2");
    assert_eq!(
        sim.status(),
        WorkflowStatus::Succeeded,
        "{:?}",
        sim.errors()
    );
    let ran: Vec<&str> = sim.ran.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(ran, ["t2", "t3"], "t1 and side are not run again");
    assert_eq!(sim.output(), json!({"a": 1, "b": 2}));
    let err = Conductor::rerun(
        Arc::new(Workflow::parse(definition).expect("valid")),
        Arc::new(NoHost),
        Limits::default(),
        &first.c.state,
        &["t3".to_owned()],
    )
    .expect_err("t3 never ran");
    assert!(err.contains("'t3' did not run"), "{err}");
}

#[test]
fn re_run_from_one_branch_of_a_join_keeps_the_other_branch_arrival() {
    let definition = r#"
version: 1.0
input: [ok]
output:
  - b: <% ctx(b) %>
tasks:
  t1:
    action: test.ok
    next: [{do: [a, b]}]
  a:
    action: test.ok
    next: [{do: c}]
  b:
    action: test.ok
    next: [{publish: b=from_b, do: c}]
  c:
    join: all
    action: test.flaky
    input: {ok: <% ctx(ok) %>}
"#;
    let first = Sim::start(definition, json!({"ok": false})).finish();
    assert_eq!(first.status(), WorkflowStatus::Failed);
    let sim = Sim::rerun_fixed(definition, &first, "a");
    assert_eq!(
        sim.status(),
        WorkflowStatus::Succeeded,
        "{:?}",
        sim.errors()
    );
    let ran: Vec<&str> = sim.ran.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(ran, ["a", "c"], "b's arrival at the join is kept");
    assert_eq!(sim.output(), json!({"b": "from_b"}));
}

#[test]
fn task_and_task_status_read_earlier_tasks() {
    let sim = Sim::start(
        r#"
version: 1.0
output:
  - st: <% task_status(first) %>
  - r: <% task(first).result.v %>
tasks:
  first:
    action: test.ok
    input: {v: 7}
    next: [{do: second}]
  second:
    action: test.ok
"#,
        json!({}),
    )
    .finish();
    assert_eq!(sim.output(), json!({"st": "succeeded", "r": 7}));
}

/// The state `sim` would be read back with.
fn read_back(sim: &Sim) -> squall_workflow::conductor::State {
    fn again<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        serde_json::from_value(serde_json::to_value(v).expect("serializes")).expect("reads back")
    }
    squall_workflow::conductor::State {
        ctx: sim.c.state.ctx.clone(),
        head: again(&sim.c.state.head),
        tasks: again(&sim.c.state.tasks),
    }
}

#[test]
fn an_answer_recorded_without_its_step_resumes_the_workflow_after_a_restart() {
    let definition = "version: 1.0\ntasks:\n  ask:\n    action: test.ok\n    next: [{do: after}]\n  after:\n    action: test.ok\n";
    let mut sim = Sim::start(definition, json!({}));
    let ask = sim.take_run("ask");
    sim.c.action_ended(ask.task, ask.item, "pending", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    // Read back with the inquiry answered (its end written, its step not).
    let state = read_back(&sim);
    let spec = Arc::new(Workflow::parse(definition).expect("valid"));
    let mut c = Conductor::restore(spec, Arc::new(NoHost), Limits::default(), state);
    let step = c.reconcile(
        Vec::new(),
        Vec::new(),
        vec![(
            ask.task,
            ask.item,
            "succeeded".into(),
            json!({"response": {}}),
        )],
    );
    assert!(step.resumed);
    assert_eq!(c.status(), WorkflowStatus::Running);
    let names: Vec<&str> = step.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["after"]);

    // Asked to pause, it stays paused: the end does not resume it.
    let mut sim = Sim::start(definition, json!({}));
    let ask = sim.take_run("ask");
    sim.c.pause();
    sim.c.action_ended(ask.task, ask.item, "pending", json!({}));
    assert_eq!(sim.status(), WorkflowStatus::Paused);
    let state = read_back(&sim);
    let spec = Arc::new(Workflow::parse(definition).expect("valid"));
    let mut c = Conductor::restore(spec, Arc::new(NoHost), Limits::default(), state);
    c.reconcile(
        Vec::new(),
        Vec::new(),
        vec![(ask.task, ask.item, "succeeded".into(), json!({}))],
    );
    assert_eq!(c.status(), WorkflowStatus::Paused);
}
