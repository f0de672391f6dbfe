//! Hostile guest: spins forever without calling the host.
use squall_sdk::{Context, Result};

#[squall_sdk::action]
fn run(_: &Context, _: serde_json::Value) -> Result<()> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
