//! The official StackStorm CLI (st2client 3.9 from PyPI) against a Squall
//! server: the commands StackStorm users type every day must work.
//!
//! The client is installed once into a virtualenv under the cargo target
//! directory. Without Python 3 the test is skipped, saying so; with Python
//! but no way to install st2client it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::server::Server;

fn st2() -> Option<PathBuf> {
    squall_tests::st2client(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

struct St2 {
    exe: PathBuf,
    base: String,
    key: String,
    home: tempfile::TempDir,
}

struct Ran {
    code: i32,
    out: String,
}

impl St2 {
    /// `st2` at `exe`, talking to `server` with its admin key.
    fn against(exe: PathBuf, server: &Server) -> Self {
        Self {
            exe,
            base: server.base.clone(),
            key: server.key.clone(),
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    async fn run(&self, args: &[&str]) -> Ran {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("ST2_BASE_URL", &self.base)
            .env("ST2_API_URL", format!("{}/api/v1", self.base))
            .env("ST2_AUTH_URL", format!("{}/auth/v1", self.base))
            .env("ST2_STREAM_URL", format!("{}/stream/v1", self.base))
            .env("ST2_API_KEY", &self.key)
            .env("NO_PROXY", "127.0.0.1")
            .env("TERM", "dumb")
            .env("COLUMNS", "200");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("st2 runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ran {
            code: out.status.code().unwrap_or(-1),
            out: text,
        }
    }

    /// Run, expect exit 0, return the output.
    async fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args).await;
        assert_eq!(ran.code, 0, "st2 {}:\n{}", args.join(" "), ran.out);
        ran.out
    }

    /// Run in table mode (how a person runs it: items are read as st2's
    /// models, `id` first), expect exit 0 and no error.
    async fn table(&self, args: &[&str]) -> String {
        let out = self.ok(args).await;
        assert!(!out.contains("ERROR"), "st2 {}:\n{out}", args.join(" "));
        out
    }

    /// Run with `-j`, expect exit 0, parse the JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("-j");
        let out = self.ok(&all).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("st2 {}: {e}\n{out}", all.join(" ")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_st2_cli_works_against_squall() {
    let Some(exe) = st2() else {
        return;
    };
    let s = Server::start_with(
        vec![
            squall_tests::core_pack(),
            squall_tests::rules_pack("hooks", crate::server::RULES),
            squall_tests::sensor_pack(
                "ticker",
                "counter",
                3600.0,
                "[{name: counted, payload_schema: {type: object}}]",
                &[],
            ),
        ],
        Default::default(),
    )
    .await;
    let st2 = St2::against(exe, &s);

    // action list / get
    let actions = st2.json(&["action", "list"]).await;
    let refs: Vec<&str> = actions
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["ref"].as_str())
        .collect();
    assert!(
        refs.contains(&"core.echo") && refs.contains(&"core.noop"),
        "{refs:?}"
    );
    let echo = st2.json(&["action", "get", "core.echo"]).await;
    assert_eq!(echo["runner_type"], "wasm");
    assert_eq!(echo["parameters"]["message"]["type"], "string");
    let missing = st2.run(&["action", "get", "core.nope"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.out.contains("not found"), "{}", missing.out);

    // run: request, poll, print; exit 1 only for failed
    let out = st2
        .ok(&["run", "core.echo", "message=hello from st2"])
        .await;
    assert!(out.contains("status: succeeded"), "{out}");
    assert!(out.contains("message: hello from st2"), "{out}");
    let failed = st2.run(&["run", "core.fail", "message=on purpose"]).await;
    assert_eq!(failed.code, 1, "{}", failed.out);
    assert!(failed.out.contains("status: failed"), "{}", failed.out);

    // execution list / get
    let executions = st2.json(&["execution", "list"]).await;
    let list = executions.as_array().expect("list");
    assert_eq!(list.len(), 2, "{executions}");
    let echo_run = list
        .iter()
        .find(|e| e["action"]["ref"] == "core.echo")
        .expect("the echo execution");
    let id = echo_run["id"].as_str().expect("id");
    let got = st2.json(&["execution", "get", id]).await;
    assert_eq!(got["status"], "succeeded");
    assert_eq!(got["result"]["stdout"], "hello from st2");
    assert_eq!(got["context"]["user"], "tester");

    // keys: set, secret, list, get, decrypt, delete
    st2.ok(&["key", "set", "region", "eu-west-1"]).await;
    st2.ok(&["key", "set", "--encrypt", "db_password", "hunter2"])
        .await;
    let keys = st2.json(&["key", "list"]).await;
    let by_name = |n: &str| {
        keys.as_array()
            .expect("list")
            .iter()
            .find(|k| k["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("key {n} listed: {keys}"))
    };
    assert_eq!(by_name("region")["value"], "eu-west-1");
    assert_eq!(by_name("db_password")["secret"], true);
    assert!(!keys.to_string().contains("hunter2"), "{keys}");
    let region = st2.json(&["key", "get", "region"]).await;
    assert_eq!(region["value"], "eu-west-1");
    let masked = st2.json(&["key", "get", "db_password"]).await;
    assert_ne!(masked["value"], "hunter2");
    let clear = st2.json(&["key", "get", "--decrypt", "db_password"]).await;
    assert_eq!(clear["value"], "hunter2");
    st2.ok(&["key", "delete", "region"]).await;
    let gone = st2.run(&["key", "get", "region"]).await;
    assert_ne!(gone.code, 0, "{}", gone.out);
    let (status, _) = s.get("/api/v1/keys/region").await;
    assert_eq!(status, 404);

    // rules: list, get, disable, enable — and the change takes effect
    let rules = st2.json(&["rule", "list"]).await;
    assert!(
        rules
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["ref"] == "hooks.echo_critical"),
        "{rules}"
    );
    let rule = st2.json(&["rule", "get", "hooks.echo_critical"]).await;
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["trigger"]["type"], "core.st2.webhook");
    st2.ok(&["rule", "disable", "hooks.echo_critical"]).await;
    let (_, rule) = s.get("/api/v1/rules/hooks.echo_critical").await;
    assert_eq!(rule["enabled"], false);
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "critical", "host": "db1"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    st2.ok(&["rule", "enable", "hooks.echo_critical"]).await;
    let (_, rule) = s.get("/api/v1/rules/hooks.echo_critical").await;
    assert_eq!(rule["enabled"], true);

    // trigger list (trigger types)
    let triggers = st2.json(&["trigger", "list"]).await;
    assert!(
        triggers
            .as_array()
            .expect("list")
            .iter()
            .any(|t| t["ref"] == "core.st2.webhook"),
        "{triggers}"
    );

    // pack list / get
    let packs = st2.json(&["pack", "list"]).await;
    let names: Vec<&str> = packs
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["ref"].as_str())
        .collect();
    assert_eq!(names, ["core", "hooks", "ticker"]);
    let core = st2.json(&["pack", "get", "core"]).await;
    assert_eq!(core["name"], "core");

    // Every other resource st2 lists and gets, in table mode.
    let out = st2.table(&["policy-type", "list"]).await;
    assert!(out.contains("action.retry"), "{out}");
    let out = st2.table(&["policy-type", "get", "action.retry"]).await;
    assert!(out.contains("retry"), "{out}");
    let out = st2.table(&["runner", "list"]).await;
    assert!(out.contains("wasm"), "{out}");
    st2.table(&["runner", "get", "wasm"]).await;
    let out = st2.table(&["sensor", "list"]).await;
    assert!(out.contains("ticker.TestSensor"), "{out}");
    let out = st2.table(&["sensor", "get", "ticker.TestSensor"]).await;
    assert!(out.contains("ticker.counted"), "{out}");
    st2.table(&["trigger", "list"]).await;
    let out = st2.table(&["trigger", "get", "core.st2.webhook"]).await;
    assert!(out.contains("core.st2.webhook"), "{out}");
    let out = st2.table(&["webhook", "list"]).await;
    assert!(out.contains("alerts"), "{out}");
    st2.table(&["webhook", "list", "-a", "id", "url"]).await;
    st2.table(&["webhook", "get", "alerts"]).await;
    let out = st2.table(&["trace", "list"]).await;
    let traces = st2.json(&["trace", "list"]).await;
    let trace = traces.as_array().expect("list").first().expect("a trace")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(out.contains(&trace), "{out}");
    let out = st2.table(&["trace", "get", &trace]).await;
    assert!(out.contains(&trace), "{out}");
    let enforcements = st2.json(&["rule-enforcement", "list"]).await;
    let enforcement = &enforcements.as_array().expect("list")[0];
    let id = enforcement["id"].as_str().expect("id");
    let out = st2.table(&["rule-enforcement", "list"]).await;
    assert!(out.contains(id), "{out}");
    st2.table(&["rule-enforcement", "get", id]).await;
    let keys = st2.json(&["apikey", "list"]).await;
    let key_id = keys.as_array().expect("list")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let out = st2.table(&["apikey", "list"]).await;
    assert!(out.contains(&key_id), "{out}");
    st2.table(&["apikey", "get", &key_id]).await;
    // And their filters filter.
    for filtered in [
        &["trigger", "list", "-p", "nope"][..],
        &["apikey", "list", "-u", "nobody"],
    ] {
        let out = st2.ok(filtered).await;
        assert!(out.contains("No matching items found"), "{out}");
    }
    if let Some(execution) = enforcement["execution_id"].as_str() {
        let by_execution = st2
            .json(&["rule-enforcement", "list", "--execution", execution])
            .await;
        assert_eq!(
            by_execution.as_array().map(Vec::len),
            Some(1),
            "{by_execution}"
        );
        // One trace found: st2 shows it whole.
        let traced = st2.json(&["trace", "list", "-e", execution]).await;
        assert!(
            traced["action_executions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["object_id"] == execution)),
            "{traced}"
        );
    }

    // A wrong key is refused by the server and reported by the client.
    let bad = St2 {
        key: "sq_not_a_key".into(),
        exe: st2.exe.clone(),
        base: st2.base.clone(),
        home: tempfile::tempdir().expect("tempdir"),
    };
    let refused = bad.run(&["action", "list"]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.out.contains("401"), "{}", refused.out);
    s.stop().await;
}

/// Workflows through st2: run one (its task table printed), `execution
/// get` with the task table, pause, resume, cancel, and re-run from a task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_st2_cli_drives_workflows() {
    let Some(exe) = st2() else {
        return;
    };
    let s = Server::start_with(
        vec![
            squall_tests::core_pack(),
            crate::workflows::operations_pack(),
        ],
        Default::default(),
    )
    .await;
    let st2 = St2::against(exe, &s);

    // run: waits, then shows the result and the task table.
    let out = st2.table(&["run", "wf.slow", "seconds=0"]).await;
    assert!(out.contains("status: succeeded"), "{out}");
    assert!(out.contains("said: after"), "{out}");
    for task in ["nap", "speak"] {
        assert!(out.contains(task), "{task} in the task table:\n{out}");
    }
    let id = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("id: "))
        .expect("an id line")
        .to_owned();
    let got = st2.table(&["execution", "get", &id]).await;
    for want in ["nap", "speak", "core.sleep", "core.echo", "succeeded"] {
        assert!(got.contains(want), "{want} in:\n{got}");
    }

    // pause, resume
    let wf = s.run("wf.slow", json!({"seconds": 1})).await;
    let wf = wf["id"].as_str().expect("id").to_owned();
    crate::workflows::task_execution(&s, &wf, "nap").await;
    st2.table(&["execution", "pause", &wf]).await;
    s.wait_for(&format!("/api/v1/executions/{wf}"), |e| {
        e["status"] == "paused"
    })
    .await;
    st2.table(&["execution", "resume", &wf]).await;
    let done = s.finished(&json!(wf)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // cancel cascades to the subworkflow and its running task
    let parent = s.run("wf.parent", json!({"seconds": 60})).await;
    let parent = parent["id"].as_str().expect("id").to_owned();
    let sub = crate::workflows::task_execution(&s, &parent, "sub").await;
    let sub = sub["id"].as_str().expect("id").to_owned();
    crate::workflows::task_execution(&s, &sub, "nap").await;
    st2.ok(&["execution", "cancel", &parent]).await;
    for id in [&parent, &sub] {
        let e = s.finished(&json!(id)).await;
        assert_eq!(e["status"], "canceled", "{e}");
    }

    // re-run from the failed task
    let first = s.run("wf.fixable", json!({})).await;
    let first = first["id"].as_str().expect("id").to_owned();
    assert_eq!(s.finished(&json!(first)).await["status"], "failed");
    st2.ok(&["key", "set", "wf_action", "core.echo"]).await;
    let out = st2
        .ok(&["execution", "re-run", &first, "--tasks", "two"])
        .await;
    let again = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("id: "))
        .unwrap_or_else(|| panic!("an id in:\n{out}"))
        .to_owned();
    let again = s.finished(&json!(again)).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(
        again["result"],
        json!({"output": {"first": "one", "second": "two"}})
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_st2_cli_answers_inquiries() {
    let Some(exe) = st2() else {
        return;
    };
    let s = Server::start_with(
        vec![squall_tests::core_pack(), crate::inquiries::ask_pack()],
        Default::default(),
    )
    .await;
    let st2 = St2::against(exe, &s);
    let wf = s.run("ask.approve", json!({})).await;
    let wf = wf["id"].as_str().expect("id").to_owned();
    s.wait_for(&format!("/api/v1/executions/{wf}"), |e| {
        e["status"] == "paused"
    })
    .await;
    let ask = crate::workflows::task_execution(&s, &wf, "get_approval").await;
    let ask = ask["id"].as_str().expect("id").to_owned();

    let listed = st2.table(&["inquiry", "list"]).await;
    assert!(listed.contains(&ask) && listed.contains("ops"), "{listed}");
    let listed = st2.json(&["inquiry", "list"]).await;
    assert_eq!(listed[0]["id"], ask.as_str(), "{listed}");
    let got = st2.table(&["inquiry", "get", &ask]).await;
    assert!(
        got.contains("approved") && got.contains("Continue?"),
        "{got}"
    );

    // A response the schema refuses is refused, and changes nothing.
    let refused = st2
        .run(&["inquiry", "respond", &ask, "-r", r#"{"approved": "maybe"}"#])
        .await;
    assert_ne!(refused.code, 0, "{}", refused.out);
    assert!(
        refused.out.contains("did not pass schema validation"),
        "{}",
        refused.out
    );
    let out = st2
        .ok(&["inquiry", "respond", &ask, "-r", r#"{"approved": true}"#])
        .await;
    assert!(out.contains(&ask), "{out}");
    let done = s.finished(&json!(wf)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["output"]["approved"], true);
    let again = st2
        .run(&["inquiry", "respond", &ask, "-r", r#"{"approved": true}"#])
        .await;
    assert_ne!(again.code, 0, "answered once: {}", again.out);
    s.stop().await;
}
