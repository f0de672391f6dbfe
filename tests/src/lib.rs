//! Shared by Squall's integration tests: the paths of the guests that
//! `build.rs` compiled, and helpers that assemble packs around them.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// A copy of `packs/core` with its built component in `actions/`, the way an
/// uploaded pack ships it.
pub fn core_pack() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = workspace_root().join("packs/core");
    std::fs::copy(src.join("pack.yaml"), dir.path().join("pack.yaml")).expect("copy pack.yaml");
    let actions = dir.path().join("actions");
    std::fs::create_dir(&actions).expect("mkdir actions");
    for entry in std::fs::read_dir(src.join("actions")).expect("read actions") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name");
        std::fs::copy(&path, actions.join(name)).expect("copy action");
    }
    std::fs::copy(CORE_ACTIONS, actions.join("core_actions.wasm")).expect("copy component");
    dir
}

/// A pack named `name` whose actions each run one guest: `(action, guest
/// path, extra YAML under the action, e.g. a parameters block)`.
pub fn pack_of(name: &str, actions: &[(&str, &str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pack.yaml"),
        format!("name: {name}\nversion: 1.0.0\ndescription: test pack\nauthor: tests\n"),
    )
    .expect("write pack.yaml");
    let actions_dir = dir.path().join("actions");
    std::fs::create_dir(&actions_dir).expect("mkdir actions");
    for (action, guest, extra) in actions {
        let wasm = format!("{action}.wasm");
        std::fs::copy(guest, actions_dir.join(&wasm)).expect("copy guest");
        std::fs::write(
            actions_dir.join(format!("{action}.yaml")),
            format!("name: {action}\nrunner_type: wasm\nentry_point: {wasm}\n{extra}"),
        )
        .expect("write action");
    }
    dir
}
