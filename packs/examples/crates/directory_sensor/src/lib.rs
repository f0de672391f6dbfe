//! `examples.DirectorySensor`, the polling sensor of StackStorm's pack
//! tutorial: every `poll_interval` it lists the files under the configured
//! `directories` with their modification times, compares with the previous
//! listing, and dispatches `examples.changed_file` with `{path, time,
//! status}` for each file created, modified or deleted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use serde_json::json;
use squall_sdk::sensor::{self, Sensor};
use squall_sdk::{Result, log};

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    directories: Vec<String>,
}

/// Modification time as the tutorial prints it: seconds, two decimals.
type Listing = BTreeMap<String, String>;

struct DirectorySensor {
    directories: Vec<String>,
    cached: Listing,
}

/// How deep below a configured directory files are listed.
const MAX_DEPTH: usize = 16;

fn list(dir: &Path, depth: usize, out: &mut Listing) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        log::warn!("cannot read directory {}", dir.display());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                list(&path, depth + 1, out);
            }
        } else {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .unwrap_or_default();
            out.insert(path.display().to_string(), mtime);
        }
    }
}

impl DirectorySensor {
    fn listing(&self) -> Listing {
        let mut out = Listing::new();
        for dir in &self.directories {
            list(Path::new(dir), 0, &mut out);
        }
        out
    }

    fn dispatch(path: &str, time: &str, status: &str) -> Result<()> {
        sensor::dispatch(
            "changed_file",
            &json!({ "path": path, "time": time, "status": status }),
        )
    }
}

#[squall_sdk::sensor]
impl Sensor for DirectorySensor {
    fn setup() -> Result<Self> {
        let config: Config = squall_sdk::config_as()?;
        let mut sensor = DirectorySensor {
            directories: config.directories,
            cached: Listing::new(),
        };
        sensor.cached = sensor.listing();
        log::info!(
            "watching {} director{} ({} files)",
            sensor.directories.len(),
            if sensor.directories.len() == 1 {
                "y"
            } else {
                "ies"
            },
            sensor.cached.len()
        );
        Ok(sensor)
    }

    fn poll(&mut self) -> Result<()> {
        let current = self.listing();
        for (path, time) in &self.cached {
            if !current.contains_key(path) {
                Self::dispatch(path, time, "deleted")?;
            }
        }
        for (path, time) in &current {
            match self.cached.get(path) {
                None => Self::dispatch(path, time, "created")?,
                Some(before) if before != time => Self::dispatch(path, time, "modified")?,
                Some(_) => {}
            }
        }
        self.cached = current;
        Ok(())
    }
}
