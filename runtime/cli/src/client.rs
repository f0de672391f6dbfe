//! The verbs that talk to a running server (`--url` / `SQUALL_URL`): run,
//! execution get/list/cancel/tail — st2's `run` flow: request, then poll
//! until the execution completes.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use squall_core::ExecutionStatus;
use squall_core::params::ParamSchema;

/// How long `squall pack install` waits for the server's answer.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(900);

/// Where a running server is and how to prove who we are to it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Remote {
    pub(crate) url: Option<String>,
    pub(crate) api_key: Option<String>,
}

impl Remote {
    /// A client when a server was named (--url / SQUALL_URL).
    pub(crate) fn client(&self) -> anyhow::Result<Option<Client>> {
        self.url
            .as_deref()
            .map(|url| Client::new(url, self.api_key.as_deref()))
            .transpose()
    }

    /// A client, or an error saying `what` needs a server.
    pub(crate) fn require(&self, what: &str) -> anyhow::Result<Client> {
        self.client()?
            .ok_or_else(|| anyhow::anyhow!("{what} needs a server: pass --url or set SQUALL_URL"))
    }
}

/// A client of one server's `/api/v1`.
#[derive(Debug)]
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(url: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url '{url}' must start with http:// or https://");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = reqwest::header::HeaderValue::from_str(key)
                .map_err(|_| anyhow::anyhow!("--api-key holds characters a header cannot"))?;
            value.set_sensitive(true);
            headers.insert("St2-Api-Key", value);
        }
        Ok(Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .default_headers(headers)
                .build()?,
        })
    }

    /// `POST /api/v1/packs/upload` with a `.tar.gz`; see [`UPLOAD_TIMEOUT`].
    pub(crate) async fn upload_pack(&self, archive: Vec<u8>) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1/packs/upload", self.base);
        let req = self
            .http
            .post(url)
            .header("Content-Type", "application/gzip")
            // The server may build the pack's Python code before it answers
            // (10 minutes at most by default, plus any wait for the build
            // before it).
            .timeout(UPLOAD_TIMEOUT)
            .body(archive);
        let answer = self.send(req).await.map_err(|e| {
            let timed_out = e
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout);
            if timed_out {
                e.context(format!(
                    "the server did not answer within {} minutes; a build of the pack may still be running there (`squall pack get` shows whether it was installed)",
                    UPLOAD_TIMEOUT.as_secs() / 60
                ))
            } else {
                e
            }
        })?;
        Ok(answer.json().await?)
    }

    /// `DELETE` an API path.
    pub(crate) async fn delete_path(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.delete(url)).await?;
        Ok(())
    }

    /// `POST` a JSON body to an API path.
    pub(crate) async fn post_path(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        Ok(self
            .send(self.http.post(url).json(body))
            .await?
            .json()
            .await?)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match body.get("faultstring").and_then(Value::as_str) {
            Some(fault) => bail!("{fault} (HTTP {})", status.as_u16()),
            None => bail!("the server answered HTTP {status}"),
        }
    }

    /// `GET` an API path (already validated by the caller) as JSON.
    pub(crate) async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        Ok(self.send(self.http.get(url)).await?.json().await?)
    }

    /// `st2 run`: type the `key=value` parameters by the action's
    /// declaration, request the execution, and (unless `wait` is false)
    /// poll until it completes.
    pub(crate) async fn run(
        &self,
        action: &str,
        params: &[String],
        trace_tag: Option<String>,
        delay: Option<u64>,
        wait: bool,
    ) -> anyhow::Result<Value> {
        let meta = self.get_json(&format!("/api/v1/actions/{action}")).await?;
        let block = meta
            .get("parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let schema = ParamSchema::parse(&block)
            .map_err(|e| anyhow::anyhow!("the server's parameters for '{action}': {e:?}"))?;
        let mut parameters = Map::new();
        for pair in params {
            let Some((name, text)) = pair.split_once('=') else {
                bail!("parameter '{pair}' is not in key=value form");
            };
            let value = schema
                .coerce_cli(name, text)
                .map_err(|e| anyhow::anyhow!("invalid parameters for '{action}': {e}"))?;
            parameters.insert(name.to_owned(), value);
        }
        let body = json!({
            "action": action,
            "parameters": parameters,
            "trace_tag": trace_tag,
            "delay": delay,
        });
        let url = format!("{}/api/v1/executions", self.base);
        let created: Value = self
            .send(self.http.post(url).json(&body))
            .await?
            .json()
            .await?;
        if !wait {
            return Ok(created);
        }
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        self.wait(&id).await
    }

    /// Poll an execution until it completes.
    pub(crate) async fn wait(&self, id: &str) -> anyhow::Result<Value> {
        let mut pause = Duration::from_millis(20);
        loop {
            let e = self.get_json(&format!("/api/v1/executions/{id}")).await?;
            if status_of(&e).is_some_and(ExecutionStatus::is_completed) {
                return Ok(e);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// `PUT` a JSON body to an API path.
    pub(crate) async fn put_path(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        Ok(self
            .send(self.http.put(url).json(body))
            .await?
            .json()
            .await?)
    }

    pub(crate) async fn get(&self, id: &str) -> anyhow::Result<Value> {
        self.get_json(&format!("/api/v1/executions/{id}")).await
    }

    pub(crate) async fn list(
        &self,
        action: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Value> {
        // Validated refs and status names are URL-safe: no encoding needed.
        if let Some(a) = action {
            a.parse::<squall_core::ActionRef>()?;
        }
        if let Some(s) = status {
            s.parse::<ExecutionStatus>()?;
        }
        let mut url = format!("{}/api/v1/executions?limit={limit}", self.base);
        if let Some(a) = action {
            url.push_str(&format!("&action={a}"));
        }
        if let Some(s) = status {
            url.push_str(&format!("&status={s}"));
        }
        Ok(self.send(self.http.get(url)).await?.json().await?)
    }

    pub(crate) async fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1/executions/{id}", self.base);
        Ok(self.send(self.http.delete(url)).await?.json().await?)
    }

    pub(crate) async fn re_run(
        &self,
        id: &str,
        params: Map<String, Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1/executions/{id}/re_run", self.base);
        Ok(self
            .send(self.http.post(url).json(&json!({ "parameters": params })))
            .await?
            .json()
            .await?)
    }

    /// Print an execution's output — stdout to stdout, stderr and log
    /// lines to stderr; with `follow`, keep printing what each adds until
    /// the execution completes.
    pub(crate) async fn tail(&self, id: &str, follow: bool) -> anyhow::Result<()> {
        // Each stream only grows while it runs: one offset per stream.
        let mut printed = [0usize; 3];
        loop {
            let mut status = None;
            for (i, kind) in ["stdout", "stderr", "log"].into_iter().enumerate() {
                let url = format!(
                    "{}/api/v1/executions/{id}/output?output_type={kind}",
                    self.base
                );
                let response = self.send(self.http.get(&url)).await?;
                status = response
                    .headers()
                    .get("X-Execution-Status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<ExecutionStatus>().ok());
                let bytes = response.bytes().await?;
                if let Some(new) = bytes.get(printed[i]..).filter(|b| !b.is_empty()) {
                    if i == 0 {
                        let mut out = std::io::stdout().lock();
                        out.write_all(new)?;
                        out.flush()?;
                    } else {
                        std::io::stderr().lock().write_all(new)?;
                    }
                    printed[i] = bytes.len();
                }
            }
            if !follow || status.is_none_or(ExecutionStatus::is_completed) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn status_of(e: &Value) -> Option<ExecutionStatus> {
    e.get("status")?.as_str()?.parse().ok()
}

/// Print an execution (the API's shape) as `st2 execution get` does. With
/// `exit_by_status` (after `run`), exit 1 when it completed without
/// succeeding.
pub(crate) fn print(e: &Value, json: bool, exit_by_status: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(e)?);
    } else {
        for key in ["id", "status", "start_timestamp", "end_timestamp"] {
            if let Some(v) = e.get(key).and_then(Value::as_str) {
                println!("{key}: {v}");
            }
        }
        if let Some(r) = e.pointer("/action/ref").and_then(Value::as_str) {
            println!("action.ref: {r}");
        }
        for key in ["parameters", "result"] {
            if let Some(v) = e.get(key).filter(|v| !v.is_null()) {
                println!(
                    "{key}:\n{}",
                    crate::commands::indent(&serde_yaml::to_string(v)?)
                );
            }
        }
    }
    Ok(match status_of(e) {
        Some(s) if exit_by_status && s.is_completed() && s != ExecutionStatus::Succeeded => {
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    })
}

/// A plain table of `columns` (nested values as JSON), or the rows as JSON.
pub(crate) fn print_rows(rows: &[Value], columns: &[&str], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let cell = |row: &Value, c: &str| match &row[c] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(columns.iter().map(|c| c.to_string()).collect()));
    for row in rows {
        println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
    Ok(())
}
