//! Says which version of its pack it runs in: sleeps `seconds` (or, given
//! `hold`, waits until the datastore has that key), then returns the
//! `version` of its pack's config (hot-swap tests install two versions that
//! differ only there).
use serde_json::{Value, json};
use squall_sdk::{Context, Result};

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default)]
    seconds: f64,
    /// A datastore key to wait for.
    hold: Option<String>,
}

#[squall_sdk::action]
fn run(_: &Context, p: Params) -> Result<Value> {
    std::thread::sleep(std::time::Duration::from_secs_f64(p.seconds.max(0.0)));
    if let Some(key) = &p.hold {
        while squall_sdk::kv::get(key)?.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let config = squall_sdk::config();
    Ok(json!({"version": config.get("version").cloned().unwrap_or(Value::Null)}))
}
