//! The `core` pack: one component implementing `core.echo`, `core.noop`,
//! `core.sleep`, `core.fail` and `core.http`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use squall_sdk::{Context, Error, Result};

#[derive(Deserialize)]
struct EchoParams {
    message: String,
}

/// What StackStorm's shell runner returns for a command that printed
/// `stdout` and exited 0. Its `stdout` is JSON-parsed when it parses, as
/// st2's local runner does (`echo 3` gives the number 3).
fn shell_result(stdout: &str) -> Value {
    let stdout = serde_json::from_str::<Value>(stdout).unwrap_or_else(|_| json!(stdout));
    json!({
        "stdout": stdout,
        "stderr": "",
        "return_code": 0,
        "succeeded": true,
        "failed": false,
    })
}

/// StackStorm's `core.echo` is `echo "{{message}}"` in a shell: the result
/// is the shell runner's.
fn echo(_: &Context, p: EchoParams) -> Result<Value> {
    Ok(shell_result(&p.message))
}

fn noop(_: &Context, _: Value) -> Result<Value> {
    Ok(shell_result(""))
}

#[derive(Deserialize)]
struct SleepParams {
    seconds: f64,
}

fn sleep(_: &Context, p: SleepParams) -> Result<Value> {
    if !p.seconds.is_finite() || p.seconds < 0.0 {
        return Err(Error::invalid_input("seconds must be a finite number >= 0"));
    }
    // `std::thread::sleep` waits on a WASI monotonic-clock pollable: the host
    // parks the execution without holding a thread.
    std::thread::sleep(Duration::from_secs_f64(p.seconds));
    Ok(json!({ "slept": p.seconds }))
}

#[derive(Deserialize)]
struct FailParams {
    message: String,
}

fn fail(_: &Context, p: FailParams) -> Result<Value> {
    Err(Error::failed(p.message))
}

#[derive(Deserialize)]
struct HttpParams {
    url: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    body: Option<String>,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    username: Option<String>,
    password: Option<String>,
}

fn get() -> String {
    "GET".to_owned()
}

/// StackStorm's core.http: `{status_code, headers, body, parsed}`, the body
/// decoded when it is JSON.
fn http(_: &Context, p: HttpParams) -> Result<Value> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let query: Vec<(String, String)> = p.params.iter().map(|(k, v)| (k.clone(), text(v))).collect();
    let mut request = squall_sdk::http::request(&p.method, &p.url)
        .query(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (name, value) in &p.headers {
        request = request.header(name, &text(value));
    }
    if let Some(user) = &p.username {
        request = request.basic_auth(user, p.password.as_deref().unwrap_or_default());
    }
    if let Some(body) = p.body {
        request = request.body(body);
    }
    let response = request.send()?;
    let (body, parsed) = match serde_json::from_slice::<Value>(&response.body) {
        Ok(json) if !response.body.is_empty() => (json, true),
        _ => (Value::String(response.text()), false),
    };
    let headers: serde_json::Map<String, Value> = response
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    Ok(json!({
        "status_code": response.status,
        "headers": headers,
        "body": body,
        "parsed": parsed,
    }))
}

squall_sdk::export_actions! {
    "http" => http,
    "echo" => echo,
    "noop" => noop,
    "sleep" => sleep,
    "fail" => fail,
}
