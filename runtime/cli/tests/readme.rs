//! Every command README.md shows, run as a reader runs it.
//!
//! The commands are read from the README itself: those of its `sh` set-up
//! block and every `$ ` line of its `console` blocks (with the lines a `\`
//! continues and a here-document's body). [`STEPS`] names each one, in
//! order, with what the reader should see; a command added to the README
//! without a step here, or a step whose command left the README, fails the
//! test.
//!
//! They run with bash in a copy of the repository (its sources, without
//! `target/`), so `squall pack build` really builds, with `squall` and
//! `st2` on `PATH` (`cargo run -q -p squall --` is `squall`, as the README
//! says). What a reader would type differently is substituted, and only
//! that: the address of the server started (the README's
//! `127.0.0.1:9101`; servers listen on a free port, `SQUALL_LISTEN`), keys
//! and ids the README abbreviates (`sq_Vx3...`, `sq_...`, `sq_acme...`,
//! `01a2...`, `01a200938ac0...`) by the ones printed before, and the
//! example's directories (`/srv/incoming`, `/var/tmp/squall`) by
//! directories of the copy. The example sensor polls every second instead
//! of every 30.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for an event before calling it a hang: many times what
/// any step takes on a quiet machine.
const PATIENCE: Duration = Duration::from_secs(180);

