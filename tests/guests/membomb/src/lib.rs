//! Hostile guest: allocates and touches memory until it is refused.
use squall_sdk::{Context, Result};

#[squall_sdk::action]
fn run(_: &Context, _: serde_json::Value) -> Result<usize> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
