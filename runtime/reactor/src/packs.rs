//! Reading pack directories: `pack.yaml`, `actions/*.yaml`,
//! `sensors/*.yaml`, `policies/*.yaml`, `config.schema.yaml` and
//! `config.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use squall_core::manifest::{
    ActionMeta, ConfigSchema, DirectoryGrant, ManifestError, PackManifest, RunnerType, SensorMeta,
};
use squall_core::trigger::TriggerType;
use squall_core::{ActionRef, PackRef, TenantId};

/// Why packs could not be loaded or an action not found.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "pack '{pack}': its config set through the API cannot be read ({cause}); set it again (PUT /api/v1/configs/{pack}) or drop it (DELETE)"
    )]
    UnreadableConfig { pack: PackRef, cause: String },
    #[error("'{0}' is neither a pack (no pack.yaml) nor a directory of packs")]
    NotAPack(PathBuf),
    #[error("pack '{pack}' is defined twice: in '{first}' and in '{second}'")]
    Duplicate {
        pack: PackRef,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("action '{name}' is defined twice in pack '{pack}': '{first}' and '{second}'")]
    DuplicateAction {
        pack: PackRef,
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}: {problems}", file.display())]
    Workflow {
        file: PathBuf,
        problems: squall_workflow::spec::Invalid,
    },
    #[error("unknown action '{action}': {hint}")]
    UnknownAction { action: ActionRef, hint: String },
    #[error(
        "sensor '{sensor}': component '{entry_point}' not found in '{}' or '{}' (build the pack with `squall pack build {}`)",
        searched[0].display(), searched[1].display(), pack_dir.display()
    )]
    MissingSensorComponent {
        sensor: String,
        entry_point: PathBuf,
        searched: Box<[PathBuf; 2]>,
        pack_dir: PathBuf,
    },
    #[error("{file}: {cause}")]
    ActionComponent {
        file: PathBuf,
        cause: squall_sandbox::Error,
    },
    #[error("{file}: {cause}")]
    SensorComponent {
        file: PathBuf,
        cause: squall_sandbox::Error,
    },
    #[error(
        "pack '{pack}': config '{key}' asks for directory '{}', which is not under any directory the server allows (--allow-dir)",
        path.display()
    )]
    DirectoryNotAllowed {
        pack: PackRef,
        key: String,
        path: PathBuf,
    },
    #[error(
        "action '{action}': component '{entry_point}' not found in '{}' or '{}' (build the pack with `squall pack build {}`)",
        searched[0].display(), searched[1].display(), pack_dir.display()
    )]
    MissingComponent {
        action: ActionRef,
        entry_point: PathBuf,
        searched: Box<[PathBuf; 2]>,
        pack_dir: PathBuf,
    },
}

/// One pack read from disk.
#[derive(Debug)]
pub struct LoadedPack {
    pub manifest: PackManifest,
    pub dir: PathBuf,
    pub actions: BTreeMap<String, ActionMeta>,
    /// The workflow actions' definitions, read and inspected, by action name.
    pub workflows: BTreeMap<String, Arc<squall_workflow::spec::Workflow>>,
    /// The validated config as JSON text, handed to guests.
    pub config: Arc<str>,
    /// Trigger types declared in `sensors/*.yaml`.
    pub trigger_types: Vec<TriggerType>,
    /// Sensors from `sensors/*.yaml`, each with its file.
    pub sensors: Vec<(PathBuf, SensorMeta)>,
    /// Directories the config asks to open to the pack's guests.
    pub directories: Vec<DirectoryGrant>,
    /// Policies from `policies/*.yaml`, each with its file.
    pub policies: Vec<(PathBuf, squall_core::policy::Policy)>,
    /// Set for a pack installed through the API (its version id); `None`
    /// for a pack the server loads from `--packs`, which the API cannot
    /// replace or remove.
    pub installed: Option<String>,
    /// The config set through the API this pack was read with (its values
    /// as JSON), if any: what a node compares with the store's to see
    /// whether another node changed it.
    pub stored_config: Option<Arc<str>>,
    /// Where each action's component was found and when, so that
    /// preparing an execution looks on disk at most once per
    /// [`squall_sandbox::RESTAMP_AFTER`] (a component removed from one
    /// place or shipped in another is found again within that time).
    found: std::sync::Mutex<std::collections::HashMap<PathBuf, (PathBuf, std::time::Instant)>>,
}

