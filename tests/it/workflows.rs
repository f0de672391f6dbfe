//! Workflows end to end: the Orquesta conformance corpus (real workflows
//! written for StackStorm, read where they lie) run through the API, each
//! checked against what StackStorm's own tests expect.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use squall_core::{ExecutionId, TenantId};
use tempfile::TempDir;

use super::server::Server;

fn corpus() -> PathBuf {
    squall_tests::workspace_root().join("../shared/conformance/orquesta")
}

/// The corpus' `examples` pack as Squall loads it: a `pack.yaml` of the
/// test's, and links to the corpus' action files and definitions, plus the
/// orquesta fixture `join-count` under an action of its own.
fn corpus_pack(corpus: &Path) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pack.yaml"),
        "ref: examples\nname: examples\nversion: 1.0.0\ndescription: the Orquesta conformance corpus\nauthor: tests\n",
    )
    .expect("write pack.yaml");
    let actions = dir.path().join("actions");
    std::fs::create_dir(&actions).expect("mkdir actions");
    for entry in std::fs::read_dir(corpus.join("examples/actions")).expect("read corpus") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name").to_owned();
        std::os::unix::fs::symlink(&path, actions.join(name)).expect("link");
    }
    std::fs::create_dir(actions.join("fixtures")).expect("mkdir fixtures");
    std::os::unix::fs::symlink(
        corpus.join("orquesta_fixtures/join-count.yaml"),
        actions.join("fixtures/join-count.yaml"),
    )
    .expect("link fixture");
    std::fs::write(
        actions.join("join-count.yaml"),
        "name: join-count\nrunner_type: orquesta\nentry_point: fixtures/join-count.yaml\n",
    )
    .expect("write join-count action");
    dir
}

/// What one corpus workflow must do.
struct Case {
    action: &'static str,
    parameters: Value,
    status: &'static str,
    /// Checks on the finished workflow: a description of each mismatch.
    check: fn(&Run) -> Vec<String>,
}

/// (task name, status, action) of one task execution.
type TaskRow = (String, String, String);

/// A finished workflow execution and its task executions.
struct Run {
    execution: Value,
    tasks: Vec<TaskRow>,
    /// The tasks of each subworkflow, by its task's name.
    nested: Vec<(String, Vec<TaskRow>)>,
}

impl Run {
    fn output(&self) -> &Value {
        &self.execution["result"]["output"]
    }

    fn count(&self, task: &str) -> usize {
        self.tasks.iter().filter(|(t, _, _)| t == task).count()
    }

    fn statuses(&self, task: &str) -> Vec<&str> {
        self.tasks
            .iter()
            .filter(|(t, _, _)| t == task)
            .map(|(_, s, _)| s.as_str())
            .collect()
    }
}

fn expect(what: &str, got: &Value, want: &Value) -> Vec<String> {
    if got == want {
        Vec::new()
    } else {
        vec![format!("{what}: expected {want}, got {got}")]
    }
}

fn holds(what: &str, ok: bool) -> Vec<String> {
    if ok {
        Vec::new()
    } else {
        vec![what.to_owned()]
    }
}