/// One README command: what it is (its first line, as the README has it)
/// and how it is run and checked.
type Step = (&'static str, fn(&mut Tour, &str));

const STEPS: &[Step] = &[
    (
        "rustup target add wasm32-wasip2 && cargo run -q -p squall -- pack build packs/core packs/examples && cargo run -q -p squall -- serve --packs packs/core --packs packs/examples",
        |t, c| {
            let (build, serve) = c
                .split_once(" && cargo run -q -p squall -- serve")
                .expect("build, then serve");
            let build = build.replace("cargo run -q -p squall --", "squall");
            t.ok(&build, "core.echo: ");
            t.serve(&format!("squall serve{serve}"));
        },
    ),
    (
        "rustup target add wasm32-wasip2 && cargo test --workspace",
        |t, c| {
            let ci = std::fs::read_to_string(t.dir.join(".ci/run")).expect("read .ci/run");
            assert!(ci.contains(c), ".ci/run runs the README's test command");
        },
    ),
    (
        "squall apikey create --role admin        # printed once; only its hash is stored",
        |t, c| t.admin_key = t.last_line(c),
    ),
    (
        "export SQUALL_URL=http://127.0.0.1:9101 SQUALL_API_KEY=sq_Vx3...",
        Tour::export,
    ),
    (
        "curl -si -X POST localhost:9101/api/v1/webhooks/sample -H \"St2-Api-Key: $SQUALL_API_KEY\" \\",
        |t, c| t.ok(c, "202 Accepted"),
    ),
    (
        "curl -s 'localhost:9101/api/v1/executions?limit=1' -H \"St2-Api-Key: $SQUALL_API_KEY\"",
        |t, c| t.ok_eventually(c, "\"succeeded\""),
    ),
    (
        "squall trace get tour-1                   # trigger instance -> rule -> execution",
        |t, c| t.ok(c, "rule examples.echo_critical"),
    ),
    ("cat > event.yaml <<'EOF'", |t, c| t.ok(c, "")),
    (
        "squall rule test --rule packs/examples/rules/echo_critical.yaml --trigger-instance event.yaml",
        |t, c| {
            t.ok(
                c,
                "match: rule 'examples.echo_critical' would run 'core.echo'",
            )
        },
    ),
    (
        "squall run core.echo message=hello --packs packs",
        |t, c| {
            // In-process: the server's variables are from another terminal.
            t.env.remove("SQUALL_URL");
            t.env.remove("SQUALL_API_KEY");
            let out = t.out(c, "status: succeeded");
            t.run_id = id_in(&out);
        },
    ),
    (
        "squall run core.sleep seconds=3 timeout=1     # timeout is the runner's parameter",
        |t, c| t.fails(c, 1, "status: timeout"),
    ),
    ("squall run core.echo", |t, c| {
        t.fails(c, 2, "missing required parameter 'message'")
    }),
    ("squall execution list", |t, c| {
        let id = t.run_id.clone();
        t.ok(c, &id);
    }),
    (
        "squall execution get 01a200938ac07579bd941b28559c6133 --json",
        |t, c| t.ok(c, "\"succeeded\""),
    ),
    (
        "squall pack new hello                      # a Python pack: an action, a sensor, a rule, tests, a README",
        |t, c| t.ok(c, "made the Python pack 'hello'"),
    ),
    ("cat > hello/actions/shout.py <<'EOF'", |t, c| t.ok(c, "")),
    ("cat > hello/actions/shout.yaml <<'EOF'", |t, c| t.ok(c, "")),
    (
        "squall pack build hello                    # componentize-py is installed the first time",
        |t, c| t.ok(c, "hello.shout: "),
    ),
    ("squall run hello.shout text=hi --packs hello", |t, c| {
        t.ok(c, "result: HI!")
    }),
    (
        "squall pack test hello                     # the pack's own tests (hello/tests), offline",
        |t, c| t.ok(c, "test result: ok. 4 passed; 0 failed"),
    ),
    (
        "export SQUALL_URL=http://127.0.0.1:9101 SQUALL_API_KEY=sq_...",
        Tour::export,
    ),
    (
        "squall run core.sleep seconds=0.5                  # typed by the server's declaration",
        |t, c| t.ok(c, "status: succeeded"),
    ),
    (
        "squall run --async core.sleep seconds=600          # prints the requested execution",
        |t, c| {
            let out = t.out(c, "id: ");
            t.async_id = id_in(&out);
        },
    ),
    (
        "squall execution tail --follow 01a2...             # stdout, stderr, log lines, live",
        |t, c| {
            // Running, so that the cancel finds it running.
            let get = format!("squall execution get {}", t.async_id);
            t.ok_eventually(&get, "status: running");
            let tail = t.spawn(c, Stdio::null());
            t.tail = Some(tail);
        },
    ),
    (
        "squall execution cancel 01a2...                    # a running guest stops within one epoch tick",
        |t, c| {
            t.ok(c, "canceling");
            // The tail follows the execution to its end, and then ends.
            let tail = t.tail.take().expect("the tail runs");
            let status = wait_exit(tail, "squall execution tail --follow");
            assert!(status.success(), "tail: {status}");
        },
    ),
    (
        "squall execution re-run 01a2... seconds=1          # same parameters, overrides on top",
        |t, c| t.ok(c, "core.sleep"),
    ),
    (
        "squall run --delay 5000 core.noop                  # `delayed` for 5 s, then run",
        |t, c| t.ok(c, "status: succeeded"),
    ),
    (
        "squall purge --days 30                             # retention, in batches",
        |t, c| t.ok(c, ""),
    ),
    (
        "squall tenant create acme                                    # local bootstrap, or with --url as an admin",
        |t, c| t.ok(c, "acme"),
    ),
    (
        "squall apikey create --tenant acme --user ci --role operator # shown once",
        |t, c| t.acme_key = t.last_line(c),
    ),
    ("squall apikey list --tenant acme", |t, c| t.ok(c, "ci")),
    (
        "squall user set ana --tenant acme --role viewer --password-stdin <<< 'a long password'",
        |t, c| t.ok(c, ""),
    ),
    (
        "curl -s -X POST -u ana:'a long password' localhost:9101/auth/v1/tokens -d '{\"ttl\": 3600}'",
        |t, c| t.ok(c, "\"token\""),
    ),
    (
        "export ACME_KEY=sq_acme...              # acme's operator key",
        Tour::export,
    ),
    (
        "squall pack install packs/core --api-key \"$ACME_KEY\"   # a built pack directory, or a .tar.gz of one",
        |t, c| t.ok(c, "installed pack core 0.1.0"),
    ),
    ("squall pack list --api-key \"$ACME_KEY\"", |t, c| {
        t.ok(c, "core")
    }),
    ("squall pack remove core --api-key \"$ACME_KEY\"", |t, c| {
        t.ok(c, "")
    }),
    (
        "squall key set db_password hunter2 --encrypt    # with --url: through the server, else the local data dir",
        |t, c| t.ok(c, ""),
    ),
    (
        "squall key list                                 # ******** for secrets",
        |t, c| t.ok(c, "********"),
    ),
    (
        "squall key get db_password --decrypt            # operator or admin; a viewer gets 403",
        |t, c| t.ok(c, "hunter2"),
    ),
    (
        "squall key set token abc --scope st2kv.user     # the key's user's own",
        |t, c| t.ok(c, ""),
    ),
    (
        "export ST2_API_URL=http://127.0.0.1:9101/api/v1 ST2_AUTH_URL=http://127.0.0.1:9101/auth/v1 \\",
        Tour::export,
    ),
    (
        "st2 action list && st2 run core.echo message=hi && st2 execution list",
        |t, c| t.ok(c, "core.echo"),
    ),
    (
        "st2 key set region eu-west-1 && st2 key list && st2 rule disable examples.echo_critical",
        |t, c| t.ok(c, "eu-west-1"),
    ),
    ("st2 trigger list && st2 pack get core", |t, c| {
        t.ok(c, "core")
    }),
    ("mkdir -p /srv/incoming /var/tmp/squall", |t, c| t.ok(c, "")),
    (
        "cat > packs/examples/config.yaml <<'EOF'    # the directories the sensor may read, the file the action writes",
        |t, c| t.ok(c, ""),
    ),
    (
        "squall serve --packs packs/core --packs packs/examples --allow-dir /srv/incoming --allow-dir /var/tmp/squall",
        |t, c| {
            t.serve(c);
            // The sensor takes its first listing in `setup`: a file made
            // before that is no news.
            t.ok_eventually(
                "squall sensor get examples.DirectorySensor",
                "state: running",
            );
        },
    ),
    (
        "touch /srv/incoming/hoge                   # seen at the sensor's next poll (poll_interval: 30 s)",
        |t, c| t.ok(c, ""),
    ),
    ("cat /var/tmp/squall/output", |t, c| {
        t.ok_eventually(c, "(created) ")
    }),
    (
        "squall sensor list                         # with SQUALL_URL set",
        |t, c| t.ok(c, "examples.DirectorySensor"),
    ),
    (
        "squall sensor get examples.DirectorySensor     # state, last error (a guest panic's message), restarts",
        |t, c| t.ok(c, "running"),
    ),
    (
        "squall sensor logs examples.DirectorySensor    # its log lines, stdout and stderr, why it restarted",
        |t, c| t.ok(c, "watching"),
    ),
    (
        "squall sensor disable examples.DirectorySensor # and enable; no restart needed",
        |t, c| t.ok(c, "enabled: false"),
    ),
    (
        "squall key set automaton.es_password es_pass --encrypt",
        |t, c| {
            // The README's `packs/automaton/config.yaml`, as a reader saves it.
            let config = t.automaton_config.clone();
            std::fs::write(t.dir.join("packs/automaton/config.yaml"), config)
                .expect("write config");
            t.ok(c, "");
        },
    ),
    (
        "squall key set automaton.awx_password ZDY5VG5vZUdZYjdU --encrypt",
        |t, c| t.ok(c, ""),
    ),
    (
        "squall key set automaton.rocketchat_webhook https://my.rocketchat/hooks/my_webhook_id --encrypt",
        |t, c| t.ok(c, ""),
    ),
    (
        "squall key set automaton_awx_url https://my.awx.url",
        |t, c| t.ok(c, ""),
    ),
    (
        "squall pack build packs/automaton     # and list the three hosts in its pack.yaml allowed_hosts",
        |t, c| t.ok(c, "automaton.QuerySensor: "),
    ),
    (
        "squall serve --packs packs/core --packs packs/automaton",
        |t, c| {
            t.serve(c);
            t.ok_eventually("squall sensor list", "automaton.");
        },
    ),
    (
        "squall run examples.greet name=Squall --packs packs",
        |t, c| {
            // In-process: the server's variables stay for the steps after.
            let saved = t.env.clone();
            t.env.remove("SQUALL_URL");
            t.env.remove("SQUALL_API_KEY");
            t.ok(c, "greeting: Hello, Squall!");
            t.env = saved;
        },
    ),
    (
        "squall workflow inspect packs/examples/actions/workflows/greet.yaml",
        |t, c| t.ok(c, "greet.yaml: ok (2 tasks)"),
    ),
];

/// The commands README.md shows, in order: (first line, whole command).
fn readme_commands(readme: &str) -> Vec<(String, String)> {
    let mut commands = Vec::new();
    let mut block = None;
    let mut lines = readme.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(kind) = line.strip_prefix("```") {
            block = if block.is_some() {
                None
            } else {
                Some(kind.to_owned())
            };
            continue;
        }
        let command = match block.as_deref() {
            Some("sh") if !line.is_empty() && !line.starts_with('#') => line,
            Some("console") => match line.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            },
            _ => continue,
        };
        let mut whole = command.to_owned();
        let mut last = command.to_owned();
        while last.ends_with('\\') {
            last = lines.next().expect("a continued line continues").to_owned();
            whole.push('\n');
            whole.push_str(&last);
        }
        if let Some(at) = command.find("<<'") {
            let word: String = command[at + 3..]
                .chars()
                .take_while(|c| *c != '\'')
                .collect();
            for body in lines.by_ref() {
                whole.push('\n');
                whole.push_str(body);
                if body == word {
                    break;
                }
            }
        }
        commands.push((command.to_owned(), whole));
    }
    commands
}

