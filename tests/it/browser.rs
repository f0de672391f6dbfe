//! The web UI in a real browser: `tests/browser/ui.test.mjs` (Playwright
//! driving Debian's headless Chromium) against a server started here.
//! Where Chromium or the test's npm packages are missing the test says it
//! skips; on CI (`CI` set) that is a failure, as `.ci/run` installs them.
//! Each browser test saves a screenshot under `target/ui-screenshots/`.

use std::path::{Path, PathBuf};

use crate::server::{RULES, Server};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `tests/browser`, when it and the browser are ready to run.
fn browser_tests() -> Option<PathBuf> {
    let dir = squall_tests::workspace_root().join("tests/browser");
    let ready = Path::new(CHROMIUM).is_file()
        && dir.join("node_modules/playwright-core").is_dir()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if ready {
        return Some(dir);
    }
    let why = format!(
        "the browser tests need {CHROMIUM} (apt-get install chromium), node, and `npm ci` in {}",
        dir.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_works_in_a_real_browser() {
    let Some(dir) = browser_tests() else {
        return;
    };
    let flaky = squall_tests::sensor_pack("flaky", "panic", 0.5, "[]", &[]);
    let s = Server::start_with(
        vec![
            squall_tests::core_pack(),
            squall_tests::rules_pack("hooks", RULES),
            crate::inquiries::ask_pack(),
            flaky,
        ],
        squall_reactor::ReactorConfig::default(),
    )
    .await;
    let upload = squall_tests::pack_of(
        "uploaded",
        &[(
            "hello",
            squall_tests::VERSIONED,
            "parameters:\n  seconds: {type: number, default: 0}\n  hold: {type: string}\n",
        )],
    );
    let archive_dir = tempfile::tempdir().expect("tempdir");
    let archive = archive_dir.path().join("uploaded.tar.gz");
    std::fs::write(
        &archive,
        squall_reactor::install::archive_pack(upload.path()).expect("archive"),
    )
    .expect("write archive");
    let shots = squall_tests::workspace_root().join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1", "ui.test.mjs"])
        .current_dir(&dir)
        .env("SQUALL_URL", &s.base)
        .env("SQUALL_API_KEY", &s.key)
        .env("SQUALL_PACK_ARCHIVE", &archive)
        .env("SQUALL_SCREENSHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    for n in 1..=7 {
        assert!(
            std::fs::read_dir(&shots)
                .expect("screenshots")
                .flatten()
                .any(|e| e
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{n}-"))),
            "test {n} saved no screenshot: {report}"
        );
    }
}
