//! Shared by Squall's integration tests: the paths of the guests that
//! `build.rs` compiled, and helpers that assemble packs around them.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

pub mod postgres;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// A copy of `packs/core` with its built component in `actions/`, the way an
/// uploaded pack ships it.
pub fn core_pack() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = workspace_root().join("packs/core");
    std::fs::copy(src.join("pack.yaml"), dir.path().join("pack.yaml")).expect("copy pack.yaml");
    let actions = dir.path().join("actions");
    std::fs::create_dir(&actions).expect("mkdir actions");
    for entry in std::fs::read_dir(src.join("actions")).expect("read actions") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name");
        std::fs::copy(&path, actions.join(name)).expect("copy action");
    }
    std::fs::copy(CORE_ACTIONS, actions.join("core_actions.wasm")).expect("copy component");
    dir
}

/// A pack named `name` whose actions each run one guest: `(action, guest
/// path, extra YAML under the action, e.g. a parameters block)`.
pub fn pack_of(name: &str, actions: &[(&str, &str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pack.yaml"),
        format!("name: {name}\nversion: 1.0.0\ndescription: test pack\nauthor: tests\n"),
    )
    .expect("write pack.yaml");
    let actions_dir = dir.path().join("actions");
    std::fs::create_dir(&actions_dir).expect("mkdir actions");
    for (action, guest, extra) in actions {
        let wasm = format!("{action}.wasm");
        std::fs::copy(guest, actions_dir.join(&wasm)).expect("copy guest");
        std::fs::write(
            actions_dir.join(format!("{action}.yaml")),
            format!("name: {action}\nrunner_type: wasm\nentry_point: {wasm}\n{extra}"),
        )
        .expect("write action");
    }
    dir
}

/// Copy every `*.yaml` of `src/sub` into `dst/sub`.
fn copy_yaml(src: &Path, dst: &Path, sub: &str) {
    let from = src.join(sub);
    if !from.is_dir() {
        return;
    }
    std::fs::create_dir_all(dst.join(sub)).expect("mkdir");
    for entry in std::fs::read_dir(&from).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dst.join(sub).join(path.file_name().expect("name")))
                .expect("copy yaml");
        }
    }
}

/// A copy of `packs/examples` with its built components and `config` as
/// its `config.yaml`; the DirectorySensor polls every `poll_interval`
/// seconds.
pub fn examples_pack(config: &str, poll_interval: f64) -> TempDir {
    let dir = pack_copy(
        "examples",
        &[
            ("actions/examples_actions.wasm", EXAMPLES_ACTIONS),
            ("sensors/directory_sensor.wasm", EXAMPLES_SENSOR),
        ],
    );
    let sensor = dir.path().join("sensors/directory_sensor.yaml");
    let text = std::fs::read_to_string(&sensor).expect("read sensor");
    std::fs::write(
        &sensor,
        text.replace(
            "poll_interval: 30",
            &format!("poll_interval: {poll_interval}"),
        ),
    )
    .expect("write sensor");
    std::fs::write(dir.path().join("config.yaml"), config).expect("write config");
    dir
}

/// A pack `name` with the test sensor (`tests/guests/sensor`) as
/// `<name>.TestSensor` in `mode`, polling every `poll_interval` seconds,
/// declaring `trigger_types` (a YAML list) — plus `extra` files (path
/// relative to the pack, content).
pub fn sensor_pack(
    name: &str,
    mode: &str,
    poll_interval: f64,
    trigger_types: &str,
    extra: &[(&str, &str)],
) -> TempDir {
    let dir = pack_of(name, &[]);
    std::fs::create_dir(dir.path().join("sensors")).expect("mkdir");
    std::fs::copy(SENSOR, dir.path().join("sensors/test_sensor.wasm")).expect("copy sensor");
    std::fs::write(
        dir.path().join("sensors/test_sensor.yaml"),
        format!(
            "class_name: TestSensor\nentry_point: test_sensor.wasm\npoll_interval: {poll_interval}\ntrigger_types: {trigger_types}\n"
        ),
    )
    .expect("write sensor");
    std::fs::write(
        dir.path().join("config.schema.yaml"),
        "mode: {type: string, required: true}\n",
    )
    .expect("write schema");
    std::fs::write(dir.path().join("config.yaml"), format!("mode: {mode}\n"))
        .expect("write config");
    for (path, text) in extra {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write extra");
    }
    dir
}

