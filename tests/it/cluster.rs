//! Nodes on one PostgreSQL database (compiled under `on_postgres` only):
//! what is changed through one node comes into force on the others.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use squall_reactor::install::archive_pack;
use squall_reactor::{ClusterNode, ReactorConfig};
use tempfile::TempDir;

use super::server::{Client, Server};

/// `n` nodes on one database, each with a data directory of its own and
/// the packs at `packs`.
async fn nodes(n: usize, packs: &[PathBuf]) -> (Vec<TempDir>, Vec<Server>) {
    let mut dirs: Vec<TempDir> = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..n {
        let (data, server) = node_beside(dirs.first(), packs, ReactorConfig::default()).await;
        dirs.push(data);
        servers.push(server);
    }
    (dirs, servers)
}

/// A node with a data directory of its own and the packs at `packs`, on
/// the database of the node whose data is `first` (else a new one).
async fn node_beside(
    first: Option<&TempDir>,
    packs: &[PathBuf],
    config: ReactorConfig,
) -> (TempDir, Server) {
    let data = tempfile::tempdir().expect("tempdir");
    if let Some(first) = first {
        std::fs::copy(
            first.path().join("database-url"),
            data.path().join("database-url"),
        )
        .expect("the first node's database");
    }
    let server = Server::start_in(data.path(), packs, config, vec![])
        .await
        .expect("node starts");
    (data, server)
}

