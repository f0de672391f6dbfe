//! Sensors over HTTP: the tutorial's DirectorySensor, core.file_watch,
//! failures and restarts, kv state across restarts, triggers driven by
//! rules, bad sensor packs, enable/disable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use squall_reactor::{ReactorConfig, SensorConfig};
use squall_sandbox::SensorLimits;
use tempfile::TempDir;

use crate::server::Server;

/// Quick limits and backoff, so failures play out in a test's time.
fn config() -> ReactorConfig {
    ReactorConfig {
        sensors: SensorConfig {
            limits: SensorLimits {
                call_timeout: Duration::from_secs(3),
                memory_bytes: 64 << 20,
            },
            backoff: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            max_failures: 3,
            log_bytes: 64 << 10,
        },
        ..ReactorConfig::default()
    }
}

async fn start(data: &Path, packs: &[&TempDir], allowed: Vec<PathBuf>) -> Server {
    let paths: Vec<PathBuf> = packs.iter().map(|p| p.path().to_owned()).collect();
    Server::start_in(data, &paths, config(), allowed)
        .await
        .expect("server starts")
}

/// Wait (bounded) until `path` holds a line containing `needle`.
fn wait_for_line(path: &Path, needle: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l.contains(needle))) {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no line with {needle:?} in {} within {within:?}; it holds: {:?}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

async fn sensor(s: &Server, r: &str) -> Value {
    let (status, body) = s.get(&format!("/api/v1/sensortypes/{r}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_sensor(s: &Server, r: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let body = sensor(s, r).await;
        if done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{r} never {what}; last: {}", sensor(s, r).await);
}

fn log_text(body: &Value) -> String {
    body["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|l| {
            format!(
                "[{}] {}",
                l["level"].as_str().unwrap_or_default(),
                l["message"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn directory_sensor_logs_created_modified_deleted() {
    let root = tempfile::tempdir().expect("tempdir");
    let (watched, out) = (root.path().join("watched"), root.path().join("out"));
    std::fs::create_dir_all(&watched).expect("mkdir");
    std::fs::create_dir_all(&out).expect("mkdir");
    let log = out.join("output.txt");
    let poll = 2.0;
    let examples = squall_tests::examples_pack(
        &format!(
            "directories: [{}]\nlog: {}\n",
            watched.display(),
            log.display()
        ),
        poll,
    );
    let core = squall_tests::core_pack();
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(
        data.path(),
        &[&core, &examples],
        vec![root.path().to_owned()],
    )
    .await;
    wait_sensor(&s, "examples.DirectorySensor", "ran", |b| {
        b["state"] == "running"
    })
    .await;

    let file = watched.join("hoge");
    // Seen at the next poll at the latest; the action's run and write fit
    // in the second interval.
    let within = Duration::from_secs_f64(2.0 * poll);
    std::fs::write(&file, "first").expect("create");
    let took = wait_for_line(&log, &format!("(created) {}", file.display()), within);
    eprintln!("created seen after {took:?}");
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&file, "second, longer").expect("modify");
    let f = std::fs::File::options()
        .append(true)
        .open(&file)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    wait_for_line(&log, &format!("(modified) {}", file.display()), within);
    std::fs::remove_file(&file).expect("delete");
    wait_for_line(&log, &format!("(deleted) {}", file.display()), within);

    let text = std::fs::read_to_string(&log).expect("log");
    let first = text.lines().next().expect("a line");
    // `[{{ trigger.time }}] ({{ trigger.status }}) {{ trigger.path }}`
    assert!(first.starts_with('['), "{first}");
    assert!(first.contains("] (created) "), "{first}");
    let body = sensor(&s, "examples.DirectorySensor").await;
    assert_eq!(body["dispatched"], 3, "{body}");
    assert_eq!(body["restart_count"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn file_watch_drives_the_same_action() {
    let root = tempfile::tempdir().expect("tempdir");
    let (watched, out) = (root.path().join("watched"), root.path().join("out"));
    std::fs::create_dir_all(&watched).expect("mkdir");
    std::fs::create_dir_all(&out).expect("mkdir");
    let log = out.join("output.txt");
    let examples = squall_tests::examples_pack(&format!("log: {}\n", log.display()), 30.0);
    let core = squall_tests::core_pack();
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(
        data.path(),
        &[&core, &examples],
        vec![root.path().to_owned()],
    )
    .await;
    let rule = json!({
        "name": "watch_files", "pack": "examples", "enabled": true,
        "trigger": {"type": "core.file_watch", "parameters": {"path": watched.display().to_string(), "glob": "*.txt"}},
        "action": {"ref": "examples.output_context",
                   "parameters": {"context": "({{ trigger.event }}) {{ trigger.path }}"}},
    });
    let r = s.post("/api/v1/rules", &rule).await;
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let within = Duration::from_secs(5);
    let file = watched.join("note.txt");
    std::fs::write(&file, "first").expect("create");
    wait_for_line(&log, &format!("(created) {}", file.display()), within);
    std::fs::write(&file, "second").expect("modify");
    wait_for_line(&log, &format!("(modified) {}", file.display()), within);
    std::fs::remove_file(&file).expect("delete");
    wait_for_line(&log, &format!("(deleted) {}", file.display()), within);
    // The glob keeps other files out.
    std::fs::write(watched.join("ignored.bin"), "x").expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("ignored.bin"), "{text}");

    // A directory the server does not allow is refused, naming it.
    let outside = json!({
        "name": "watch_etc", "pack": "examples", "enabled": true,
        "trigger": {"type": "core.file_watch", "parameters": {"path": "/etc"}},
        "action": {"ref": "core.noop"},
    });
    let r = s.post("/api/v1/rules", &outside).await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["faultstring"]
            .as_str()
            .expect("fault")
            .contains("/etc"),
        "{body}"
    );
    s.stop().await;
}

const COUNTED: &str = "[{name: counted, payload_schema: {type: object, properties: {count: {type: integer}}, required: [count]}}]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_panicking_sensor_restarts_with_backoff_and_others_keep_working() {
    let flaky = squall_tests::sensor_pack("flaky", "panic", 0.1, "[]", &[]);
    let steady = squall_tests::sensor_pack(
        "steady",
        "counter",
        0.1,
        COUNTED,
        &[(
            "rules/count.yaml",
            "name: count\nenabled: true\ntrigger: {type: steady.counted}\naction: {ref: core.noop}\n",
        )],
    );
    let core = squall_tests::core_pack();
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(data.path(), &[&core, &flaky, &steady], vec![]).await;

    let backing_off = wait_sensor(&s, "flaky.TestSensor", "backed off", |b| {
        b["state"] == "backing_off"
    })
    .await;
    assert!(backing_off["next_start_at"].is_string(), "{backing_off}");
    let failed = wait_sensor(&s, "flaky.TestSensor", "was marked failed", |b| {
        b["state"] == "failed"
    })
    .await;
    let error = failed["last_error"].as_str().expect("last_error");
    assert!(
        error.contains("guest panicked: sensor broke on purpose"),
        "{error}"
    );
    assert_eq!(
        failed["restart_count"], 2,
        "two restarts, then marked failed"
    );
    let log = log_text(&failed);
    assert!(log.contains("sensor broke on purpose"), "{log}");
    assert!(log.contains("marked failed"), "{log}");

    // The other sensor and its rule went on working all along.
    let steady = wait_sensor(&s, "steady.TestSensor", "dispatched", |b| {
        b["dispatched"].as_u64().is_some_and(|n| n >= 5)
    })
    .await;
    assert_eq!(steady["state"], "running");
    assert_eq!(steady["restart_count"], 0, "{steady}");
    let (_, runs) = s.get("/api/v1/executions?action=core.noop").await;
    assert!(!runs.as_array().expect("list").is_empty());

    // Enabling a failed sensor starts it afresh.
    let r = s
        .http
        .put(format!("{}/api/v1/sensortypes/flaky.TestSensor", s.base))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    wait_sensor(&s, "flaky.TestSensor", "restarted", |b| {
        b["state"] != "failed"
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_stuck_sensor_is_stopped_by_its_call_limit() {
    let stuck = squall_tests::sensor_pack("stuck", "loop", 0.1, "[]", &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(data.path(), &[&stuck], vec![]).await;
    let body = wait_sensor(&s, "stuck.TestSensor", "hit its limit", |b| {
        b["restart_count"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    let error = body["last_error"].as_str().expect("last_error");
    assert_eq!(error, "poll ran past its time limit of 3.0 s");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn sensor_kv_state_survives_a_restart() {
    let counter = squall_tests::sensor_pack("counter", "counter", 0.1, COUNTED, &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let counts = |instances: &Value| -> Vec<u64> {
        instances
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|t| t["payload"]["count"].as_u64())
            .collect()
    };
    let s = start(data.path(), &[&counter], vec![]).await;
    let first = s
        .wait_for("/api/v1/triggerinstances?trigger=counter.counted", |l| {
            l.as_array().is_some_and(|a| a.len() >= 3)
        })
        .await;
    s.stop().await;
    let before = counts(&first).into_iter().max().expect("counts");

    let s = start(data.path(), &[&counter], vec![]).await;
    let (_, now) = s
        .get("/api/v1/triggerinstances?trigger=counter.counted&limit=1000")
        .await;
    let known = now.as_array().map(Vec::len).unwrap_or(0);
    let after = s
        .wait_for(
            "/api/v1/triggerinstances?trigger=counter.counted&limit=1000",
            |l| l.as_array().is_some_and(|a| a.len() > known + 1),
        )
        .await;
    let all = counts(&after);
    let newest = *all.iter().max().expect("counts");
    assert!(newest > before, "the count went on from {before}: {all:?}");
    // Counted on, not from 1 again.
    assert_eq!(all.iter().filter(|c| **c == 1).count(), 1, "{all:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn rules_drive_the_triggers_a_sensor_is_told_about() {
    let watch = squall_tests::sensor_pack(
        "watch",
        "params",
        0.1,
        "[{name: url_up, parameters_schema: {type: object, properties: {url: {type: string}}, required: [url]}}]",
        &[],
    );
    let core = squall_tests::core_pack();
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(data.path(), &[&core, &watch], vec![]).await;
    let none = wait_sensor(&s, "watch.TestSensor", "ran", |b| b["state"] == "running").await;
    assert_eq!(none["triggers"], json!([]));

    let rule = |url: &str| {
        json!({"name": "up", "pack": "watch", "enabled": true,
               "trigger": {"type": "watch.url_up", "parameters": {"url": url}},
               "action": {"ref": "core.noop"}})
    };
    let r = s.post("/api/v1/rules", &rule("http://a.example")).await;
    assert_eq!(r.status().as_u16(), 201);
    let added = wait_sensor(&s, "watch.TestSensor", "heard of the trigger", |b| {
        log_text(b).contains("add watch.url_up#")
    })
    .await;
    let id = added["triggers"][0]["id"].as_str().expect("id").to_owned();
    assert!(
        log_text(&added).contains(&format!("add {id} {{\"url\":\"http://a.example\"}}")),
        "{}",
        log_text(&added)
    );
    // Its dispatches to the trigger id carry the trigger's parameters, so
    // the rule runs.
    let runs = s
        .wait_for("/api/v1/executions?action=core.noop", |l| {
            l.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(runs[0]["context"]["rule"]["ref"], "watch.up");

    // Editing the rule's parameters updates the trigger in place.
    let r = s
        .http
        .put(format!("{}/api/v1/rules/watch.up", s.base))
        .json(&rule("http://b.example"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    wait_sensor(&s, "watch.TestSensor", "heard of the update", |b| {
        log_text(b).contains(&format!("update {id} {{\"url\":\"http://b.example\"}}"))
    })
    .await;

    let (status, _) = (
        s.http
            .delete(format!("{}/api/v1/rules/watch.up", s.base))
            .send()
            .await
            .expect("request")
            .status()
            .as_u16(),
        (),
    );
    assert_eq!(status, 204);
    let removed = wait_sensor(&s, "watch.TestSensor", "heard of the removal", |b| {
        log_text(b).contains(&format!("remove {id}"))
    })
    .await;
    assert_eq!(removed["triggers"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn refused_payloads_are_counted_and_logged() {
    let bad = squall_tests::sensor_pack("bad", "bad-payload", 0.1, COUNTED, &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(data.path(), &[&bad], vec![]).await;
    let body = wait_sensor(&s, "bad.TestSensor", "was refused", |b| {
        b["invalid_payloads"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    let log = log_text(&body);
    assert!(log.contains("bad.counted payload refused"), "{log}");
    assert!(log.contains("count"), "the reason names the field: {log}");
    assert_eq!(body["state"], "running", "a refused payload is not a crash");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn sensors_are_disabled_and_enabled_without_a_restart() {
    let counter = squall_tests::sensor_pack("counter", "counter", 0.1, COUNTED, &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(data.path(), &[&counter], vec![]).await;
    wait_sensor(&s, "counter.TestSensor", "dispatched", |b| {
        b["dispatched"].as_u64().is_some_and(|n| n >= 2)
    })
    .await;
    let put = |enabled: bool| {
        s.http
            .put(format!("{}/api/v1/sensortypes/counter.TestSensor", s.base))
            .json(&json!({ "enabled": enabled }))
            .send()
    };
    assert_eq!(put(false).await.expect("request").status().as_u16(), 200);
    let stopped = wait_sensor(&s, "counter.TestSensor", "stopped", |b| {
        b["state"] == "disabled"
    })
    .await;
    let n = stopped["dispatched"].as_u64().expect("count");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sensor(&s, "counter.TestSensor").await["dispatched"], n);
    assert_eq!(put(true).await.expect("request").status().as_u16(), 200);
    wait_sensor(&s, "counter.TestSensor", "dispatched again", |b| {
        b["dispatched"].as_u64().is_some_and(|m| m > n)
    })
    .await;
    let (status, _) = s.get("/api/v1/sensortypes/nope.Nope").await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn bad_sensor_packs_are_refused_naming_the_file() {
    let data = tempfile::tempdir().expect("tempdir");
    // An action component where a sensor should be.
    let wrong = squall_tests::sensor_pack("wrong", "counter", 1.0, "[]", &[]);
    std::fs::copy(
        squall_tests::CORE_ACTIONS,
        wrong.path().join("sensors/test_sensor.wasm"),
    )
    .expect("copy");
    let err = Server::start_in(data.path(), &[wrong.path().to_owned()], config(), vec![])
        .await
        .err()
        .expect("refused");
    assert!(err.contains("sensors/test_sensor.yaml"), "{err}");
    assert!(err.contains("squall:automation/sensor world"), "{err}");

    for (yaml, needle) in [
        (
            "class_name: TestSensor\npoll_interval: 1\n",
            "field 'entry_point'",
        ),
        (
            "class_name: TestSensor\nentry_point: test_sensor.wasm\ntrigger_types: [{name: t, payload_schema: {type: 7}}]\n",
            "field 'trigger_types[0]'",
        ),
    ] {
        let pack = squall_tests::sensor_pack("broken", "counter", 1.0, "[]", &[]);
        std::fs::write(pack.path().join("sensors/test_sensor.yaml"), yaml).expect("write");
        let err = Server::start_in(data.path(), &[pack.path().to_owned()], config(), vec![])
            .await
            .err()
            .expect("refused");
        assert!(err.contains("sensors/test_sensor.yaml"), "{err}");
        assert!(err.contains(needle), "{err}");
    }
    // A pack whose config asks for a directory the server does not allow.
    let examples = squall_tests::examples_pack("directories: [/etc]\n", 30.0);
    let core = squall_tests::core_pack();
    let packs = [core.path().to_owned(), examples.path().to_owned()];
    let err = Server::start_in(data.path(), &packs, config(), vec![])
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("'/etc'") && err.contains("--allow-dir"),
        "{err}"
    );
}
