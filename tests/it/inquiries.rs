//! Inquiries end to end through the API: `core.ask` asks and waits
//! `pending`, a workflow waiting on one pauses, and the answer (checked
//! against the schema, the users and the roles) resumes it, once.

use serde_json::{Value, json};
use squall_reactor::ReactorConfig;
use tempfile::TempDir;

use super::server::{Client, Server};
use super::workflows::{statuses_of, task_execution};

const APPROVAL: &str = r#"{"type": "object", "properties": {"approved": {"type": "boolean", "description": "Continue?", "required": true}}}"#;

/// Workflows that ask: `ask.approve` (one question, `failed()` routed),
/// `ask.two` (two questions and a branch that holds the workflow
/// running for `hold` seconds, joined).
pub(crate) fn ask_pack() -> TempDir {
    let dir = squall_tests::pack_of("ask", &[]);
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(actions.join("workflows")).expect("mkdir");
    let approve = format!(
        "version: 1.0\ninput: [ttl]\noutput:\n  - approved: <% ctx(approved) %>\n  - timed_out: <% ctx(timed_out) %>\nvars:\n  - approved: null\n  - timed_out: false\ntasks:\n  start:\n    action: core.echo message=asking\n    next:\n      - do: get_approval\n  get_approval:\n    action: core.ask\n    input:\n      schema: {APPROVAL}\n      ttl: <% ctx(ttl) %>\n      route: ops\n    next:\n      - when: <% succeeded() %>\n        publish: approved=<% result().response.approved %>\n        do: finish\n      - when: <% failed() %>\n        publish: timed_out=true\n        do: escalate\n  finish:\n    action: core.echo message=approved\n  escalate:\n    action: core.noop\n"
    );
    let files = [
        (
            "approve.yaml",
            "name: approve\nrunner_type: orquesta\nentry_point: workflows/approve.yaml\nparameters:\n  ttl: {type: number, default: 0}\n".to_owned(),
        ),
        ("workflows/approve.yaml", approve),
        (
            "two.yaml",
            "name: two\nrunner_type: orquesta\nentry_point: workflows/two.yaml\nparameters:\n  hold: {type: number, default: 8}\n".to_owned(),
        ),
        (
            "workflows/two.yaml",
            format!(
                "version: 1.0\ninput: [hold]\noutput:\n  - a: <% ctx(a) %>\n  - b: <% ctx(b) %>\ntasks:\n  start:\n    action: core.noop\n    next:\n      - do: [ask_a, ask_b, hold]\n  ask_a:\n    action: core.ask\n    input: {{schema: {APPROVAL}}}\n    next:\n      - when: <% succeeded() %>\n        publish: a=<% result().response.approved %>\n        do: done\n  ask_b:\n    action: core.ask\n    input: {{schema: {APPROVAL}}}\n    next:\n      - when: <% succeeded() %>\n        publish: b=<% result().response.approved %>\n        do: done\n  hold:\n    action: core.sleep seconds=<% ctx(hold) %>\n    next:\n      - do: done\n  done:\n    join: all\n    action: core.noop\n"
            ),
        ),
    ];
    for (path, text) in files {
        std::fs::write(actions.join(path), text).expect("write");
    }
    dir
}

/// A rule that routes every question tagged `ops` to `core.echo`.
fn routing_pack() -> TempDir {
    squall_tests::rules_pack(
        "routing",
        &[(
            "ops.yaml",
            "name: ops\nenabled: true\ntrigger: {type: core.st2.generic.inquiry}\ncriteria:\n  trigger.route: {type: equals, pattern: ops}\naction: {ref: core.echo, parameters: {message: 'inquiry {{ trigger.id }}'}}\n",
        )],
    )
}

async fn server() -> Server {
    Server::start_with(
        vec![squall_tests::core_pack(), ask_pack(), routing_pack()],
        ReactorConfig::default(),
    )
    .await
}

/// `core.ask` with the approval schema, waiting `pending`.
async fn asked(server: &Server, extra: Value) -> String {
    let mut parameters =
        json!({"schema": serde_json::from_str::<Value>(APPROVAL).expect("schema")});
    for (k, v) in extra.as_object().expect("object") {
        parameters[k] = v.clone();
    }
    let created = server.run("core.ask", parameters).await;
    let id = created["id"].as_str().expect("id").to_owned();
    server
        .wait_for(&format!("/api/v1/executions/{id}"), |e| {
            e["status"] == "pending"
        })
        .await;
    id
}

