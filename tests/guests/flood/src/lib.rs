//! Hostile guest: writes far more to stdout and stderr than any cap, then
//! succeeds.
use std::io::Write;

use squall_sdk::{Context, Result};

#[squall_sdk::action]
fn run(_: &Context, _: serde_json::Value) -> Result<serde_json::Value> {
    let line = [b'x'; 1023];
    let mut written = 0usize;
    for _ in 0..16 * 1024 {
        std::io::stdout().write_all(&line)?;
        std::io::stdout().write_all(b"\n")?;
        std::io::stderr().write_all(&line)?;
        std::io::stderr().write_all(b"\n")?;
        written += 1024;
    }
    for i in 0..20_000 {
        squall_sdk::log::info!("log line {i} of a flood");
    }
    Ok(serde_json::json!({ "written": written }))
}
