//! `squall sensor`: sensors' state, errors and logs on a running server.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Remote;

#[derive(Debug, Subcommand)]
pub(crate) enum SensorCommand {
    /// Every sensor with its state (running, backing_off, failed, disabled).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One sensor: state, last error (a guest's panic message included),
    /// restarts, counters and the triggers announced to it.
    Get {
        /// The sensor, as `<pack>.<class_name>`.
        sensor: String,
        /// Print JSON (recent log lines included).
        #[arg(long)]
        json: bool,
    },
    /// The sensor's recent log lines: its log calls, stdout and stderr, and
    /// why it restarted.
    Logs {
        /// The sensor, as `<pack>.<class_name>`.
        sensor: String,
    },
    /// Start a sensor (again, if it was marked failed).
    Enable {
        /// The sensor, as `<pack>.<class_name>`.
        sensor: String,
    },
    /// Stop a sensor; it stays stopped across restarts until enabled.
    Disable {
        /// The sensor, as `<pack>.<class_name>`.
        sensor: String,
    },
}

/// Sensor refs go into URLs: letters, digits, `.`, `_` and `-` only.
fn checked(sensor: &str) -> anyhow::Result<&str> {
    let ok = !sensor.is_empty()
        && sensor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("'{sensor}' is not a sensor ref (expected <pack>.<class_name>)");
    }
    Ok(sensor)
}

pub(crate) fn sensor(remote: &Remote, cmd: SensorCommand) -> anyhow::Result<ExitCode> {
    let client = remote.require("squall sensor")?;
    let rt = crate::bench::runtime(1)?;
    match cmd {
        SensorCommand::List { json } => {
            let list = rt.block_on(client.get_json("/api/v1/sensortypes?limit=1000"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36}  {:<12}  {:>8}  {:>10}  LAST ERROR",
                "REF", "STATE", "RESTARTS", "DISPATCHED"
            );
            for s in list.as_array().into_iter().flatten() {
                println!(
                    "{:<36}  {:<12}  {:>8}  {:>10}  {}",
                    s["ref"].as_str().unwrap_or_default(),
                    s["state"].as_str().unwrap_or_default(),
                    s["restart_count"].to_string(),
                    s["dispatched"].to_string(),
                    s["last_error"].as_str().unwrap_or("-")
                );
            }
        }
        SensorCommand::Get { sensor, json } => {
            let s = rt
                .block_on(client.get_json(&format!("/api/v1/sensortypes/{}", checked(&sensor)?)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_sensor(&s);
            }
        }
        SensorCommand::Logs { sensor } => {
            let s = rt
                .block_on(client.get_json(&format!("/api/v1/sensortypes/{}", checked(&sensor)?)))?;
            for line in s["log"].as_array().into_iter().flatten() {
                println!(
                    "[{}] {}",
                    line["level"].as_str().unwrap_or_default(),
                    line["message"].as_str().unwrap_or_default()
                );
            }
        }
        SensorCommand::Enable { sensor } => {
            let s = rt.block_on(client.put_path(
                &format!("/api/v1/sensortypes/{}", checked(&sensor)?),
                &json!({"enabled": true}),
            ))?;
            print_sensor(&s);
        }
        SensorCommand::Disable { sensor } => {
            let s = rt.block_on(client.put_path(
                &format!("/api/v1/sensortypes/{}", checked(&sensor)?),
                &json!({"enabled": false}),
            ))?;
            print_sensor(&s);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_sensor(s: &Value) {
    for key in [
        "ref",
        "state",
        "enabled",
        "poll_interval",
        "restart_count",
        "next_start_at",
        "dispatched",
        "invalid_payloads",
        "poll_errors",
    ] {
        if !s[key].is_null() {
            let value = s[key]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| s[key].to_string());
            println!("{key}: {value}");
        }
    }
    if let Some(error) = s["last_error"].as_str() {
        println!("last_error: {error}");
    }
    let triggers: Vec<_> = s["triggers"].as_array().cloned().unwrap_or_default();
    if !triggers.is_empty() {
        println!("triggers:");
        for t in triggers {
            println!(
                "  {}  {}",
                t["id"].as_str().unwrap_or_default(),
                t["parameters"]
            );
        }
    }
}
