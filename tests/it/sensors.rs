//! Sensors over HTTP: the tutorial's DirectorySensor, core.file_watch,
//! failures and restarts, kv state across restarts, triggers driven by
//! rules, bad sensor packs, enable/disable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use squall_reactor::install::archive_pack;
use squall_reactor::{ReactorConfig, SensorConfig};
use squall_sandbox::SensorLimits;
use tempfile::TempDir;

use super::server::{Client, Server};
use crate::util::eventually;

/// Quick backoff, so failures play out in a test's time; a call limit no
/// healthy call comes near, even on a busy machine (the test of the limit
/// sets its own).
fn config() -> ReactorConfig {
    ReactorConfig {
        sensors: SensorConfig {
            limits: SensorLimits {
                call_timeout: Duration::from_secs(60),
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

/// Wait (bounded by [`crate::util::PATIENCE`]) until `path` holds a line
/// containing `needle`.
async fn wait_for_line(path: &Path, needle: &str) {
    eventually(
        &format!("a line with {needle:?} in {}", path.display()),
        || async {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().any(|l| l.contains(needle)) {
                Ok(())
            } else {
                Err(format!("{text:?}"))
            }
        },
    )
    .await
}

/// Put a file with `text` at `path` in one step (written beside, then
/// renamed), its modification time `ahead` in the future: a poll sees it
/// whole or not at all.
fn put_file(path: &Path, staging: &Path, text: &str, ahead: Duration) {
    let staged = staging.join(path.file_name().expect("a file name"));
    std::fs::write(&staged, text).expect("write");
    std::fs::File::options()
        .append(true)
        .open(&staged)
        .expect("open")
        .set_modified(std::time::SystemTime::now() + ahead)
        .expect("touch");
    std::fs::rename(&staged, path).expect("rename");
}

async fn sensor(s: &Server, r: &str) -> Value {
    let (status, body) = s.get(&format!("/api/v1/sensortypes/{r}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_sensor(s: &Server, r: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{r} {what}"), || async {
        let body = sensor(s, r).await;
        if done(&body) {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
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
    let staging = root.path().join("staging");
    std::fs::create_dir_all(&staging).expect("mkdir");
    put_file(&file, &staging, "first", Duration::ZERO);
    wait_for_line(&log, &format!("(created) {}", file.display())).await;
    put_file(&file, &staging, "second, longer", Duration::from_secs(5));
    wait_for_line(&log, &format!("(modified) {}", file.display())).await;
    std::fs::remove_file(&file).expect("delete");
    wait_for_line(&log, &format!("(deleted) {}", file.display())).await;

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
    let file = watched.join("note.txt");
    std::fs::write(&file, "first").expect("create");
    wait_for_line(&log, &format!("(created) {}", file.display())).await;
    std::fs::write(&file, "second").expect("modify");
    wait_for_line(&log, &format!("(modified) {}", file.display())).await;
    std::fs::remove_file(&file).expect("delete");
    wait_for_line(&log, &format!("(deleted) {}", file.display())).await;
    // The glob keeps other files out: a file it matches, made after one it
    // does not, is seen; the other never is.
    std::fs::write(watched.join("ignored.bin"), "x").expect("create");
    let after = watched.join("after.txt");
    std::fs::write(&after, "x").expect("create");
    wait_for_line(&log, &format!("(created) {}", after.display())).await;
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
    // (Its state leaves `failed` only for the moments before it fails
    // again; the restarts it counts stay.)
    wait_sensor(&s, "flaky.TestSensor", "restarted", |b| {
        b["restart_count"].as_u64().is_some_and(|n| n > 2)
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_failed_sensor_shows_when_it_starts_again() {
    let flaky = squall_tests::sensor_pack("waiting", "panic", 0.1, "[]", &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let mut patient = config();
    // Long enough to be seen backing off, on any machine.
    patient.sensors.backoff = Duration::from_secs(600);
    patient.sensors.backoff_cap = Duration::from_secs(600);
    let s = Server::start_in(data.path(), &[flaky.path().to_owned()], patient, vec![])
        .await
        .expect("server starts");
    let body = wait_sensor(&s, "waiting.TestSensor", "backed off", |b| {
        b["state"] == "backing_off"
    })
    .await;
    assert!(body["next_start_at"].is_string(), "{body}");
    assert_eq!(body["restart_count"], 1, "{body}");
    let error = body["last_error"].as_str().expect("last_error");
    assert!(error.contains("sensor broke on purpose"), "{error}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_stuck_sensor_is_stopped_by_its_call_limit() {
    let stuck = squall_tests::sensor_pack("stuck", "loop", 0.1, "[]", &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let mut quick = config();
    quick.sensors.limits.call_timeout = Duration::from_secs(3);
    let s = Server::start_in(data.path(), &[stuck.path().to_owned()], quick, vec![])
        .await
        .expect("server starts");
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
    let counter = squall_tests::sensor_pack("toggled", "counter", 0.1, COUNTED, &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(data.path(), &[&counter], vec![]).await;
    wait_sensor(&s, "toggled.TestSensor", "dispatched", |b| {
        b["dispatched"].as_u64().is_some_and(|n| n >= 2)
    })
    .await;
    let put = |enabled: bool| {
        s.http
            .put(format!("{}/api/v1/sensortypes/toggled.TestSensor", s.base))
            .json(&json!({ "enabled": enabled }))
            .send()
    };
    assert_eq!(put(false).await.expect("request").status().as_u16(), 200);
    let stopped = wait_sensor(&s, "toggled.TestSensor", "stopped", |b| {
        b["state"] == "disabled"
    })
    .await;
    let n = stopped["dispatched"].as_u64().expect("count");
    // `disabled` is set once the instance is gone: nothing dispatches after.
    assert_eq!(
        live_instances(&s.http, &s.base, "default", "toggled.TestSensor").await,
        0
    );
    assert_eq!(sensor(&s, "toggled.TestSensor").await["dispatched"], n);
    assert_eq!(put(true).await.expect("request").status().as_u16(), 200);
    wait_sensor(&s, "toggled.TestSensor", "dispatched again", |b| {
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

/// The test sensor in `tagged` mode as pack `tagged`, its events saying
/// `tag`.
fn tagged_pack(tag: &str) -> TempDir {
    squall_tests::sensor_pack(
        "tagged",
        "tagged",
        0.2,
        "[{name: counted, payload_schema: {type: object, required: [count, tag, instance]}}]",
        &[
            (
                "config.schema.yaml",
                "mode: {type: string, required: true}\ntag: {type: string, required: true}\n",
            ),
            ("config.yaml", &format!("mode: tagged\ntag: {tag}\n")),
        ],
    )
}

/// Events of `tagged.counted` so far, per sensor instance: (tag, events).
async fn tagged_events(c: &Client) -> Result<BTreeMap<String, (String, u64)>, String> {
    let mut per_instance = BTreeMap::new();
    for offset in (0..).step_by(1000) {
        let (status, page) = c
            .get(&format!(
                "/api/v1/triggerinstances?trigger=tagged.counted&limit=1000&offset={offset}"
            ))
            .await;
        if status != 200 {
            return Err(format!("{status} {page}"));
        }
        let page = page.as_array().cloned().unwrap_or_default();
        for t in &page {
            let p = &t["payload"];
            let entry = per_instance
                .entry(p["instance"].as_str().unwrap_or_default().to_owned())
                .or_insert((p["tag"].as_str().unwrap_or_default().to_owned(), 0));
            entry.1 += 1;
        }
        if page.len() < 1000 {
            break;
        }
    }
    Ok(per_instance)
}

/// Live instances of `tenant`'s `sensor`, as `/metrics` counts them.
async fn live_instances(admin: &reqwest::Client, base: &str, tenant: &str, sensor: &str) -> i64 {
    let text = admin
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let series = format!("squall_sensor_instances{{tenant=\"{tenant}\",sensor=\"{sensor}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().expect("a gauge's value"))
}

/// Wait until a new instance of `tagged` dispatches with `tag`, then until
/// it dispatched 3 more times; no other instance may dispatch meanwhile.
/// Returns the instance.
async fn one_instance_dispatching(c: &Client, tag: &str) -> String {
    let before = tagged_events(c).await.expect("events");
    let (fresh, first) = eventually(&format!("a new instance dispatching {tag}"), || async {
        let now = tagged_events(c).await?;
        now.iter()
            .find(|(i, (t, _))| t == tag && !before.contains_key(*i))
            .map(|(i, _)| (i.clone(), now.clone()))
            .ok_or_else(|| format!("{now:?}"))
    })
    .await;
    let later = eventually(&format!("{tag} dispatching 3 more times"), || async {
        let now = tagged_events(c).await?;
        if now[&fresh].1 >= first[&fresh].1 + 3 {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    for (instance, (t, n)) in &later {
        if *instance != fresh {
            assert_eq!(
                first.get(instance).map(|e| e.1),
                Some(*n),
                "instance {instance} ({t}) dispatched beside the new {tag} one: {later:?}"
            );
        }
    }
    fresh
}

/// Let the `ticker` pack's sensor dispatch 5 more times: time for a
/// stopped sensor to show it is not.
async fn let_the_ticker_tick(c: &Client) {
    let count = || async {
        let (status, list) = c.get("/api/v1/sensortypes/ticker.TestSensor").await;
        assert_eq!(status, 200, "{list}");
        list["dispatched"].as_u64().expect("dispatched")
    };
    let from = count().await;
    eventually("the ticker dispatching", || async {
        let n = count().await;
        if n >= from + 5 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_replaced_disabled_or_removed_pack_leaves_no_sensor_running() {
    let core = squall_tests::core_pack();
    let data = tempfile::tempdir().expect("tempdir");
    let s = start(data.path(), &[&core], vec![]).await;
    let relay = s.as_key(&s.tenant_with_key("relay", "operator").await);
    let ticker = squall_tests::sensor_pack("ticker", "counter", 0.1, COUNTED, &[]);
    let (status, body) = relay
        .upload(archive_pack(ticker.path()).expect("archive"))
        .await;
    assert_eq!(status, 201, "{body}");

    // The most instances of tagged.TestSensor ever seen alive at once.
    let watching = Arc::new(AtomicBool::new(true));
    let most = {
        let (admin, base, watching) = (s.http.clone(), s.base.clone(), watching.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while watching.load(Ordering::Relaxed) {
                let live = live_instances(&admin, &base, "relay", "tagged.TestSensor").await;
                most = most.max(live);
            }
            most
        })
    };

    let mut seen = Vec::new();
    for tag in ["v1", "v2", "v1"] {
        let (status, body) = relay
            .upload(archive_pack(tagged_pack(tag).path()).expect("archive"))
            .await;
        assert_eq!(status, 201, "{body}");
        let fresh = one_instance_dispatching(&relay, tag).await;
        assert!(!seen.contains(&fresh), "a new instance per install");
        seen.push(fresh.clone());
        // `sensor list` counts what this instance dispatched.
        let (_, view) = relay.get("/api/v1/sensortypes/tagged.TestSensor").await;
        let events = tagged_events(&relay).await.expect("events");
        assert_eq!(view["state"], "running", "{view}");
        assert!(view["dispatched"].as_u64().expect("dispatched") <= events[&fresh].1);
    }

    // Disabled: nothing of it runs, and its count is what it dispatched.
    let (status, body) = relay
        .put(
            "/api/v1/sensortypes/tagged.TestSensor",
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the sensor disabled, its instance gone", || async {
        let (_, view) = relay.get("/api/v1/sensortypes/tagged.TestSensor").await;
        let live = live_instances(&s.http, &s.base, "relay", "tagged.TestSensor").await;
        if view["state"] == "disabled" && live == 0 {
            Ok(())
        } else {
            Err(format!("{live} live; {view}"))
        }
    })
    .await;
    let stopped = tagged_events(&relay).await.expect("events");
    let_the_ticker_tick(&relay).await;
    assert_eq!(tagged_events(&relay).await.expect("events"), stopped);
    let (_, view) = relay.get("/api/v1/sensortypes/tagged.TestSensor").await;
    let last = seen.last().expect("an instance");
    assert_eq!(view["dispatched"].as_u64(), Some(stopped[last].1), "{view}");

    // Enabled again, then the pack removed: gone with its instance.
    let (status, body) = relay
        .put(
            "/api/v1/sensortypes/tagged.TestSensor",
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    one_instance_dispatching(&relay, "v1").await;
    let (status, body) = relay.delete("/api/v1/packs/tagged").await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = relay.get("/api/v1/sensortypes/tagged.TestSensor").await;
    assert_eq!(status, 404);
    eventually("the removed pack's instance gone", || async {
        match live_instances(&s.http, &s.base, "relay", "tagged.TestSensor").await {
            0 => Ok(()),
            n => Err(format!("{n} live")),
        }
    })
    .await;
    let removed = tagged_events(&relay).await.expect("events");
    let_the_ticker_tick(&relay).await;
    assert_eq!(tagged_events(&relay).await.expect("events"), removed);

    watching.store(false, Ordering::Relaxed);
    assert_eq!(
        most.await.expect("watcher"),
        1,
        "one instance at most, ever"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn shutdown_cuts_a_poll_short_instead_of_waiting_out_its_limit() {
    // A poll running wasm, and one waiting in a host call (a sleep).
    for (mode, line) in [("loop", "looping"), ("nap", "napping")] {
        let stuck = squall_tests::sensor_pack("stuck", mode, 0.1, "[]", &[]);
        let data = tempfile::tempdir().expect("tempdir");
        let mut slow = config();
        // Far longer than the test waits for the shutdown.
        slow.sensors.limits.call_timeout = Duration::from_secs(600);
        let s = Server::start_in(data.path(), &[stuck.path().to_owned()], slow, vec![])
            .await
            .expect("server starts");
        wait_sensor(&s, "stuck.TestSensor", "started polling", |b| {
            log_text(b).contains(line)
        })
        .await;
        let started = Instant::now();
        tokio::time::timeout(crate::util::PATIENCE, s.stop())
            .await
            .expect("the shutdown ends well before the poll's own limit");
        // Printed for the record: the stop's grace (1 s) and a little.
        println!("{mode}: shutdown took {:?}", started.elapsed());
    }
}
