//! Loading components into the sandbox.

use std::sync::Arc;

use crate::util::sandbox;

#[test]
fn a_component_is_checked_once_and_reloaded_when_its_file_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("action.wasm");
    std::fs::copy(squall_tests::CORE_ACTIONS, &path).expect("copy");
    let sandbox = sandbox();
    let first = sandbox.load_action(&path).expect("loads");
    let again = sandbox.load_action(&path).expect("loads");
    assert!(
        Arc::ptr_eq(&first, &again),
        "an unchanged file is not loaded again"
    );

    std::fs::copy(squall_tests::PROBE, &path).expect("replace");
    // The file is looked at again once its stamp is older than
    // RESTAMP_AFTER, not on every execution.
    std::thread::sleep(squall_sandbox::RESTAMP_AFTER + std::time::Duration::from_millis(100));
    let changed = sandbox.load_action(&path).expect("loads");
    assert_ne!(
        changed.digest(),
        first.digest(),
        "a changed file is loaded anew"
    );
}

#[test]
fn a_core_module_is_not_a_component() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("module.wasm");
    // The smallest valid core module: magic and version.
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write");
    let err = sandbox().load_action(&path).expect_err("refused");
    assert!(
        err.to_string().contains("is not a WebAssembly component"),
        "{err}"
    );
    std::fs::write(&path, b"garbage").expect("write");
    let err = sandbox().load_action(&path).expect_err("refused");
    assert!(
        err.to_string().contains("is not a WebAssembly component"),
        "{err}"
    );
}

/// The install-time check of a component that loops while it starts is cut
/// off at the time limit, and yields meanwhile: on a runtime of one thread
/// (`serve`'s default on two cores) other tasks keep running.
#[tokio::test(flavor = "current_thread")]
async fn a_component_looping_at_instantiation_is_stopped_without_starving_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("loop_start.wasm");
    std::fs::write(&path, squall_tests::loop_at_instantiation_component()).expect("write");
    let sandbox = sandbox();
    let component = sandbox.load_action(&path).expect("loads");
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let limits = squall_sandbox::Limits {
        timeout: std::time::Duration::from_secs(3),
        ..squall_sandbox::Limits::default()
    };
    let started = std::time::Instant::now();
    let err = sandbox
        .check_instantiation(&component, limits)
        .await
        .expect_err("a looping start is refused");
    let took = started.elapsed();
    ticker.abort();
    // Stopped by its limit: it would loop forever.
    assert!(
        took < std::time::Duration::from_secs(60),
        "stopped at the limit, took {took:?}"
    );
    assert!(
        err.contains("interrupt") || err.contains("did not finish within 3.0 s"),
        "{err}"
    );
    let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ticked >= 5,
        "the runtime's other tasks ran while it looped ({ticked} ticks of 50 ms in {took:?})"
    );
}