/// The YAML block of README.md that starts with `# <file>`.
fn readme_yaml(readme: &str, file: &str) -> String {
    let start = readme
        .find(&format!("```yaml\n# {file}\n"))
        .unwrap_or_else(|| panic!("README.md shows {file}"));
    let body = &readme[start + "```yaml\n".len()..];
    body[..body.find("```").expect("the block ends")].to_owned()
}

/// The reader's shell session.
struct Tour {
    /// The copy of the repository: where every command runs.
    dir: PathBuf,
    _root: tempfile::TempDir,
    /// `squall` and `st2`, first on `PATH`.
    bin: tempfile::TempDir,
    /// Exported variables, as typed (the server's address as the README
    /// has it).
    env: BTreeMap<String, String>,
    server: Option<Child>,
    /// The running server's address, for the README's `127.0.0.1:9101`.
    addr: String,
    tail: Option<Child>,
    admin_key: String,
    acme_key: String,
    run_id: String,
    async_id: String,
    automaton_config: String,
}

impl Tour {
    fn new(readme: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("squall");
        copy_sources(&squall_tests::workspace_root(), &dir);
        // Polls every second rather than every 30 (see the module's doc).
        let sensor = dir.join("packs/examples/sensors/directory_sensor.yaml");
        let text = std::fs::read_to_string(&sensor).expect("read sensor");
        assert!(text.contains("poll_interval: 30"), "{text}");
        std::fs::write(
            &sensor,
            text.replace("poll_interval: 30", "poll_interval: 1"),
        )
        .expect("write sensor");
        let bin = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_squall"), bin.path().join("squall"))
            .expect("link squall");
        if let Some(st2) = squall_tests::st2client(Path::new(env!("CARGO_TARGET_TMPDIR"))) {
            std::os::unix::fs::symlink(st2, bin.path().join("st2")).expect("link st2");
        }
        Self {
            dir,
            _root: root,
            bin,
            env: BTreeMap::new(),
            server: None,
            addr: String::new(),
            tail: None,
            admin_key: String::new(),
            acme_key: String::new(),
            run_id: String::new(),
            async_id: String::new(),
            automaton_config: readme_yaml(readme, "packs/automaton/config.yaml"),
        }
    }

