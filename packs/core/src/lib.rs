//! The `core` pack: one component implementing `core.echo`, `core.noop`,
//! `core.sleep` and `core.fail`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use squall_sdk::{Context, Error, Result};

#[derive(Deserialize)]
struct EchoParams {
    message: String,
}

fn echo(_: &Context, p: EchoParams) -> Result<Value> {
    Ok(json!({ "message": p.message }))
}

fn noop(_: &Context, _: Value) -> Result<Value> {
    Ok(json!({}))
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

squall_sdk::export_actions! {
    "echo" => echo,
    "noop" => noop,
    "sleep" => sleep,
    "fail" => fail,
}
