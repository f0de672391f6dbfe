//! `core.file_watch`: the host's file watcher (inotify through the `notify`
//! crate). One watcher per distinct trigger among enabled rules, like the
//! timers; each change becomes a trigger instance with `{path, event, time}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use squall_core::TenantId;
use squall_core::time::now_rfc3339;
use squall_core::trigger::FILE_WATCH;

use crate::dispatch::Reactor;

/// Changes waiting to be dispatched, per watch.
const QUEUE: usize = 4096;

/// A watch as a rule's trigger parameters describe it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Watch {
    pub(crate) path: PathBuf,
    pub(crate) glob: Option<glob::Pattern>,
    pub(crate) recursive: bool,
}

/// Read and check a rule's `core.file_watch` parameters: an absolute path
/// under a directory the server allows, and a valid glob.
pub(crate) fn watch_of(
    parameters: &Map<String, Value>,
    allowed: &[PathBuf],
) -> Result<Watch, String> {
    let path = parameters
        .get("path")
        .and_then(Value::as_str)
        .ok_or("trigger.parameters.path: required")?;
    let path = PathBuf::from(path);
    let plain = path
        .components()
        .all(|c| !matches!(c, std::path::Component::ParentDir));
    if !path.is_absolute() || !plain {
        return Err(format!(
            "trigger.parameters.path: '{}' must be an absolute path without '..'",
            path.display()
        ));
    }
    if !allowed.iter().any(|a| path.starts_with(a)) {
        return Err(format!(
            "trigger.parameters.path: '{}' is not under any directory the server allows (--allow-dir)",
            path.display()
        ));
    }
    // Checked again with symlinks resolved: a link must not lead outside.
    let path = std::fs::canonicalize(&path)
        .map_err(|e| format!("trigger.parameters.path: '{}': {e}", path.display()))?;
    if !allowed.iter().any(|a| path.starts_with(a)) {
        return Err(format!(
            "trigger.parameters.path: resolves to '{}', which is not under any directory the server allows (--allow-dir)",
            path.display()
        ));
    }
    let glob = match parameters.get("glob").and_then(Value::as_str) {
        Some(g) => Some(
            glob::Pattern::new(g).map_err(|e| format!("trigger.parameters.glob: '{g}': {e}"))?,
        ),
        None => None,
    };
    let recursive = parameters
        .get("recursive")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Watch {
        path,
        glob,
        recursive,
    })
}

/// The running watchers, by (tenant, canonical parameters).
#[derive(Default)]
pub(crate) struct Watchers {
    running: HashMap<(TenantId, String), notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers")
            .field("running", &self.running.len())
            .finish()
    }
}

impl Watchers {
    /// Keep exactly the watchers `wanted` asks for: stop the others, start
    /// the new ones. A watch that cannot start (the directory is gone) is
    /// logged and skipped.
    pub(crate) fn reconcile(
        &mut self,
        wanted: Vec<(TenantId, Map<String, Value>, Watch)>,
        reactor: &Reactor,
    ) {
        let keys: Vec<(TenantId, String)> = wanted
            .iter()
            .map(|(t, p, _)| (t.clone(), Value::Object(p.clone()).to_string()))
            .collect();
        self.running.retain(|k, _| keys.contains(k));
        for ((tenant, parameters, watch), key) in wanted.into_iter().zip(keys) {
            if self.running.contains_key(&key) {
                continue;
            }
            match start(reactor.clone(), tenant, parameters, watch) {
                Ok(watcher) => {
                    self.running.insert(key, watcher);
                }
                Err(e) => tracing::error!(error = %e, "file watch could not start"),
            }
        }
    }

    pub(crate) fn stop(&mut self) {
        self.running.clear();
    }
}

fn start(
    reactor: Reactor,
    tenant: TenantId,
    parameters: Map<String, Value>,
    watch: Watch,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::Watcher as _;
    // Bounded: a storm of changes drops events (counted in the log) rather
    // than growing memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(PathBuf, &'static str)>(QUEUE);
    let filter = watch.clone();
    let dropped = std::sync::atomic::AtomicU64::new(0);
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        for (path, kind) in changes(&event) {
            if matches(&filter, &path) && tx.try_send((path, kind)).is_err() {
                let n = dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, path = %filter.path.display(), "file watch queue full; changes dropped");
                }
            }
        }
    };
    // Symlinks inside the watched tree are not followed out of it.
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(handler, config)
        .map_err(|e| format!("'{}': {e}", watch.path.display()))?;
    let mode = if watch.recursive {
        notify::RecursiveMode::Recursive
    } else {
        notify::RecursiveMode::NonRecursive
    };
    watcher
        .watch(&watch.path, mode)
        .map_err(|e| format!("'{}': {e}", watch.path.display()))?;
    // The task ends when the watcher (and with it the sender) is dropped.
    tokio::spawn(async move {
        while let Some((path, kind)) = rx.recv().await {
            let payload = json!({
                "path": path.display().to_string(),
                "event": kind,
                "time": now_rfc3339(),
            });
            if let Err(e) = reactor
                .dispatch(&tenant, FILE_WATCH, parameters.clone(), payload, None)
                .await
            {
                tracing::error!(error = %e, "file watch could not dispatch");
            }
        }
    });
    Ok(watcher)
}

/// What an inotify event means for the files it names.
fn changes(event: &notify::Event) -> Vec<(PathBuf, &'static str)> {
    use notify::EventKind;
    use notify::event::{ModifyKind, RenameMode};
    let each = |kind| event.paths.iter().map(|p| (p.clone(), kind)).collect();
    match event.kind {
        EventKind::Create(_) => each("created"),
        EventKind::Remove(_) => each("deleted"),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => each("deleted"),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => each("created"),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            let mut out = Vec::new();
            if let Some(from) = event.paths.first() {
                out.push((from.clone(), "deleted"));
            }
            if let Some(to) = event.paths.get(1) {
                out.push((to.clone(), "created"));
            }
            out
        }
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => each("modified"),
        _ => Vec::new(),
    }
}

fn matches(watch: &Watch, path: &Path) -> bool {
    match &watch.glob {
        None => true,
        Some(pattern) => path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| pattern.matches(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_against_the_allowed_directories() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(root.path()).expect("canonical");
        let inside = root.join("in");
        std::fs::create_dir(&inside).expect("mkdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), root.join("link")).expect("symlink");
        let allowed = vec![root.clone()];
        let params = |v: Value| v.as_object().cloned().unwrap_or_default();
        let w = watch_of(
            &params(json!({"path": inside.display().to_string(), "glob": "*.csv"})),
            &allowed,
        )
        .expect("allowed");
        assert!(matches(&w, &inside.join("a.csv")));
        assert!(!matches(&w, &inside.join("a.txt")));
        let under = |p: &str| format!("{}/{p}", root.display());
        for (p, needle) in [
            (json!({"path": "/etc"}), "--allow-dir"),
            (json!({"path": "srv/in"}), "absolute"),
            (json!({"path": under("../etc")}), "'..'"),
            (json!({"path": under("in"), "glob": "[z-a"}), "glob"),
            (json!({"path": under("link")}), "resolves to"),
            (json!({"path": under("missing")}), "No such file"),
        ] {
            let err = watch_of(&params(p.clone()), &allowed).expect_err("refused");
            assert!(err.contains(needle), "{p}: {err}");
        }
    }
}
