//! Client verbs that mirror st2's for what lives in a running server:
//! actions, rules, triggers, trigger instances, keys and traces through
//! `--url` / `SQUALL_URL` with `--api-key` / `SQUALL_API_KEY`. Tables by
//! default, `--json` for scripts.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::print_rows;
use crate::client::{Client, Remote};
use crate::commands::runtime;

/// `GET path` and print it: a table of `columns` for a list, every field
/// for one object, or the JSON.
fn show(client: &Client, path: &str, columns: &[&str], json: bool) -> anyhow::Result<ExitCode> {
    let body = runtime()?.block_on(client.get_json(path))?;
    print_value(&body, columns, json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_value(body: &Value, columns: &[&str], json: bool) -> anyhow::Result<()> {
    match body {
        _ if json => println!("{}", serde_json::to_string_pretty(body)?),
        Value::Array(rows) => print_rows(rows, columns, false)?,
        Value::Object(fields) => {
            let width = fields.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in fields {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                println!("{k:<width$}  {text}");
            }
        }
        other => println!("{other}"),
    }
    Ok(())
}

/// A ref or id as one path segment: what an API path can hold unescaped.
fn segment(what: &str, value: &str) -> anyhow::Result<String> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
    {
        anyhow::bail!("invalid {what} '{value}'");
    }
    Ok(value.to_owned())
}

#[derive(Debug, Subcommand)]
pub(crate) enum ActionCommand {
    /// List actions (of one pack with --pack).
    List {
        #[arg(long)]
        pack: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one action with its parameters.
    Get {
        action: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn action(remote: &Remote, cmd: ActionCommand) -> anyhow::Result<ExitCode> {
    let client = remote.require("squall action")?;
    match cmd {
        ActionCommand::List { pack, json } => {
            let mut path = "/api/v1/actions?limit=1000".to_owned();
            if let Some(p) = pack {
                path.push_str(&format!("&pack={}", segment("pack", &p)?));
            }
            show(&client, &path, &["ref", "pack", "description"], json)
        }
        ActionCommand::Get { action, json } => show(
            &client,
            &format!("/api/v1/actions/{}", segment("action", &action)?),
            &[],
            json,
        ),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TriggerCommand {
    /// List trigger types (built-in and from packs' sensors).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one trigger type with its payload and parameters schemas.
    Get {
        trigger: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn trigger(remote: &Remote, cmd: TriggerCommand) -> anyhow::Result<ExitCode> {
    let client = remote.require("squall trigger")?;
    match cmd {
        TriggerCommand::List { json } => show(
            &client,
            "/api/v1/triggertypes?limit=1000",
            &["ref", "pack", "description"],
            json,
        ),
        TriggerCommand::Get { trigger, json } => show(
            &client,
            &format!("/api/v1/triggertypes/{}", segment("trigger", &trigger)?),
            &[],
            json,
        ),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TriggerInstanceCommand {
    /// List trigger instances, newest first.
    List {
        /// Only instances of this trigger type.
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one trigger instance with its payload.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Dispatch a copy of a trigger instance (rules match it again).
    ReEmit { id: String },
}

pub(crate) fn trigger_instance(
    remote: &Remote,
    cmd: TriggerInstanceCommand,
) -> anyhow::Result<ExitCode> {
    let client = remote.require("squall trigger-instance")?;
    match cmd {
        TriggerInstanceCommand::List {
            trigger,
            limit,
            json,
        } => {
            let mut path = format!("/api/v1/triggerinstances?limit={}", limit.clamp(1, 1000));
            if let Some(t) = trigger {
                path.push_str(&format!("&trigger={}", segment("trigger", &t)?));
            }
            show(
                &client,
                &path,
                &["id", "trigger", "occurrence_time", "status"],
                json,
            )
        }
        TriggerInstanceCommand::Get { id, json } => show(
            &client,
            &format!("/api/v1/triggerinstances/{}", segment("id", &id)?),
            &[],
            json,
        ),
        TriggerInstanceCommand::ReEmit { id } => {
            let out = runtime()?.block_on(client.post_path(
                &format!("/api/v1/triggerinstances/{}/re_emit", segment("id", &id)?),
                &json!({}),
            ))?;
            println!(
                "re-emitted as {}",
                out["trigger_instance"]["id"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The rule verbs that need a server (see `squall rule test` for offline).
#[derive(Debug, Subcommand)]
pub(crate) enum RemoteRuleCommand {
    /// List rules (of one pack with --pack).
    List {
        #[arg(long)]
        pack: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one rule.
    Get {
        rule: String,
        #[arg(long)]
        json: bool,
    },
    /// Create a rule from a file in StackStorm's YAML (or JSON).
    Create { file: std::path::PathBuf },
    /// Enable a rule.
    Enable { rule: String },
    /// Disable a rule.
    Disable { rule: String },
    /// Delete a rule made through the API (or hide a pack's).
    Delete { rule: String },
}

pub(crate) fn remote_rule(remote: &Remote, cmd: RemoteRuleCommand) -> anyhow::Result<ExitCode> {
    let client = remote.require("squall rule")?;
    let rt = runtime()?;
    match cmd {
        RemoteRuleCommand::List { pack, json } => {
            let mut path = "/api/v1/rules?limit=1000".to_owned();
            if let Some(p) = pack {
                path.push_str(&format!("&pack={}", segment("pack", &p)?));
            }
            return show(
                &client,
                &path,
                &["ref", "pack", "enabled", "description"],
                json,
            );
        }
        RemoteRuleCommand::Get { rule, json } => {
            return show(
                &client,
                &format!("/api/v1/rules/{}", segment("rule", &rule)?),
                &[],
                json,
            );
        }
        RemoteRuleCommand::Create { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("failed to read '{}'", file.display()))?;
            let body: Value = serde_yaml::from_str(&text)
                .with_context(|| format!("'{}' is not YAML or JSON", file.display()))?;
            let made = rt.block_on(client.post_path("/api/v1/rules", &body))?;
            println!("created rule {}", made["ref"].as_str().unwrap_or_default());
        }
        RemoteRuleCommand::Enable { rule } => set_enabled(&rt, &client, &rule, true)?,
        RemoteRuleCommand::Disable { rule } => set_enabled(&rt, &client, &rule, false)?,
        RemoteRuleCommand::Delete { rule } => {
            rt.block_on(client.delete_path(&format!("/api/v1/rules/{}", segment("rule", &rule)?)))?;
            println!("deleted rule {rule}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// st2's rule enable/disable: read the rule, flip `enabled`, put it back.
fn set_enabled(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    rule: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/rules/{}", segment("rule", rule)?);
    let mut body = rt.block_on(client.get_json(&path))?;
    body["enabled"] = Value::Bool(enabled);
    rt.block_on(client.put_path(&path, &body))?;
    println!(
        "rule {rule} {}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}