    /// `text` with the substitutions the module's doc lists.
    fn expand(&self, text: &str) -> String {
        let srv = self.dir.join("srv");
        let var = self.dir.join("var");
        text.replace("localhost:9101", &self.addr)
            .replace("127.0.0.1:9101", &self.addr)
            .replace("sq_acme...", &self.acme_key)
            .replace("sq_Vx3...", &self.admin_key)
            .replace("sq_...", &self.admin_key)
            .replace("01a200938ac07579bd941b28559c6133", &self.run_id)
            .replace("01a2...", &self.async_id)
            .replace("/srv/", &format!("{}/", srv.display()))
            .replace("/var/tmp/", &format!("{}/tmp/", var.display()))
    }

    fn command(&self, text: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(self.expand(text))
            .current_dir(&self.dir)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bin.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("SQUALL_LISTEN", "127.0.0.1:0")
            // componentize-py, installed once for every test.
            .env(
                "SQUALL_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("squall-cache"),
            )
            .env("COLUMNS", "200")
            .env("TERM", "dumb")
            .env("NO_PROXY", "127.0.0.1")
            .stdin(Stdio::null());
        for name in ["HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN"] {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        for (name, value) in &self.env {
            cmd.env(name, self.expand(value));
        }
        cmd
    }

    fn run(&self, text: &str) -> Output {
        self.command(text).output().expect("bash runs")
    }

    /// Run `text`; it must exit 0 with `needle` in its output.
    fn ok(&mut self, text: &str, needle: &str) {
        self.out(text, needle);
    }

    /// [`Tour::ok`], returning stdout.
    fn out(&mut self, text: &str, needle: &str) -> String {
        let out = self.run(text);
        let shown = shown(&out);
        assert!(out.status.success(), "$ {text}\n{shown}");
        assert!(
            shown.contains(needle),
            "$ {text}: no {needle:?} in\n{shown}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `text` until it exits 0 with `needle` in its output.
    fn ok_eventually(&mut self, text: &str, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self.run(text);
            let shown = shown(&out);
            if out.status.success() && shown.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "$ {text}: no {needle:?} within {PATIENCE:?}; last:\n{shown}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Run `text`; it must exit with `code` and say `needle`.
    fn fails(&mut self, text: &str, code: i32, needle: &str) {
        let out = self.run(text);
        let shown = shown(&out);
        assert_eq!(out.status.code(), Some(code), "$ {text}\n{shown}");
        assert!(
            shown.contains(needle),
            "$ {text}: no {needle:?} in\n{shown}"
        );
    }

    /// Run `text` (it prints a key); the key.
    fn last_line(&mut self, text: &str) -> String {
        let out = self.out(text, "");
        out.lines().last().expect("a line").trim().to_owned()
    }

    /// `export ...`: take what bash exports.
    fn export(&mut self, text: &str) {
        // Placeholders stay in the values (see `expand`), except keys: a
        // later step may print another.
        let out = self.out(&format!("{text}\nenv -0"), "");
        for pair in out.split('\0').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').expect("NAME=value");
            if text.contains(&format!("{name}=")) {
                let value = value.replace(&self.addr, "127.0.0.1:9101");
                self.env.insert(name.to_owned(), value);
            }
        }
    }

    fn spawn(&self, text: &str, stdout: Stdio) -> Child {
        self.command(&format!("exec {text}"))
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash starts")
    }

    /// Stop the server running (if any), start `text` and wait until it
    /// listens.
    fn serve(&mut self, text: &str) {
        self.stop();
        let mut child = self.spawn(text, Stdio::piped());
        self.addr = squall_tests::listening_addr(&mut child, PATIENCE, &format!("$ {text}"));
        self.server = Some(child);
    }

    /// SIGTERM the server; it must exit 0.
    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            let sent = Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success());
            let status = wait_exit(server, "squall serve");
            assert!(
                status.success(),
                "squall serve exits 0 on SIGTERM: {status}"
            );
        }
    }
}

