//! The execution lifecycle over HTTP: transitions, delay, cancel, re-run,
//! concurrency and retry policies, notify, output and large results.

use serde_json::{Value, json};
use squall_core::time::parse_rfc3339;
use squall_reactor::ReactorConfig;
use tempfile::TempDir;

use super::server::Server;

/// The statuses in an execution's log, in order.
fn statuses(e: &Value) -> Vec<String> {
    e["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|c| c["status"].as_str().expect("status").to_owned())
        .collect()
}

/// When the execution entered `status` (its first time).
fn entered(e: &Value, status: &str) -> time::OffsetDateTime {
    let change = e["log"]
        .as_array()
        .expect("log")
        .iter()
        .find(|c| c["status"] == status)
        .unwrap_or_else(|| panic!("{status} not in {}", e["log"]));
    parse_rfc3339(change["timestamp"].as_str().expect("timestamp")).expect("rfc3339")
}

fn ms(d: time::Duration) -> i128 {
    d.whole_milliseconds()
}

/// `bad.spin` (an infinite loop), `talk.talk` (prints, sleeps, returns a
/// result of the size asked), and the core pack, plus `extra` packs.
async fn server(extra: Vec<TempDir>, config: ReactorConfig) -> Server {
    let mut packs = vec![
        squall_tests::core_pack(),
        squall_tests::pack_of("bad", &[("spin", squall_tests::LOOP, "")]),
        squall_tests::pack_of(
            "talk",
            &[(
                "talk",
                squall_tests::TALKER,
                "parameters:\n  lines: {type: integer}\n  interval_ms: {type: integer}\n  result_bytes: {type: integer}\n",
            )],
        ),
    ];
    packs.extend(extra);
    Server::start_with(packs, config).await
}

/// A pack holding only policies (and `notes.echo`, core's echo with a
/// `notify` block), plus rules.
fn policy_pack(policies: &[(&str, &str)], rules: &[(&str, &str)]) -> TempDir {
    let dir = squall_tests::pack_of(
        "limits",
        &[(
            "echo",
            squall_tests::CORE_ACTIONS,
            "parameters:\n  message: {type: string, required: true}\nnotify:\n  on-complete:\n    message: \"echo said {{ action_results.stdout }}\"\n    data: {param: \"{{ action_parameters.message }}\"}\n    routes: [chat, pager]\n  on-failure:\n    message: never\n",
        )],
    );
    for (sub, items) in [("policies", policies), ("rules", rules)] {
        if items.is_empty() {
            continue;
        }
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        for (file, text) in items {
            std::fs::write(dir.path().join(sub).join(file), text).expect("write");
        }
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn each_ending_is_logged_with_its_transitions() {
    let s = server(vec![], ReactorConfig::default()).await;
    let ok = s.run("core.echo", json!({"message": "hi"})).await;
    assert_eq!(ok["status"], "requested");
    let fail = s.run("core.fail", json!({"message": "no"})).await;
    let slow = s.run("bad.spin", json!({"timeout": 1})).await;

    let ok = s.finished(&ok["id"]).await;
    assert_eq!(
        statuses(&ok),
        ["requested", "scheduled", "running", "succeeded"]
    );
    assert_eq!(ok["result"]["stdout"], "hi");
    let fail = s.finished(&fail["id"]).await;
    assert_eq!(
        statuses(&fail),
        ["requested", "scheduled", "running", "failed"]
    );
    let slow = s.finished(&slow["id"]).await;
    assert_eq!(
        statuses(&slow),
        ["requested", "scheduled", "running", "timeout"]
    );
    // The end timestamp is the final transition's.
    assert_eq!(
        slow["end_timestamp"],
        slow["log"].as_array().expect("log").last().expect("entry")["timestamp"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn delayed_execution_waits_its_delay() {
    let s = server(vec![], ReactorConfig::default()).await;
    let e = s
        .run_with(json!({"action": "core.noop", "parameters": {}, "delay": 400}))
        .await;
    assert_eq!(e["status"], "delayed");
    assert_eq!(e["delay"], 400);
    let e = s.finished(&e["id"]).await;
    assert_eq!(
        statuses(&e),
        ["requested", "delayed", "scheduled", "running", "succeeded"]
    );
    let waited = entered(&e, "running") - entered(&e, "requested");
    assert!(ms(waited) >= 400, "ran after {waited}");
    s.stop().await;
}

/// The first event of the execution that a rule requests for a post to
/// webhook `hook`.
async fn first_event_of(
    s: &Server,
    events: &mut tokio::sync::broadcast::Receiver<squall_reactor::ExecutionEvent>,
    hook: &str,
) -> squall_reactor::ExecutionEvent {
    let r = s
        .post(&format!("/api/v1/webhooks/{hook}"), &json!({}))
        .await;
    assert_eq!(r.status().as_u16(), 202, "{hook}");
    let instance = r.headers()["st2-trigger-instance-id"]
        .to_str()
        .expect("instance id")
        .to_owned();
    let first = async {
        loop {
            let event = events.recv().await.expect("events");
            if event.execution.trigger_instance_id.as_deref() == Some(instance.as_str()) {
                return event;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), first)
        .await
        .unwrap_or_else(|_| panic!("no event for the execution of webhook {hook}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_rules_execution_starts_in_its_recording_write_while_a_worker_is_idle() {
    let rule = |name: &str, action: &str| {
        format!(
            "name: {name}\npack: limits\nenabled: true\ntrigger: {{type: core.st2.webhook, parameters: {{url: {name}}}}}\naction: {action}\n"
        )
    };
    let policy = "name: sleep.concurrency\nresource_ref: core.sleep\npolicy_type: action.concurrency\nparameters: {action: delay, threshold: 5}\n";
    let (now, gated) = (
        rule("now", "{ref: core.echo, parameters: {message: hi}}"),
        rule("gated", "{ref: core.sleep, parameters: {seconds: 0}}"),
    );
    let pack = policy_pack(
        &[("c.yaml", policy)],
        &[("now.yaml", &now), ("gated.yaml", &gated)],
    );
    let config = ReactorConfig {
        workers: 2,
        ..ReactorConfig::default()
    };
    let s = server(vec![pack], config).await;
    let mut events = s.events();
    let hold = || async {
        let e = s.run("bad.spin", json!({"timeout": 600})).await;
        let id = e["id"].as_str().expect("id").to_owned();
        s.wait_for(&format!("/api/v1/executions/{id}"), |e| {
            e["status"] == "running"
        })
        .await;
        id
    };
    let first = hold().await;

    // One worker idle: recorded running, by the write that records it.
    let event = first_event_of(&s, &mut events, "now").await;
    assert_eq!(event.kind, squall_reactor::ExecutionEventKind::Create);
    assert_eq!(event.execution.status.as_str(), "running");
    let e = s.finished(&json!(event.execution.id.as_str())).await;
    assert_eq!(
        statuses(&e),
        ["requested", "scheduled", "running", "succeeded"]
    );

    // Behind a concurrency policy: recorded requested, and admitted.
    let event = first_event_of(&s, &mut events, "gated").await;
    assert_eq!(event.execution.status.as_str(), "requested");
    let e = s.finished(&json!(event.execution.id.as_str())).await;
    assert_eq!(e["status"], "succeeded");

    // No worker idle: recorded requested, and run once one is free.
    let second = hold().await;
    let event = first_event_of(&s, &mut events, "now").await;
    assert_eq!(event.execution.status.as_str(), "requested");
    let waiting = json!(event.execution.id.as_str());
    cancel_all(&s, &[first, second]).await;
    let e = s.finished(&waiting).await;
    assert_eq!(
        statuses(&e),
        ["requested", "scheduled", "running", "succeeded"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn executions_started_by_their_recording_write_keep_to_the_workers() {
    let rule = "name: now\npack: limits\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: now}}\naction: {ref: core.sleep, parameters: {seconds: 0.2}}\n";
    let pack = policy_pack(&[], &[("now.yaml", rule)]);
    let config = ReactorConfig {
        workers: 2,
        ..ReactorConfig::default()
    };
    let s = server(vec![pack], config).await;
    // Webhooks (started by their recording write while a worker is idle)
    // and API requests (queued), all at once.
    let hook = || async {
        let r = s.post("/api/v1/webhooks/now", &json!({})).await;
        assert_eq!(r.status().as_u16(), 202);
        json!(
            r.headers()["st2-trigger-instance-id"]
                .to_str()
                .expect("instance id")
        )
    };
    let hooks = (0..8).map(|_| hook()).collect();
    let runs = (0..8)
        .map(|_| s.run("core.sleep", json!({"seconds": 0.2})))
        .collect();
    let (instances, runs) = tokio::join!(join_all(hooks), join_all(runs));
    let mut all = Vec::new();
    for e in &runs {
        all.push(s.finished(&e["id"]).await);
    }
    for instance in &instances {
        let instance = instance.as_str().expect("id");
        let listed = s
            .wait_for(
                &format!("/api/v1/executions?trigger_instance={instance}"),
                |l| l.as_array().is_some_and(|a| !a.is_empty()),
            )
            .await;
        all.push(s.finished(&listed[0]["id"]).await);
    }
    assert!(all.iter().all(|e| e["status"] == "succeeded"), "{all:?}");
    assert!(
        max_overlap(&all) <= 2,
        "never more than the two workers at once"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn cancel_stops_a_running_infinite_loop_promptly() {
    let s = server(vec![], ReactorConfig::default()).await;
    // Its timeout far away: only the cancel can end it.
    let e = s.run("bad.spin", json!({"timeout": 600})).await;
    let id = e["id"].as_str().expect("id").to_owned();
    s.wait_for(&format!("/api/v1/executions/{id}"), |e| {
        e["status"] == "running"
    })
    .await;
    let asked = std::time::Instant::now();
    let (status, canceling) = s.delete(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(status, 200, "{canceling}");
    assert_eq!(canceling["status"], "canceling");
    let e = s.finished(&json!(id)).await;
    let observed = asked.elapsed();
    assert_eq!(e["status"], "canceled");
    assert_eq!(
        statuses(&e),
        ["requested", "scheduled", "running", "canceling", "canceled"]
    );
    // Ended by the cancel (its timeout was 600 s away), within an epoch
    // tick or so: printed, not asserted.
    let took = entered(&e, "canceled") - entered(&e, "canceling");
    println!("canceled {took} after the request (observed by polling: {observed:?})");
    assert_eq!(e["result"]["error"], "canceled while running");

    // A completed execution cannot be canceled; the error says why.
    let (status, body) = s.delete(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(status, 409);
    assert!(
        body["faultstring"]
            .as_str()
            .expect("faultstring")
            .contains("already ended as canceled"),
        "{body}"
    );
    let (status, _) = s.delete("/api/v1/executions/0000000000000000").await;
    assert_eq!(status, 404);
    // The host keeps working.
    let ok = s.run("core.noop", json!({})).await;
    assert_eq!(s.finished(&ok["id"]).await["status"], "succeeded");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn cancel_of_a_waiting_execution_ends_it_before_it_runs() {
    let s = server(vec![], ReactorConfig::default()).await;
    // Delayed 5 s (the cancel comes long before), and a witness delayed a
    // little longer that is not canceled.
    let e = s
        .run_with(json!({"action": "core.noop", "parameters": {}, "delay": 5000}))
        .await;
    let witness = s
        .run_with(json!({"action": "core.noop", "parameters": {}, "delay": 5500}))
        .await;
    let id = e["id"].as_str().expect("id");
    let (status, canceled) = s.delete(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(canceled["status"], "canceled");
    // Past its delay (the witness ran) it still never runs.
    assert_eq!(s.finished(&witness["id"]).await["status"], "succeeded");
    let (_, e) = s.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(statuses(&e), ["requested", "delayed", "canceled"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn re_run_uses_the_original_parameters_with_overrides() {
    let s = server(vec![], ReactorConfig::default()).await;
    let first = s.run("core.echo", json!({"message": "first"})).await;
    let first = s.finished(&first["id"]).await;
    let id = first["id"].as_str().expect("id");

    let r = s
        .post(
            &format!("/api/v1/executions/{id}/re_run"),
            &json!({"parameters": {"message": "second"}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let again: Value = r.json().await.expect("json");
    assert_ne!(again["id"], first["id"]);
    assert_eq!(again["context"]["re-run"]["ref"], id);
    let again = s.finished(&again["id"]).await;
    assert_eq!(again["result"]["stdout"], "second");

    // Without overrides: the same parameters.
    let r = s
        .post(&format!("/api/v1/executions/{id}/re_run"), &json!({}))
        .await;
    let same: Value = r.json().await.expect("json");
    assert_eq!(s.finished(&same["id"]).await["result"]["stdout"], "first");

    // Bad overrides are refused, naming the parameter; nothing is recorded.
    let r = s
        .post(
            &format!("/api/v1/executions/{id}/re_run"),
            &json!({"parameters": {"mesage": "typo"}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["faultstring"]
            .as_str()
            .expect("fault")
            .contains("mesage"),
        "{body}"
    );
    let r = s
        .post("/api/v1/executions/0000000000000000/re_run", &json!({}))
        .await;
    assert_eq!(r.status().as_u16(), 404);
    s.stop().await;
}

/// How many of `executions` ran at once, at most, from their records.
pub(crate) fn max_overlap(executions: &[Value]) -> usize {
    let mut edges: Vec<(time::OffsetDateTime, i32)> = Vec::new();
    for e in executions {
        if statuses(e).iter().any(|s| s == "running") {
            edges.push((entered(e, "running"), 1));
            edges.push((
                parse_rfc3339(e["end_timestamp"].as_str().expect("ended")).expect("rfc3339"),
                -1,
            ));
        }
    }
    // Ends sort before starts at the same instant.
    edges.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// `n` executions of `core.sleep` that run until canceled, each running
/// (they hold their slots for as long as a test needs).
async fn holders(s: &Server, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let e = s
            .run("core.sleep", json!({"seconds": 600, "timeout": 600}))
            .await;
        ids.push(e["id"].as_str().expect("id").to_owned());
    }
    let c = s.as_key(&s.key);
    for id in &ids {
        c.running(id).await;
    }
    ids
}

/// Cancel `ids` and wait for each to end.
async fn cancel_all(s: &Server, ids: &[String]) -> Vec<Value> {
    for id in ids {
        let (status, body) = s.delete(&format!("/api/v1/executions/{id}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut done = Vec::new();
    for id in ids {
        done.push(s.finished(&json!(id)).await);
    }
    done
}

/// `held` holders running, then `more` short `core.sleep`s requested at
/// once; each of those must reach `waiting` (a lasting status while the
/// holders run), then the holders are canceled and everything ends.
/// Returns the holders' records, then the others'.
async fn behind_holders(s: &Server, held: usize, more: usize, waiting: &str) -> Vec<Value> {
    let holders = holders(s, held).await;
    // All requests are in flight before any answer is awaited.
    let requests = (0..more)
        .map(|_| s.run("core.sleep", json!({"seconds": 0.2})))
        .collect();
    let created = join_all(requests).await;
    let mut others = Vec::new();
    for e in &created {
        let id = e["id"].as_str().expect("id");
        let e = s
            .wait_for(&format!("/api/v1/executions/{id}"), |e| {
                e["status"] == waiting
            })
            .await;
        others.push(e["id"].clone());
    }
    let mut all = cancel_all(s, &holders).await;
    for id in &others {
        all.push(s.finished(id).await);
    }
    all
}

/// Poll every future until all are ready.
async fn join_all<F: Future<Output = Value>>(fs: Vec<F>) -> Vec<Value> {
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<Value>> = vec![None; pinned.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("ready")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn concurrency_policy_delays_beyond_its_threshold() {
    let policy = "name: sleep.concurrency\nresource_ref: core.sleep\npolicy_type: action.concurrency\nparameters: {action: delay, threshold: 2}\n";
    let s = server(
        vec![policy_pack(&[("c.yaml", policy)], &[])],
        ReactorConfig::default(),
    )
    .await;
    let done = behind_holders(&s, 2, 8, "delayed").await;
    assert!(
        done[2..].iter().all(|e| e["status"] == "succeeded"),
        "the eight waiting run once the two are gone: {done:?}"
    );
    assert_eq!(max_overlap(&done), 2, "never more than two at once");

    // The policy is listed in StackStorm's shape.
    let (status, policies) = s.get("/api/v1/policies?resource_ref=core.sleep").await;
    assert_eq!(status, 200);
    assert_eq!(policies[0]["ref"], "limits.sleep.concurrency");
    assert_eq!(policies[0]["policy_type"], "action.concurrency");
    let (_, types) = s.get("/api/v1/policytypes").await;
    assert_eq!(types.as_array().map(Vec::len), Some(3));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn concurrency_policy_cancels_beyond_its_threshold() {
    let s = server(vec![policy_pack(&[], &[])], ReactorConfig::default()).await;
    // Created through the API this time.
    let r = s
        .post(
            "/api/v1/policies",
            &json!({"name": "sleep.cap", "pack": "limits", "resource_ref": "core.sleep",
                    "policy_type": "action.concurrency",
                    "parameters": {"action": "cancel", "threshold": 2}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 201);
    // Two hold the slots; the eight more are canceled as they come.
    let done = behind_holders(&s, 2, 8, "canceled").await;
    for held in &done[..2] {
        assert_eq!(
            statuses(held),
            ["requested", "scheduled", "running", "canceling", "canceled"]
        );
    }
    let canceled = &done[2];
    assert!(
        done[2..]
            .iter()
            .all(|e| statuses(e) == ["requested", "canceled"]),
        "{done:?}"
    );
    assert!(
        canceled["result"]["error"]
            .as_str()
            .expect("error")
            .contains("limits.sleep.cap"),
        "{canceled}"
    );
    // A bad policy is refused naming the field.
    let r = s
        .post(
            "/api/v1/policies",
            &json!({"name": "x", "resource_ref": "core.sleep", "policy_type": "action.concurrency",
                    "parameters": {"threshold": 0}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["faultstring"]
            .as_str()
            .expect("fault")
            .contains("parameters.threshold"),
        "{body}"
    );
    s.stop().await;
}

/// Every execution whose context says it retries `id`, followed to the end.
async fn retries_of(s: &Server, action: &str, count: usize) -> Vec<Value> {
    let list = s
        .wait_for(&format!("/api/v1/executions?action={action}"), |l| {
            l.as_array().is_some_and(|a| {
                a.len() == count
                    && a.iter().all(|e| {
                        e["status"]
                            .as_str()
                            .and_then(|s| s.parse::<squall_core::ExecutionStatus>().ok())
                            .is_some_and(|s| s.is_completed())
                    })
            })
        })
        .await;
    let mut all = list.as_array().expect("list").clone();
    all.reverse(); // oldest first
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn retry_policy_retries_failures_up_to_its_count() {
    let policy = "name: fail.retry\nresource_ref: core.fail\npolicy_type: action.retry\nparameters: {retry_on: failure, max_retry_count: 2, delay: 0.2}\n";
    let s = server(
        vec![policy_pack(&[("r.yaml", policy)], &[])],
        ReactorConfig::default(),
    )
    .await;
    let first = s.run("core.fail", json!({"message": "flaky"})).await;
    let all = retries_of(&s, "core.fail", 3).await;
    assert_eq!(all[0]["id"], first["id"]);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["status"], "failed");
        assert_eq!(e["parameters"]["message"], "flaky");
        if i > 0 {
            let retry = &e["context"]["policies"]["retry"];
            assert_eq!(retry["retry_count"], i);
            assert_eq!(retry["applied_policy"], "limits.fail.retry");
            assert_eq!(retry["retried_liveaction_id"], all[i - 1]["id"]);
            assert!(statuses(e).contains(&"delayed".to_owned()));
            let gap = entered(e, "running") - entered(&all[i - 1], "failed");
            assert!(ms(gap) >= 200, "retried {gap} after the failure");
        }
    }
    // Three: a retry is written with the end of what it retries, so a
    // fourth would be there already.
    let (_, list) = s.get("/api/v1/executions?action=core.fail").await;
    assert_eq!(list.as_array().map(Vec::len), Some(3));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn retry_policy_retries_timeouts() {
    let policy = "name: spin.retry\nresource_ref: bad.spin\npolicy_type: action.retry\nparameters: {retry_on: timeout, max_retry_count: 1}\n";
    let s = server(
        vec![policy_pack(&[("r.yaml", policy)], &[])],
        ReactorConfig::default(),
    )
    .await;
    s.run("bad.spin", json!({"timeout": 1})).await;
    let all = retries_of(&s, "bad.spin", 2).await;
    assert!(all.iter().all(|e| e["status"] == "timeout"), "{all:?}");
    assert_eq!(all[1]["context"]["policies"]["retry"]["retry_count"], 1);
    assert_eq!(all[1]["parameters"]["timeout"], 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn notify_emits_notifytriggers_that_rules_can_use() {
    let rule = "name: page_it\npack: limits\nenabled: true\ntrigger: {type: core.st2.generic.notifytrigger}\ncriteria:\n  trigger.route: {type: equals, pattern: pager}\naction:\n  ref: core.echo\n  parameters: {message: \"paged: {{ trigger.message }} / {{ trigger.data.param }}\"}\n";
    let s = server(
        vec![policy_pack(&[], &[("page.yaml", rule)])],
        ReactorConfig::default(),
    )
    .await;
    let e = s
        .run_with(json!({"action": "limits.echo", "parameters": {"message": "hello"}, "trace_tag": "notes-1"}))
        .await;
    assert_eq!(s.finished(&e["id"]).await["status"], "succeeded");
    let paged = s
        .wait_for("/api/v1/executions?action=core.echo", |l| {
            l.as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["status"] == "succeeded")
        })
        .await;
    assert_eq!(
        paged[0]["result"]["stdout"],
        "paged: echo said hello / hello"
    );
    // One notifytrigger per route, on the execution's trace; on-failure
    // did not apply.
    let (_, notified) = s
        .get("/api/v1/triggerinstances?trigger=core.st2.generic.notifytrigger")
        .await;
    let notified = notified.as_array().expect("list");
    assert_eq!(notified.len(), 2, "{notified:?}");
    let mut routes: Vec<_> = notified
        .iter()
        .map(|t| t["payload"]["route"].as_str().expect("route"))
        .collect();
    routes.sort();
    assert_eq!(routes, ["chat", "pager"]);
    assert!(
        notified
            .iter()
            .all(|t| t["payload"]["message"] == "echo said hello"
                && t["payload"]["status"] == "succeeded")
    );
    let (_, trace) = s.get("/api/v1/traces/notes-1").await;
    let traced = trace["trigger_instances"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|t| t["ref"] == "core.st2.generic.notifytrigger")
        .count();
    assert_eq!(traced, 2, "{trace}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn output_is_readable_while_running_and_after() {
    let s = server(vec![], ReactorConfig::default()).await;
    // One line, then a long wait: readable while it runs.
    let e = s
        .run(
            "talk.talk",
            json!({"lines": 2, "interval_ms": 600_000, "timeout": 600}),
        )
        .await;
    let id = e["id"].as_str().expect("id").to_owned();
    let url = format!(
        "{}/api/v1/executions/{id}/output?output_type=stdout",
        s.base
    );
    crate::util::eventually("output readable while running", || async {
        let r = s.http.get(&url).send().await.expect("request");
        let status = r.headers()["X-Execution-Status"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let text = r.text().await.expect("text");
        if status == "running" && text.contains("line 0") && !text.contains("line 1") {
            Ok(())
        } else {
            Err(format!("{status}: {text:?}"))
        }
    })
    .await;
    cancel_all(&s, std::slice::from_ref(&id)).await;

    // All of it, after the end.
    let e = s.run("talk.talk", json!({"lines": 30})).await;
    let id = e["id"].as_str().expect("id").to_owned();
    s.finished(&json!(id)).await;
    let text = s
        .http
        .get(format!("{}/api/v1/executions/{id}/output", s.base))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(text.starts_with("line 0\n"), "{text}");
    assert!(text.contains("line 29\nerr 0\n"), "{text}");
    assert!(text.ends_with("[info] talking 30 lines\n"), "{text}");
    let r = s
        .http
        .get(format!(
            "{}/api/v1/executions/{id}/output?output_type=bogus",
            s.base
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn large_results_are_kept_and_oversized_ones_fail_clearly() {
    // Test limits allow 1 MiB results.
    let s = server(vec![], ReactorConfig::default()).await;
    let ok = s
        .run("talk.talk", json!({"result_bytes": 900 * 1024}))
        .await;
    let ok = s.finished(&ok["id"]).await;
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(
        ok["result"]["data"].as_str().map(str::len),
        Some(900 * 1024)
    );
    let big = s
        .run("talk.talk", json!({"result_bytes": 2 * 1024 * 1024}))
        .await;
    let big = s.finished(&big["id"]).await;
    assert_eq!(big["status"], "failed");
    let error = big["result"]["error"].as_str().expect("error");
    assert!(error.contains("over the limit of 1048576 bytes"), "{error}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn tenant_limit_holds_running_executions() {
    let config = ReactorConfig {
        tenant_max_running: Some(3),
        ..ReactorConfig::default()
    };
    let s = server(vec![], config).await;
    let done = behind_holders(&s, 3, 7, "delayed").await;
    assert!(
        done[3..].iter().all(|e| e["status"] == "succeeded"),
        "{done:?}"
    );
    assert_eq!(max_overlap(&done), 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn bad_execution_requests_are_refused_and_nothing_is_recorded() {
    let s = server(vec![], ReactorConfig::default()).await;
    for (body, status, needle) in [
        (json!({"action": "core.nope"}), 404, "core.nope"),
        (json!({"action": "nodot"}), 400, "action"),
        (
            json!({"action": "core.echo", "parameters": {}}),
            400,
            "message",
        ),
        (
            json!({"action": "core.echo", "parameters": {"message": 5}}),
            400,
            "message",
        ),
        (json!({"parameters": {}}), 400, "action"),
    ] {
        let r = s.post("/api/v1/executions", &body).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        let fault: Value = r.json().await.expect("json");
        assert!(
            fault["faultstring"]
                .as_str()
                .expect("fault")
                .contains(needle),
            "{body}: {fault}"
        );
    }
    let (_, list) = s.get("/api/v1/executions").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn deleting_a_policy_releases_its_waiters() {
    let s = server(vec![policy_pack(&[], &[])], ReactorConfig::default()).await;
    let r = s
        .post(
            "/api/v1/policies",
            &json!({"name": "one", "pack": "limits", "resource_ref": "core.sleep",
                    "policy_type": "action.concurrency", "parameters": {"threshold": 1}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 201);
    // One holds the slot, three wait; all run until canceled.
    let mut ids = holders(&s, 1).await;
    for _ in 0..3 {
        let e = s
            .run("core.sleep", json!({"seconds": 600, "timeout": 600}))
            .await;
        ids.push(e["id"].as_str().expect("id").to_owned());
    }
    s.wait_for("/api/v1/executions?status=delayed", |l| {
        l.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    let r = s
        .http
        .delete(format!("{}/api/v1/policies/limits.one", s.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 204);
    // Released: all four run.
    let c = s.as_key(&s.key);
    for id in &ids {
        c.running(id).await;
    }
    let done = cancel_all(&s, &ids).await;
    // Without the policy the three waiters ran together.
    assert_eq!(max_overlap(&done[1..]), 3);
    let (status, body) = s.delete("/api/v1/policies/limits.one").await;
    assert_eq!(status, 404);
    assert!(
        body["faultstring"]
            .as_str()
            .expect("fault")
            .starts_with("policy 'limits.one'"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn throttled_matches_are_suppressed_and_recorded() {
    let rule = "name: page\npack: limits\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: alerts}}\naction: {ref: core.noop}\nthrottle: {seconds: 60, key: '{{ trigger.body.host }}'}\n";
    let s = server(
        vec![policy_pack(&[], &[("page.yaml", rule)])],
        ReactorConfig::default(),
    )
    .await;
    let mut instances = Vec::new();
    for host in ["a", "a", "b"] {
        let r = s
            .post("/api/v1/webhooks/alerts", &json!({"host": host}))
            .await;
        assert_eq!(r.status().as_u16(), 202);
        instances.push(
            r.headers()["St2-Trigger-Instance-Id"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
    }
    let mut enforcements = Vec::new();
    for id in &instances {
        let (_, list) = s
            .get(&format!("/api/v1/ruleenforcements?trigger_instance={id}"))
            .await;
        enforcements.push(list[0].clone());
    }
    let first = enforcements[0].clone();
    assert_eq!(first["status"], "succeeded", "{first}");
    let second = enforcements[1].clone();
    assert_eq!(second["status"], "failed", "{second}");
    let reason = second["failure_reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("suppressed by throttle: at most one enforcement per 60 s for key 'a'"),
        "{reason}"
    );
    assert!(second["execution_id"].is_null());
    let third = enforcements[2].clone();
    assert_eq!(
        third["status"], "succeeded",
        "another key has its own window: {third}"
    );
    s.wait_for("/api/v1/executions?action=core.noop", |l| {
        l.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    // Matches of one key arriving together open one window: one of them
    // requests an execution.
    let body = json!({"host": "c"});
    let together = (0..8).map(|_| s.post("/api/v1/webhooks/alerts", &body));
    for r in futures_util::future::join_all(together).await {
        assert_eq!(r.status().as_u16(), 202);
    }
    let enforcements = s
        .wait_for("/api/v1/ruleenforcements?limit=100", |l| {
            l.as_array().is_some_and(|a| a.len() == 11)
        })
        .await;
    let succeeded = enforcements
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, 3, "{enforcements}");
    // A bad throttle is refused naming the field.
    let r = s
        .post(
            "/api/v1/rules",
            &json!({"name": "x", "pack": "limits", "trigger": {"type": "core.st2.webhook"},
                    "action": {"ref": "core.noop"}, "throttle": {"seconds": 0}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["faultstring"]
            .as_str()
            .expect("fault")
            .contains("throttle.seconds"),
        "{body}"
    );
    s.stop().await;
}
