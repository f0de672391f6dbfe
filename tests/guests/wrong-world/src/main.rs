//! Hostile guest: a plain WASI command, not an action.
fn main() {
    println!("I am not an action");
}