impl LoadedPack {
    /// Check this pack's workflows against the actions of `packs` (which
    /// hold this pack): every literal action a task names is registered,
    /// and its input names no parameter the action lacks and misses none
    /// it requires. StackStorm's `content` inspection.
    pub fn check_workflows(&self, packs: &PackSet) -> Result<(), PackError> {
        use squall_workflow::spec::{Problem, TaskInput};
        for (name, spec) in &self.workflows {
            let mut problems = Vec::new();
            for (task_name, task) in &spec.tasks {
                let Some(serde_json::Value::String(action)) = &task.action else {
                    continue;
                };
                if squall_workflow::expr::has_expression(action) {
                    continue;
                }
                let at = format!("tasks.{task_name}.action");
                let action: ActionRef = match action.parse() {
                    Ok(a) => a,
                    Err(e) => {
                        problems.push(Problem {
                            path: at,
                            message: format!("'{action}' is not an action ref: {e}"),
                        });
                        continue;
                    }
                };
                let meta = match packs.action(&action) {
                    Ok((_, meta)) => meta,
                    Err(e) => {
                        problems.push(Problem {
                            path: at,
                            message: format!("action '{action}' is not registered: {e}"),
                        });
                        continue;
                    }
                };
                let TaskInput::Map(given) = &task.input else {
                    continue;
                };
                for (param, _) in given {
                    if meta.parameters.get(param).is_none() {
                        let known: Vec<&str> =
                            meta.parameters.specs().map(|s| s.name.as_str()).collect();
                        problems.push(Problem {
                            path: format!("tasks.{task_name}.input.{param}"),
                            message: format!(
                                "action '{action}' has no parameter '{param}' (it has: {})",
                                known.join(", ")
                            ),
                        });
                    }
                }
                for spec in meta.parameters.specs() {
                    if spec.required
                        && spec.default.is_none()
                        && !given.iter().any(|(n, _)| *n == spec.name)
                    {
                        problems.push(Problem {
                            path: format!("tasks.{task_name}.input"),
                            message: format!(
                                "action '{action}' requires parameter '{}'",
                                spec.name
                            ),
                        });
                    }
                }
            }
            if !problems.is_empty() {
                let meta = &self.actions[name];
                return Err(PackError::Workflow {
                    file: self.dir.join("actions").join(&meta.entry_point),
                    problems: squall_workflow::spec::Invalid(problems),
                });
            }
        }
        Ok(())
    }

    /// The actions that run a WebAssembly component (a Rust one, or the
    /// pack's Python actions' one).
    pub fn component_actions(&self) -> impl Iterator<Item = &ActionMeta> {
        self.actions
            .values()
            .filter(|meta| matches!(meta.runner, RunnerType::Wasm | RunnerType::PythonScript))
    }

    /// Read the pack in `dir`.
    pub fn load(dir: &Path) -> Result<Self, PackError> {
        Self::load_inner(dir, None)
    }

    /// Read the pack in `dir` with `config` (YAML, named `file` in errors)
    /// in place of its `config.yaml`: checked against its schema, with
    /// defaults applied, as a `config.yaml` is. For a pack's tests.
    pub fn load_with_config(dir: &Path, config: &str, file: &Path) -> Result<Self, PackError> {
        Self::load_inner(dir, Some((config, file)))
    }

