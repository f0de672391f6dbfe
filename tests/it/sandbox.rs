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