async fn answer(client: &Client, id: &str, response: Value) -> (u16, Value) {
    client
        .put(
            &format!("/api/v1/inquiries/{id}"),
            &json!({"id": id, "response": response}),
        )
        .await
}

/// A key for `user` with `role` in the default tenant.
async fn key_for(server: &Server, user: &str, role: &str) -> Client {
    let r = server
        .post(
            "/api/v1/apikeys",
            &json!({"tenant": "default", "user": user, "role": role}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.expect("json");
    server.as_key(body["key"].as_str().expect("key"))
}

/// Wait until workflow execution `id` is `paused`.
async fn paused(server: &Server, id: &str) -> Value {
    server
        .wait_for(&format!("/api/v1/executions/{id}"), |e| {
            e["status"] == "paused"
        })
        .await
}

fn faultstring(body: &Value) -> &str {
    body["faultstring"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inquiry_asks_waits_and_takes_one_valid_answer() {
    let server = server().await;
    let admin = server.as_key(&server.key);
    let id = asked(&server, json!({"route": "ops"})).await;

    // The question is the pending execution's result, with st2's defaults.
    let (_, e) = server.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(e["runner"]["name"], "inquirer");
    assert_eq!(e["result"]["ttl"], 1440);
    assert_eq!(e["result"]["users"], json!([]));
    assert_eq!(e["result"]["route"], "ops");
    assert_eq!(
        e["result"]["schema"]["properties"]["approved"]["type"],
        "boolean"
    );

    // It asked: the inquiry trigger, which a rule routed on.
    let instances = server
        .wait_for(
            "/api/v1/triggerinstances?trigger=core.st2.generic.inquiry",
            |l| l.as_array().is_some_and(|l| !l.is_empty()),
        )
        .await;
    assert_eq!(instances[0]["payload"], json!({"id": id, "route": "ops"}));
    let routed = server
        .wait_for("/api/v1/executions?action=core.echo", |l| {
            l.as_array()
                .into_iter()
                .flatten()
                .any(|e| e["status"] == "succeeded")
        })
        .await;
    assert_eq!(
        routed[0]["parameters"]["message"],
        format!("inquiry {id}"),
        "{routed}"
    );

    // Listed and shown as st2 shows them.
    let listed = server
        .http
        .get(format!("{}/api/v1/inquiries", server.base))
        .send()
        .await
        .expect("list");
    assert_eq!(listed.headers()["x-total-count"], "1");
    let listed: Value = listed.json().await.expect("json");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(
        listed[0]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(
            ["id", "roles", "route", "schema", "ttl", "users"]
                .map(String::from)
                .to_vec()
        )
    );
    let (status, one) = server.get(&format!("/api/v1/inquiries/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one, listed[0]);

    // Refused answers change nothing.
    let (status, body) = answer(&admin, &id, json!({"approved": "yes"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        faultstring(&body).contains("did not pass schema validation")
            && faultstring(&body).contains("approved"),
        "{body}"
    );
    let (status, body) = answer(&admin, &id, json!({})).await;
    assert_eq!(status, 400, "a required property is missing: {body}");
    let (status, body) = admin
        .put(
            &format!("/api/v1/inquiries/{id}"),
            &json!({"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "response": {"approved": true}}),
        )
        .await;
    assert_eq!(status, 400, "the body's id must be the path's: {body}");
    let viewer = key_for(&server, "watcher", "viewer").await;
    let (status, _) = answer(&viewer, &id, json!({"approved": true})).await;
    assert_eq!(status, 403, "a viewer changes nothing");
    let (_, e) = server.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(e["status"], "pending");

    // The answer: once.
    let (status, body) = answer(&admin, &id, json!({"approved": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": id, "response": {"approved": true}}));
    let e = server.finished(&json!(id)).await;
    assert_eq!(e["status"], "succeeded");
    assert_eq!(e["result"]["response"], json!({"approved": true}));
    assert_eq!(e["result"]["route"], "ops", "the question stays");
    let (status, body) = answer(&admin, &id, json!({"approved": false})).await;
    assert_eq!(status, 400);
    assert!(
        faultstring(&body).contains("has already been responded to"),
        "{body}"
    );
    let (status, _) = server.get(&format!("/api/v1/inquiries/{id}")).await;
    assert_eq!(status, 400, "no longer pending");
    let (_, listed) = server.get("/api/v1/inquiries").await;
    assert_eq!(listed, json!([]));

    // Not an inquiry; no such inquiry.
    let noop = server.run("core.noop", json!({})).await;
    let noop = server.finished(&noop["id"]).await;
    let noop_id = noop["id"].as_str().expect("id");
    let (status, body) = answer(&admin, noop_id, json!({"approved": true})).await;
    assert_eq!(status, 400);
    assert!(faultstring(&body).contains("is not an inquiry"), "{body}");
    let (status, body) = answer(&admin, "01ARZ3NDEKTSV4RRFFQ69G5FAV", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = server
        .get("/api/v1/inquiries/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_roles_bound_who_may_answer() {
    let server = server().await;
    let jack = key_for(&server, "jack", "operator").await;
    let jill = key_for(&server, "jill", "operator").await;
    let boss = key_for(&server, "boss", "admin").await;

    let for_jack = asked(&server, json!({"users": ["jack"]})).await;
    let (status, body) = answer(&jill, &for_jack, json!({"approved": true})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        faultstring(&body),
        format!("User \"jill\" does not have permission to respond to inquiry \"{for_jack}\".")
    );
    let (status, body) = answer(&jack, &for_jack, json!({"approved": true})).await;
    assert_eq!(status, 200, "{body}");

    let for_admins = asked(&server, json!({"roles": ["admin"]})).await;
    let (status, _) = answer(&jack, &for_admins, json!({"approved": true})).await;
    assert_eq!(status, 403, "an operator is not an admin");
    let (status, body) = answer(&boss, &for_admins, json!({"approved": false})).await;
    assert_eq!(status, 200, "{body}");

    // Both must hold.
    let both = asked(&server, json!({"users": ["jack"], "roles": ["admin"]})).await;
    let (status, _) = answer(&jack, &both, json!({"approved": true})).await;
    assert_eq!(status, 403, "jack is named but not an admin");
    let (status, _) = answer(&boss, &both, json!({"approved": true})).await;
    assert_eq!(status, 403, "boss is an admin but not named");
    let (_, e) = server.get(&format!("/api/v1/executions/{both}")).await;
    assert_eq!(e["status"], "pending");

    // Another tenant does not see it.
    let other = server.tenant_with_key("elsewhere", "admin").await;
    let other = server.as_key(&other);
    let (status, _) = other.get(&format!("/api/v1/inquiries/{both}")).await;
    assert_eq!(status, 404);
    let (status, _) = answer(&other, &both, json!({"approved": true})).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_waits_on_two_inquiries_and_each_answer_resumes_it() {
    let server = server().await;
    let admin = server.as_key(&server.key);
    let created = server.run("ask.two", json!({"hold": 8})).await;
    let wf = created["id"].as_str().expect("id").to_owned();
    // Both questions pending, `hold` running: pausing, then paused once
    // `hold` is done.
    let a = task_execution(&server, &wf, "ask_a").await;
    let b = task_execution(&server, &wf, "ask_b").await;
    let (a, b) = (
        a["id"].as_str().expect("id").to_owned(),
        b["id"].as_str().expect("id").to_owned(),
    );
    server
        .wait_for(&format!("/api/v1/executions/{wf}"), |e| {
            e["status"] == "pausing"
        })
        .await;
    paused(&server, &wf).await;
    let (_, listed) = server.get("/api/v1/inquiries").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // One answer resumes it; with the other still pending it pauses again.
    let (status, body) = answer(&admin, &a, json!({"approved": true})).await;
    assert_eq!(status, 200, "{body}");
    let e = server
        .wait_for(&format!("/api/v1/executions/{wf}"), |e| {
            e["status"] == "paused" && statuses_of(e).iter().filter(|s| *s == "paused").count() == 2
        })
        .await;
    let log = statuses_of(&e);
    let first = log.iter().position(|s| s == "paused").expect("paused");
    assert_eq!(
        log[first..],
        ["paused", "resuming", "running", "paused"],
        "{log:?}"
    );
    let (status, body) = answer(&admin, &b, json!({"approved": false})).await;
    assert_eq!(status, 200, "{body}");
    let e = server.finished(&json!(wf)).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["output"], json!({"a": true, "b": false}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_inquiry_times_out_and_failed_routes_it() {
    let server = server().await;
    let admin = server.as_key(&server.key);
    // 0.02 minutes: 1.2 s.
    let created = server.run("ask.approve", json!({"ttl": 0.02})).await;
    let wf = created["id"].as_str().expect("id").to_owned();
    let e = server.finished(&json!(wf)).await;
    assert_eq!(e["status"], "succeeded", "remediated by failed(): {e}");
    assert_eq!(
        e["result"]["output"],
        json!({"approved": null, "timed_out": true})
    );
    let ask = task_execution(&server, &wf, "get_approval").await;
    assert_eq!(ask["status"], "timeout");
    let escalate = task_execution(&server, &wf, "escalate").await;
    let escalate = server.finished(&escalate["id"]).await;
    assert_eq!(escalate["status"], "succeeded");
    let (status, body) = answer(
        &admin,
        ask["id"].as_str().expect("id"),
        json!({"approved": true}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(faultstring(&body).contains("timed out"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_waiting_workflow_cancels_its_inquiry() {
    let server = server().await;
    let created = server.run("ask.approve", json!({})).await;
    let wf = created["id"].as_str().expect("id").to_owned();
    paused(&server, &wf).await;
    let (status, body) = server.delete(&format!("/api/v1/executions/{wf}")).await;
    assert_eq!(status, 200, "{body}");
    let e = server.finished(&json!(wf)).await;
    assert_eq!(e["status"], "canceled", "{e}");
    let ask = task_execution(&server, &wf, "get_approval").await;
    let ask = server.finished(&ask["id"]).await;
    assert_eq!(ask["status"], "canceled");
    assert_eq!(ask["result"]["route"], "ops", "the question stays: {ask}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_inquiry_survives_a_restart_and_its_ttl_is_kept() {
    let data = tempfile::tempdir().expect("tempdir");
    let packs = [squall_tests::core_pack(), ask_pack(), routing_pack()];
    let paths: Vec<std::path::PathBuf> = packs.iter().map(|p| p.path().to_owned()).collect();
    let server = Server::start_in(data.path(), &paths, ReactorConfig::default(), vec![])
        .await
        .expect("server starts");
    let waits = server.run("ask.approve", json!({})).await;
    let waits = waits["id"].as_str().expect("id").to_owned();
    // 0.05 minutes: 3 s, which pass while the server is down.
    let expires = server.run("ask.approve", json!({"ttl": 0.05})).await;
    let expires = expires["id"].as_str().expect("id").to_owned();
    for wf in [&waits, &expires] {
        paused(&server, wf).await;
    }
    let ask = task_execution(&server, &waits, "get_approval").await;
    let ask = ask["id"].as_str().expect("id").to_owned();
    server.stop().await;

    let server = Server::start_in(data.path(), &paths, ReactorConfig::default(), vec![])
        .await
        .expect("server starts");
    let e = server.finished(&json!(expires)).await;
    assert_eq!(e["result"]["output"]["timed_out"], true, "{e}");
    let (_, e) = server.get(&format!("/api/v1/executions/{waits}")).await;
    assert_eq!(e["status"], "paused");
    let admin = server.as_key(&server.key);
    let (status, body) = answer(&admin, &ask, json!({"approved": true})).await;
    assert_eq!(status, 200, "{body}");
    let e = server.finished(&json!(waits)).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["output"]["approved"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_workflow_that_cannot_be_read_back_ends_and_its_inquiry_is_canceled() {
    let data = tempfile::tempdir().expect("tempdir");
    let (core, ask) = (squall_tests::core_pack(), ask_pack());
    let server = Server::start_in(
        data.path(),
        &[core.path().to_owned(), ask.path().to_owned()],
        ReactorConfig::default(),
        vec![],
    )
    .await
    .expect("server starts");
    let created = server.run("ask.approve", json!({})).await;
    let wf = created["id"].as_str().expect("id").to_owned();
    paused(&server, &wf).await;
    let question = task_execution(&server, &wf, "get_approval").await;
    let question = question["id"].as_str().expect("id").to_owned();
    server.stop().await;

    // The pack comes back without the workflow.
    std::fs::remove_file(ask.path().join("actions/approve.yaml")).expect("remove");
    let server = Server::start_in(
        data.path(),
        &[core.path().to_owned(), ask.path().to_owned()],
        ReactorConfig::default(),
        vec![],
    )
    .await
    .expect("server starts");
    let e = server.finished(&json!(wf)).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert!(
        e["result"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("could not be resumed after a restart")),
        "{e}"
    );
    let q = server.finished(&json!(question)).await;
    assert_eq!(q["status"], "canceled", "{q}");
    server.stop().await;
}
