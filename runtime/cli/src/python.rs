//! Python packs: a pack's Python actions (`runner_type: python-script`)
//! built into one component of Squall's `action` world, and its Python
//! sensors (`entry_point: <module>.py`) into one of the `sensor` world, with
//! componentize-py, which Squall finds, or installs once, itself.
//!
//! Each component holds the pack's modules, Squall's `squall_st2`
//! (StackStorm's `Action`, `Sensor` and `PollingSensor`, their logger,
//! datastore and dispatch services, and the dispatchers), the `st2common`,
//! `st2actions` and `st2reactor` import paths pack code uses, and a
//! generated app module that maps each action's name, or each sensor's
//! class name, to its module.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use squall_core::manifest::{PYTHON_COMPONENT, PYTHON_SENSORS_COMPONENT, RunnerType};

/// The componentize-py Squall builds with.
pub(crate) const COMPONENTIZE_PY: &str = "0.25.1";

/// Squall's Python modules, shipped into every Python component.
const MODULES: &[(&str, &str)] = &[
    (
        "squall_st2/__init__.py",
        include_str!("../python/squall_st2/__init__.py"),
    ),
    (
        "squall_st2/http.py",
        include_str!("../python/squall_st2/http.py"),
    ),
    (
        "squall_st2/actions.py",
        include_str!("../python/squall_st2/actions.py"),
    ),
    (
        "squall_st2/sensors.py",
        include_str!("../python/squall_st2/sensors.py"),
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
    (
        "st2reactor/__init__.py",
        include_str!("../python/st2reactor/__init__.py"),
    ),
    (
        "st2reactor/sensor/__init__.py",
        include_str!("../python/st2reactor/sensor/__init__.py"),
    ),
    (
        "st2reactor/sensor/base.py",
        include_str!("../python/st2reactor/sensor/base.py"),
    ),
];

/// The WIT files a Python component is built against, by path in the
/// staged WIT directory: the Python worlds (Squall's worlds plus
/// `wasi:http`), Squall's contract, and the WASI interfaces they use.
const WIT: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/python/world.wit")),
    (
        "deps/automation.wit",
        include_str!("../../../wit/squall.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../../wit/python/deps/cli.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../wit/python/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../wit/python/deps/filesystem.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../../wit/python/deps/http.wit"),
    ),
    (
        "deps/io.wit",
        include_str!("../../../wit/python/deps/io.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../../wit/python/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../wit/python/deps/sockets.wit"),
    ),
];

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
    // One install at a time: builds started together wait for the first.
    std::fs::create_dir_all(cache_dir())
        .with_context(|| format!("cannot create {}", cache_dir().display()))?;
    let lock_path = cache_dir().join(format!("componentize-py-{COMPONENTIZE_PY}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
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

/// One world's Python code in a pack: its modules by the name Squall calls
/// them by (an action's name, a sensor's class name).
struct WorldBuild {
    /// `action` or `sensor`.
    world: &'static str,
    /// The pack's directory that holds the modules (`actions`, `sensors`).
    dir: &'static str,
    /// The component it becomes, in `dir`.
    component: &'static str,
    /// (name, module) pairs.
    modules: Vec<(String, String)>,
}

impl WorldBuild {
    /// The generated app module (`squall_actions_app` or
    /// `squall_sensors_app`): each name mapped to its module, imported at
    /// build time so the module's own imports are bundled.
    fn app(&self) -> (String, String) {
        let (name, base, class, field) = match self.world {
            "action" => ("squall_actions_app", "actions", "WitWorld", "actions"),
            _ => ("squall_sensors_app", "sensors", "Sensor", "sensors"),
        };
        let mut text = format!(
            "\"\"\"Generated by `squall pack build`: the pack's Python {field}, by name.\"\"\"\n\nimport squall_st2.{base}\n"
        );
        for (i, (_, module)) in self.modules.iter().enumerate() {
            text.push_str(&format!("import {module} as {base}_{i}\n"));
        }
        text.push_str(&format!(
            "\n\nclass {class}(squall_st2.{base}.{}):\n    {field} = {{\n",
            if base == "actions" {
                "ActionWorld"
            } else {
                "SensorWorld"
            }
        ));
        for (i, (key, _)) in self.modules.iter().enumerate() {
            text.push_str(&format!("        {key:?}: {base}_{i},\n"));
        }
        text.push_str("    }\n");
        if base == "actions" {
            text.push_str(&format!("\n\n{class}.prepare()\n"));
        }
        (name.to_owned(), text)
    }
}

/// The pack's Python actions and sensors, by world; worlds with none are
/// left out.
fn python_code(pack: &squall_reactor::LoadedPack) -> anyhow::Result<Vec<WorldBuild>> {
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
    let mut sensors = Vec::new();
    for (_, meta) in pack.sensors.iter().filter(|(_, m)| m.is_python()) {
        let module = module_of(&meta.entry_point)
            .with_context(|| format!("sensor '{}': entry_point", meta.sensor_ref()))?;
        sensors.push((meta.class_name.clone(), module));
    }
    let mut worlds = Vec::new();
    if !actions.is_empty() {
        worlds.push(WorldBuild {
            world: "action",
            dir: "actions",
            component: PYTHON_COMPONENT,
            modules: actions,
        });
    }
    if !sensors.is_empty() {
        worlds.push(WorldBuild {
            world: "sensor",
            dir: "sensors",
            component: PYTHON_SENSORS_COMPONENT,
            modules: sensors,
        });
    }
    Ok(worlds)
}

/// Whether the pack has Python actions or sensors to build.
pub(crate) fn has_python(pack: &squall_reactor::LoadedPack) -> bool {
    pack.actions
        .values()
        .any(|m| m.runner == RunnerType::PythonScript)
        || pack.sensors.iter().any(|(_, m)| m.is_python())
}

/// Every world a pack's Python code may be built for.
pub(crate) const ALL_WORLDS: [&str; 2] = ["action", "sensor"];

/// Build the Python actions of the pack into `actions/python_actions.wasm`
/// and its Python sensors into `sensors/python_sensors.wasm`, for the
/// worlds in `only`; the components made, none when it has no Python code.
pub(crate) fn build_worlds(
    pack: &squall_reactor::LoadedPack,
    only: &[&str],
) -> anyhow::Result<Vec<PathBuf>> {
    build_worlds_with(pack, only, None)
}

/// [`build_worlds`], with the build's tools run under `limits` when given
/// (a server building an upload) and their output kept for the error
/// instead of passed on.
fn build_worlds_with(
    pack: &squall_reactor::LoadedPack,
    only: &[&str],
    limits: Option<&BuildLimits>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut worlds = python_code(pack)?;
    worlds.retain(|w| only.contains(&w.world));
    if worlds.is_empty() {
        return Ok(Vec::new());
    }
    let stage = tempfile::tempdir()?;
    for (path, text) in MODULES {
        let at = stage.path().join(path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&at, text)?;
    }
    let wit = stage.path().join("wit");
    for (path, text) in WIT {
        let at = wit.join(path);
        std::fs::create_dir_all(at.parent().expect("a file in the WIT directory"))?;
        std::fs::write(&at, text)?;
    }
    let tool = componentize_py()?;
    let deps = stage.path().join("deps");
    std::fs::create_dir_all(&deps)?;
    let requirements = pack.dir.join("requirements.txt");
    if lists_requirements(&requirements) {
        // pip obeys options written in the file (indexes, source builds),
        // so a server never runs it on a tenant's list.
        if limits.is_some() {
            bail!(
                "requirements.txt: a server does not install a pack's requirements; build the pack with `squall pack build` and upload it with its components"
            );
        }
        bundle(&tool, &requirements, &deps, limits)?;
    }
    let mut built = Vec::new();
    for world in &worlds {
        let (app, text) = world.app();
        std::fs::write(stage.path().join(format!("{app}.py")), text)?;
        let out = pack.dir.join(world.dir).join(world.component);
        eprintln!(
            "building the Python {} of pack '{}' with componentize-py {COMPONENTIZE_PY}",
            world.dir, pack.manifest.pack_ref
        );
        let mut command = std::process::Command::new(&tool);
        command
            .arg("-d")
            .arg(&wit)
            .args(["-w", world.world, "componentize", "-p"])
            .arg(stage.path())
            .arg("-p")
            .arg(pack.dir.join(world.dir))
            .arg("-p")
            .arg(&deps)
            .arg(&app)
            .arg("-o")
            .arg(&out);
        let (status, output) = run_tool(&mut command, limits, "componentize-py")?;
        if !status.success() {
            let what = format!(
                "build of the Python {} of pack '{}' failed ({status})",
                world.dir, pack.manifest.pack_ref
            );
            match limits {
                None => bail!("{what}: see componentize-py's message above"),
                Some(_) => bail!(
                    "{what}:\n{}",
                    relative_paths(&output, &[&pack.dir, stage.path()])
                ),
            }
        }
        built.push(out);
    }
    Ok(built)
}

/// Whether `requirements` exists and lists anything (not only comments
/// and blank lines): pip is not started for nothing.
fn lists_requirements(requirements: &Path) -> bool {
    std::fs::read_to_string(requirements).is_ok_and(|text| {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .any(|l| !l.is_empty())
    })
}

/// Install what `requirements` lists into `deps`, to be bundled: wheels
/// only, and pure Python only (a component has no native extensions).
fn bundle(
    tool: &Path,
    requirements: &Path,
    deps: &Path,
    limits: Option<&BuildLimits>,
) -> anyhow::Result<()> {
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
    command
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--target",
        ])
        .arg(deps)
        .arg("-r")
        .arg(requirements);
    let (status, output) = run_tool(&mut command, limits, "pip")?;
    if !status.success() {
        let shown = match limits {
            None => requirements.display().to_string(),
            Some(_) => "requirements.txt".to_owned(),
        };
        bail!(
            "{shown}: pip could not install what it lists ({status}); only packages with wheels can be bundled{}",
            if output.is_empty() {
                String::new()
            } else {
                format!(":\n{}", output.trim_end())
            }
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

/// What a build the server runs for an uploaded pack may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BuildLimits {
    /// CPU time of each tool the build runs (componentize-py, pip).
    pub(crate) cpu_seconds: u64,
    /// Memory each may allocate (its data segment: heap and writable
    /// mappings; address space merely reserved is not counted).
    pub(crate) memory_bytes: u64,
    /// Wall-clock time of each; it is killed past it.
    pub(crate) wall: Duration,
}

/// Run `command`: with its output passed on to stderr when `limits` is
/// `None`; else under the limits, with its output (the last 16 KiB)
/// returned.
fn run_tool(
    command: &mut std::process::Command,
    limits: Option<&BuildLimits>,
    name: &str,
) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let Some(limits) = limits else {
        let status = command
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("failed to start {name}"))?;
        return Ok((status, String::new()));
    };
    let mut log = tempfile::tempfile()?;
    let mut child = command
        // The tenant reads this output: no backtrace of the tool's own.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .spawn()
        .with_context(|| format!("failed to start {name}"))?;
    // Set on the child as soon as it exists; what it starts inherits them.
    let pid = rustix::process::Pid::from_child(&child);
    let limit = |resource, current, maximum| {
        rustix::process::prlimit(
            Some(pid),
            resource,
            rustix::process::Rlimit {
                current: Some(current),
                maximum: Some(maximum),
            },
        )
    };
    // Past the soft CPU limit the kernel sends SIGXCPU (reported below);
    // the hard one, a little later, is SIGKILL for a tool that ignores it.
    let cpu = limits.cpu_seconds;
    let memory = limits.memory_bytes;
    if let Err(e) = limit(rustix::process::Resource::Cpu, cpu, cpu + 5)
        .and_then(|_| limit(rustix::process::Resource::Data, memory, memory))
    {
        let _ = child.kill();
        let _ = child.wait();
        bail!("cannot limit {name}: {e}");
    }
    let deadline = std::time::Instant::now() + limits.wall;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{name} took longer than {} s, the server's limit for a build",
                limits.wall.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::io::{Read as _, Seek as _};
    log.rewind()?;
    let mut output = Vec::new();
    log.read_to_end(&mut output)?;
    let tail = output.len().saturating_sub(16 << 10);
    let mut text = String::from_utf8_lossy(&output[tail..]).into_owned();
    let cpu_exceeded = rustix::process::Signal::XCPU.as_raw();
    if std::os::unix::process::ExitStatusExt::signal(&status) == Some(cpu_exceeded) {
        text.push_str(&format!(
            "\n{name} used more than {} s of CPU, the server's limit for a build",
            limits.cpu_seconds
        ));
    }
    Ok((status, text))
}

