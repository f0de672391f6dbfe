//! Exercises the SDK: context, config, log and kv, and reports what it saw.
use serde_json::{Value, json};
use squall_sdk::{Context, Error, Result, kv};

#[derive(serde::Deserialize)]
struct Params {
    key: String,
    value: String,
}

#[squall_sdk::action]
fn run(ctx: &Context, p: Params) -> Result<Value> {
    squall_sdk::log::info!("probing with key {}", p.key);
    let before = kv::get(&p.key)?;
    kv::set(&p.key, &p.value)?;
    kv::set_with_ttl(&format!("{}:ttl", p.key), "short", 3600)?;
    let listed: Vec<String> = kv::list(&p.key)?.into_iter().map(|e| e.key).collect();
    let after = kv::get(&p.key)?;
    let refused = kv::set("", "x").err().map(|e| e.to_string());
    let encrypt = match squall_sdk::bindings::squall::automation::kv::set("secret", "x", None, true)
    {
        Ok(()) => {
            return Err(Error::failed(
                "encryption must be refused without a server key",
            ));
        }
        Err(e) => e,
    };
    Ok(json!({
        "ctx": {"execution_id": ctx.execution_id, "tenant": ctx.tenant, "pack": ctx.pack, "action": ctx.action},
        "config": squall_sdk::config(),
        "before": before,
        "after": after,
        "listed": listed,
        "empty_key_error": refused,
        "encrypt_error": encrypt,
    }))
}
