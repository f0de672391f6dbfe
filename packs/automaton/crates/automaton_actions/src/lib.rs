//! Automaton Engine's actions: `automaton.rocketchat_webhook` posts a
//! message to a Rocket.Chat incoming webhook; `automaton.awx_launch`
//! launches an AWX job template with `extra_vars` (basic auth, the password
//! read decrypted from the datastore).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use squall_sdk::{Context, Error, Result, http, kv};

#[derive(Deserialize)]
struct Webhook {
    webhook_key: String,
    message: String,
    rocketchat_timeout: u64,
}

fn rocketchat_webhook(_: &Context, p: Webhook) -> Result<Value> {
    // The URL carries the webhook's token: a secret, never a parameter.
    let url = kv::get_secret(&p.webhook_key)?.ok_or_else(|| {
        Error::failed(format!(
            "no webhook URL stored under '{}' (squall key set {} URL --encrypt)",
            p.webhook_key, p.webhook_key
        ))
    })?;
    let response = http::post(&url)
        .timeout(Duration::from_secs(p.rocketchat_timeout))
        .json(&json!({ "text": p.message }))?
        .send()?;
    if !response.is_success() {
        return Err(Error::failed(format!(
            "Rocket.Chat answered HTTP {}: {}",
            response.status,
            response.text()
        )));
    }
    Ok(json!({ "status_code": response.status }))
}

#[derive(Deserialize)]
struct Launch {
    awx_url: String,
    job_template_id: u64,
    username: String,
    password_key: String,
    extra_vars: Map<String, Value>,
    awx_timeout: u64,
}

fn awx_launch(_: &Context, p: Launch) -> Result<Value> {
    let password = kv::get_secret(&p.password_key)?.ok_or_else(|| {
        Error::failed(format!(
            "no AWX password stored under '{}' (squall key set {} PASSWORD --encrypt)",
            p.password_key, p.password_key
        ))
    })?;
    let url = format!(
        "{}/api/v2/job_templates/{}/launch/",
        p.awx_url.trim_end_matches('/'),
        p.job_template_id
    );
    let response = http::post(&url)
        .basic_auth(&p.username, &password)
        .timeout(Duration::from_secs(p.awx_timeout))
        .json(&json!({ "extra_vars": p.extra_vars }))?
        .send()?;
    if !response.is_success() {
        return Err(Error::failed(format!(
            "AWX answered HTTP {}: {}",
            response.status,
            response.text()
        )));
    }
    let body: Value = response.json().unwrap_or(Value::Null);
    Ok(
        json!({ "status_code": response.status, "job": body.get("job").cloned().unwrap_or(Value::Null) }),
    )
}

squall_sdk::export_actions! {
    "rocketchat_webhook" => rocketchat_webhook,
    "awx_launch" => awx_launch,
}