/// `text` with each of `dirs` (and its trailing slash) removed, so that
/// paths read as the pack's own.
fn relative_paths(text: &str, dirs: &[&Path]) -> String {
    let mut text = text.to_owned();
    for dir in dirs {
        let dir = dir.display().to_string();
        text = text.replace(&format!("{dir}/"), "").replace(&dir, ".");
    }
    text.trim_end().to_owned()
}

/// The server's builder of uploaded packs' Python code.
#[derive(Debug)]
pub(crate) struct ServerBuilder {
    pub(crate) limits: BuildLimits,
}

impl squall_reactor::PackBuilder for ServerBuilder {
    fn needs_build(&self, pack: &squall_reactor::LoadedPack) -> bool {
        match python_code(pack) {
            Ok(worlds) => worlds
                .iter()
                .any(|w| !pack.dir.join(w.dir).join(w.component).is_file()),
            // Refused by the build, which says why.
            Err(_) => has_python(pack),
        }
    }

    fn build(&self, pack: &squall_reactor::LoadedPack) -> Result<(), String> {
        build_worlds_with(pack, &ALL_WORLDS, Some(&self.limits))
            .map(|_| ())
            .map_err(|e| relative_paths(&format!("{e:#}"), &[&pack.dir, &cache_dir()]))
    }
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
    fn the_apps_map_names_to_modules() {
        let actions = WorldBuild {
            world: "action",
            dir: "actions",
            component: PYTHON_COMPONENT,
            modules: vec![("echo_action".into(), "my_echo_action".into())],
        };
        let (name, app) = actions.app();
        assert_eq!(name, "squall_actions_app");
        assert!(
            app.contains("import my_echo_action as actions_0\n"),
            "{app}"
        );
        assert!(app.contains("\"echo_action\": actions_0,"), "{app}");
        assert!(
            app.contains("class WitWorld(squall_st2.actions.ActionWorld):"),
            "{app}"
        );
        let sensors = WorldBuild {
            world: "sensor",
            dir: "sensors",
            component: PYTHON_SENSORS_COMPONENT,
            modules: vec![("DirectorySensor".into(), "directory_sensor".into())],
        };
        let (name, app) = sensors.app();
        assert_eq!(name, "squall_sensors_app");
        assert!(
            app.contains("import directory_sensor as sensors_0\n"),
            "{app}"
        );
        assert!(app.contains("\"DirectorySensor\": sensors_0,"), "{app}");
        assert!(
            app.contains("class Sensor(squall_st2.sensors.SensorWorld):"),
            "{app}"
        );
    }
}
