//! Python packs: a pack's Python actions (`runner_type: python-script`)
//! built into one component of Squall's `action` world with
//! componentize-py, which Squall finds, or installs once, itself.
//!
//! The component holds the pack's action modules, Squall's `squall_st2`
//! (StackStorm's `Action`, its logger and datastore service, and the
//! dispatcher), the `st2common` and `st2actions` import paths pack code
//! uses, and a generated `squall_app` that maps each action's name to its
//! module.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use squall_core::manifest::{PYTHON_COMPONENT, RunnerType};

/// The componentize-py Squall builds with.
pub(crate) const COMPONENTIZE_PY: &str = "0.25.1";

/// Squall's Python modules, shipped into every Python component.
const MODULES: &[(&str, &str)] = &[
    (
        "squall_st2/__init__.py",
        include_str!("../python/squall_st2/__init__.py"),
    ),
    (
        "st2common/__init__.py",
        include_str!("../python/st2common/__init__.py"),
    ),
    (
        "st2common/runners/__init__.py",
        include_str!("../python/st2common/runners/__init__.py"),
    ),
    (
        "st2common/runners/base_action.py",
        include_str!("../python/st2common/runners/base_action.py"),
    ),
    (
        "st2actions/__init__.py",
        include_str!("../python/st2actions/__init__.py"),
    ),
    (
        "st2actions/runners/__init__.py",
        include_str!("../python/st2actions/runners/__init__.py"),
    ),
    (
        "st2actions/runners/pythonrunner.py",
        include_str!("../python/st2actions/runners/pythonrunner.py"),
    ),
];

/// The contract the component is built against.
const WIT: &str = include_str!("../../../wit/squall.wit");

/// Where Squall keeps tools it installs: `SQUALL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/squall`, else `~/.cache/squall`.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SQUALL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("squall");
    }
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from(".squall-cache"), PathBuf::from)
        .join(".cache/squall")
}

/// componentize-py: `SQUALL_COMPONENTIZE_PY` when set, else the pinned
/// version in a virtualenv under the cache directory, installed there from
/// PyPI the first time (saying so).
pub(crate) fn componentize_py() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SQUALL_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(path));
    }
    let venv = cache_dir().join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let tool = venv.join("bin/componentize-py");
    // Written once pip is done: a half-made virtualenv is made again.
    let done = venv.join("squall-installed");
    if done.is_file() && tool.is_file() {
        return Ok(tool);
    }
    eprintln!(
        "installing componentize-py {COMPONENTIZE_PY} into {} (once; it builds Python packs)",
        venv.display()
    );
    let run = |program: &Path, args: &[&str]| -> anyhow::Result<()> {
        let status = std::process::Command::new(program)
            .args(args)
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("failed to start {}", program.display()))?;
        if !status.success() {
            bail!(
                "`{} {}` failed ({status})",
                program.display(),
                args.join(" ")
            );
        }
        Ok(())
    };
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(cache_dir())
        .with_context(|| format!("cannot create {}", cache_dir().display()))?;
    run(
        Path::new("python3"),
        &["-m", "venv", &venv.to_string_lossy()],
    )
    .context("componentize-py needs Python 3 with venv (e.g. apt install python3-venv)")?;
    run(
        &venv.join("bin/pip"),
        &[
            "install",
            "--quiet",
            &format!("componentize-py=={COMPONENTIZE_PY}"),
        ],
    )?;
    std::fs::write(&done, COMPONENTIZE_PY)?;
    Ok(tool)
}

