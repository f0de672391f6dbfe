//! Every workflow definition of the conformance corpus (real Orquesta
//! workflows written for StackStorm, read where they lie) is accepted by the
//! inspection, and every YAQL expression in it parses.

use std::path::{Path, PathBuf};

use squall_workflow::spec::Workflow;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/orquesta")
}

/// The definitions: YAML files under a `workflows/` directory, and the
/// orquesta fixtures.
fn definitions(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read corpus dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            definitions(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path
                .components()
                .any(|c| c.as_os_str() == "workflows" || c.as_os_str() == "orquesta_fixtures")
        {
            out.push(path);
        }
    }
}

#[test]
fn every_corpus_definition_is_accepted() {
    let root = corpus();
    if !root.is_dir() {
        // The corpus lies beside the project (../shared); a checkout
        // without it has nothing to read.
        assert!(
            std::env::var_os("CI").is_none(),
            "the conformance corpus is missing at {}",
            root.display()
        );
        eprintln!("SKIPPED: no corpus at {}", root.display());
        return;
    }
    let mut files = Vec::new();
    definitions(&root, &mut files);
    files.sort();
    assert!(files.len() >= 30, "found {} definitions", files.len());
    let mut refused = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read definition");
        if let Err(e) = Workflow::parse(&text) {
            refused.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}
