//! Hostile guest: unbounded recursion.
use squall_sdk::{Context, Result};

fn depth(n: u64) -> u64 {
    if std::hint::black_box(n) == u64::MAX {
        return 0;
    }
    1 + depth(std::hint::black_box(n + 1))
}

#[squall_sdk::action]
fn run(_: &Context, _: serde_json::Value) -> Result<u64> {
    Ok(depth(0))
}
