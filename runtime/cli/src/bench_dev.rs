//! `squall bench dev`: how long a saved change to a pack takes to be live
//! under `squall dev`, for a Python and a Rust pack made by `squall pack
//! new`. Each round rewrites the greet action's source so that it answers
//! differently, then runs the action through the API until the new answer
//! comes back: from the write to that answer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// Longest a round may take before the benchmark gives up on it.
const ROUND_LIMIT: Duration = Duration::from_secs(300);

pub(crate) fn dev(languages: &[String], rounds: usize) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    for language in languages {
        let rust = match language.as_str() {
            "python" => false,
            "rust" => true,
            other => bail!("--language {other}: expected python or rust"),
        };
        let work = tempfile::tempdir()?;
        let pack = work.path().join("benchdev");
        let data = work.path().join("data");
        let mut new = Command::new(&exe);
        new.args(["pack", "new", "benchdev", "--dir"]).arg(&pack);
        if rust {
            new.arg("--rust");
        }
        check(new.output()?, "squall pack new")?;
        let key = check(
            Command::new(&exe)
                .arg("--data-dir")
                .arg(&data)
                .args(["apikey", "create", "--role", "admin"])
                .output()?,
            "squall apikey create",
        )?;
        let started = Instant::now();
        let server = DevServer::start(&exe, &data, &pack, work.path())?;
        println!(
            "{language}: first build and start {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let client = Client {
            base: format!("http://{}", server.addr),
            key: key.trim().to_owned(),
            http: reqwest::Client::new(),
        };
        let rt = crate::bench::runtime(1)?;
        let mut times = Vec::new();
        for round in 1..=rounds {
            let marker = format!("round {round}");
            write_action(&pack, rust, &marker)?;
            let written = Instant::now();
            loop {
                if written.elapsed() > ROUND_LIMIT {
                    bail!(
                        "{language}: round {round} not live after {} s; squall dev said:\n{}",
                        ROUND_LIMIT.as_secs(),
                        server.said()
                    );
                }
                if rt.block_on(client.greet())?.contains(&marker) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let took = written.elapsed();
            println!(
                "{language}: round {round}: live {} ms after the save",
                took.as_millis()
            );
            times.push(took);
        }
        println!(
            "{language}: median {} ms over {rounds} saves (edit -> new answer from the API)",
            crate::bench::median(&times).as_millis()
        );
        server.stop();
    }
    Ok(ExitCode::SUCCESS)
}

fn check(out: std::process::Output, what: &str) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The greet action, answering with `marker`.
fn write_action(pack: &Path, rust: bool, marker: &str) -> anyhow::Result<()> {
    let (path, text) = if rust {
        (
            pack.join("crates/actions/src/lib.rs"),
            format!(
                "use serde_json::{{Value, json}};\nuse squall_sdk::{{Context, Result}};\n\nfn greet(_: &Context, _: Value) -> Result<Value> {{\n    Ok(json!(\"{marker}\"))\n}}\n\nsquall_sdk::export_actions! {{\n    \"greet\" => greet,\n}}\n"
            ),
        )
    } else {
        (
            pack.join("actions/greet.py"),
            format!(
                "from st2common.runners.base_action import Action\n\n\nclass Greet(Action):\n    def run(self, name):\n        return \"{marker}\"\n"
            ),
        )
    };
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    /// Run benchdev.greet and wait for its result, as text.
    async fn greet(&self) -> anyhow::Result<String> {
        let e: Value = self
            .http
            .post(format!("{}/api/v1/executions", self.base))
            .header("St2-Api-Key", &self.key)
            .json(&json!({"action": "benchdev.greet", "parameters": {"name": "x"}}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = e["id"].as_str().context("an execution id")?.to_owned();
        loop {
            let e: Value = self
                .http
                .get(format!("{}/api/v1/executions/{id}", self.base))
                .header("St2-Api-Key", &self.key)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let status = e["status"].as_str().unwrap_or_default();
            if matches!(
                status,
                "succeeded" | "failed" | "timeout" | "canceled" | "abandoned"
            ) {
                return Ok(e["result"].to_string());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// `squall dev` on the pack, in a process of its own.
struct DevServer {
    child: Child,
    addr: String,
    stderr: PathBuf,
}

impl DevServer {
    fn start(exe: &Path, data: &Path, pack: &Path, work: &Path) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let stderr = work.join("dev.stderr");
        let mut child = Command::new(exe)
            .arg("--data-dir")
            .arg(data)
            .arg("dev")
            .arg(pack)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(line) => {
                    if let Some(addr) = line?.strip_prefix("squall: listening on http://") {
                        break addr.to_owned();
                    }
                }
                None => bail!(
                    "squall dev stopped: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                ),
            }
        };
        Ok(Self {
            child,
            addr,
            stderr,
        })
    }

    fn said(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
