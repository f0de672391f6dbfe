//! `squall dev`: a local server on packs under development. Every save in
//! a pack's sources rebuilds the pack and swaps the new version in, as an
//! install does; build errors, failed executions (with the guest's panic
//! message or Python traceback) and sensor failures are printed here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use notify::Watcher as _;
use squall_reactor::Reactor;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Pack directories to develop: built first, then rebuilt and reloaded
    /// on every save. (`--packs` adds packs that are served as they are,
    /// e.g. packs/core.)
    #[arg(required = true, value_name = "PACKDIR")]
    dirs: Vec<PathBuf>,
    #[command(flatten)]
    serve: crate::serve::ServeArgs,
}

/// How long the sources must stay quiet before a rebuild: an editor's save
/// is often several writes.
const QUIET: Duration = Duration::from_millis(100);

pub(crate) fn dev(data_dir: &Path, args: DevArgs) -> anyhow::Result<ExitCode> {
    let DevArgs { dirs, mut serve } = args;
    for dir in &dirs {
        crate::commands::build_any(dir, &crate::python::ALL_WORLDS)?;
    }
    serve.add_packs(&dirs);
    crate::serve::serve_with(data_dir, serve, Some(dirs))
}

/// Watch `dirs`, rebuilding and reloading (all of `paths`, the server's
/// own packs) on every change; print what executions end with.
pub(crate) fn start(
    reactor: Reactor,
    dirs: Vec<PathBuf>,
    paths: Vec<PathBuf>,
) -> anyhow::Result<()> {
    report_executions(&reactor);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })?;
    for dir in &dirs {
        watcher.watch(dir, notify::RecursiveMode::Recursive)?;
    }
    let handle = tokio::runtime::Handle::current();
    eprintln!(
        "squall dev: watching {}; save a file to rebuild and reload",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::thread::Builder::new()
        .name("squall-dev-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            let canonical: Vec<(PathBuf, PathBuf)> = dirs
                .iter()
                .map(|d| {
                    (
                        std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()),
                        d.clone(),
                    )
                })
                .collect();
            while let Ok(first) = rx.recv() {
                // The packs changed, each with its changed files.
                let mut changed: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
                let mut note = |event: notify::Result<notify::Event>| {
                    let Ok(event) = event else { return };
                    if event.kind.is_access() {
                        return;
                    }
                    for path in event.paths {
                        let Some((root, dir)) = canonical
                            .iter()
                            .find(|(c, d)| path.starts_with(c) || path.starts_with(d))
                        else {
                            continue;
                        };
                        let relative = path
                            .strip_prefix(root)
                            .or_else(|_| path.strip_prefix(dir))
                            .unwrap_or(&path)
                            .to_owned();
                        if is_source(&relative) {
                            let files = changed.entry(dir.clone()).or_default();
                            if !files.contains(&relative) {
                                files.push(relative);
                            }
                        }
                    }
                };
                note(first);
                while let Ok(event) = rx.recv_timeout(QUIET) {
                    note(event);
                }
                if changed.is_empty() {
                    continue;
                }
                let started = Instant::now();
                if rebuild(&changed) {
                    match handle.block_on(reactor.reload_packs(&paths)) {
                        Ok(report) => {
                            crate::serve::print_reload(&report);
                            if report.refused.is_empty() {
                                eprintln!(
                                    "squall dev: live {} ms after the change",
                                    started.elapsed().as_millis()
                                );
                            }
                        }
                        Err(e) => eprintln!("squall dev: reload failed: {e}"),
                    }
                }
            }
        })?;
    Ok(())
}

