//! The `squall` binary as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

struct Env {
    data: tempfile::TempDir,
    pack: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            data: tempfile::tempdir().expect("tempdir"),
            pack: squall_tests::core_pack(),
        }
    }

    fn squall(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_squall"))
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env_remove("SQUALL_LOG")
            .output()
            .expect("squall runs")
    }

    fn run(&self, args: &[&str]) -> Output {
        let pack = self.pack.path().to_str().expect("utf-8 path").to_owned();
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--packs", &pack]);
        self.squall(&all)
    }

    fn listed(&self) -> String {
        let out = self.squall(&["execution", "list"]);
        assert!(out.status.success());
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn echo_prints_its_result_and_is_listed() {
    let env = Env::new();
    let out = env.run(&["core.echo", "message=hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("status: succeeded"), "{text}");
    assert!(text.contains("result:\n  message: hello"), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("id printed")
        .to_owned();
    let listed = env.listed();
    assert!(
        listed.contains(&id) && listed.contains("core.echo"),
        "{listed}"
    );

    let got = env.squall(&["execution", "get", &id, "--json"]);
    assert!(got.status.success());
    let record: serde_json::Value = serde_json::from_slice(&got.stdout).expect("json");
    assert_eq!(record["result"]["message"], "hello");
    assert_eq!(record["status"], "succeeded");
}

#[test]
fn failed_execution_exits_non_zero() {
    let env = Env::new();
    let out = env.run(&["core.fail", "message=nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("status: failed"));
    assert!(stdout(&out).contains("error: nope"));
}

/// Each bad request: exit 2, exactly one line on stderr naming the problem,
/// and no execution recorded.
#[test]
fn bad_requests_give_one_clear_line_and_run_nothing() {
    let env = Env::new();
    let cases: [(&[&str], &str); 4] = [
        (
            &["core.sleep", "seconds=abc"],
            "error: invalid parameters for 'core.sleep': parameter 'seconds': 'abc' is not a number",
        ),
        (
            &["core.echo"],
            "error: invalid parameters for 'core.echo': missing required parameter 'message'",
        ),
        (
            &["core.nope"],
            "error: unknown action 'core.nope': pack 'core' has no action 'nope' (it has: echo, fail, noop, sleep)",
        ),
        (
            &["core.echo", "colour=red"],
            "error: invalid parameters for 'core.echo': unknown parameter 'colour' (known: message, timeout)",
        ),
    ];
    for (args, expected) in cases {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&out).trim_end(), expected, "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    assert_eq!(
        env.listed().lines().count(),
        1,
        "only the header: nothing ran"
    );
}

#[test]
fn malformed_pack_yaml_names_file_and_field() {
    let env = Env::new();
    let manifest = env.pack.path().join("pack.yaml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(&manifest, text.replace("version: 0.1.0", "version: latest")).expect("write");
    let out = env.run(&["core.echo", "message=hello"]);
    assert_eq!(out.status.code(), Some(2));
    let expected = format!(
        "error: {}: field 'version': 'latest' is not a semantic version (expected e.g. 1.0.0)",
        manifest.display()
    );
    assert_eq!(stderr(&out).trim_end(), expected);

    std::fs::write(&manifest, "name: [core\n").expect("write");
    let out = env.run(&["core.echo", "message=hello"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {}: invalid YAML", manifest.display())),
        "{err}"
    );
    assert_eq!(env.listed().lines().count(), 1, "nothing ran");
}

#[test]
fn pack_build_reports_where_the_components_are() {
    // Build a copy of a tiny pack whose build command only copies a file,
    // so the test exercises the verb without a nested cargo build.
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path();
    std::fs::write(
        pack.join("pack.yaml"),
        "name: tiny\nversion: 1.0.0\ndescription: d\nauthor: a\nbuild:\n  command: mkdir -p out && cp src.wasm out/tiny.wasm\n  output: out\n",
    )
    .expect("write");
    std::fs::create_dir(pack.join("actions")).expect("mkdir");
    std::fs::write(
        pack.join("actions/hi.yaml"),
        "name: hi\nrunner_type: wasm\nentry_point: tiny.wasm\n",
    )
    .expect("write");
    std::fs::copy(squall_tests::CORE_ACTIONS, pack.join("src.wasm")).expect("copy");
    let env = Env::new();
    let out = env.squall(&["pack", "build", pack.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = Path::new(pack).join("out/tiny.wasm");
    assert_eq!(
        stdout(&out).trim_end(),
        format!("tiny.hi: {}", expected.display())
    );

    std::fs::write(
        pack.join("pack.yaml"),
        "name: tiny\nversion: 1.0.0\ndescription: d\nauthor: a\nbuild:\n  command: exit 3\n",
    )
    .expect("write");
    let out = env.squall(&["pack", "build", pack.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("error: build of pack 'tiny' failed"),
        "{}",
        stderr(&out)
    );
}
