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
use std::time::{Duration, Instant};

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

/// The worlds whose Python component the pack has but is older than one
/// of its sources (a `.py` file under the world's directory, or the pack's
/// `requirements.txt`): built before a change that was not built since.
pub(crate) fn stale_worlds(pack: &squall_reactor::LoadedPack) -> Vec<&'static str> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Ok(worlds) = python_code(pack) else {
        return Vec::new();
    };
    let requirements = modified(&pack.dir.join("requirements.txt"));
    let mut stale = Vec::new();
    for world in worlds {
        let Some(built) = modified(&pack.dir.join(world.dir).join(world.component)) else {
            continue;
        };
        let mut newest = requirements;
        let mut dirs = vec![pack.dir.join(world.dir)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "py") {
                    newest = newest.max(modified(&path));
                }
            }
        }
        if newest.is_some_and(|newest| newest > built) {
            stale.push(world.world);
        }
    }
    stale
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

/// [`build_worlds`], with the build's tools run `supervised` when given
/// (a server building an upload) and their output kept for the error
/// instead of passed on. What fails because of the machine rather than
/// the pack is a [`ServerFault`]; a build stopped is [`Cancelled`].
fn build_worlds_with(
    pack: &squall_reactor::LoadedPack,
    only: &[&str],
    supervised: Option<&Supervised<'_>>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut worlds = python_code(pack)?;
    worlds.retain(|w| only.contains(&w.world));
    if worlds.is_empty() {
        return Ok(Vec::new());
    }
    let requirements = pack.dir.join("requirements.txt");
    let bundles = lists_requirements(&requirements);
    // pip obeys options written in the file (indexes, source builds), so a
    // server never runs it on a tenant's list.
    if bundles && supervised.is_some() {
        bail!(
            "requirements.txt: a server does not install a pack's requirements; build the pack with `squall pack build` and upload it with its components"
        );
    }
    let (stage, tool) = stage_build().map_err(ServerFault::from)?;
    let deps = stage.path().join("deps");
    if bundles {
        bundle(&tool, &requirements, &deps)?;
    }
    let wit = stage.path().join("wit");
    let mut built = Vec::new();
    for world in &worlds {
        let (app, text) = world.app();
        std::fs::write(stage.path().join(format!("{app}.py")), text)
            .map_err(|e| ServerFault::from(anyhow::Error::from(e)))?;
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
        let (status, output) = run_tool(&mut command, supervised, "componentize-py")?;
        if !status.success() {
            let what = format!(
                "build of the Python {} of pack '{}' failed ({status})",
                world.dir, pack.manifest.pack_ref
            );
            match supervised {
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

/// A directory with Squall's Python modules, the WIT and an empty `deps/`
/// staged for componentize-py, and the tool.
fn stage_build() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
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
    std::fs::create_dir_all(stage.path().join("deps"))?;
    let tool = componentize_py()?;
    Ok((stage, tool))
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
    let (status, _) = run_tool(&mut command, None, "pip")?;
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

/// What a build the server runs for an uploaded pack may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BuildLimits {
    /// CPU time of each process of the build (componentize-py and
    /// anything it starts; each has its own).
    pub(crate) cpu_seconds: u64,
    /// Memory each process may allocate (its data segment: heap and
    /// writable mappings; address space merely reserved is not counted),
    /// and the largest file it may write.
    pub(crate) memory_bytes: u64,
    /// Wall-clock time of the whole build; its processes are killed past
    /// it.
    pub(crate) wall: Duration,
}

impl BuildLimits {
    /// Put these limits on process `pid`; what it starts inherits them.
    fn apply(&self, pid: rustix::process::Pid) -> rustix::io::Result<()> {
        use rustix::process::Resource;
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
        // Past the soft CPU limit the kernel sends SIGXCPU (reported by
        // `run_tool`); the hard one, a little later, is SIGKILL for a
        // process that ignores it.
        let cpu = self.cpu_seconds;
        limit(Resource::Cpu, cpu, cpu.saturating_add(5))?;
        limit(Resource::Data, self.memory_bytes, self.memory_bytes)?;
        limit(Resource::Fsize, self.memory_bytes, self.memory_bytes)?;
        // A crash leaves no core dump of the tenant's build on the server.
        limit(Resource::Core, 0, 0)?;
        Ok(())
    }
}

/// How a server runs a build's tools: under `limits`, each in a process
/// group of its own, until `deadline` (one for the whole build) or until
/// `cancelled` turns true.
struct Supervised<'a> {
    limits: &'a BuildLimits,
    deadline: Option<Instant>,
    cancelled: &'a dyn Fn() -> bool,
}

/// A build failure that is the server's (its disk, its tools), not the
/// pack's: the server logs it and tells the tenant no more than that.
#[derive(Debug)]
struct ServerFault(String);

impl std::fmt::Display for ServerFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerFault {}

impl From<anyhow::Error> for ServerFault {
    fn from(e: anyhow::Error) -> Self {
        Self(format!("{e:#}"))
    }
}

/// The server began shutting down during a build.
#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the build was stopped: the server is shutting down")
    }
}