/// Build each changed pack that has something to build; false when one
/// fails (its error is printed, and nothing is reloaded).
fn rebuild(changed: &BTreeMap<PathBuf, Vec<PathBuf>>) -> bool {
    let mut ok = true;
    for (dir, files) in changed {
        // Editors save through scratch files: name what is there now.
        let shown = files
            .iter()
            .rev()
            .find(|f| dir.join(f).exists())
            .or(files.first())
            .map(|f| dir.join(f));
        if let Some(file) = shown {
            eprintln!("squall dev: {} changed", file.display());
        }
        let started = Instant::now();
        let built = crate::commands::build_any(dir, &python_worlds(files));
        if built.is_ok() {
            eprintln!("squall dev: built in {} ms", started.elapsed().as_millis());
        }
        if let Err(e) = built {
            eprintln!("squall dev: {} not reloaded: {e:#}", dir.display());
            ok = false;
        }
    }
    ok
}

/// The Python worlds to rebuild for changes to `files` (relative to the
/// pack): only the actions' component when only `actions/` changed, only
/// the sensors' when only `sensors/` did, else both.
fn python_worlds(files: &[PathBuf]) -> Vec<&'static str> {
    let under = |top: &str| files.iter().all(|f| f.starts_with(top));
    if under("actions") {
        vec!["action"]
    } else if under("sensors") {
        vec!["sensor"]
    } else {
        crate::python::ALL_WORLDS.to_vec()
    }
}

/// Whether a change to `relative` (inside a pack) is a change to its
/// sources: not a build's output, a cache or an editor's scratch file.
fn is_source(relative: &Path) -> bool {
    let skipped_dir = relative.components().any(|c| {
        matches!(
            c.as_os_str().to_str(),
            Some("target" | ".git" | "__pycache__" | ".squall")
        )
    });
    let name = relative
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let scratch = name.ends_with('~')
        || name.starts_with(".#")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name == "4913";
    let built = matches!(
        Path::new(name).extension().and_then(|e| e.to_str()),
        Some("wasm" | "pyc" | "cwasm")
    );
    !(skipped_dir || scratch || built || name.is_empty())
}

/// Print every execution's end; a failure with its error and the end of
/// its stderr (a Python traceback, a panic message: file, line, message).
fn report_executions(reactor: &Reactor) {
    let mut events = reactor.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    let e = &event.execution;
                    if !e.status.is_completed() {
                        continue;
                    }
                    eprintln!(
                        "squall dev: execution {} {} {}",
                        e.id.as_str(),
                        e.action,
                        e.status.as_str()
                    );
                    if e.status.as_str() == "succeeded" {
                        continue;
                    }
                    if let Some(error) = e
                        .result
                        .as_ref()
                        .and_then(|r| r.get("error"))
                        .and_then(|v| v.as_str())
                    {
                        eprintln!("  error: {error}");
                    }
                    let stderr = e.output.stderr.trim_end();
                    let lines: Vec<&str> = stderr.lines().collect();
                    for line in &lines[lines.len().saturating_sub(20)..] {
                        eprintln!("  {line}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("squall dev: {n} execution events not shown (too many at once)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_changed_world_is_rebuilt() {
        let paths = |p: &[&str]| p.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            python_worlds(&paths(&["actions/a.py", "actions/a.yaml"])),
            ["action"]
        );
        assert_eq!(python_worlds(&paths(&["sensors/s.py"])), ["sensor"]);
        assert_eq!(
            python_worlds(&paths(&["actions/a.py", "sensors/s.py"])),
            ["action", "sensor"]
        );
        assert_eq!(
            python_worlds(&paths(&["requirements.txt"])),
            ["action", "sensor"]
        );
    }

    #[test]
    fn sources_are_what_a_person_edits() {
        for source in [
            "actions/hello.py",
            "src/lib.rs",
            "rules/r.yaml",
            "pack.yaml",
        ] {
            assert!(is_source(Path::new(source)), "{source}");
        }
        for not in [
            "actions/python_actions.wasm",
            "target/wasm32-wasip2/release/x.wasm",
            "target/debug/.fingerprint/x",
            "actions/__pycache__/hello.cpython-314.pyc",
            "actions/.hello.py.swp",
            "actions/hello.py~",
            ".git/index",
        ] {
            assert!(!is_source(Path::new(not)), "{not}");
        }
    }
}
