//! `examples.output_context`, the action of StackStorm's pack tutorial:
//! append `context` as a line to the file named by the pack config's `log`.

use std::io::Write as _;

use serde::Deserialize;
use serde_json::{Value, json};
use squall_sdk::{Context, Error, Result};

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    context: String,
}

#[derive(Deserialize)]
struct Config {
    log: Option<String>,
}

fn output_context(_: &Context, p: Params) -> Result<Value> {
    let config: Config = squall_sdk::config_as()?;
    let Some(path) = config.log.filter(|l| !l.is_empty()) else {
        return Err(Error::failed(
            "the output file path is not configured (set `log` in the pack's config.yaml)",
        ));
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::failed(format!("cannot open {path}: {e}")))?;
    writeln!(file, "{}", p.context)
        .map_err(|e| Error::failed(format!("cannot write {path}: {e}")))?;
    Ok(json!({ "written_to": path }))
}

squall_sdk::export_actions! {
    "output_context" => output_context,
}