impl std::error::Error for Cancelled {}

/// The most of a tool's output kept for an error: its end.
const OUTPUT_TAIL: u64 = 16 << 10;

/// Run `command`: with its output passed on to stderr when `supervised` is
/// `None`; else as it says, with the end of its output returned.
fn run_tool(
    command: &mut std::process::Command,
    supervised: Option<&Supervised<'_>>,
    name: &str,
) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let Some(supervised) = supervised else {
        let status = command
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("failed to start {name}"))?;
        return Ok((status, String::new()));
    };
    let fault = |e: anyhow::Error| ServerFault::from(e);
    let mut log = tempfile::tempfile()
        .context("cannot make a file for the build's output")
        .map_err(fault)?;
    let out = log.try_clone().map_err(|e| fault(e.into()))?;
    let err = log.try_clone().map_err(|e| fault(e.into()))?;
    let mut gated = gated(command);
    let mut child = std::os::unix::process::CommandExt::process_group(&mut gated, 0)
        // The tenant reads this output: no backtrace of the tool's own.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("failed to start {name}"))
        .map_err(fault)?;
    // The child leads its own group: stopping the group stops whatever
    // it started too.
    let group = rustix::process::Pid::from_child(&child);
    let stop = |child: &mut std::process::Child| {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = child.kill();
        let _ = child.wait();
    };
    // The limits are in place before the tool starts: the gate execs it
    // only once it reads this line.
    let opened = supervised
        .limits
        .apply(group)
        .map_err(|e| anyhow::anyhow!("cannot limit {name}: {e}"));
    let opened = opened.and_then(|()| {
        use std::io::Write as _;
        let mut gate = child.stdin.take().context("no pipe to the build's gate")?;
        gate.write_all(b"go\n")
            .with_context(|| format!("cannot start {name}"))
    });
    if let Err(e) = opened {
        stop(&mut child);
        return Err(fault(e).into());
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                stop(&mut child);
                return Err(fault(anyhow::anyhow!("cannot wait for {name}: {e}")).into());
            }
        }
        if (supervised.cancelled)() {
            stop(&mut child);
            return Err(Cancelled.into());
        }
        if supervised.deadline.is_some_and(|d| Instant::now() >= d) {
            stop(&mut child);
            bail!(
                "the build took longer than {} s, the server's limit for a build",
                supervised.limits.wall.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever it left running goes with it.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let mut text = read_tail(&mut log, OUTPUT_TAIL).map_err(|e| fault(e.into()))?;
    let cpu_exceeded = rustix::process::Signal::XCPU.as_raw();
    if std::os::unix::process::ExitStatusExt::signal(&status) == Some(cpu_exceeded) {
        text.push_str(&format!(
            "\n{name} used more than {} s of CPU, the server's limit for a build",
            supervised.limits.cpu_seconds
        ));
    }
    Ok((status, text))
}

/// `command` behind a gate: `sh` waits for a line on its standard input,
/// then becomes the command (its program, arguments, environment changes
/// and directory), with standard input then at end of file.
fn gated(command: &std::process::Command) -> std::process::Command {
    let mut gated = std::process::Command::new("/bin/sh");
    gated
        .args(["-c", "read -r _ && exec \"$@\" </dev/null", "squall-build"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => gated.env(key, value),
            None => gated.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        gated.current_dir(dir);
    }
    gated
}

/// The last `most` bytes of `file`, as text.
fn read_tail(file: &mut std::fs::File, most: u64) -> std::io::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(len.saturating_sub(most)))?;
    let mut bytes = Vec::new();
    file.take(most).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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

    fn build(
        &self,
        pack: &squall_reactor::LoadedPack,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), squall_reactor::BuildError> {
        use squall_reactor::BuildError;
        let supervised = Supervised {
            limits: &self.limits,
            deadline: Instant::now().checked_add(self.limits.wall),
            cancelled,
        };
        let Err(e) = build_worlds_with(pack, &ALL_WORLDS, Some(&supervised)) else {
            return Ok(());
        };
        if e.is::<Cancelled>() {
            return Err(BuildError::Cancelled);
        }
        match e.downcast::<ServerFault>() {
            Ok(fault) => Err(BuildError::Server(fault.0)),
            Err(e) => Err(BuildError::Refused(relative_paths(
                &format!("{e:#}"),
                &[&pack.dir, &cache_dir(), &std::env::temp_dir()],
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervised_run(
        script: &str,
        wall: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let limits = BuildLimits {
            cpu_seconds: 7,
            memory_bytes: 1 << 30,
            wall,
        };
        let supervised = Supervised {
            limits: &limits,
            deadline: Instant::now().checked_add(wall),
            cancelled,
        };
        let mut command = std::process::Command::new("sh");
        command.args(["-c", script]).env("SQUALL_GATE_TEST", "kept");
        run_tool(&mut command, Some(&supervised), "the tool")
    }

    #[test]
    fn supervised_tools_start_under_their_limits() {
        let (status, output) = supervised_run(
            "ulimit -c; ulimit -t; ulimit -f; ulimit -d; echo $SQUALL_GATE_TEST",
            Duration::from_secs(600),
            &|| false,
        )
        .expect("runs");
        assert!(status.success(), "{output}");
        // Core dumps off; CPU seconds; file size in 512-byte blocks; data
        // in KiB.
        // The command's environment passes the gate.
        assert_eq!(output, "0\n7\n2097152\n1048576\nkept\n");
    }

    #[test]
    fn supervised_tools_stop_with_what_they_started() {
        // The tool leaves a process behind that would outlive it.
        let pid = tempfile::NamedTempFile::new().expect("file");
        let script = format!("sleep 600 & echo $! > {}", pid.path().display());
        let (status, _) =
            supervised_run(&script, Duration::from_secs(600), &|| false).expect("runs");
        assert!(status.success());
        let pid = std::fs::read_to_string(pid.path()).expect("pid");
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        // Killed with its group; gone once its new parent reaps it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(proc.join("stat")).is_ok_and(|stat| !stat.contains(") Z ")) {
            assert!(Instant::now() < deadline, "the leftover process still runs");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn supervised_tools_stop_at_the_deadline_or_when_cancelled() {
        let e = supervised_run("sleep 600", Duration::from_millis(100), &|| false)
            .expect_err("past the deadline");
        assert_eq!(
            e.to_string(),
            "the build took longer than 0 s, the server's limit for a build"
        );
        let e =
            supervised_run("sleep 600", Duration::from_secs(600), &|| true).expect_err("cancelled");
        assert!(e.is::<Cancelled>(), "{e:#}");
    }

    #[test]
    fn tails_are_the_end_of_the_output() {
        use std::io::Write as _;
        let mut file = tempfile::tempfile().expect("file");
        file.write_all(b"0123456789").expect("write");
        assert_eq!(read_tail(&mut file, 4).expect("read"), "6789");
        assert_eq!(read_tail(&mut file, 40).expect("read"), "0123456789");
    }

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
