//! Hostile guest: panics with a known message.
use squall_sdk::{Context, Result};

#[squall_sdk::action]
fn run(_: &Context, _: serde_json::Value) -> Result<()> {
    let answer = std::hint::black_box(42);
    panic!("the guest gave up: {answer}");
}