/// Run `action` through `node` once it knows it, and its result once it
/// ends.
async fn result_on(node: &Client, action: &str, what: &str) -> Value {
    let id = crate::util::eventually(what, || async {
        let (status, e) = node
            .post("/api/v1/executions", &json!({"action": action}))
            .await;
        match (status, e["id"].as_str()) {
            (201, Some(id)) => Ok(id.to_owned()),
            _ => Err(format!("{status}: {e}")),
        }
    })
    .await;
    node.finished(&id).await["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_changes_comes_into_force_on_the_other() {
    let core = squall_tests::core_pack();
    let hooks = squall_tests::rules_pack("hooks", super::server::RULES);
    let packs = [core.path().to_owned(), hooks.path().to_owned()];
    let (_dirs, servers) = nodes(2, &packs).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (on_a, on_b) = (a.as_key(&a.key), b.as_key(&b.key));

    // A rule made through a matches the webhooks b takes.
    let rule = json!({"name": "relay", "pack": "hooks", "enabled": true,
        "trigger": {"type": "core.st2.webhook", "parameters": {"url": "relay"}},
        "action": {"ref": "core.echo", "parameters": {"message": "relayed {{ trigger.body.n }}"}}});
    let (status, body) = on_a.post("/api/v1/rules", &rule).await;
    assert_eq!(status, 201, "{body}");
    let mut n = 0;
    let ran = crate::util::eventually("b matching a's rule", || {
        n += 1;
        let (b, n) = (&b, n);
        async move {
            let r = b.post("/api/v1/webhooks/relay", &json!({"n": n})).await;
            // No rule of b's takes it yet: 404.
            let Some(instance) = r.headers().get("St2-Trigger-Instance-Id") else {
                return Err(format!("{}", r.status()));
            };
            let instance = instance.to_str().expect("ascii").to_owned();
            let processed = b
                .wait_for(&format!("/api/v1/triggerinstances/{instance}"), |t| {
                    t["status"] == "processed"
                })
                .await;
            let (_, executions) = b
                .get(&format!("/api/v1/executions?trigger_instance={instance}"))
                .await;
            match executions.as_array().and_then(|a| a.first()) {
                Some(e) => Ok(e["id"].as_str().expect("id").to_owned()),
                None => Err(format!("not matched: {processed}")),
            }
        }
    })
    .await;
    let relayed = on_b.finished(&ran).await;
    assert_eq!(
        relayed["result"]["stdout"],
        format!("relayed {n}"),
        "{relayed}"
    );

    // A pack uploaded through a runs on b, and a config set through a is
    // the one b's executions get.
    let swap = super::packs::swap_pack("v1");
    let (status, body) = on_a
        .upload(archive_pack(swap.path()).expect("archive"))
        .await;
    assert_eq!(status, 201, "{body}");
    let first = result_on(&on_b, "swap.go", "b running the uploaded pack").await;
    assert_eq!(first["version"], "v1", "{first}");
    let (status, body) = on_a
        .put("/api/v1/configs/swap", &json!({"version": "set-on-a"}))
        .await;
    assert_eq!(status, 200, "{body}");
    crate::util::eventually("b using the config set through a", || async {
        let result = result_on(&on_b, "swap.go", "swap.go on b").await;
        match result["version"] == "set-on-a" {
            true => Ok(()),
            false => Err(result.to_string()),
        }
    })
    .await;

    // A rule deleted through b no longer matches on a.
    let (status, body) = on_b.delete("/api/v1/rules/hooks.relay").await;
    assert_eq!(status, 204, "{body}");
    crate::util::eventually("a dropping the rule deleted through b", || async {
        let r = a.post("/api/v1/webhooks/relay", &json!({"n": 0})).await;
        // No rule takes it: 404.
        let Some(instance) = r.headers().get("St2-Trigger-Instance-Id") else {
            return Ok(());
        };
        let instance = instance.to_str().expect("ascii").to_owned();
        a.wait_for(&format!("/api/v1/triggerinstances/{instance}"), |t| {
            t["status"] == "processed"
        })
        .await;
        let (_, executions) = a
            .get(&format!("/api/v1/executions?trigger_instance={instance}"))
            .await;
        match executions.as_array().map(Vec::len) {
            Some(0) => Ok(()),
            _ => Err(executions.to_string()),
        }
    })
    .await;
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_executions_are_taken_over_and_a_live_nodes_left_alone() {
    let core = squall_tests::core_pack();
    let packs = [core.path().to_owned()];
    // Claims that run out 6 s after their node last renewed them (renewed
    // every second).
    let config = || ReactorConfig {
        cluster: Some(ClusterNode {
            name: String::new(),
            claim_ttl: Duration::from_secs(6),
            leads: true,
        }),
        ..ReactorConfig::default()
    };
    let (first, a) = node_beside(None, &packs, config()).await;
    let on_a = a.as_key(&a.key);
    let request = async |body: Value| {
        let (status, e) = on_a.post("/api/v1/executions", &body).await;
        assert_eq!(status, 201, "{e}");
        e["id"].as_str().expect("id").to_owned()
    };
    let sleeping = request(json!({"action": "core.sleep", "parameters": {"seconds": 600}})).await;
    on_a.running(&sleeping).await;
    // Ends (on a) after more than two of the claims' lifetimes.
    let later = request(json!({"action": "core.noop", "parameters": {}, "delay": 14000})).await;

    // b starts beside a, which is alive: a's executions stay a's, however
    // long (a renews its claims).
    let (_second, b) = node_beside(Some(&first), &packs, config()).await;
    let on_b = b.as_key(&b.key);
    let ran = on_b.finished(&later).await;
    assert_eq!(ran["status"], "succeeded", "{ran}");
    let (_, still) = on_b.get(&format!("/api/v1/executions/{sleeping}")).await;
    assert_eq!(still["status"], "running", "a is alive: {still}");

    // a dies, leaving an action running and one waiting: b takes both
    // over once a's claims ran out.
    let waiting = request(
        json!({"action": "core.echo", "parameters": {"message": "taken over"}, "delay": 3000}),
    )
    .await;
    a.kill().await;
    let ended = on_b.finished(&sleeping).await;
    assert_eq!(ended["status"], "abandoned", "{ended}");
    let resumed = on_b.finished(&waiting).await;
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    assert_eq!(resumed["result"]["stdout"], "taken over", "{resumed}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_another_node_reaches_the_node_running_it() {
    let core = squall_tests::core_pack();
    let (_dirs, servers) = nodes(2, &[core.path().to_owned()]).await;
    let (on_a, on_b) = (
        servers[0].as_key(&servers[0].key),
        servers[1].as_key(&servers[1].key),
    );
    let (status, e) = on_a
        .post(
            "/api/v1/executions",
            &json!({"action": "core.sleep", "parameters": {"seconds": 600}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_owned();
    on_a.running(&id).await;
    // b does not run it: a, which does, interrupts its guest.
    let (status, canceling) = on_b.delete(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(status, 200, "{canceling}");
    assert_eq!(canceling["status"], "canceling", "{canceling}");
    let ended = on_b.finished(&id).await;
    assert_eq!(ended["status"], "canceled", "{ended}");
    // Ended: refused the same through either node.
    for node in [&on_a, &on_b] {
        let (status, body) = node.delete(&format!("/api/v1/executions/{id}")).await;
        assert_eq!(status, 409, "{body}");
    }
    for s in servers {
        s.stop().await;
    }
}

/// `slow.hold`: a workflow whose one task sleeps for ten minutes.
fn slow_pack() -> TempDir {
    let dir = squall_tests::pack_of("slow", &[]);
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(actions.join("workflows")).expect("mkdir");
    for (path, text) in [
        (
            "hold.yaml",
            "name: hold\nrunner_type: orquesta\nentry_point: workflows/hold.yaml\n",
        ),
        (
            "workflows/hold.yaml",
            "version: 1.0\ntasks:\n  wait:\n    action: core.sleep seconds=600\n",
        ),
    ] {
        std::fs::write(actions.join(path), text).expect("write");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_or_a_pause_through_another_node_reaches_the_workflows_node() {
    let (core, ask, slow) = (
        squall_tests::core_pack(),
        super::inquiries::ask_pack(),
        slow_pack(),
    );
    let packs = [
        core.path().to_owned(),
        ask.path().to_owned(),
        slow.path().to_owned(),
    ];
    let (_dirs, servers) = nodes(2, &packs).await;
    let (on_a, on_b) = (
        servers[0].as_key(&servers[0].key),
        servers[1].as_key(&servers[1].key),
    );
    let start = async |body: Value| {
        let (status, e) = on_a.post("/api/v1/executions", &body).await;
        assert_eq!(status, 201, "{e}");
        e["id"].as_str().expect("id").to_owned()
    };

    // A question a's workflow asks is answered through b.
    let approving = start(json!({"action": "ask.approve"})).await;
    let inquiry = crate::util::eventually("a question asked", || async {
        let (_, list) = on_b.get("/api/v1/inquiries").await;
        list[0]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| list.to_string())
    })
    .await;
    let answer = json!({"id": inquiry, "response": {"approved": true}});
    let (status, body) = on_b
        .put(&format!("/api/v1/inquiries/{inquiry}"), &answer)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["approved"], true, "{body}");
    let done = on_b.finished(&approving).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["output"]["approved"], true, "{done}");
    // Answered: refused again, through either node.
    let (status, body) = on_b
        .put(&format!("/api/v1/inquiries/{inquiry}"), &answer)
        .await;
    assert_eq!(status, 400, "{body}");

    // a's workflow paused, resumed and canceled through b.
    let holding = start(json!({"action": "slow.hold"})).await;
    on_a.running(&holding).await;
    let set = async |status: &str| {
        let (code, e) = on_b
            .put(
                &format!("/api/v1/executions/{holding}"),
                &json!({ "status": status }),
            )
            .await;
        assert_eq!(code, 200, "{e}");
        e["status"].as_str().expect("status").to_owned()
    };
    assert!(
        ["pausing", "paused"].contains(&set("pausing").await.as_str()),
        "paused"
    );
    assert!(
        ["resuming", "running"].contains(&set("resuming").await.as_str()),
        "resumed"
    );
    let (status, body) = on_b.delete(&format!("/api/v1/executions/{holding}")).await;
    assert_eq!(status, 200, "{body}");
    let ended = on_b.finished(&holding).await;
    assert_eq!(ended["status"], "canceled", "{ended}");
    for s in servers {
        s.stop().await;
    }
}

/// The `core.echo` executions that said `message`.
async fn echoed(node: &Client, message: &str) -> usize {
    let (_, list) = node
        .get("/api/v1/executions?action=core.echo&limit=1000")
        .await;
    list.as_array()
        .expect("list")
        .iter()
        .filter(|e| e["result"]["stdout"] == message)
        .count()
}

/// Through `node`: a rule that echoes `message` once, at `seconds` from
/// now.
async fn echo_at(node: &Client, message: &str, seconds: i64) {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a date");
    let rule = json!({"name": message, "pack": "hooks", "enabled": true,
        "trigger": {"type": "core.st2.DateTimer", "parameters": {"date": at}},
        "action": {"ref": "core.echo", "parameters": {"message": message}}});
    let (status, body) = node.post("/api/v1/rules", &rule).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_run_on_the_leading_node_only_and_move_with_the_lead() {
    let core = squall_tests::core_pack();
    let hooks = squall_tests::rules_pack("hooks", super::server::RULES);
    let packs = [core.path().to_owned(), hooks.path().to_owned()];
    let leading = |leads| ReactorConfig {
        cluster: Some(ClusterNode {
            name: String::new(),
            claim_ttl: Duration::from_secs(30),
            leads,
        }),
        ..ReactorConfig::default()
    };
    let (first, a) = node_beside(None, &packs, leading(true)).await;
    let (_second, b) = node_beside(Some(&first), &packs, leading(false)).await;
    let on_b = b.as_key(&b.key);
    // Made through b, in force on both; fired by a alone. The later timer
    // ends the wait: a second firing of the first would have come by then.
    let fired_once = async |first: &str, then: &str| {
        crate::util::eventually(&format!("'{then}' fired"), || async {
            match echoed(&on_b, then).await {
                0 => Err("not yet".to_owned()),
                _ => Ok(()),
            }
        })
        .await;
        assert_eq!(echoed(&on_b, first).await, 1, "'{first}' fired once");
    };
    echo_at(&on_b, "once", 5).await;
    echo_at(&on_b, "then", 7).await;
    fired_once("once", "then").await;

    // a stops; b leads, and its timers run.
    a.stop().await;
    b.lead();
    echo_at(&on_b, "again", 4).await;
    echo_at(&on_b, "after", 6).await;
    fired_once("again", "after").await;
    b.stop().await;
}

/// Two nodes that both run the timers, as while the lead passes from one
/// to the other: an interval timer's ticks fall on whole periods, and each
/// fires once, on one node or the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_of_a_timer_fires_once_while_two_nodes_run_it() {
    let core = squall_tests::core_pack();
    let hooks = squall_tests::rules_pack("hooks", super::server::RULES);
    let packs = [core.path().to_owned(), hooks.path().to_owned()];
    let (_dirs, nodes) = nodes(2, &packs).await;
    for node in &nodes {
        node.lead();
    }
    let on_a = nodes[0].as_key(&nodes[0].key);
    let rule = json!({"name": "ticks", "pack": "hooks", "enabled": true,
        "trigger": {"type": "core.st2.IntervalTimer", "parameters": {"unit": "seconds", "delta": 1}},
        "action": {"ref": "core.echo", "parameters": {"message": "{{ trigger.executed_at }}"}}});
    let (status, body) = on_a.post("/api/v1/rules", &rule).await;
    assert_eq!(status, 201, "{body}");
    // The ticks echoed so far, oldest first, each with how often it fired.
    let ticks = async || -> Vec<(String, usize)> {
        let (_, list) = on_a
            .get("/api/v1/executions?action=core.echo&limit=1000")
            .await;
        let mut seen = std::collections::BTreeMap::new();
        for e in list.as_array().expect("list") {
            if let Some(tick) = e["parameters"]["message"].as_str() {
                *seen.entry(tick.to_owned()).or_insert(0) += 1;
            }
        }
        seen.into_iter().collect()
    };
    let seen = crate::util::eventually("seven ticks fired", || async {
        let seen = ticks().await;
        if seen.len() >= 7 {
            Ok(seen)
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    // The first two ticks may have come before the second node had the
    // rule; the last ticks' twins may still be on their way; those
    // between had both nodes running the timer, and a second and more to
    // show a twin.
    for (tick, fired) in &seen[2..5] {
        assert_eq!(*fired, 1, "tick {tick} fired {fired} times: {seen:?}");
        assert!(
            tick.ends_with(".000000+00:00"),
            "tick {tick} falls on a whole second"
        );
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Twelve executions of 0.3 s asked of a node with one worker, beside a
/// node with room, both with `tenant_max_running`: each ends once; how many
/// ran while another did, which one worker cannot do.
async fn overlapping_on_a_busy_node(tenant_max_running: Option<usize>) -> usize {
    let core = squall_tests::core_pack();
    let packs = [core.path().to_owned()];
    let one_worker = ReactorConfig {
        workers: 1,
        tenant_max_running,
        ..ReactorConfig::default()
    };
    let (first, busy) = node_beside(None, &packs, one_worker).await;
    let with_room = ReactorConfig {
        tenant_max_running,
        ..ReactorConfig::default()
    };
    let (_second, idle) = node_beside(Some(&first), &packs, with_room).await;
    let asked = busy.as_key(&busy.key);
    let mut ids = Vec::new();
    for _ in 0..12 {
        let (status, e) = asked
            .post(
                "/api/v1/executions",
                &json!({"action": "core.sleep", "parameters": {"seconds": 0.3}}),
            )
            .await;
        assert_eq!(status, 201, "{e}");
        ids.push(e["id"].clone());
    }
    // (running, ended) of each, in the order they started.
    let mut spans = Vec::new();
    for id in &ids {
        let e = busy.finished(id).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        let at = |status: &str| {
            let change = e["log"]
                .as_array()
                .expect("log")
                .iter()
                .filter(|c| c["status"] == status)
                .count();
            assert_eq!(change, 1, "{status} once in {}", e["log"]);
            let stamp = e["log"]
                .as_array()
                .expect("log")
                .iter()
                .find(|c| c["status"] == status)
                .and_then(|c| c["timestamp"].as_str())
                .expect("timestamp");
            squall_core::time::parse_rfc3339(stamp).expect("rfc3339")
        };
        spans.push((at("running"), at("succeeded")));
    }
    spans.sort();
    busy.stop().await;
    idle.stop().await;
    spans.windows(2).filter(|w| w[1].0 < w[0].1).count()
}

/// A node with one worker, asked for more than it can run at once: a node
/// beside it with room takes what waits there, and runs it beside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_room_takes_what_waits_on_a_busy_one() {
    let overlapping = overlapping_on_a_busy_node(None).await;
    assert!(
        overlapping > 0,
        "some ran beside others, on the node with room"
    );
}

/// What passes a concurrency gate (here the tenant's running limit) is
/// shared too: its slots are counted in the database, whichever node runs
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_passes_a_concurrency_gate_is_shared_too() {
    let overlapping = overlapping_on_a_busy_node(Some(100)).await;
    assert!(
        overlapping > 0,
        "some ran beside others, on the node with room"
    );
}

/// `n` runs of `core.sleep` for `seconds`, asked of `nodes` in turn, all
/// in flight at once; their records once each ended.
async fn sleeps_across(nodes: &[&Server], n: usize, seconds: f64) -> Vec<Value> {
    let asked =
        (0..n).map(|i| nodes[i % nodes.len()].run("core.sleep", json!({"seconds": seconds})));
    let created = futures_util::future::join_all(asked).await;
    let mut done = Vec::new();
    for (i, e) in created.iter().enumerate() {
        let e = nodes[i % nodes.len()].finished(&e["id"]).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        done.push(e);
    }
    done
}

/// A tenant's running limit and a concurrency policy count every node's
/// executions: two nodes together never run more than either allows, and
/// a policy that cancels beyond its threshold cancels what is asked of the
/// other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_limits_and_concurrency_policies_hold_across_nodes() {
    let core = squall_tests::core_pack();
    let packs = [core.path().to_owned()];
    let limited = || ReactorConfig {
        tenant_max_running: Some(3),
        ..ReactorConfig::default()
    };
    let (first, one) = node_beside(None, &packs, limited()).await;
    let (_second, two) = node_beside(Some(&first), &packs, limited()).await;

    let done = sleeps_across(&[&one, &two], 12, 0.4).await;
    let most = super::lifecycle::max_overlap(&done);
    assert!(most <= 3, "the tenant's limit of 3 held: {most} at once");

    // A policy made through one node: one at a time, across both.
    let policy = json!({"name": "sleep.one", "pack": "core", "resource_ref": "core.sleep",
                        "policy_type": "action.concurrency",
                        "parameters": {"action": "delay", "threshold": 1}});
    let r = one.post("/api/v1/policies", &policy).await;
    assert_eq!(r.status().as_u16(), 201);
    two.wait_for("/api/v1/policies?resource_ref=core.sleep", |p| {
        p.as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    let done = sleeps_across(&[&one, &two], 6, 0.2).await;
    assert_eq!(
        super::lifecycle::max_overlap(&done),
        1,
        "one at a time across both nodes"
    );

    // One that cancels: held on one node, what the other is asked is
    // canceled at once.
    let (status, _) = one
        .as_key(&one.key)
        .delete("/api/v1/policies/core.sleep.one")
        .await;
    assert_eq!(status, 204);
    let cancel = json!({"name": "sleep.cap", "pack": "core", "resource_ref": "core.sleep",
                        "policy_type": "action.concurrency",
                        "parameters": {"action": "cancel", "threshold": 1}});
    let r = two.post("/api/v1/policies", &cancel).await;
    assert_eq!(r.status().as_u16(), 201);
    one.wait_for("/api/v1/policies?resource_ref=core.sleep", |p| {
        p.as_array()
            .is_some_and(|p| p.len() == 1 && p[0]["name"] == "sleep.cap")
    })
    .await;
    let holder = one
        .run("core.sleep", json!({"seconds": 600, "timeout": 600}))
        .await;
    let holder = holder["id"].as_str().expect("id").to_owned();
    one.as_key(&one.key).running(&holder).await;
    let other = two.run("core.sleep", json!({"seconds": 0.1})).await;
    let other = two.finished(&other["id"]).await;
    assert_eq!(other["status"], "canceled", "{other}");
    assert!(
        other["result"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("core.sleep.cap")),
        "{other}"
    );
    let (status, body) = one.delete(&format!("/api/v1/executions/{holder}")).await;
    assert_eq!(status, 200, "{body}");
    one.finished(&json!(holder)).await;
    one.stop().await;
    two.stop().await;
}

/// A rule's throttle window is shared: webhooks of one key through two
/// nodes at once request one execution per window, and each node says why
/// the others were suppressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_window_holds_across_nodes() {
    let rule = "name: page\npack: hooks\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: alerts}}\naction: {ref: core.noop}\nthrottle: {seconds: 600, key: '{{ trigger.body.host }}'}\n";
    let core = squall_tests::core_pack();
    let hooks = squall_tests::rules_pack("hooks", &[("page.yaml", rule)]);
    let packs = [core.path().to_owned(), hooks.path().to_owned()];
    let (_dirs, nodes) = nodes(2, &packs).await;
    let hosts = ["a", "a", "a", "a", "a", "a", "a", "a", "b", "b"];
    let sent = hosts.iter().enumerate().map(|(i, host)| {
        let node = &nodes[i % 2];
        async move {
            let r = node
                .post("/api/v1/webhooks/alerts", &json!({"host": host}))
                .await;
            assert_eq!(r.status().as_u16(), 202);
            let id = r.headers()["St2-Trigger-Instance-Id"]
                .to_str()
                .expect("ascii")
                .to_owned();
            (i, id)
        }
    });
    let sent = futures_util::future::join_all(sent).await;
    let mut succeeded = std::collections::BTreeMap::<&str, usize>::new();
    for (i, id) in sent {
        let node = &nodes[i % 2];
        let list = node
            .wait_for(
                &format!("/api/v1/ruleenforcements?trigger_instance={id}"),
                |l| l.as_array().is_some_and(|l| l.len() == 1),
            )
            .await;
        let enforcement = &list[0];
        if enforcement["status"] == "succeeded" {
            *succeeded.entry(hosts[i]).or_default() += 1;
        } else {
            let reason = enforcement["failure_reason"].as_str().expect("reason");
            assert!(
                reason.starts_with("suppressed by throttle: at most one enforcement per 600 s"),
                "{enforcement}"
            );
        }
    }
    assert_eq!(
        succeeded,
        [("a", 1), ("b", 1)].into_iter().collect(),
        "one per key across both nodes"
    );
    for node in nodes {
        node.stop().await;
    }
}

/// The sensors `node` runs now (its own view: `running`).
async fn running_sensors(node: &Server) -> Vec<String> {
    let (_, list) = node.get("/api/v1/sensortypes").await;
    let mut running: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .filter(|s| s["state"] == "running")
        .filter_map(|s| s["ref"].as_str().map(str::to_owned))
        .collect();
    running.sort();
    running
}

/// The counts `pack`'s counter sensor emitted, as trigger instances.
async fn counts_of(node: &Server, pack: &str) -> Vec<u64> {
    let (_, list) = node
        .get(&format!(
            "/api/v1/triggerinstances?trigger={pack}.counted&limit=1000"
        ))
        .await;
    list.as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["payload"]["count"].as_u64())
        .collect()
}

/// Each sensor runs under a lease of its own: two sensors on two nodes run
/// one on each, and those of a node that dies move to the other within its
/// lease, no count emitted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_spread_over_the_nodes_and_move_when_one_dies() {
    const COUNTED: &str = "[{name: counted, payload_schema: {type: object, properties: {count: {type: integer}}, required: [count]}}]";
    let one = squall_tests::sensor_pack("one", "counter", 0.2, COUNTED, &[]);
    let two = squall_tests::sensor_pack("two", "counter", 0.2, COUNTED, &[]);
    let core = squall_tests::core_pack();
    let packs = [
        core.path().to_owned(),
        one.path().to_owned(),
        two.path().to_owned(),
    ];
    let lease = Duration::from_secs(3);
    let node = || ReactorConfig {
        cluster: Some(ClusterNode {
            name: String::new(),
            claim_ttl: lease,
            leads: true,
        }),
        ..ReactorConfig::default()
    };
    let (first, a) = node_beside(None, &packs, node()).await;
    let (_second, b) = node_beside(Some(&first), &packs, node()).await;
    // One each, once the first node gave up what is the second's share.
    let (on_a, on_b) = crate::util::eventually("one sensor on each node", || async {
        let (on_a, on_b) = (running_sensors(&a).await, running_sensors(&b).await);
        match (on_a.len(), on_b.len()) {
            (1, 1) if on_a != on_b => Ok((on_a, on_b)),
            _ => Err(format!("a runs {on_a:?}, b runs {on_b:?}")),
        }
    })
    .await;
    let moved = on_a[0].trim_end_matches(".TestSensor").to_owned();
    let counts_at_kill = counts_of(&b, &moved).await.len();

    // a dies: b runs both once a's leases ran out.
    a.kill().await;
    crate::util::eventually("both sensors on b", || async {
        let on_b = running_sensors(&b).await;
        match on_b.len() {
            2 => Ok(()),
            _ => Err(format!("b runs {on_b:?}")),
        }
    })
    .await;
    crate::util::eventually("a's sensor counting again, on b", || async {
        let n = counts_of(&b, &moved).await.len();
        if n >= counts_at_kill + 3 {
            Ok(())
        } else {
            Err(format!("{n} counts, {counts_at_kill} at the kill"))
        }
    })
    .await;
    for pack in ["one", "two"] {
        let counts = counts_of(&b, pack).await;
        let distinct: std::collections::HashSet<&u64> = counts.iter().collect();
        assert_eq!(
            distinct.len(),
            counts.len(),
            "no count of {pack} emitted twice: {counts:?}"
        );
    }
    assert!(on_b[0] != on_a[0]);
    b.stop().await;
}

/// An execution that took its gate's slot on a busy node, taken by a node
/// where another waits at that gate, runs there: it holds the slot, and
/// does not wait behind the one it keeps out. Then that one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_execution_taken_from_a_busy_node_runs_before_those_it_keeps_out() {
    let limits = squall_tests::pack_of("limits", &[]);
    std::fs::create_dir(limits.path().join("policies")).expect("mkdir");
    std::fs::write(
        limits.path().join("policies/sleep.yaml"),
        "name: sleep.each\nresource_ref: core.sleep\npolicy_type: action.concurrency.attr\nparameters: {action: delay, threshold: 1, attributes: [seconds]}\n",
    )
    .expect("write policy");
    let core = squall_tests::core_pack();
    let packs = [core.path().to_owned(), limits.path().to_owned()];
    let one_worker = ReactorConfig {
        workers: 1,
        ..ReactorConfig::default()
    };
    let (first, busy) = node_beside(None, &packs, one_worker).await;
    let (_second, idle) = node_beside(Some(&first), &packs, ReactorConfig::default()).await;
    let (on_busy, on_idle) = (busy.as_key(&busy.key), idle.as_key(&idle.key));
    // The busy node's one worker runs a sleep until canceled (a gate of
    // its own).
    let long = busy
        .run("core.sleep", json!({"seconds": 600, "timeout": 600}))
        .await;
    on_busy.running(long["id"].as_str().expect("id")).await;
    // It admits a short one, which waits there for a worker, holding the
    // short sleeps' slot; another short one asked of the idle node waits
    // at the gate.
    let held = busy.run("core.sleep", json!({"seconds": 0.2})).await;
    let kept_out = idle.run("core.sleep", json!({"seconds": 0.2})).await;
    let kept_out = idle
        .wait_for(
            &format!(
                "/api/v1/executions/{}",
                kept_out["id"].as_str().expect("id")
            ),
            |e| e["status"] == "delayed" || e["status"] == "succeeded",
        )
        .await;
    // The idle node takes the held one and runs it; then the other runs.
    let held = on_idle.finished(held["id"].as_str().expect("id")).await;
    assert_eq!(held["status"], "succeeded", "{held}");
    let kept_out = on_idle.finished(kept_out["id"].as_str().expect("id")).await;
    assert_eq!(kept_out["status"], "succeeded", "{kept_out}");
    // The busy node's worker was taken all along: the held one ran on the
    // idle node.
    let long_id = long["id"].as_str().expect("id");
    let (status, body) = on_busy
        .delete(&format!("/api/v1/executions/{long_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let long = on_busy.finished(long_id).await;
    assert_eq!(long["status"], "canceled", "{long}");
    let ran = |e: &Value, status: &str| {
        e["log"]
            .as_array()
            .expect("log")
            .iter()
            .find(|c| c["status"] == status)
            .and_then(|c| c["timestamp"].as_str())
            .map(|t| squall_core::time::parse_rfc3339(t).expect("rfc3339"))
            .expect("timestamp")
    };
    assert!(
        ran(&held, "succeeded") <= ran(&kept_out, "running"),
        "one at a time: {held} then {kept_out}"
    );
    assert!(
        ran(&held, "succeeded") < ran(&long, "canceled"),
        "the held one ran on the idle node, while the busy node's worker was taken"
    );
    busy.stop().await;
    idle.stop().await;
}