/// A copy of `packs/<name>`'s metadata (pack.yaml, config.schema.yaml,
/// actions and their workflows, sensors, rules, policies) with `components` (path inside the
/// pack, built file) copied in.
pub fn pack_copy(name: &str, components: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = workspace_root().join("packs").join(name);
    for file in ["pack.yaml", "config.schema.yaml"] {
        if src.join(file).is_file() {
            std::fs::copy(src.join(file), dir.path().join(file)).expect("copy");
        }
    }
    for sub in [
        "actions",
        "actions/workflows",
        "sensors",
        "rules",
        "policies",
        "tests",
    ] {
        copy_yaml(&src, dir.path(), sub);
    }
    for (to, from) in components {
        let to = dir.path().join(to);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, to).expect("copy component");
    }
    dir
}

/// A component of the `action` world that traps while it is being
/// instantiated: its core module's start function runs `unreachable`, so
/// `run` can never be called. (Rust guests run their constructors lazily,
/// on the first call, so this one is written by hand.)
pub fn trap_at_instantiation_component() -> Vec<u8> {
    action_with_start("unreachable")
}

/// Like [`trap_at_instantiation_component`], but its start function loops
/// forever.
pub fn loop_at_instantiation_component() -> Vec<u8> {
    action_with_start("(loop $forever (br $forever))")
}

/// An `action`-world component whose core module's start function is
/// `start_body`.
fn action_with_start(start_body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"
(component
  (type $ctx (record
    (field "execution-id" string)
    (field "tenant" string)
    (field "pack" string)
    (field "action" string)
    (field "api-url" (option string))
    (field "auth-token" (option string))
    (field "trace-tag" (option string))))
  (export $ctx-e "context" (type $ctx))
  (type $err (variant
    (case "invalid-input" string)
    (case "failed" string)
    (case "retryable" string)))
  (export $err-e "action-error" (type $err))
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
    (func (export "run") (param i32) (result i32) unreachable)
    (func $start {start_body})
    (start $start))
  (core instance $i (instantiate $m))
  (func $run (param "ctx" $ctx-e) (param "parameters" string)
    (result (result string (error $err-e)))
    (canon lift (core func $i "run") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
  (export "run" (func $run)))
"#
    ))
    .expect("the fixture is valid WAT")
}

/// A pack `name` without actions whose `rules/` holds `rules`: `(file,
/// YAML)`.
pub fn rules_pack(name: &str, rules: &[(&str, &str)]) -> TempDir {
    let dir = pack_of(name, &[]);
    let at = dir.path().join("rules");
    std::fs::create_dir(&at).expect("mkdir rules");
    for (file, text) in rules {
        std::fs::write(at.join(file), text).expect("write rule");
    }
    dir
}

const ST2CLIENT: &str = "st2client==3.9.0";

/// StackStorm's CLI (st2client 3.9.0), installed once into a virtualenv
/// under `tmp` (a test's `CARGO_TARGET_TMPDIR`), or `SQUALL_TEST_ST2`.
/// `None` (the test skips, saying why) where python3 is missing, except
/// on CI, where that fails the test.
pub fn st2client(tmp: &Path) -> Option<PathBuf> {
    if let Some(given) = std::env::var_os("SQUALL_TEST_ST2") {
        return Some(PathBuf::from(given));
    }
    let venv = tmp.join("st2client-3.9.0");
    let st2 = venv.join("bin/st2");
    // Written last: a half-made venv (an interrupted install) is redone.
    let complete = venv.join("squall-installed");
    if complete.is_file() {
        return Some(st2);
    }
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        let why =
            format!("the st2client test needs python3 (with venv and pip) to install {ST2CLIENT}");
        // CI has Python (.ci/run installs it): there, its absence is a failure.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    // One install at a time: tests that start together wait for the
    // first, then find its virtualenv complete.
    std::fs::create_dir_all(tmp).expect("tmp dir");
    let lock = std::fs::File::create(tmp.join("st2client-3.9.0.lock")).expect("lock file");
    lock.lock().expect("lock");
    if complete.is_file() {
        return Some(st2);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(
        made.success(),
        "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    );
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            ST2CLIENT,
        ])
        .status()
        .expect("pip runs");
    assert!(pip.success(), "pip install {ST2CLIENT} failed");
    std::fs::write(&complete, ST2CLIENT).expect("mark the venv complete");
    Some(st2)
}

/// The address a `squall serve` child (stdout piped) says it listens on —
/// its first line, `squall: listening on http://ADDR` — waited for up to
/// `within`; the child is killed and `what` named if it does not say so.
pub fn listening_addr(
    child: &mut std::process::Child,
    within: std::time::Duration,
    what: &str,
) -> String {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("squall serve's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(within).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("{what}: not listening within {within:?}")
    });
    line.trim()
        .strip_prefix("squall: listening on http://")
        .unwrap_or_else(|| panic!("{what}: unexpected first line {line:?}"))
        .to_owned()
}

/// Whether this process runs as root (some tests change users, which
/// only root may).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