/// The module an entry point names: `lib/tool.py` is `lib.tool`.
fn module_of(entry: &Path) -> anyhow::Result<String> {
    let stem = entry.with_extension("");
    let parts: Vec<String> = stem
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let identifier = |p: &str| {
        !p.is_empty()
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.is_empty() || !parts.iter().all(|p| identifier(p)) {
        bail!(
            "'{}' is not a Python module name (letters, digits and _, not starting with a digit)",
            entry.display()
        );
    }
    Ok(parts.join("."))
}

/// The generated `squall_app` module: each Python action's name mapped to
/// its module, imported at build time so its imports are bundled.
fn app_module(actions: &[(String, String)]) -> String {
    let mut text = String::from(
        "\"\"\"Generated by `squall pack build`: the pack's Python actions, by name.\"\"\"\n\nimport squall_st2\n",
    );
    for (i, (_, module)) in actions.iter().enumerate() {
        text.push_str(&format!("import {module} as action_{i}\n"));
    }
    text.push_str("\n\nclass WitWorld(squall_st2.ActionWorld):\n    actions = {\n");
    for (i, (name, _)) in actions.iter().enumerate() {
        text.push_str(&format!("        {name:?}: action_{i},\n"));
    }
    text.push_str("    }\n");
    text
}

/// Build the Python actions of the pack in `dir` (read as `pack`) into
/// `actions/python_actions.wasm`; `None` when it has none.
pub(crate) fn build(pack: &squall_reactor::LoadedPack) -> anyhow::Result<Option<PathBuf>> {
    let mut actions = Vec::new();
    for meta in pack
        .actions
        .values()
        .filter(|m| m.runner == RunnerType::PythonScript)
    {
        let module = module_of(&meta.entry_point)
            .with_context(|| format!("action '{}': entry_point", meta.action_ref))?;
        actions.push((meta.action_ref.name().to_owned(), module));
    }
    if actions.is_empty() {
        return Ok(None);
    }
    let stage = tempfile::tempdir()?;
    for (path, text) in MODULES {
        let at = stage.path().join(path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&at, text)?;
    }
    let wit = stage.path().join("squall.wit");
    std::fs::write(&wit, WIT)?;
    std::fs::write(stage.path().join("squall_app.py"), app_module(&actions))?;
    let out = pack.dir.join("actions").join(PYTHON_COMPONENT);
    let tool = componentize_py()?;
    let deps = stage.path().join("deps");
    std::fs::create_dir_all(&deps)?;
    let requirements = pack.dir.join("requirements.txt");
    if requirements.is_file() {
        bundle(&tool, &requirements, &deps)?;
    }
    eprintln!(
        "building the Python actions of pack '{}' with componentize-py {COMPONENTIZE_PY}",
        pack.manifest.pack_ref
    );
    let status = std::process::Command::new(&tool)
        .arg("-d")
        .arg(&wit)
        .args(["-w", "action", "componentize", "-p"])
        .arg(stage.path())
        .arg("-p")
        .arg(pack.dir.join("actions"))
        .arg("-p")
        .arg(&deps)
        .arg("squall_app")
        .arg("-o")
        .arg(&out)
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("failed to start {}", tool.display()))?;
    if !status.success() {
        bail!(
            "build of the Python actions of pack '{}' failed ({status}): see componentize-py's message above",
            pack.manifest.pack_ref
        );
    }
    Ok(Some(out))
}

/// Install what `requirements` lists into `deps`, to be bundled: wheels
/// only, and pure Python only (a component has no native extensions).
fn bundle(tool: &Path, requirements: &Path, deps: &Path) -> anyhow::Result<()> {
    // The pip beside componentize-py (its virtualenv), else python3's.
    let pip = tool.with_file_name("pip");
    let mut command = if pip.is_file() {
        std::process::Command::new(pip)
    } else {
        let mut c = std::process::Command::new("python3");
        c.args(["-m", "pip"]);
        c
    };
    eprintln!("bundling {}", requirements.display());
    let status = command
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--target",
        ])
        .arg(deps)
        .arg("-r")
        .arg(requirements)
        .stdout(std::io::stderr())
        .status()
        .context("failed to start pip")?;
    if !status.success() {
        bail!(
            "{}: pip could not install what it lists ({status}); only packages with wheels can be bundled",
            requirements.display()
        );
    }
    let mut stack = vec![deps.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let native = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "so" | "pyd" | "dylib"));
            if native {
                let relative = path.strip_prefix(deps).unwrap_or(&path);
                let module = relative
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default();
                bail!(
                    "{}: module '{module}' cannot be bundled: it has native code ({}), and a Python component holds pure-Python modules only",
                    requirements.display(),
                    relative.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_name_modules() {
        assert_eq!(module_of(Path::new("my_echo.py")).expect("ok"), "my_echo");
        assert_eq!(module_of(Path::new("lib/tool.py")).expect("ok"), "lib.tool");
        assert!(module_of(Path::new("my-echo.py")).is_err());
        assert!(module_of(Path::new("1st.py")).is_err());
    }

    #[test]
    fn the_app_maps_names_to_modules() {
        let app = app_module(&[("echo_action".into(), "my_echo_action".into())]);
        assert!(app.contains("import my_echo_action as action_0\n"), "{app}");
        assert!(app.contains("\"echo_action\": action_0,"), "{app}");
        assert!(
            app.contains("class WitWorld(squall_st2.ActionWorld):"),
            "{app}"
        );
    }
}