    /// This pack read again with `values`, a config set through the API
    /// (`PUT /api/v1/configs/{pack}`), in place of its `config.yaml`:
    /// checked against its schema, with defaults applied. Errors name the
    /// config `configs/<pack>`.
    pub fn with_stored_config(
        &self,
        values: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, PackError> {
        let text = serde_json::Value::Object(values.clone()).to_string();
        let name = PathBuf::from(format!("configs/{}", self.manifest.pack_ref));
        let mut pack = Self::load_with_config(&self.dir, &text, &name)?;
        pack.installed = self.installed.clone();
        pack.stored_config = Some(text.into());
        Ok(pack)
    }

    /// The pack's config schema (`config.schema.yaml`) as written, if it
    /// has one.
    pub fn config_schema(&self) -> Result<Option<serde_json::Value>, PackError> {
        let path = self.dir.join("config.schema.yaml");
        if !path.is_file() {
            return Ok(None);
        }
        let text = read(&path)?;
        serde_yaml::from_str(&text)
            .map(Some)
            .map_err(|e| PackError::Io {
                path,
                cause: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    fn load_inner(dir: &Path, config: Option<(&str, &Path)>) -> Result<Self, PackError> {
        let manifest_path = dir.join("pack.yaml");
        let manifest = PackManifest::parse(&read(&manifest_path)?, &manifest_path)?;
        let mut actions: BTreeMap<String, ActionMeta> = BTreeMap::new();
        let mut origins: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut workflows = BTreeMap::new();
        for file in yaml_files(&dir.join("actions"))? {
            let meta = ActionMeta::parse(&read(&file)?, &file, &manifest.pack_ref)?;
            let name = meta.action_ref.name().to_owned();
            if let Some(first) = origins.get(&name) {
                return Err(PackError::DuplicateAction {
                    pack: manifest.pack_ref.clone(),
                    name,
                    first: first.clone(),
                    second: file,
                });
            }
            origins.insert(name.clone(), file);
            if meta.runner.runs_script() {
                let script = dir.join("actions").join(&meta.entry_point);
                if !script.is_file() {
                    return Err(PackError::Io {
                        path: script,
                        cause: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!(
                                "the script of action '{}' is not in the pack",
                                meta.action_ref
                            ),
                        ),
                    });
                }
            }
            if meta.runner == RunnerType::Orquesta {
                let definition = dir.join("actions").join(&meta.entry_point);
                let spec = squall_workflow::spec::Workflow::parse(&read(&definition)?).map_err(
                    |problems| PackError::Workflow {
                        file: definition,
                        problems,
                    },
                )?;
                workflows.insert(name.clone(), Arc::new(spec));
            }
            actions.insert(name, meta);
        }
        let (config, directories) = load_config(dir, config)?;
        let mut trigger_types = Vec::new();
        let mut sensors: Vec<(PathBuf, SensorMeta)> = Vec::new();
        for file in yaml_files(&dir.join("sensors"))? {
            let meta = SensorMeta::parse(&read(&file)?, &file, &manifest.pack_ref)?;
            if let Some((first, _)) = sensors
                .iter()
                .find(|(_, s)| s.class_name == meta.class_name)
            {
                return Err(PackError::Manifest(ManifestError {
                    file: file.clone(),
                    field: Some("class_name".into()),
                    message: format!(
                        "sensor '{}' is already defined in '{}'",
                        meta.class_name,
                        first.display()
                    ),
                }));
            }
            trigger_types.extend(meta.trigger_types.iter().cloned());
            sensors.push((file, meta));
        }
        let mut policies = Vec::new();
        for file in yaml_files(&dir.join("policies"))? {
            let policy =
                squall_core::policy::Policy::parse(&read(&file)?, &file, &manifest.pack_ref)?;
            policies.push((file, policy));
        }
        Ok(Self {
            manifest,
            dir: dir.to_owned(),
            actions,
            workflows,
            policies,
            config: serde_json::Value::Object(config).to_string().into(),
            trigger_types,
            installed: None,
            stored_config: None,
            sensors,
            directories,
            found: Default::default(),
        })
    }

    /// The directories this pack's guests get, if the server allows every
    /// one its config asks for (each under a directory of `allowed`, which
    /// are canonical). Symlinks are resolved first, and the resolved
    /// directory is what is checked and opened, so a link cannot lead a
    /// guest outside the allowed directories.
    pub fn preopens(&self, allowed: &[PathBuf]) -> Result<Vec<squall_sandbox::Preopen>, PackError> {
        self.directories
            .iter()
            .map(|grant| {
                let resolved =
                    std::fs::canonicalize(&grant.path).map_err(|cause| PackError::Io {
                        path: grant.path.clone(),
                        cause,
                    })?;
                if allowed.iter().any(|a| resolved.starts_with(a)) {
                    Ok(squall_sandbox::Preopen {
                        path: resolved,
                        writable: grant.writable,
                    })
                } else {
                    Err(PackError::DirectoryNotAllowed {
                        pack: self.manifest.pack_ref.clone(),
                        key: grant.config_key.clone(),
                        path: grant.path.clone(),
                    })
                }
            })
            .collect()
    }

    /// The `.wasm` file of a sensor (for a Python sensor, the pack's Python
    /// sensors' one): in `sensors/` as shipped, else in the pack's build
    /// output.
    pub fn sensor_component_path(&self, sensor: &SensorMeta) -> Result<PathBuf, PackError> {
        let file = sensor.component_file();
        let shipped = self.dir.join("sensors").join(file);
        let built = self.dir.join(self.manifest.build_output()).join(file);
        for candidate in [&shipped, &built] {
            if candidate.is_file() {
                return Ok(candidate.clone());
            }
        }
        Err(PackError::MissingSensorComponent {
            sensor: sensor.sensor_ref(),
            entry_point: file.to_owned(),
            searched: Box::new([shipped, built]),
            pack_dir: self.dir.clone(),
        })
    }

    /// The `.wasm` file of `action`: in `actions/` as shipped in an upload,
    /// else in the pack's build output.
    pub fn component_path(&self, action: &ActionMeta) -> Result<PathBuf, PackError> {
        let mut found = self.found.lock().expect("component paths lock poisoned");
        if let Some((path, at)) = found.get(&action.entry_point)
            && at.elapsed() < squall_sandbox::RESTAMP_AFTER
        {
            return Ok(path.clone());
        }
        let path = self.find_component(action)?;
        found.insert(
            action.entry_point.clone(),
            (path.clone(), std::time::Instant::now()),
        );
        Ok(path)
    }

    fn find_component(&self, action: &ActionMeta) -> Result<PathBuf, PackError> {
        // A Python action's module is in the pack's one Python component.
        let file = match action.runner {
            RunnerType::PythonScript => {
                std::path::Path::new(squall_core::manifest::PYTHON_COMPONENT)
            }
            _ => action.entry_point.as_path(),
        };
        let shipped = self.dir.join("actions").join(file);
        let built = self.dir.join(self.manifest.build_output()).join(file);
        for candidate in [&shipped, &built] {
            if candidate.is_file() {
                return Ok(candidate.clone());
            }
        }
        Err(PackError::MissingComponent {
            action: action.action_ref.clone(),
            entry_point: file.to_owned(),
            searched: Box::new([shipped, built]),
            pack_dir: self.dir.clone(),
        })
    }
}

/// The resolved config and the directories it asks for.
fn load_config(
    dir: &Path,
    given: Option<(&str, &Path)>,
) -> Result<
    (
        serde_json::Map<String, serde_json::Value>,
        Vec<DirectoryGrant>,
    ),
    PackError,
> {
    let schema_path = dir.join("config.schema.yaml");
    let config_path = dir.join("config.yaml");
    let schema = if schema_path.is_file() {
        ConfigSchema::parse(&read(&schema_path)?, &schema_path)?
    } else {
        ConfigSchema::parse("{}", &schema_path)?
    };
    let (config, config_path) = match given {
        Some((text, file)) => (schema.resolve(text, file)?, file.to_owned()),
        None if config_path.is_file() => (
            schema.resolve(&read(&config_path)?, &config_path)?,
            config_path,
        ),
        None => (schema.defaults(&config_path)?, config_path),
    };
    let directories = schema.directories(&config, &config_path)?;
    Ok((config, directories))
}

fn read(path: &Path) -> Result<String, PackError> {
    std::fs::read_to_string(path).map_err(|cause| PackError::Io {
        path: path.to_owned(),
        cause,
    })
}

/// `*.yaml` and `*.yml` files in `dir`, sorted; none when `dir` is absent.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, PackError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(cause) => {
            return Err(PackError::Io {
                path: dir.to_owned(),
                cause,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|cause| PackError::Io {
                path: dir.to_owned(),
                cause,
            })?
            .path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A pack that was not accepted, and why.
#[derive(Debug)]
pub struct Refusal {
    pub dir: PathBuf,
    pub error: PackError,
}

/// Every tenant's packs. A tenant's set is replaced whole when a pack is
/// installed or removed; whoever holds the old set (an execution being
/// prepared, a listing) keeps a consistent view of it.
#[derive(Debug, Default)]
pub struct PackRegistry {
    sets: std::sync::RwLock<std::collections::HashMap<TenantId, Arc<PackSet>>>,
}

impl PackRegistry {
    /// A registry where `tenant` has `set`.
    pub fn with(tenant: TenantId, set: Arc<PackSet>) -> Self {
        let registry = Self::default();
        registry.replace(tenant, set);
        registry
    }

    /// `tenant`'s packs (an empty set when it has none).
    pub fn of(&self, tenant: &TenantId) -> Arc<PackSet> {
        self.sets
            .read()
            .expect("pack registry lock")
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Make `set` `tenant`'s packs from now on.
    pub fn replace(&self, tenant: TenantId, set: Arc<PackSet>) {
        self.sets
            .write()
            .expect("pack registry lock")
            .insert(tenant, set);
    }

    /// Every tenant with packs, and its set.
    pub fn all(&self) -> Vec<(TenantId, Arc<PackSet>)> {
        let sets = self.sets.read().expect("pack registry lock");
        let mut all: Vec<_> = sets.iter().map(|(t, s)| (t.clone(), s.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Every pack of one tenant, by ref. Packs are shared between the sets
/// that hold them: a new set after an install is cheap.
#[derive(Debug, Default, Clone)]
pub struct PackSet {
    packs: BTreeMap<PackRef, Arc<LoadedPack>>,
}

impl PackSet {
    /// Load each path: a pack directory (has `pack.yaml`) or a directory
    /// whose subdirectories are packs.
    pub fn load(paths: &[PathBuf]) -> Result<Self, PackError> {
        let mut set = Self::default();
        for path in paths {
            if path.join("pack.yaml").is_file() {
                set.add(LoadedPack::load(path)?)?;
                continue;
            }
            let entries = std::fs::read_dir(path).map_err(|_| PackError::NotAPack(path.clone()))?;
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("pack.yaml").is_file())
                .collect();
            dirs.sort();
            for dir in dirs {
                set.add(LoadedPack::load(&dir)?)?;
            }
        }
        Ok(set)
    }

    /// [`PackSet::load`], each pack on its own: a pack that cannot be read
    /// or validated is refused (with why) and the others are kept. A server
    /// with many packs keeps running when one of them is broken.
    pub fn load_each(paths: &[PathBuf]) -> (Self, Vec<Refusal>) {
        let mut set = Self::default();
        let mut refused = Vec::new();
        let mut dirs = Vec::new();
        for path in paths {
            if path.join("pack.yaml").is_file() {
                dirs.push(path.clone());
                continue;
            }
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.join("pack.yaml").is_file())
                        .collect();
                    found.sort();
                    dirs.extend(found);
                }
                Err(_) => refused.push(Refusal {
                    dir: path.clone(),
                    error: PackError::NotAPack(path.clone()),
                }),
            }
        }
        for dir in dirs {
            if let Err(error) = LoadedPack::load(&dir).and_then(|p| set.add(p)) {
                refused.push(Refusal { dir, error });
            }
        }
        (set, refused)
    }

    /// Take a pack out of the set.
    /// These packs, each with the config set for it through the API (in
    /// `configs`) in place of its `config.yaml`; a pack the config does
    /// not fit is refused, saying why.
    pub fn with_stored_configs(
        self,
        configs: &squall_store::StoredConfigs,
    ) -> (Self, Vec<Refusal>) {
        let mut out = Self::default();
        let mut refused = Vec::new();
        for pack in self.shared() {
            let name = pack.manifest.pack_ref.as_str();
            // Set through the API but unreadable now: refused rather than
            // run with the config.yaml it replaced.
            if let Some((_, why)) = configs.unreadable.iter().find(|(p, _)| p == name) {
                refused.push(Refusal {
                    dir: pack.dir.clone(),
                    error: PackError::UnreadableConfig {
                        pack: pack.manifest.pack_ref.clone(),
                        cause: why.clone(),
                    },
                });
                continue;
            }
            let stored = configs.readable.iter().find(|c| c.pack == name);
            match stored.map(|c| pack.with_stored_config(&c.values)) {
                None => out.put(pack.clone()),
                Some(Ok(configured)) => out.put(Arc::new(configured)),
                Some(Err(error)) => refused.push(Refusal {
                    dir: pack.dir.clone(),
                    error,
                }),
            }
        }
        (out, refused)
    }

    pub fn remove(&mut self, pack: &PackRef) -> Option<Arc<LoadedPack>> {
        self.packs.remove(pack)
    }

    /// Put `pack` in the set, in place of any pack of the same ref.
    pub fn put(&mut self, pack: Arc<LoadedPack>) {
        self.packs.insert(pack.manifest.pack_ref.clone(), pack);
    }

    /// The pack `pack`, if the set has it.
    pub fn get(&self, pack: &PackRef) -> Option<&Arc<LoadedPack>> {
        self.packs.get(pack)
    }

    /// Add a pack; refused when the set has one of the same ref.
    pub fn add(&mut self, pack: LoadedPack) -> Result<(), PackError> {
        if let Some(first) = self.packs.get(&pack.manifest.pack_ref) {
            return Err(PackError::Duplicate {
                pack: pack.manifest.pack_ref.clone(),
                first: first.dir.clone(),
                second: pack.dir,
            });
        }
        self.packs
            .insert(pack.manifest.pack_ref.clone(), Arc::new(pack));
        Ok(())
    }

    pub fn packs(&self) -> impl Iterator<Item = &LoadedPack> {
        self.packs.values().map(|p| &**p)
    }

    /// The packs as shared handles, to put in another set.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<LoadedPack>> {
        self.packs.values()
    }

    /// The pack and metadata of `action`, or an error that says what exists.
    pub fn action(&self, action: &ActionRef) -> Result<(&LoadedPack, &ActionMeta), PackError> {
        let unknown = |hint: String| PackError::UnknownAction {
            action: action.clone(),
            hint,
        };
        let Some(pack) = self.packs.get(action.pack()) else {
            let known: Vec<_> = self.packs.keys().map(ToString::to_string).collect();
            return Err(unknown(if known.is_empty() {
                "no packs are loaded (use --packs DIR)".to_owned()
            } else {
                format!("no pack '{}' (loaded: {})", action.pack(), known.join(", "))
            }));
        };
        let Some(meta) = pack.actions.get(action.name()) else {
            let known: Vec<_> = pack.actions.keys().cloned().collect();
            return Err(unknown(format!(
                "pack '{}' has no action '{}' (it has: {})",
                action.pack(),
                action.name(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        };
        Ok((pack, meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn pack(dir: &Path, name: &str) {
        write(
            dir,
            "pack.yaml",
            &format!("name: {name}\nversion: 1.0.0\ndescription: d\nauthor: a\n"),
        );
        write(
            dir,
            "actions/hello.yaml",
            "name: hello\nrunner_type: wasm\nentry_point: hello.wasm\n",
        );
    }

    #[test]
    fn loads_a_pack_or_a_directory_of_packs() {
        let root = tempfile::tempdir().expect("tempdir");
        pack(&root.path().join("one"), "one");
        pack(&root.path().join("two"), "two");
        let set = PackSet::load(&[root.path().to_owned()]).expect("loads");
        assert_eq!(set.packs().count(), 2);
        let set = PackSet::load(&[root.path().join("one")]).expect("loads");
        assert_eq!(set.packs().count(), 1);
    }

    #[test]
    fn unknown_actions_say_what_exists() {
        let root = tempfile::tempdir().expect("tempdir");
        pack(root.path(), "one");
        let set = PackSet::load(&[root.path().to_owned()]).expect("loads");
        let err = set
            .action(&"one.bye".parse().expect("ref"))
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown action 'one.bye': pack 'one' has no action 'bye' (it has: hello)"
        );
        let err = set
            .action(&"zzz.bye".parse().expect("ref"))
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown action 'zzz.bye': no pack 'zzz' (loaded: one)"
        );
    }

    #[test]
    fn missing_component_points_at_the_build() {
        let root = tempfile::tempdir().expect("tempdir");
        pack(root.path(), "one");
        let set = PackSet::load(&[root.path().to_owned()]).expect("loads");
        let (p, meta) = set
            .action(&"one.hello".parse().expect("ref"))
            .expect("exists");
        let err = p.component_path(meta).expect_err("not built");
        assert!(err.to_string().contains("squall pack build"), "{err}");
    }

    #[test]
    fn config_is_validated_with_defaults() {
        let root = tempfile::tempdir().expect("tempdir");
        pack(root.path(), "one");
        write(
            root.path(),
            "config.schema.yaml",
            "dir:\n  type: string\n  default: /tmp\n",
        );
        let p = LoadedPack::load(root.path()).expect("loads");
        assert_eq!(&*p.config, r#"{"dir":"/tmp"}"#);
        write(root.path(), "config.yaml", "dir: 5\n");
        let err = LoadedPack::load(root.path()).expect_err("bad config");
        assert!(
            err.to_string().contains("config.yaml: parameter 'dir'"),
            "{err}"
        );
    }
}
