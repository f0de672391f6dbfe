//! `squall pack new NAME [--python | --rust]`: a pack that builds, runs and
//! passes its own tests at once: an action, a sensor, a rule, a config
//! schema, tests, and a README for the pack.
//!
//! Both languages make the same pack: `NAME.greet` greets someone with the
//! config's greeting; `NAME.Heartbeat` counts in its datastore and
//! dispatches `NAME.heartbeat` with the count every minute; the rule
//! `on_heartbeat` greets each beat. The files are templates with `@NAME@`
//! standing for the pack's name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The pack's name (its ref): lowercase letters, digits and `_`.
    name: String,
    /// Write the action and the sensor in Python, as for StackStorm (the
    /// default).
    #[arg(long, conflicts_with = "rust")]
    python: bool,
    /// Write them in Rust: two crates, one per world (an action component
    /// and a sensor component).
    #[arg(long)]
    rust: bool,
    /// Where to write the pack. Default: ./NAME
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Rust only: depend on the squall-sdk in this directory (a checkout's
    /// `sdk-guest`) instead of the copy written into the pack's `vendor/`.
    #[arg(long, value_name = "DIR", requires = "rust")]
    sdk_path: Option<PathBuf>,
}

/// The Rust SDK as this squall was built with it, written into a Rust
/// pack's `vendor/` so that the pack builds without Squall's checkout:
/// `vendor/squall-sdk` (with its macro crate) and the WIT contract in
/// `vendor/wit`, where the SDK's bindings look for it (`../wit`).
const VENDOR: &[(&str, &str)] = &[
    (
        "vendor/wit/squall.wit",
        include_str!("../../../wit/squall.wit"),
    ),
    (
        "vendor/squall-sdk/Cargo.toml",
        concat!(
            "# The Rust SDK of the Squall that made this pack (squall pack new).\n",
            "[package]\nname = \"squall-sdk\"\nversion = \"",
            env!("CARGO_PKG_VERSION"),
            "\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\npublish = false\n\n",
            "[dependencies]\nsquall-sdk-macro = { path = \"macro\" }\n",
            "serde = { version = \"1\", features = [\"derive\"] }\n",
            "serde_json = \"1\"\n",
            "wasip2 = \"1\"\n",
            "wit-bindgen = { version = \"0.57\", default-features = false, features = [\"macros\", \"realloc\", \"std\"] }\n",
        ),
    ),
    (
        "vendor/squall-sdk/src/lib.rs",
        include_str!("../../../sdk-guest/src/lib.rs"),
    ),
    (
        "vendor/squall-sdk/src/http.rs",
        include_str!("../../../sdk-guest/src/http.rs"),
    ),
    (
        "vendor/squall-sdk/src/kv.rs",
        include_str!("../../../sdk-guest/src/kv.rs"),
    ),
    (
        "vendor/squall-sdk/src/log.rs",
        include_str!("../../../sdk-guest/src/log.rs"),
    ),
    (
        "vendor/squall-sdk/src/sensor.rs",
        include_str!("../../../sdk-guest/src/sensor.rs"),
    ),
    (
        "vendor/squall-sdk/macro/Cargo.toml",
        concat!(
            "[package]\nname = \"squall-sdk-macro\"\nversion = \"",
            env!("CARGO_PKG_VERSION"),
            "\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\npublish = false\n\n",
            "[lib]\nproc-macro = true\n\n",
            "[dependencies]\nproc-macro2 = \"1\"\nquote = \"1\"\n",
            "syn = { version = \"2\", features = [\"full\"] }\n",
        ),
    ),
    (
        "vendor/squall-sdk/macro/src/lib.rs",
        include_str!("../../../sdk-guest/macro/src/lib.rs"),
    ),
];