impl Drop for Tour {
    fn drop(&mut self) {
        for child in [self.server.as_mut(), self.tail.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait (bounded) for `child` to exit.
fn wait_exit(mut child: Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `id: ...` an execution's printout starts with.
fn id_in(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {out}"))
        .trim()
        .to_owned()
}

/// Copy the repository's sources from `from` to `to`: everything but build
/// output, data and version control.
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "target" || name == ".git" || name == ".squall" {
            continue;
        }
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_sources(&entry.path(), &to.join(&*name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&*name)).expect("copy");
        }
    }
}

#[test]
fn every_readme_command_works_as_written() {
    let readme = std::fs::read_to_string(squall_tests::workspace_root().join("README.md"))
        .expect("read README.md");
    let commands = readme_commands(&readme);
    let shown: Vec<&str> = commands.iter().map(|(first, _)| first.as_str()).collect();
    let stepped: Vec<&str> = STEPS.iter().map(|(first, _)| *first).collect();
    assert_eq!(
        shown, stepped,
        "README.md's commands and this test's steps differ: keep them in step"
    );
    let mut tour = Tour::new(&readme);
    for ((_, whole), (_, step)) in commands.iter().zip(STEPS) {
        step(&mut tour, whole);
    }
    tour.stop();
}

/// The guide's Python API reference is what the modules' docstrings say:
/// `docs/python_api.py` renders them, and its output is in docs/packs.md.
#[test]
fn the_guides_python_api_reference_is_the_docstrings() {
    let root = squall_tests::workspace_root();
    let out = match Command::new("python3")
        .arg(root.join("docs/python_api.py"))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "python3 is needed: {e}");
            eprintln!("SKIPPED: python3 is not installed ({e})");
            return;
        }
    };
    assert!(out.status.success(), "{}", shown(&out));
    let rendered = String::from_utf8(out.stdout).expect("utf-8");
    assert!(rendered.contains("#### class `Action(config=None, action_service=None)`"));
    let guide = std::fs::read_to_string(root.join("docs/packs.md")).expect("the guide");
    assert!(
        guide.contains(&format!("-->\n{rendered}<!-- python-api:end -->")),
        "docs/packs.md's Python API reference differs from the docstrings: run `python3 docs/python_api.py --write`"
    );
}