/// StackStorm's error entries, compared by type, task and message (the
/// action's result inside a task's entry is the action's own business).
fn errors(run: &Run) -> Vec<(String, String)> {
    run.execution["result"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["task_id"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

const FAILED: &str = "Execution failed. See result for details.";

fn expect_errors(run: &Run, want: &[(&str, &str)]) -> Vec<String> {
    let got = errors(run);
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(t, m)| ((*t).to_owned(), (*m).to_owned()))
        .collect();
    if got == want {
        Vec::new()
    } else {
        vec![format!("errors: expected {want:?}, got {got:?}")]
    }
}

fn greeting(run: &Run, want: &str) -> Vec<String> {
    expect("output", run.output(), &json!({"greeting": want}))
}

const THANOS: &str = "Thanos, All your base are belong to us!";

fn cases() -> Vec<Case> {
    let members = ["Lakshmi", "Lindsay", "Tomaz", "Matt", "Drew"];
    let numbered: Vec<String> = (0..10).map(|i| format!("{i:05}")).collect();
    vec![
        Case {
            action: "orquesta-sequential",
            parameters: json!({"name": "Thanos"}),
            status: "succeeded",
            check: |r| {
                expect(
                    "result",
                    &r.execution["result"],
                    &json!({"output": {"greeting": THANOS}}),
                )
            },
        },
        Case {
            action: "orquesta-join",
            parameters: json!({}),
            status: "succeeded",
            check: |r| {
                expect(
                    "output.messages",
                    &r.output()["messages"],
                    &json!([
                        "Fee fi fo fum",
                        "I smell the blood of an English man",
                        "Be alive, or be he dead",
                        "I'll grind his bones to make my bread"
                    ]),
                )
            },
        },
        Case {
            action: "orquesta-with-items",
            parameters: json!({"members": members}),
            status: "succeeded",
            check: |r| {
                let want: Vec<String> = ["Lakshmi", "Lindsay", "Tomaz", "Matt", "Drew"]
                    .iter()
                    .map(|m| format!("{m}, resistance is futile!"))
                    .collect();
                expect("output.items", &r.output()["items"], &json!(want))
            },
        },
        Case {
            action: "orquesta-with-items-concurrency",
            parameters: json!({"members": numbered, "concurrency": 10}),
            status: "succeeded",
            check: |r| {
                let want: Vec<String> = (0..10)
                    .map(|i| format!("{i:05}, resistance is futile!"))
                    .collect();
                expect("output.items", &r.output()["items"], &json!(want))
            },
        },
        // The workflow races itself: `check` is tried 4 times 1 s apart
        // while `create` sleeps 3 s before making the file it looks for.
        // StackStorm's scheduling adds enough before each retry for the
        // last to find the file; on a loaded machine an engine quick to
        // retry can try the last time before `create` is done. Either
        // way the retry must hold: several tries, the last one succeeding,
        // or all four failing and `delete` never run.
        Case {
            action: "orquesta-task-retry",
            parameters: json!({}),
            status: "succeeded|failed",
            check: |r| {
                if r.execution["status"] == "succeeded" {
                    let mut out = holds("task check ran more than once", r.count("check") > 1);
                    out.extend(holds(
                        "the last try of check succeeded",
                        r.statuses("check").last() == Some(&"succeeded"),
                    ));
                    out
                } else {
                    let mut out = holds(
                        "task check ran 4 times, each failed",
                        r.statuses("check") == ["failed"; 4],
                    );
                    out.extend(holds("task delete never ran", r.count("delete") == 0));
                    out.extend(holds(
                        "task create made the file all the same",
                        r.statuses("create") == ["succeeded"],
                    ));
                    out
                }
            },
        },
        Case {
            action: "orquesta-task-retry-exhausted",
            parameters: json!({}),
            status: "failed",
            check: |r| {
                let mut out = holds(
                    "task check ran exactly 3 times, each failed",
                    r.statuses("check") == ["failed", "failed", "failed"],
                );
                out.extend(holds("task delete never ran", r.count("delete") == 0));
                out
            },
        },
        Case {
            action: "orquesta-delay",
            parameters: json!({"name": "Thanos", "delay": 1}),
            status: "succeeded",
            check: |r| greeting(r, THANOS),
        },
        Case {
            action: "orquesta-data-flow",
            parameters: json!({"a1": "fee fi fo fum"}),
            status: "succeeded",
            check: |r| {
                expect(
                    "result",
                    &r.execution["result"],
                    &json!({"output": {"a5": "fee fi fo fum", "b5": "fee fi fo fum"}}),
                )
            },
        },
        Case {
            action: "orquesta-error-handling-continue",
            parameters: json!({"cmd": "exit 1"}),
            status: "failed",
            check: |r| {
                let mut out = expect_errors(r, &[("task1", FAILED)]);
                out.extend(expect(
                    "output",
                    r.output(),
                    &json!({"message": "$%#&@#$!!!"}),
                ));
                out
            },
        },
        Case {
            action: "orquesta-error-handling-noop",
            parameters: json!({"cmd": "exit 1"}),
            status: "succeeded",
            check: |r| {
                expect(
                    "result",
                    &r.execution["result"],
                    &json!({"output": {"message": "$%#&@#$!!!"}}),
                )
            },
        },
        Case {
            action: "orquesta-error-handling-fail-manually",
            parameters: json!({"cmd": "exit 1"}),
            status: "failed",
            check: |r| {
                let mut out = expect_errors(r, &[("task1", FAILED), ("fail", FAILED)]);
                out.extend(expect(
                    "output",
                    r.output(),
                    &json!({"message": "$%#&@#$!!!"}),
                ));
                out.extend(holds(
                    "task3 succeeded",
                    r.statuses("task3") == ["succeeded"],
                ));
                out
            },
        },
        Case {
            action: "orquesta-remediate-then-fail",
            parameters: json!({}),
            status: "failed",
            check: |r| {
                let mut out = expect_errors(r, &[("task1", FAILED), ("fail", FAILED)]);
                out.extend(expect("output", r.output(), &Value::Null));
                out.extend(holds("log succeeded", r.statuses("log") == ["succeeded"]));
                out
            },
        },
        Case {
            action: "orquesta-output-on-error",
            parameters: json!({}),
            status: "failed",
            check: |r| {
                let mut out = expect_errors(r, &[("task2", FAILED)]);
                out.extend(expect("output", r.output(), &json!({"progress": 25})));
                out
            },
        },
        Case {
            action: "orquesta-subworkflow",
            parameters: json!({}),
            status: "succeeded",
            check: |r| {
                let child = r
                    .nested
                    .iter()
                    .flat_map(|(_, tasks)| tasks)
                    .map(|(t, s, _)| format!("{t}:{s}"))
                    .collect::<Vec<_>>();
                holds(
                    &format!("the subworkflow ran task1..task3, each succeeded (got {child:?})"),
                    child == ["task1:succeeded", "task2:succeeded", "task3:succeeded"],
                )
            },
        },
        Case {
            action: "orquesta-rollback-retry",
            parameters: json!({}),
            status: "succeeded",
            check: |r| expect("result", &r.execution["result"], &json!({"output": null})),
        },
        Case {
            action: "orquesta-st2-ctx",
            parameters: json!({}),
            status: "succeeded",
            check: |r| {
                let id = r.execution["id"].as_str().unwrap_or_default();
                expect(
                    "output.callback",
                    &r.output()["callback"],
                    &json!(format!("http://127.0.0.1:9101/v1/executions/{id}")),
                )
            },
        },
        Case {
            action: "orquesta-test-jinja-task-functions",
            parameters: json!({}),
            status: "succeeded",
            check: task_functions,
        },
        Case {
            action: "orquesta-test-yaql-task-functions",
            parameters: json!({}),
            status: "succeeded",
            check: task_functions,
        },
        Case {
            action: "orquesta-test-action-less-tasks",
            parameters: json!({"name": "Thanos"}),
            status: "succeeded",
            check: |r| greeting(r, "THANOS, ALL YOUR BASE ARE BELONG TO US!"),
        },
        Case {
            action: "orquesta-test-jinja-data-functions",
            parameters: json!({}),
            status: "succeeded",
            check: |r| {
                let o = r.output();
                let obj = json!({"foo": {"bar": "foobar"}});
                let text = json!(r#"{"foo": {"bar": "foobar"}}"#);
                let yaml = json!("foo:\n  bar: foobar\n");
                let mut out = Vec::new();
                for (k, want) in [
                    ("data_json_str_1", &text),
                    ("data_json_obj_1", &obj),
                    ("data_yaml_str_1", &yaml),
                    ("data_json_obj_2", &obj),
                    ("data_json_str_2", &text),
                    ("data_query_1", &json!(["foobar"])),
                    ("data_pipe_str_1", &text),
                    ("data_json_obj_3", &obj),
                    ("data_yaml_str_2", &yaml),
                    ("data_json_obj_4", &obj),
                    ("data_json_str_3", &text),
                    ("data_none_str", &json!("%*****__%NONE%__*****%")),
                    ("data_str", &json!("foobar")),
                    ("data_list_str", &json!("- a: 1\n  b: 2\n- x: 3\n  y: 4\n")),
                ] {
                    out.extend(expect(&format!("output.{k}"), &o[k], want));
                }
                out
            },
        },
        Case {
            action: "orquesta-test-with-items-failure",
            parameters: json!({}),
            status: "failed",
            check: |r| holds("all 10 items ran", r.count("task1") == 10),
        },
        Case {
            action: "join-count",
            parameters: json!({}),
            status: "succeeded",
            check: |r| holds("task8 ran (join: 2)", r.count("task8") >= 1),
        },
    ]
}

/// #22 and #23: the same graph in Jinja and in YAQL.
fn task_functions(r: &Run) -> Vec<String> {
    expect(
        "output",
        r.output(),
        &json!({
            "this_task_no_arg": "task1",
            "this_task_by_name": "task1",
            "that_task_by_name": "task1",
            "last_task4_result": "False",
            "task9__1__parent": "task8__1",
            "task9__2__parent": "task8__2",
        }),
    )
}

/// One answer a corpus workflow waits for: the inquiry at the end of
/// `path` (task names, through subworkflows), answered with `response`.
struct Answer {
    path: &'static [&'static str],
    response: &'static str,
}

/// The corpus workflows that ask (`core.ask`), each with its answers, in
/// order, as INDEX.md gives them.
fn asking_cases() -> Vec<(Case, &'static [Answer])> {
    const YES: &str = r#"{"approved": true}"#;
    let finished = |r: &Run| {
        holds(
            "task finish succeeded",
            r.statuses("finish") == ["succeeded"],
        )
    };
    vec![
        (
            Case {
                action: "orquesta-ask-basic",
                parameters: json!({}),
                status: "succeeded",
                check: |r| {
                    let mut out = holds(
                        "task finish succeeded",
                        r.statuses("finish") == ["succeeded"],
                    );
                    out.extend(holds("task stop never ran", r.count("stop") == 0));
                    out
                },
            },
            &[Answer {
                path: &["get_approval"],
                response: YES,
            }],
        ),
        (
            Case {
                action: "orquesta-ask-parallel",
                parameters: json!({}),
                status: "succeeded",
                check: finished,
            },
            &[
                Answer {
                    path: &["ask_jack"],
                    response: YES,
                },
                Answer {
                    path: &["ask_jill"],
                    response: YES,
                },
            ],
        ),
        (
            Case {
                action: "orquesta-ask-nested",
                parameters: json!({}),
                status: "succeeded",
                check: |r| {
                    let child: Vec<String> = r
                        .nested
                        .iter()
                        .flat_map(|(_, tasks)| tasks)
                        .map(|(t, s, _)| format!("{t}:{s}"))
                        .collect();
                    let mut out = holds(
                        "task finish succeeded",
                        r.statuses("finish") == ["succeeded"],
                    );
                    out.extend(holds(
                        &format!("the subworkflow asked and finished (got {child:?})"),
                        child.contains(&"get_approval:succeeded".to_owned())
                            && child.contains(&"finish:succeeded".to_owned()),
                    ));
                    out
                },
            },
            &[Answer {
                path: &["get_approval", "get_approval"],
                response: YES,
            }],
        ),
        (
            Case {
                action: "orquesta_ask_multiple_parameters",
                parameters: json!({}),
                status: "succeeded",
                check: |r| {
                    let mut out = holds(
                        "task echo_extra_message succeeded",
                        r.statuses("echo_extra_message") == ["succeeded"],
                    );
                    out.extend(holds(
                        "task finish succeeded",
                        r.statuses("finish") == ["succeeded"],
                    ));
                    out
                },
            },
            &[Answer {
                path: &["get_approval"],
                response: r#"{"approved": true, "department_id": 7, "extra_output": "x"}"#,
            }],
        ),
        (
            Case {
                action: "orquesta_ask_multiple_parameters",
                parameters: json!({}),
                status: "failed",
                check: |r| {
                    let mut out = holds("task stop succeeded", r.statuses("stop") == ["succeeded"]);
                    out.extend(holds("task finish never ran", r.count("finish") == 0));
                    out
                },
            },
            &[Answer {
                path: &["get_approval"],
                response: r#"{"approved": false, "department_id": 7}"#,
            }],
        ),
    ]
}

/// Give `wf` its answers: each inquiry waits `pending` in a workflow, and
/// every workflow on the way to it is `paused`, before it is answered.
async fn answer_all(server: &Server, wf: &str, answers: &[Answer]) -> Result<(), String> {
    let admin = server.as_key(&server.key);
    for answer in answers {
        let mut at = wf.to_owned();
        let mut holding = Vec::new();
        for task in answer.path {
            holding.push(at.clone());
            let e = task_execution(server, &at, task).await;
            at = e["id"].as_str().unwrap_or_default().to_owned();
        }
        server
            .wait_for(&format!("/api/v1/executions/{at}"), |e| {
                e["status"] == "pending"
            })
            .await;
        // The innermost workflow pauses once nothing else runs in it;
        // those above, once it has.
        for id in holding.iter().rev() {
            server
                .wait_for(&format!("/api/v1/executions/{id}"), |e| {
                    e["status"] == "paused"
                })
                .await;
        }
        let (status, body) = admin
            .put(
                &format!("/api/v1/inquiries/{at}"),
                &json!({"id": at, "response": serde_json::from_str::<Value>(answer.response).unwrap_or_default()}),
            )
            .await;
        if status != 200 {
            return Err(format!(
                "answer {} to {:?}: {status} {body}",
                answer.response, answer.path
            ));
        }
    }
    Ok(())
}

/// Corpus workflows that call actions Squall does not have yet, with what
/// each waits for.
const WAITING: &[(&str, &str)] = &[
    (
        "orquesta-mock-create-vm",
        "examples.python-mock-create-vm (a Python action)",
    ),
    (
        "st2cd.st2_get_installed_version",
        "st2cd.get_distro (a Python action)",
    ),
    (
        "st2community.retrieve_data_and_send_daily_stats_to_slack",
        "st2community's Python actions, slack.chat.postMessage",
    ),
    (
        "napalm.interface_down_workflow",
        "napalm.get_interfaces, napalm.get_log, core.sendmail",
    ),
];

fn tasks_of(server: &Server, id: &str) -> Vec<(String, String, String, String)> {
    let id: ExecutionId = id.parse().expect("execution id");
    server
        .store()
        .children(&TenantId::default_tenant(), &id)
        .expect("children")
        .into_iter()
        .map(|e| {
            let name = e.context["orquesta"]["task_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (
                name,
                e.status.to_string(),
                e.action.to_string(),
                e.id.to_string(),
            )
        })
        .collect()
}

async fn run_case(server: &Server, case: &Case, answers: &[Answer]) -> Result<(), String> {
    let created = server
        .run(
            &format!("examples.{}", case.action),
            case.parameters.clone(),
        )
        .await;
    answer_all(server, created["id"].as_str().unwrap_or_default(), answers).await?;
    let execution = server.finished(&created["id"]).await;
    let id = execution["id"].as_str().unwrap_or_default().to_owned();
    let tasks = tasks_of(server, &id);
    let nested = tasks
        .iter()
        .map(|(name, _, _, child)| {
            let inner = tasks_of(server, child)
                .into_iter()
                .map(|(t, s, a, _)| (t, s, a))
                .collect::<Vec<_>>();
            (name.clone(), inner)
        })
        .filter(|(_, inner)| !inner.is_empty())
        .collect();
    let run = Run {
        execution,
        tasks: tasks.into_iter().map(|(t, s, a, _)| (t, s, a)).collect(),
        nested,
    };
    let mut problems = Vec::new();
    // `a|b`: either end is right (the case's checks tell which is when).
    let ended = run.execution["status"].as_str().unwrap_or_default();
    if !case.status.split('|').any(|s| s == ended) {
        problems.push(format!(
            "status: expected {}, got {} (result {})",
            case.status, run.execution["status"], run.execution["result"]
        ));
    }
    problems.extend((case.check)(&run));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn orquesta_conformance() {
    let corpus = corpus();
    if !corpus.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the conformance corpus is missing at {}",
            corpus.display()
        );
        eprintln!("skipped: no conformance corpus at {}", corpus.display());
        return;
    }
    // `core.local` runs on this host: the default tenant has host runners.
    let server = Server::start_with_setup(
        vec![squall_tests::core_pack(), corpus_pack(&corpus)],
        super::server::Setup {
            host: squall_reactor::HostRunners::for_tenants([TenantId::default_tenant()]),
            ..Default::default()
        },
    )
    .await;
    let mut cases: Vec<(Case, &[Answer])> = cases().into_iter().map(|c| (c, &[][..])).collect();
    cases.extend(asking_cases());
    // All at once: several wait on delays and sleeps of their own.
    let outcomes = futures_util::future::join_all(
        cases
            .iter()
            .map(|(case, answers)| run_case(&server, case, answers)),
    )
    .await;
    let mut misses = Vec::new();
    for ((case, _), outcome) in cases.iter().zip(outcomes) {
        if let Err(why) = outcome {
            misses.push(format!("  miss: {}: {why}", case.action));
        }
    }
    println!(
        "orquesta conformance: {}/{} as expected",
        cases.len() - misses.len(),
        cases.len()
    );
    for miss in &misses {
        println!("{miss}");
    }
    for (workflow, needs) in WAITING {
        println!("  waiting: {workflow}: needs {needs}");
    }
    assert!(misses.is_empty(), "{}", misses.join("\n"));
    server.stop().await;
}

/// A pack of workflows for the operations: `wf.slow` (a sleep, then an
/// echo), `wf.parent` (`wf.slow` as a subworkflow), `wf.fixable` (its
/// second task's action read from the datastore: `core.fail` until an
/// operator sets `wf_action`).
pub(crate) fn operations_pack() -> TempDir {
    let dir = squall_tests::pack_of("wf", &[]);
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(actions.join("workflows")).expect("mkdir");
    let files = [
        (
            "slow.yaml",
            "name: slow\nrunner_type: orquesta\nentry_point: workflows/slow.yaml\nparameters:\n  seconds: {type: number, default: 1}\n",
        ),
        (
            "workflows/slow.yaml",
            "version: 1.0\ninput: [seconds]\noutput:\n  - said: <% ctx(said) %>\ntasks:\n  nap:\n    action: core.sleep seconds=<% ctx(seconds) %>\n    next:\n      - when: <% succeeded() %>\n        do: speak\n  speak:\n    action: core.echo message=after\n    next:\n      - publish: said=<% result().stdout %>\n",
        ),
        (
            "parent.yaml",
            "name: parent\nrunner_type: orquesta\nentry_point: workflows/parent.yaml\nparameters:\n  seconds: {type: number, default: 60}\n",
        ),
        (
            "workflows/parent.yaml",
            "version: 1.0\ninput: [seconds]\ntasks:\n  sub:\n    action: wf.slow\n    input: {seconds: <% ctx(seconds) %>}\n",
        ),
        (
            "quick_end.yaml",
            "name: quick_end\nrunner_type: orquesta\nentry_point: workflows/quick_end.yaml\nparameters:\n  seconds: {type: number, default: 1}\n",
        ),
        (
            "workflows/quick_end.yaml",
            "version: 1.0\ninput: [seconds]\noutput:\n  - finished: <% ctx(finished) %>\ntasks:\n  nap:\n    action: core.sleep seconds=<% ctx(seconds) %>\n    next:\n      - when: <% succeeded() %>\n        do: done\n  done:\n    next:\n      - publish: finished=true\n",
        ),
        (
            "fixable.yaml",
            "name: fixable\nrunner_type: orquesta\nentry_point: workflows/fixable.yaml\n",
        ),
        (
            "workflows/fixable.yaml",
            "version: 1.0\noutput:\n  - first: <% ctx(first) %>\n  - second: <% ctx(second) %>\ntasks:\n  one:\n    action: core.echo message=one\n    next:\n      - publish: first=<% result().stdout %>\n        do: two\n  two:\n    action: <% st2kv('system.wf_action', default => 'core.fail') %>\n    input: {message: two}\n    next:\n      - when: <% succeeded() %>\n        publish: second=<% result().stdout %>\n",
        ),
    ];
    for (path, text) in files {
        std::fs::write(actions.join(path), text).expect("write");
    }
    dir
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

/// The task execution of `task` in workflow `wf`, once it exists.
pub(crate) async fn task_execution(server: &Server, wf: &str, task: &str) -> Value {
    crate::util::eventually(&format!("task {task} of {wf}"), || async {
        let (_, list) = server.get(&format!("/api/v1/executions?parent={wf}")).await;
        list.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["context"]["orquesta"]["task_name"] == task)
            .cloned()
            .ok_or_else(|| list.to_string())
    })
    .await
}

/// `PUT /api/v1/executions/{id}` with `{"status": status}` (pause, resume).
async fn set_status(client: &super::server::Client, id: &str, status: &str) -> (u16, Value) {
    client
        .put(
            &format!("/api/v1/executions/{id}"),
            &json!({ "status": status }),
        )
        .await
}

/// The statuses in `e`'s log, in order.
pub(crate) fn statuses_of(e: &Value) -> Vec<String> {
    e["log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["status"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_parent_is_paused_with_its_subworkflow_and_resuming_the_child_alone_sets_it_running()
 {
    let packs = [squall_tests::core_pack(), operations_pack()];
    let paths: Vec<_> = packs.iter().map(|d| d.path().to_owned()).collect();
    let data = tempfile::tempdir().expect("tempdir");
    let start = || async {
        Server::start_in(
            data.path(),
            &paths,
            squall_reactor::ReactorConfig::default(),
            vec![],
        )
        .await
        .expect("server starts")
    };
    let server = start().await;
    let client = server.as_key(&server.key);
    let parent = server.run("wf.parent", json!({"seconds": 1})).await;
    let parent = parent["id"].as_str().expect("id").to_owned();
    let sub = task_execution(&server, &parent, "sub").await;
    let sub = sub["id"].as_str().expect("id").to_owned();
    task_execution(&server, &sub, "nap").await;
    // Pausing the parent pauses the subworkflow once its nap ends, and
    // with it paused nothing is active: the parent is paused too.
    let (status, body) = set_status(&client, &parent, "pausing").await;
    assert_eq!(status, 200, "{body}");
    for id in [&sub, &parent] {
        server
            .wait_for(&format!("/api/v1/executions/{id}"), |e| {
                e["status"] == "paused"
            })
            .await;
    }
    // Both stay paused across a restart.
    server.stop().await;
    let server = start().await;
    let client = server.as_key(&server.key);
    for id in [&sub, &parent] {
        let (_, e) = server.get(&format!("/api/v1/executions/{id}")).await;
        assert_eq!(e["status"], "paused", "{e}");
    }
    // Resuming the subworkflow alone sets the paused parent running, and
    // both end.
    let (status, body) = set_status(&client, &sub, "resuming").await;
    assert_eq!(status, 200, "{body}");
    let done = server.finished(&json!(parent)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let log = statuses_of(&done);
    assert_eq!(
        log[log.len() - 5..],
        ["pausing", "paused", "resuming", "running", "succeeded"],
        "{log:?}"
    );
    let sub = server.finished(&json!(sub)).await;
    assert_eq!(sub["status"], "succeeded", "{sub}");
    assert_eq!(sub["result"], json!({"output": {"said": "after"}}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_workflow_that_ends_in_the_step_that_resumes_it_is_recorded_ended() {
    let server = Server::start_with(
        vec![squall_tests::core_pack(), operations_pack()],
        squall_reactor::ReactorConfig::default(),
    )
    .await;
    let client = server.as_key(&server.key);
    let wf = server.run("wf.quick_end", json!({"seconds": 1})).await;
    let wf = wf["id"].as_str().expect("id").to_owned();
    task_execution(&server, &wf, "nap").await;
    let (status, body) = set_status(&client, &wf, "pausing").await;
    assert_eq!(status, 200, "{body}");
    server
        .wait_for(&format!("/api/v1/executions/{wf}"), |e| {
            e["status"] == "paused"
        })
        .await;
    // `done` has no action: resuming runs it and ends the workflow at once.
    let (status, body) = set_status(&client, &wf, "resuming").await;
    assert_eq!(status, 200, "{body}");
    let done = server.finished(&json!(wf)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"output": {"finished": true}}));
    let log = statuses_of(&done);
    assert_eq!(
        log[log.len() - 4..],
        ["paused", "resuming", "running", "succeeded"],
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_cancel_and_re_run_from_a_task_through_the_api() {
    let server = Server::start_with(
        vec![squall_tests::core_pack(), operations_pack()],
        squall_reactor::ReactorConfig::default(),
    )
    .await;
    let client = server.as_key(&server.key);

    // Pause: `pausing` while the nap runs, `paused` after; nothing new
    // starts until resumed.
    let wf = server.run("wf.slow", json!({"seconds": 1})).await;
    let wf = wf["id"].as_str().expect("id").to_owned();
    let nap = task_execution(&server, &wf, "nap").await;
    assert_eq!(nap["parent"], wf.as_str());
    assert_eq!(nap["context"]["parent"]["execution_id"], wf.as_str());
    let (status, paused) = set_status(&client, &wf, "pausing").await;
    assert_eq!(status, 200, "{paused}");
    assert!(
        ["pausing", "paused"].contains(&paused["status"].as_str().unwrap_or_default()),
        "{paused}"
    );
    server
        .wait_for(&format!("/api/v1/executions/{wf}"), |e| {
            e["status"] == "paused"
        })
        .await;
    let (_, tasks) = server.get(&format!("/api/v1/executions?parent={wf}")).await;
    assert_eq!(ids(&tasks).len(), 1, "speak waits for the resume: {tasks}");
    let (status, resumed) = set_status(&client, &wf, "resuming").await;
    assert_eq!(status, 200, "{resumed}");
    let done = server.finished(&json!(wf)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"output": {"said": "after"}}));
    assert_eq!(done["runner"]["name"], "orquesta");
    assert_eq!(done["action"]["runner_type"], "orquesta");
    let log: Vec<&str> = done["log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["status"].as_str())
        .collect();
    for s in ["pausing", "paused", "resuming", "running", "succeeded"] {
        assert!(log.contains(&s), "{s} in {log:?}");
    }
    // Pausing what is not a workflow, or a status one cannot set: 400.
    let (status, body) = client
        .put(
            &format!("/api/v1/executions/{}", nap["id"].as_str().expect("id")),
            &json!({"status": "pausing"}),
        )
        .await;
    assert!(matches!(status, 400 | 409), "{status} {body}");
    let (status, body) = client
        .put(
            &format!("/api/v1/executions/{wf}"),
            &json!({"status": "succeeded"}),
        )
        .await;
    assert!(matches!(status, 400 | 409), "{status} {body}");

    // Cancel cascades down: parent → subworkflow → its running nap.
    let parent = server.run("wf.parent", json!({"seconds": 60})).await;
    let parent = parent["id"].as_str().expect("id").to_owned();
    let sub = task_execution(&server, &parent, "sub").await;
    let sub = sub["id"].as_str().expect("id").to_owned();
    let nap = task_execution(&server, &sub, "nap").await;
    let nap = nap["id"].as_str().expect("id").to_owned();
    server.get(&format!("/api/v1/executions/{nap}")).await;
    let (status, body) = server.delete(&format!("/api/v1/executions/{parent}")).await;
    assert_eq!(status, 200, "{body}");
    for id in [&parent, &sub, &nap] {
        let e = server.finished(&json!(id)).await;
        assert_eq!(e["status"], "canceled", "{e}");
    }
    // Cancel cascades up: the nap of another parent, canceled alone,
    // cancels its workflow and the parent.
    let parent = server.run("wf.parent", json!({"seconds": 60})).await;
    let parent = parent["id"].as_str().expect("id").to_owned();
    let sub = task_execution(&server, &parent, "sub").await;
    let sub = sub["id"].as_str().expect("id").to_owned();
    let nap = task_execution(&server, &sub, "nap").await;
    let nap = nap["id"].as_str().expect("id").to_owned();
    let (status, body) = server.delete(&format!("/api/v1/executions/{nap}")).await;
    assert_eq!(status, 200, "{body}");
    for id in [&nap, &sub, &parent] {
        let e = server.finished(&json!(id)).await;
        assert_eq!(e["status"], "canceled", "{e}");
    }

    // Children: direct ones and all descendants; parent=null lists
    // top-level executions only.
    let (_, direct) = server
        .get(&format!("/api/v1/executions/{parent}/children?depth=1"))
        .await;
    assert_eq!(ids(&direct), std::slice::from_ref(&sub));
    let (_, all) = server
        .get(&format!("/api/v1/executions/{parent}/children?depth=-1"))
        .await;
    assert_eq!(ids(&all), [sub.clone(), nap.clone()]);
    let (_, top) = server
        .get("/api/v1/executions?parent=null&limit=1000")
        .await;
    let top = ids(&top);
    assert!(top.contains(&parent) && !top.contains(&sub) && !top.contains(&nap));

    // Re-run from the failed task once its cause is fixed: `one` is not
    // run again, `two` is, and the output has both.
    let first = server.run("wf.fixable", json!({})).await;
    let first = first["id"].as_str().expect("id").to_owned();
    let failed = server.finished(&json!(first)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let (status, body) = client
        .put(
            "/api/v1/keys/wf_action",
            &json!({"name": "wf_action", "value": "core.echo"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, again) = client
        .post(
            &format!("/api/v1/executions/{first}/re_run"),
            &json!({"tasks": ["two"], "reset": ["two"], "parameters": {}}),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    let again = server.finished(&again["id"]).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(
        again["result"],
        json!({"output": {"first": "one", "second": "two"}})
    );
    assert_eq!(again["context"]["re-run"]["ref"], first.as_str());
    let id = again["id"].as_str().expect("id");
    let (_, tasks) = server.get(&format!("/api/v1/executions?parent={id}")).await;
    let names: Vec<&str> = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["context"]["orquesta"]["task_name"].as_str())
        .collect();
    assert_eq!(names, ["two"], "only two runs again");
    // A task that never ran, or a workflow still running: 400.
    let (status, body) = client
        .post(
            &format!("/api/v1/executions/{first}/re_run"),
            &json!({"tasks": ["three"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["faultstring"]
            .as_str()
            .unwrap_or_default()
            .contains("'three'"),
        "{body}"
    );
    server.stop().await;
}

const FLOW_ACTION: &str = "name: flow\nrunner_type: orquesta\nentry_point: workflows/flow.yaml\n";

/// A pack `name` whose one workflow, `<name>.flow`, is `definition`.
fn workflow_pack(name: &str, definition: &str) -> TempDir {
    let dir = squall_tests::pack_of(name, &[]);
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(actions.join("workflows")).expect("mkdir");
    std::fs::write(actions.join("flow.yaml"), FLOW_ACTION).expect("write action");
    std::fs::write(actions.join("workflows/flow.yaml"), definition).expect("write workflow");
    dir
}

const UNKNOWN_TASK: &str =
    "version: 1.0\ntasks:\n  a:\n    action: core.noop\n    next:\n      - do: b\n";

const UNREGISTERED: &str = "version: 1.0\ntasks:\n  a:\n    action: core.nope\n  b:\n    action: core.echo\n    input: {message: hi, colour: red}\n  c:\n    action: core.echo\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_workflow_is_refused_at_start_and_at_upload_naming_file_path_and_problem() {
    // At start: the definition's own problems when the pack is read...
    let core = squall_tests::core_pack();
    let broken = workflow_pack("broken", UNKNOWN_TASK);
    let (_, refused) =
        squall_reactor::PackSet::load_each(&[core.path().to_owned(), broken.path().to_owned()]);
    let file = broken.path().join("actions/workflows/flow.yaml");
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0].error.to_string(),
        format!("{}: tasks.a.next[0].do: unknown task 'b'", file.display())
    );
    // ...and its actions against the packs beside it.
    let unregistered = workflow_pack("unreg", UNREGISTERED);
    let (set, refused) = squall_reactor::PackSet::load_each(&[
        core.path().to_owned(),
        unregistered.path().to_owned(),
    ]);
    assert!(refused.is_empty());
    let (kept, refused) = squall_reactor::vet_packs(
        set,
        &crate::util::sandbox(),
        &[],
        &squall_core::template::Templates::new(),
    );
    assert!(
        kept.get(&squall_core::PackRef::new("core").expect("ref"))
            .is_some()
    );
    assert_eq!(refused.len(), 1);
    let error = refused[0].error.to_string();
    let file = unregistered.path().join("actions/workflows/flow.yaml");
    assert!(
        error.starts_with(&format!("{}: ", file.display())),
        "{error}"
    );
    for needle in [
        "tasks.a.action: action 'core.nope' is not registered",
        "tasks.b.input.colour: action 'core.echo' has no parameter 'colour'",
        "tasks.c.input: action 'core.echo' requires parameter 'message'",
    ] {
        assert!(error.contains(needle), "{needle} in {error}");
    }

    // At upload: the same problems, in the archive's terms.
    let server = Server::start_with(vec![core], squall_reactor::ReactorConfig::default()).await;
    let client = server.as_key(&server.key);
    for (name, definition, needle) in [
        (
            "broken",
            UNKNOWN_TASK,
            "tasks.a.next[0].do: unknown task 'b'",
        ),
        (
            "unreg",
            UNREGISTERED,
            "tasks.a.action: action 'core.nope' is not registered",
        ),
    ] {
        let manifest = format!("name: {name}\nversion: 1.0.0\ndescription: d\nauthor: a\n");
        let (status, body) = client
            .upload(super::packs::raw_archive(&[
                ("pack.yaml", manifest.as_bytes()),
                ("actions/flow.yaml", FLOW_ACTION.as_bytes()),
                ("actions/workflows/flow.yaml", definition.as_bytes()),
            ]))
            .await;
        assert_eq!(status, 400, "{body}");
        let fault = body["faultstring"].as_str().unwrap_or_default();
        assert!(
            fault.contains(&format!("actions/workflows/flow.yaml: {needle}")),
            "{fault}"
        );
        assert!(!fault.contains("/tmp"), "no server path in {fault}");
        let (status, _) = client.get(&format!("/api/v1/actions/{name}.flow")).await;
        assert_eq!(status, 404, "nothing of {name} installed");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_that_loops_for_ever_stops_at_its_task_limit() {
    let spin = workflow_pack(
        "spin",
        "version: 1.0\ntasks:\n  init:\n    next: [{do: again}]\n  again:\n    action: core.noop\n    next: [{do: again}]\n",
    );
    let server = Server::start_with(
        vec![squall_tests::core_pack(), spin],
        squall_reactor::ReactorConfig {
            max_workflow_tasks: 40,
            ..Default::default()
        },
    )
    .await;
    let e = server.run("spin.flow", json!({})).await;
    let e = server.finished(&e["id"]).await;
    assert_eq!(e["status"], "failed", "{e}");
    let message = e["result"]["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("limit of 40 task executions (--max-workflow-tasks)"),
        "{e}"
    );
    let (_, tasks) = server
        .get(&format!(
            "/api/v1/executions?parent={}&limit=1000",
            e["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(
        ids(&tasks).len(),
        39,
        "init has no action; 39 runs of again"
    );
    server.stop().await;
}
