//! Prints and logs while it runs, then returns a result of a chosen size:
//! for output capture, `tail --follow`, cancel while waiting in the host,
//! and large results.
use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use squall_sdk::{Context, Result};

#[derive(serde::Deserialize)]
struct Params {
    /// Lines printed to stdout, one every `interval_ms`.
    #[serde(default)]
    lines: u32,
    #[serde(default)]
    interval_ms: u64,
    /// Bytes of the `data` string in the result.
    #[serde(default)]
    result_bytes: usize,
}

#[squall_sdk::action]
fn run(_: &Context, p: Params) -> Result<Value> {
    squall_sdk::log::info!("talking {} lines", p.lines);
    for i in 0..p.lines {
        println!("line {i}");
        let _ = std::io::stdout().flush();
        eprintln!("err {i}");
        if p.interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(p.interval_ms));
        }
    }
    Ok(json!({ "data": "x".repeat(p.result_bytes) }))
}