const COMMON: &[(&str, &str)] = &[
    (
        "config.schema.yaml",
        "---
greeting:
  type: string
  default: Hello
  description: How @NAME@.greet greets.
",
    ),
    (
        "actions/greet.yaml",
        "---
name: greet
pack: @NAME@
runner_type: @RUNNER@
entry_point: @ACTION_ENTRY@
description: Greet someone with the pack's greeting.
enabled: true
parameters:
  name:
    type: string
    required: true
    description: Who to greet.
",
    ),
    (
        "sensors/heartbeat.yaml",
        "---
class_name: Heartbeat
entry_point: @SENSOR_ENTRY@
description: Counts in its datastore and dispatches @NAME@.heartbeat with the count.
poll_interval: 60
trigger_types:
  - name: heartbeat
    description: One beat of the Heartbeat sensor.
    payload_schema:
      type: object
      required: [count]
      properties:
        count: {type: integer}
",
    ),
    (
        "rules/on_heartbeat.yaml",
        "---
name: on_heartbeat
pack: @NAME@
description: Greet every heartbeat.
enabled: true
trigger:
  type: @NAME@.heartbeat
action:
  ref: @NAME@.greet
  parameters:
    name: \"beat {{ trigger.count }}\"
",
    ),
    (
        "tests/@NAME@.yaml",
        "# `squall pack test .` runs these offline (after `squall pack build .`).
# `{{ dir }}` is each case's own temporary directory.
actions:
  - name: greets with the default greeting
    action: greet
    parameters: {name: Ana}
    expect:
      result: @GREETING_RESULT@
  - name: greets with the configured greeting
    action: greet
    parameters: {name: Ana}
    config: {greeting: Hi}
    expect:
      result: @HI_RESULT@

rules:
  - name: each beat is greeted
    rule: on_heartbeat
    payload: {count: 3}
    expect:
      match: true
      parameters: {name: beat 3}

sensors:
  - name: the count goes on from the datastore
    sensor: Heartbeat
    kv: {\"@NAME@.Heartbeat:count\": \"41\"}
    polls: 2
    expect:
      dispatched:
        - trigger: @NAME@.heartbeat
          payload: {count: 42}
        - trigger: @NAME@.heartbeat
          payload: {count: 43}
",
    ),
];

const PYTHON: &[(&str, &str)] = &[
    (
        "pack.yaml",
        "---
ref: @NAME@
name: @NAME@
description: The @NAME@ pack
version: 0.1.0
author: you
email: you@example.com
",
    ),
    (
        "actions/greet.py",
        "from st2common.runners.base_action import Action


class Greet(Action):
    def run(self, name):
        self.logger.info(\"greeting %s\", name)
        return \"%s, %s!\" % (self.config[\"greeting\"], name)
",
    ),
    (
        "sensors/heartbeat.py",
        "from st2reactor.sensor.base import PollingSensor


class Heartbeat(PollingSensor):
    def setup(self):
        self._logger = self._sensor_service.get_logger(__name__)

    def poll(self):
        # Kept in the datastore: the count goes on after a restart.
        count = int(self._sensor_service.get_value(\"count\") or 0) + 1
        self._sensor_service.set_value(\"count\", count)
        self._logger.info(\"beat %d\", count)
        self._sensor_service.dispatch(trigger=\"@NAME@.heartbeat\", payload={\"count\": count})
",
    ),
    (
        "requirements.txt",
        "# Pure-Python packages the pack's Python code imports, bundled by
# `squall pack build` (packages with native code cannot be).
",
    ),
];

const RUST: &[(&str, &str)] = &[
    (
        "pack.yaml",
        "---
ref: @NAME@
name: @NAME@
description: The @NAME@ pack
version: 0.1.0
author: you
email: you@example.com
build:
  # A crate implements one world: the action and the sensor are two crates
  # (crates/actions, crates/sensor), and each crate's [lib] name gives its
  # .wasm file's name, which the metadata's entry_point names.
  command: cargo build --target wasm32-wasip2 --release
  output: target/wasm32-wasip2/release
",
    ),
    (
        "Cargo.toml",
        "[workspace]
members = [\"crates/actions\", \"crates/sensor\"]
resolver = \"3\"

[workspace.dependencies]
squall-sdk = @SDK@
serde = { version = \"1\", features = [\"derive\"] }
serde_json = \"1\"

[profile.release]
opt-level = \"s\"
strip = true
",
    ),
    (
        "crates/actions/Cargo.toml",
        "[package]
name = \"@NAME@-actions\"
version = \"0.1.0\"
edition = \"2024\"
publish = false

# One crate, one world: this is the action component (@NAME@_actions.wasm).
[lib]
name = \"@NAME@_actions\"
crate-type = [\"cdylib\"]

[dependencies]
squall-sdk.workspace = true
serde.workspace = true
serde_json.workspace = true
",
    ),
    (
        "crates/actions/src/lib.rs",
        "//! @NAME@'s actions. One component may implement several actions: add
//! them to `export_actions!` and give each a metadata file whose
//! entry_point is @NAME@_actions.wasm.

use serde::Deserialize;
use serde_json::{Value, json};
use squall_sdk::{Context, Result, log};

#[derive(Deserialize)]
struct Params {
    name: String,
}

#[derive(Deserialize)]
struct Config {
    greeting: String,
}

fn greet(_: &Context, p: Params) -> Result<Value> {
    let config: Config = squall_sdk::config_as()?;
    log::info!(\"greeting {}\", p.name);
    Ok(json!(format!(\"{}, {}!\", config.greeting, p.name)))
}

squall_sdk::export_actions! {
    \"greet\" => greet,
}
",
    ),
    (
        "crates/sensor/Cargo.toml",
        "[package]
name = \"@NAME@-sensor\"
version = \"0.1.0\"
edition = \"2024\"
publish = false

# One crate, one world: this is the sensor component (@NAME@_sensor.wasm).
[lib]
name = \"@NAME@_sensor\"
crate-type = [\"cdylib\"]

[dependencies]
squall-sdk.workspace = true
serde_json.workspace = true
",
    ),
    (
        "crates/sensor/src/lib.rs",
        "//! @NAME@.Heartbeat: counts in its datastore (the count goes on after a
//! restart) and dispatches @NAME@.heartbeat with it on every poll.

use serde_json::json;
use squall_sdk::sensor::{self, Sensor};
use squall_sdk::{Result, kv, log};

struct Heartbeat;

#[squall_sdk::sensor]
impl Sensor for Heartbeat {
    fn setup() -> Result<Self> {
        Ok(Heartbeat)
    }

    fn poll(&mut self) -> Result<()> {
        let count = kv::get(\"count\")?
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        kv::set(\"count\", &count.to_string())?;
        log::info!(\"beat {count}\");
        sensor::dispatch(\"heartbeat\", &json!({ \"count\": count }))
    }
}
",
    ),
    (".gitignore", "/target\n"),
];

const README: &str = "# @NAME@

A Squall pack (@LANGUAGE@), made by `squall pack new`.

- `@NAME@.greet` (action, `actions/greet.yaml`, @ACTION_SOURCE@): greets
  someone with the config's `greeting` (`config.schema.yaml`).
- `@NAME@.Heartbeat` (sensor, `sensors/heartbeat.yaml`, @SENSOR_SOURCE@):
  every minute, counts in its datastore and dispatches `@NAME@.heartbeat`.
- `@NAME@.on_heartbeat` (rule): greets every beat.
- `tests/@NAME@.yaml`: the pack's tests.

```console
$ squall pack build .                  # @BUILD@
$ squall pack test .                   # the tests, offline
$ squall run @NAME@.greet name=you --packs .
$ squall dev .                         # a local server; every save rebuilds and reloads
$ squall --url URL --api-key KEY pack install .   # ship it to a server
```

@NOTES@
See Squall's docs/packs.md for the whole of writing packs.
";

fn write(at: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create '{}'", parent.display()))?;
    }
    std::fs::write(at, text).with_context(|| format!("cannot write '{}'", at.display()))
}

fn validate(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!(
            "'{name}' is not a pack name: lowercase letters, digits and _, starting with a letter"
        );
    }
    squall_core::PackRef::new(name)?;
    Ok(())
}

pub(crate) fn new_pack(args: NewArgs) -> anyhow::Result<ExitCode> {
    validate(&args.name)?;
    let name = args.name.as_str();
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!(
            "'{}' already exists: pick another name or --dir",
            dir.display()
        );
    }
    let rust = args.rust;
    let sdk = match &args.sdk_path {
        Some(path) => {
            let path = std::path::absolute(path)?;
            if !path.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk-path '{}' has no Cargo.toml (give a checkout's sdk-guest directory)",
                    path.display()
                );
            }
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => "{ path = \"vendor/squall-sdk\" }".to_owned(),
    };
    let (language, runner, action_entry, sensor_entry) = if rust {
        (
            "Rust",
            "wasm",
            format!("{name}_actions.wasm"),
            format!("{name}_sensor.wasm"),
        )
    } else {
        (
            "Python",
            "python-script",
            "greet.py".to_owned(),
            "heartbeat.py".to_owned(),
        )
    };
    // A Rust action's result is its return value; a Python one's is
    // StackStorm's python runner's shape, with the value under `result`.
    let (greeting, hi) = if rust {
        ("\"Hello, Ana!\"", "\"Hi, Ana!\"")
    } else {
        ("{result: \"Hello, Ana!\"}", "{result: \"Hi, Ana!\"}")
    };
    let notes = if rust {
        "A crate implements one world, so the action and the sensor are two crates\n(`crates/actions`, `crates/sensor`); each crate's `[lib]` name gives its `.wasm`\nfile's name, which the metadata's `entry_point` names. `squall pack build`\nrefuses a component of the wrong world for its entry point. The crates depend\non `squall-sdk` in `vendor/`: the SDK of the Squall that made the pack, with its\nWIT contract (`vendor/wit`), so the pack builds without Squall's checkout.\n`squall pack new --rust --sdk-path CHECKOUT/sdk-guest` depends on a checkout\ninstead.\n"
    } else {
        "`squall pack build` bundles the Python actions into `actions/python_actions.wasm`\nand the sensors into `sensors/python_sensors.wasm` with componentize-py\n(installed once), with the pure-Python packages `requirements.txt` lists.\n"
    };
    let fill = |text: &str| {
        text.replace("@GREETING_RESULT@", greeting)
            .replace("@HI_RESULT@", hi)
            .replace("@RUNNER@", runner)
            .replace("@ACTION_ENTRY@", &action_entry)
            .replace("@SENSOR_ENTRY@", &sensor_entry)
            .replace("@SDK@", &sdk)
            .replace("@LANGUAGE@", language)
            .replace(
                "@ACTION_SOURCE@",
                if rust {
                    "`crates/actions/src/lib.rs`"
                } else {
                    "`actions/greet.py`"
                },
            )
            .replace(
                "@SENSOR_SOURCE@",
                if rust {
                    "`crates/sensor/src/lib.rs`"
                } else {
                    "`sensors/heartbeat.py`"
                },
            )
            .replace(
                "@BUILD@",
                if rust {
                    "cargo build --target wasm32-wasip2 (rustup target add wasm32-wasip2)"
                } else {
                    "componentize-py, installed once"
                },
            )
            .replace("@NOTES@", notes)
            .replace("@NAME@", name)
    };
    let vendored = rust && args.sdk_path.is_none();
    let files = COMMON
        .iter()
        .chain(if rust { RUST } else { PYTHON })
        .chain(std::iter::once(&("README.md", README)));
    for (path, text) in VENDOR.iter().filter(|_| vendored) {
        // Written as they are: no placeholders in the SDK.
        write(&dir.join(path), text)?;
    }
    for (path, text) in files {
        write(&dir.join(fill(path)), &fill(text))?;
    }
    println!("made the {language} pack '{name}' in {}", dir.display());
    println!(
        "next: squall pack build {0} && squall pack test {0}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_pack_refs() {
        assert!(validate("mypack").is_ok());
        assert!(validate("my_pack2").is_ok());
        for bad in ["", "My", "2x", "my-pack", "a.b", "../x"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    /// A `@NAME@`-style placeholder left in `text`, if any.
    fn leftover(text: &str) -> Option<&str> {
        text.split('@')
            .skip(1)
            .find(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
    }

    #[test]
    fn every_placeholder_is_filled() {
        assert_eq!(leftover("a @NAME@ b"), Some("NAME"));
        let dir = tempfile::tempdir().expect("tempdir");
        for rust in [false, true] {
            let at = dir.path().join(if rust { "r" } else { "p" });
            new_pack(NewArgs {
                name: "demo".into(),
                python: !rust,
                rust,
                dir: Some(at.clone()),
                sdk_path: None,
            })
            .expect("made");
            let mut stack = vec![at];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).expect("read").flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        let text = std::fs::read_to_string(&p).expect("text");
                        assert_eq!(leftover(&text), None, "{}", p.display());
                    }
                }
            }
        }
    }

    /// The vendored SDK asks for the versions the workspace builds it with.
    #[test]
    fn the_vendored_sdk_has_the_workspace_versions() {
        let workspace = include_str!("../../../Cargo.toml");
        for (path, text) in VENDOR.iter().filter(|(p, _)| p.ends_with("Cargo.toml")) {
            for line in text
                .lines()
                .filter(|l| l.contains("version = ") || l.ends_with("\"1\""))
            {
                if line.starts_with("version") || line.starts_with("squall-sdk") {
                    continue;
                }
                assert!(
                    workspace.contains(line),
                    "{path}: {line} is not the workspace's"
                );
            }
        }
    }
}
