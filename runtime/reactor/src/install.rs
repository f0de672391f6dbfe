//! Installing a tenant's packs through the API: an archive is unpacked
//! (paths, entry kinds, sizes checked), the pack is read and validated,
//! every component is compiled, checked against its world and instantiated
//! once, and only then is the pack written in place as a new version and
//! activated with the tenant's other packs in one swap. Executions already
//! prepared finish on the version they started with.
//!
//! On disk, under the server's pack directory:
//! `<tenant>/<pack>/<version>/` (the pack's files) and
//! `<tenant>/<pack>/current` (the version in force). A version directory
//! without `current` naming it is a leftover and is removed at start.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use squall_core::{PackRef, TenantId};

use crate::dispatch::{Reactor, RuleChangeError};
use crate::packs::{LoadedPack, PackError, Refusal};

/// What an uploaded archive may hold.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    /// Bytes of all files together, unpacked.
    pub max_unpacked_bytes: u64,
    /// Files and directories.
    pub max_entries: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 512 << 20,
            max_entries: 20_000,
        }
    }
}

/// Why a pack was not installed. Nothing of it is in force, or on disk,
/// when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the upload is not a .tar.gz archive of a pack: {0}")]
    Archive(String),
    #[error(
        "archive entry '{0}' is refused: every path must stay inside the pack (no absolute paths, no '..')"
    )]
    UnsafePath(String),
    #[error("archive entry '{path}' is a {kind}; only files and directories are accepted")]
    UnsupportedEntry { path: String, kind: String },
    #[error("the archive unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the archive holds more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("the archive holds no pack.yaml (at its top, or in its one top-level directory)")]
    NoPack,
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("pack '{0}' is loaded from the server's --packs; the API cannot replace or remove it")]
    Fixed(PackRef),
    #[error("pack '{0}' is not installed")]
    NotInstalled(PackRef),
    #[error("{file}: the component does not start: {message}")]
    Instantiation { file: PathBuf, message: String },
    #[error("{0}")]
    Activation(#[from] RuleChangeError),
    #[error("{quota}: {message}")]
    Quota {
        quota: &'static str,
        message: String,
    },
    #[error("this server keeps no installed packs (it was started without a pack directory)")]
    NoPackDir,
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A component an uploaded pack's metadata names is not in its archive.
    #[error(
        "{what}: component '{entry_point}' is not in the archive: an uploaded pack ships each built component beside its metadata, as '{expected}' (`squall pack build` builds it, `squall pack install` then ships it)"
    )]
    NotShipped {
        what: String,
        entry_point: String,
        expected: String,
    },
    /// A refusal as the uploading tenant reads it: paths inside its archive.
    #[error("{0}")]
    InArchive(String),
    /// The server did not build the pack's sources ([`PackBuilder`]).
    #[error("{0}")]
    Build(#[from] BuildError),
}

/// Builds, on the server, the components an uploaded pack ships only as
/// sources (its Python actions and sensors), before the install checks
/// them. Builds run one at a time, before the install takes its turn, so
/// a long build holds up no other install or removal.
pub trait PackBuilder: Send + Sync + std::fmt::Debug {
    /// Whether `pack` has sources to build and lacks their components.
    fn needs_build(&self, pack: &LoadedPack) -> bool;
    /// Build them into `pack.dir`, stopping soon after `cancelled` turns
    /// true (the server is shutting down).
    fn build(&self, pack: &LoadedPack, cancelled: &dyn Fn() -> bool) -> Result<(), BuildError>;
}

/// Why a server-side build made no components.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The pack's sources do not build, or their build went past the
    /// server's limits. Shown to the tenant that uploaded the pack: it
    /// names files inside the pack, never the server's paths.
    #[error("{0}")]
    Refused(String),
    /// The server could not run the build (a tool missing or failing to
    /// start, its disk). The API logs it and shows an internal error.
    #[error("the server could not build the pack: {0}")]
    Server(String),
    /// The server began shutting down before the build was done.
    #[error("the server is shutting down; upload the pack again once it is back")]
    Cancelled,
}

impl InstallError {
    /// This refusal as the tenant who uploaded the pack should read it:
    /// paths relative to its archive (`roots` are where the server unpacked
    /// it), advice it can follow. Errors the API reports as the server's
    /// own (I/O, store) stay as they are: their text is logged, not shown.
    /// `kind` (`action` or `sensor`) `name` names a component the archive
    /// lacks; it belongs in `<kind>s/`.
    fn not_shipped(kind: &str, name: String, entry_point: &Path) -> Self {
        Self::NotShipped {
            what: format!("{kind} '{name}'"),
            expected: format!("{kind}s/{}", entry_point.display()),
            entry_point: entry_point.display().to_string(),
        }
    }

    fn in_archive(self, roots: &[String]) -> Self {
        use PackError as P;
        match self {
            // Errors that name no path of the archive, or that the API
            // answers with a status of their own.
            Self::Io { .. }
            | Self::Activation(RuleChangeError::Store(_))
            | Self::Fixed(_)
            | Self::NotInstalled(_)
            | Self::Quota { .. }
            | Self::TooLarge { .. }
            | Self::TooManyEntries { .. }
            | Self::NoPackDir
            | Self::NotShipped { .. }
            | Self::Build(BuildError::Server(_) | BuildError::Cancelled)
            | Self::InArchive(_) => self,
            Self::Pack(P::MissingComponent {
                action,
                entry_point,
                ..
            }) => Self::not_shipped("action", action.to_string(), &entry_point),
            // The compile cache is the server's own business.
            Self::Pack(
                P::ActionComponent { ref cause, .. } | P::SensorComponent { ref cause, .. },
            ) if matches!(cause, squall_sandbox::Error::Cache { .. }) => self,
            Self::Pack(P::MissingSensorComponent {
                sensor,
                entry_point,
                ..
            }) => Self::not_shipped("sensor", sensor, &entry_point),
            other => {
                let mut text = other.to_string();
                for root in roots {
                    text = text
                        .replace(&format!("{root}/"), "")
                        .replace(&format!("'{root}'"), "'.'");
                }
                Self::InArchive(text)
            }
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |cause| InstallError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// A path inside the archive, made safe: relative, no `..`, no root.
fn safe_relative(path: &Path) -> Result<PathBuf, InstallError> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(InstallError::UnsafePath(path.display().to_string()));
            }
        }
    }
    Ok(out)
}

/// Unpack a `.tar.gz` into `into` (an empty directory); returns the pack's
/// directory (`into`, or its one top-level directory).
pub fn unpack(archive: &[u8], into: &Path, limits: ArchiveLimits) -> Result<PathBuf, InstallError> {
    let too_large = InstallError::TooLarge {
        limit: limits.max_unpacked_bytes,
    };
    // Everything decompressed counts, headers and the long names or PAX
    // records the tar reader buffers whole, not only the files written.
    let budget = limits
        .max_unpacked_bytes
        .saturating_add(limits.max_entries as u64 * 2048);
    let bad = |e: std::io::Error| {
        if e.get_ref().is_some_and(|inner| inner.is::<OverBudget>()) {
            InstallError::TooLarge {
                limit: limits.max_unpacked_bytes,
            }
        } else {
            InstallError::Archive(e.to_string())
        }
    };
    let capped = Capped {
        inner: flate2::read::GzDecoder::new(archive),
        left: budget,
    };
    let mut tar = tar::Archive::new(capped);
    let mut total: u64 = 0;
    let mut count = 0usize;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        count += 1;
        if count > limits.max_entries {
            return Err(InstallError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let rel = safe_relative(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = into.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
        } else if kind.is_file() {
            let size = entry.header().size().map_err(bad)?;
            total = total.saturating_add(size);
            if total > limits.max_unpacked_bytes {
                return Err(too_large);
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let mut file = std::fs::File::create(&target).map_err(io(&target))?;
            // Never more than the header declared, whatever follows.
            std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(bad)?;
        } else {
            return Err(InstallError::UnsupportedEntry {
                path: raw.display().to_string(),
                kind: format!("{kind:?}").to_lowercase(),
            });
        }
    }
    if into.join("pack.yaml").is_file() {
        return Ok(into.to_owned());
    }
    let mut tops = std::fs::read_dir(into)
        .map_err(io(into))?
        .filter_map(|e| e.ok().map(|e| e.path()));
    match (tops.next(), tops.next()) {
        (Some(only), None) if only.join("pack.yaml").is_file() => Ok(only),
        _ => Err(InstallError::NoPack),
    }
}

/// Pack the pack in `dir` as an upload: its metadata files (not its
/// sources or build tree) plus each built component where an upload ships
/// it (`actions/<entry_point>`, `sensors/<entry_point>`).
pub fn archive_pack(dir: &Path) -> Result<Vec<u8>, InstallError> {
    let pack = LoadedPack::load(dir)?;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let skip = ["target", "src", "crates", "Cargo.toml", "Cargo.lock"];
    let mut stack = vec![PathBuf::new()];
    let mut added = std::collections::BTreeSet::new();
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&here)
            .map_err(io(&here))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if name_str.starts_with('.')
                || (rel.as_os_str().is_empty() && skip.contains(&&*name_str))
            {
                continue;
            }
            let path = rel.join(&name);
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                builder
                    .append_path_with_name(entry.path(), &path)
                    .map_err(io(&entry.path()))?;
                added.insert(path);
            }
        }
    }
    // Rust components are shipped from where cargo put them. Python code
    // ships as sources, with its components when built (they are in
    // `actions/` and `sensors/`); the server builds what is missing.
    let mut components: Vec<(PathBuf, PathBuf)> = Vec::new();
    for meta in pack
        .component_actions()
        .filter(|m| m.runner != squall_core::manifest::RunnerType::PythonScript)
    {
        components.push((
            pack.component_path(meta)?,
            Path::new("actions").join(&meta.entry_point),
        ));
    }
    for (_, meta) in pack.sensors.iter().filter(|(_, m)| !m.is_python()) {
        components.push((
            pack.sensor_component_path(meta)?,
            Path::new("sensors").join(&meta.entry_point),
        ));
    }
    for (from, to) in components {
        if added.insert(to.clone()) {
            builder
                .append_path_with_name(&from, &to)
                .map_err(io(&from))?;
        }
    }
    let gz = builder.into_inner().map_err(io(dir))?;
    gz.finish().map_err(io(dir))
}

/// Read the pack in `dir`, off the async threads.
pub(crate) async fn load_pack(dir: PathBuf) -> Result<LoadedPack, InstallError> {
    tokio::task::spawn_blocking(move || LoadedPack::load(&dir))
        .await
        .map_err(|e| InstallError::Archive(format!("load task failed: {e}")))?
        .map_err(InstallError::from)
}

/// The decompressed stream ran past its budget.
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the archive decompresses to more than allowed")
    }
}

impl std::error::Error for OverBudget {}

/// A reader that fails (with [`OverBudget`]) once it has given `left` bytes.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more would be over: is there one?
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(OverBudget)),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Where installed packs live: `<root>/<tenant>/<pack>/<version>/`.
#[derive(Debug, Clone)]
pub struct PackStore {
    root: PathBuf,
}

impl PackStore {
    /// The pack directory `root` (created), with leftovers of interrupted
    /// uploads removed.
    pub fn open(root: &Path) -> Result<Self, InstallError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let staging = root.join(".staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// A fresh, empty directory to unpack an upload into; removed when
    /// dropped unless its pack was installed (moved away).
    pub fn staging(&self) -> Result<tempfile::TempDir, InstallError> {
        let staging = self.root.join(".staging");
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        tempfile::tempdir_in(&staging).map_err(io(&staging))
    }

    pub(crate) fn pack_dir(&self, tenant: &TenantId, pack: &PackRef) -> PathBuf {
        self.root.join(tenant.as_str()).join(pack.as_str())
    }

    /// Every installed pack, by tenant, each read from its current version.
    /// A pack that no longer loads is refused (and stays on disk).
    pub fn load_all(&self) -> (BTreeMap<TenantId, Vec<LoadedPack>>, Vec<Refusal>) {
        let mut out: BTreeMap<TenantId, Vec<LoadedPack>> = BTreeMap::new();
        let mut refused = Vec::new();
        for tenant_dir in sorted_dirs(&self.root) {
            let Some(tenant) = file_name(&tenant_dir).and_then(|n| TenantId::new(n).ok()) else {
                continue;
            };
            for pack_dir in sorted_dirs(&tenant_dir) {
                let Some(version) = std::fs::read_to_string(pack_dir.join("current"))
                    .ok()
                    .map(|v| v.trim().to_owned())
                else {
                    // Never installed (an install interrupted before it
                    // was in force): nothing of it is kept.
                    if let Err(e) = std::fs::remove_dir_all(&pack_dir) {
                        tracing::warn!(dir = %pack_dir.display(), error = %e, "could not remove an unfinished install");
                    }
                    continue;
                };
                remove_other_versions(&pack_dir, &version);
                let dir = pack_dir.join(&version);
                match LoadedPack::load(&dir) {
                    Ok(mut pack) => {
                        pack.installed = Some(version);
                        out.entry(tenant.clone()).or_default().push(pack);
                    }
                    Err(error) => refused.push(Refusal { dir, error }),
                }
            }
        }
        (out, refused)
    }

    /// Bytes of every installed pack of `tenant`, current versions only.
    pub fn tenant_bytes(&self, tenant: &TenantId) -> u64 {
        let root = self.root.join(tenant.as_str());
        sorted_dirs(&root)
            .iter()
            .filter_map(|p| {
                let v = std::fs::read_to_string(p.join("current")).ok()?;
                Some(dir_bytes(&p.join(v.trim())))
            })
            .sum()
    }
}

/// Whether `version` is what an install names a version (a UUIDv7's 32
/// lowercase hex digits), and so a safe directory name.
fn is_version_id(version: &str) -> bool {
    version.len() == 32
        && version
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What [`PackStore::sync_with_database`] changed on this node's disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Versions written from the database's archives.
    pub installed: Vec<(TenantId, PackRef, String)>,
    /// Packs removed because the database no longer holds them.
    pub removed: Vec<(TenantId, PackRef)>,
}

impl PackStore {
    /// The version in force of every installed pack on this node's disk.
    pub(crate) fn current_versions(&self) -> BTreeMap<(TenantId, String), String> {
        let mut out = BTreeMap::new();
        for tenant_dir in sorted_dirs(&self.root) {
            let Some(tenant) = file_name(&tenant_dir).and_then(|n| TenantId::new(n).ok()) else {
                continue;
            };
            for pack_dir in sorted_dirs(&tenant_dir) {
                let (Some(pack), Ok(version)) = (
                    file_name(&pack_dir),
                    std::fs::read_to_string(pack_dir.join("current")),
                ) else {
                    continue;
                };
                out.insert((tenant.clone(), pack.to_owned()), version.trim().to_owned());
            }
        }
        out
    }

    /// Make this node's disk hold what the cluster's database holds: each
    /// pack's version in force, unpacked from its archive where this node
    /// has another (or none), and no pack the database does not hold. Run
    /// before the packs are loaded. A pack whose archive cannot be written
    /// is left as it was, and said.
    pub async fn sync_with_database(
        &self,
        pg: &squall_store::pg::PgStore,
    ) -> Result<Synced, InstallError> {
        let store_error = |e| InstallError::Activation(RuleChangeError::Store(e));
        let wanted = pg.pack_versions().await.map_err(store_error)?;
        let mut have = self.current_versions();
        let mut synced = Synced::default();
        for v in wanted {
            let key = (v.tenant.clone(), v.pack.clone());
            let pack_ref = match PackRef::new(v.pack.clone()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(tenant = %v.tenant, pack = %v.pack, error = %e, "the database holds a pack of an invalid name; skipped");
                    continue;
                }
            };
            if have.remove(&key).as_deref() == Some(v.version.as_str()) {
                continue;
            }
            // A version names a directory: only the ids installs make.
            if !is_version_id(&v.version) {
                tracing::error!(tenant = %v.tenant, pack = %v.pack, version = %v.version, "the database holds a pack version that is not a version id; skipped");
                continue;
            }
            // Replaced since it was listed: the next sync has the new one.
            let Some(archive) = pg
                .pack_archive(&v.tenant, &v.pack, &v.version)
                .await
                .map_err(store_error)?
            else {
                continue;
            };
            let store = self.clone();
            let (tenant, version) = (v.tenant.clone(), v.version.clone());
            let written = tokio::task::spawn_blocking(move || {
                store.write_version(&tenant, &pack_ref, &version, &archive)?;
                Ok::<_, InstallError>(pack_ref)
            })
            .await
            .map_err(|e| InstallError::Archive(format!("pack sync task failed: {e}")))?;
            match written {
                Ok(pack_ref) => synced.installed.push((v.tenant, pack_ref, v.version)),
                Err(e) => {
                    tracing::error!(tenant = %v.tenant, pack = %v.pack, version = %v.version, error = %e, "could not install a pack the database holds");
                }
            }
        }
        for ((tenant, pack), _) in have {
            let Ok(pack_ref) = PackRef::new(pack) else {
                continue;
            };
            let pack_dir = self.pack_dir(&tenant, &pack_ref);
            if let Err(e) = std::fs::remove_file(pack_dir.join("current")) {
                tracing::warn!(dir = %pack_dir.display(), error = %e, "could not remove a pack the database no longer holds");
                continue;
            }
            let _ = std::fs::remove_dir_all(&pack_dir);
            tracing::warn!(%tenant, pack = %pack_ref, "removed an installed pack the database does not hold (uninstalled through another node, or installed before this node used the database)");
            synced.removed.push((tenant, pack_ref));
        }
        Ok(synced)
    }

    /// Unpack `archive` as `version` of `pack` and make it the one in
    /// force on this disk.
    fn write_version(
        &self,
        tenant: &TenantId,
        pack: &PackRef,
        version: &str,
        archive: &[u8],
    ) -> Result<(), InstallError> {
        let staging = self.staging()?;
        let root = unpack(archive, staging.path(), ArchiveLimits::default())?;
        let pack_dir = self.pack_dir(tenant, pack);
        std::fs::create_dir_all(&pack_dir).map_err(io(&pack_dir))?;
        let version_dir = pack_dir.join(version);
        if version_dir.exists() {
            std::fs::remove_dir_all(&version_dir).map_err(io(&version_dir))?;
        }
        std::fs::rename(&root, &version_dir).map_err(io(&version_dir))?;
        write_atomically(&pack_dir.join("current"), version)?;
        remove_other_versions(&pack_dir, version);
        Ok(())
    }
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() && !file_name(p).is_some_and(|n| n.starts_with('.')))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Remove a pack's version directories other than `keep` (leftovers of an
/// interrupted install or of the version an install replaced).
fn remove_other_versions(pack_dir: &Path, keep: &str) {
    for dir in sorted_dirs(pack_dir) {
        if file_name(&dir) != Some(keep)
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove an old pack version");
        }
    }
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Write `text` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, text: &str) -> Result<(), InstallError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// `dir` as given and, if it resolves elsewhere, as resolved.
fn dir_forms(dir: &Path) -> Vec<String> {
    let mut forms = vec![dir.display().to_string()];
    if let Ok(resolved) = std::fs::canonicalize(dir)
        && resolved != dir
    {
        forms.push(resolved.display().to_string());
    }
    forms
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub pack: Arc<LoadedPack>,
    /// The version it replaced, if any.
    pub replaced: Option<String>,
    /// Its actions the tenant may not run (host runners it was not
    /// given), each with why: installed with the rest, refused when run.
    pub refused: Vec<(squall_core::ActionRef, String)>,
}

/// What a reload of the server's own packs did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// The packs read again and now in force.
    pub reloaded: Vec<PackRef>,
    /// The packs whose directory is gone, now removed.
    pub removed: Vec<PackRef>,
    /// The packs that failed to load or to pass their checks, each with
    /// why; those that were in force keep their previous version.
    pub refused: Vec<Refusal>,
}

impl Reactor {
    /// Read the server's own packs (`squall serve --packs`) again from
    /// `paths` and put them in force for the default tenant, as an install
    /// does: each is read and checked first (components compiled and
    /// checked against their worlds, rules and workflows against the
    /// tenant's packs), then all are swapped in at once. Executions already
    /// running finish on the version they started on; the reloaded packs'
    /// sensors restart on the new one. A pack that fails keeps the version
    /// in force, if it had one. Packs installed through the API stay as
    /// they are.
    pub async fn reload_packs(&self, paths: &[PathBuf]) -> Result<Reloaded, InstallError> {
        let _serial = self.inner.installs.lock().await;
        let tenant = TenantId::default_tenant();
        let current = self.runner().packs(&tenant);
        let configs = self
            .inner
            .store
            .pack_configs(&tenant)
            .map_err(|e| InstallError::Activation(RuleChangeError::Store(e)))?;
        let (reactor, paths) = (self.clone(), paths.to_vec());
        let (set, report) = tokio::task::spawn_blocking(move || {
            let runner = reactor.runner();
            let (fresh, mut refused) = crate::packs::PackSet::load_each(&paths);
            let (fresh, more) = fresh.with_stored_configs(&configs);
            refused.extend(more);
            let fixed: Vec<&Arc<LoadedPack>> =
                current.shared().filter(|p| p.installed.is_none()).collect();
            let previous = |dir: &Path| fixed.iter().find(|p| p.dir == dir).copied();
            let mut set = crate::packs::PackSet::default();
            for pack in current.shared().filter(|p| p.installed.is_some()) {
                set.put(pack.clone());
            }
            for r in &refused {
                if let Some(old) = previous(&r.dir) {
                    set.put(old.clone());
                }
            }
            let mut reloaded = Vec::new();
            for pack in fresh.shared() {
                let pack_ref = &pack.manifest.pack_ref;
                if let Some(installed) = set.get(pack_ref).filter(|p| p.installed.is_some()) {
                    refused.push(Refusal {
                        dir: pack.dir.clone(),
                        error: PackError::Duplicate {
                            pack: pack_ref.clone(),
                            first: installed.dir.clone(),
                            second: pack.dir.clone(),
                        },
                    });
                    continue;
                }
                set.put(pack.clone());
                reloaded.push(pack_ref.clone());
            }
            let (mut set, failed) = crate::vet::vet_packs(
                set,
                runner.sandbox(),
                runner.allowed_dirs(),
                reactor.templates(),
            );
            for r in &failed {
                if let Some(old) = previous(&r.dir) {
                    set.put(old.clone());
                }
            }
            refused.extend(failed);
            // What failed kept its previous version: not reloaded.
            reloaded.retain(|p| {
                set.get(p)
                    .is_some_and(|now| fresh.get(p).is_some_and(|f| Arc::ptr_eq(now, f)))
            });
            let removed: Vec<PackRef> = fixed
                .iter()
                .map(|p| p.manifest.pack_ref.clone())
                .filter(|p| set.get(p).is_none())
                .collect();
            (
                set,
                Reloaded {
                    reloaded,
                    removed,
                    refused,
                },
            )
        })
        .await
        .map_err(|e| InstallError::Archive(format!("reload task failed: {e}")))?;
        let changed: Vec<PackRef> = report
            .reloaded
            .iter()
            .chain(&report.removed)
            .cloned()
            .collect();
        self.activate_packs(&tenant, Arc::new(set), &changed)
            .await?;
        tracing::info!(reloaded = ?report.reloaded, removed = ?report.removed, refused = report.refused.len(), "packs reloaded");
        Ok(report)
    }

    /// Install the pack unpacked in `unpacked` for `tenant` as a new
    /// version, replacing the one in force: read and validated, every
    /// action component compiled, checked against the `action` world and
    /// instantiated once, every sensor component checked against the
    /// `sensor` world, its rules and policies checked against the tenant's
    /// packs; then written in place and activated in one swap. Any error
    /// leaves the tenant's packs as they were.
    pub async fn install_pack(
        &self,
        tenant: &TenantId,
        unpacked: &Path,
    ) -> Result<Installed, InstallError> {
        let store = self.pack_store()?.clone();
        // The server's directories an error may name, as given and resolved
        // (taken while they exist: a refused version's is removed).
        let mut roots = dir_forms(unpacked);
        let installed = self
            .install_unpacked(&store, tenant, unpacked, &mut roots)
            .await;
        installed.map_err(|e| {
            roots.extend(dir_forms(&store.root.join(tenant.as_str())));
            e.in_archive(&roots)
        })
    }

    /// [`Reactor::install_pack`]; adds the new version's directory to
    /// `roots` once it exists.
    async fn install_unpacked(
        &self,
        store: &PackStore,
        tenant: &TenantId,
        unpacked: &Path,
        roots: &mut Vec<String>,
    ) -> Result<Installed, InstallError> {
        let started = std::time::Instant::now();
        let manifest_path = unpacked.join("pack.yaml");
        let text = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
        let manifest = squall_core::manifest::PackManifest::parse(&text, &manifest_path)
            .map_err(PackError::from)?;
        let pack_ref = manifest.pack_ref.clone();
        let fixed = |packs: &crate::packs::PackSet| {
            packs.get(&pack_ref).is_some_and(|p| p.installed.is_none())
        };
        // Refused before a build is spent on it; checked again in turn.
        if fixed(&self.runner().packs(tenant)) {
            return Err(InstallError::Fixed(pack_ref));
        }
        self.check_pack_quota(store, tenant, &pack_ref, unpacked)?;
        self.build_sources(tenant, &pack_ref, unpacked).await?;
        let _serial = self.inner.installs.lock().await;
        let current = self.runner().packs(tenant);
        if fixed(&current) {
            return Err(InstallError::Fixed(pack_ref));
        }
        let replaced = current.get(&pack_ref).and_then(|p| p.installed.clone());
        // With what the build wrote, against the packs in force now.
        self.check_pack_quota(store, tenant, &pack_ref, unpacked)?;
        // In place as `<tenant>/<pack>/<version>/`, not yet current: read,
        // checked and activated from there, or removed.
        let version = squall_core::trigger::new_id();
        let pack_dir = store.pack_dir(tenant, &pack_ref);
        std::fs::create_dir_all(&pack_dir).map_err(io(&pack_dir))?;
        let version_dir = pack_dir.join(&version);
        std::fs::rename(unpacked, &version_dir).map_err(io(&version_dir))?;
        roots.splice(0..0, dir_forms(&version_dir));
        let activated = async {
            let mut pack = load_pack(version_dir.clone()).await?;
            // A config set through the API holds across versions.
            if let Some(stored) = self.stored_config(tenant, &pack_ref)? {
                pack = pack.with_stored_config(&stored)?;
            }
            let loaded = started.elapsed();
            self.check_components(&pack).await?;
            let checked = started.elapsed();
            pack.installed = Some(version.clone());
            let pack = Arc::new(pack);
            let mut set = (*current).clone();
            set.put(pack.clone());
            pack.check_workflows(&set)?;
            self.activate_packs(tenant, Arc::new(set), std::slice::from_ref(&pack_ref))
                .await?;
            tracing::debug!(
                loaded_ms = loaded.as_millis() as u64,
                components_ms = (checked - loaded).as_millis() as u64,
                activated_ms = (started.elapsed() - checked).as_millis() as u64,
                "install phases"
            );
            Ok::<_, InstallError>(pack)
        }
        .await;
        // In force here; on a cluster, then in force for every node.
        let shared = match activated {
            Ok(pack) => self
                .share_version(tenant, &pack_ref, &version, &version_dir, current)
                .await
                .map(|()| pack),
            Err(e) => Err(e),
        };
        let pack = match shared {
            Ok(pack) => pack,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&version_dir);
                self.runner().sandbox().forget_under(&version_dir);
                return Err(e);
            }
        };
        // From here the new version is in force; make it the one loaded at
        // the next start, then drop the old files (prepared executions hold
        // their compiled component and config, not the files).
        write_atomically(&pack_dir.join("current"), &version)?;
        remove_other_versions(&pack_dir, &version);
        if let Some(old) = &replaced {
            self.runner().sandbox().forget_under(&pack_dir.join(old));
        }
        tracing::info!(%tenant, pack = %pack_ref, %version, actions = pack.actions.len(), took_ms = started.elapsed().as_millis() as u64, "pack installed");
        let host = self.runner().host_runners();
        let refused = pack
            .actions
            .values()
            .filter_map(|m| Some((m.action_ref.clone(), host.refusal(tenant, m)?)))
            .collect();
        Ok(Installed {
            pack,
            replaced,
            refused,
        })
    }

    /// Remove an installed pack of `tenant`. Rules from the API that name
    /// its actions stay, disabled, with the reason.
    pub async fn uninstall_pack(
        &self,
        tenant: &TenantId,
        pack_ref: &PackRef,
    ) -> Result<(), InstallError> {
        let store = self.pack_store()?.clone();
        let _serial = self.inner.installs.lock().await;
        let current = self.runner().packs(tenant);
        match current.get(pack_ref) {
            None => return Err(InstallError::NotInstalled(pack_ref.clone())),
            Some(p) if p.installed.is_none() => return Err(InstallError::Fixed(pack_ref.clone())),
            Some(_) => {}
        }
        let mut set = (*current).clone();
        set.remove(pack_ref);
        self.activate_packs(tenant, Arc::new(set), std::slice::from_ref(pack_ref))
            .await?;
        // Gone here; on a cluster, then gone from every node.
        if let Some(pg) = self.inner.store.postgres()
            && let Err(e) = pg.delete_pack(tenant, pack_ref.as_str()).await
        {
            self.put_back(tenant, pack_ref, current).await;
            return Err(InstallError::Activation(RuleChangeError::Store(e)));
        }
        // Its config goes with it, as StackStorm's does.
        self.inner
            .store
            .put_pack_config(tenant, pack_ref.as_str(), None)
            .await
            .map_err(|e| InstallError::Activation(RuleChangeError::Store(e)))?;
        let pack_dir = store.pack_dir(tenant, pack_ref);
        let current_file = pack_dir.join("current");
        std::fs::remove_file(&current_file).map_err(io(&current_file))?;
        if let Err(e) = std::fs::remove_dir_all(&pack_dir) {
            tracing::warn!(dir = %pack_dir.display(), error = %e, "could not remove an uninstalled pack's files");
        }
        self.runner().sandbox().forget_under(&pack_dir);
        tracing::info!(%tenant, pack = %pack_ref, "pack uninstalled");
        Ok(())
    }

    /// Set `tenant`'s config of `pack_ref` to `values` (`None`: drop it, and
    /// the pack's own `config.yaml` applies again): the pack is read again
    /// with it and checked as an install checks a pack (the config against
    /// the schema, the directories it asks for against the tenant's
    /// `--allow-dir`s, the components, rules and workflows), the config is
    /// stored, and the pack is put in force in one swap; its sensors
    /// restart, and executions prepared from now on get the new config.
    /// Any error leaves both as they were. Refusals name the config
    /// `configs/<pack>` and the pack's own files, never the server's paths.
    pub async fn configure_pack(
        &self,
        tenant: &TenantId,
        pack_ref: &PackRef,
        values: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Arc<LoadedPack>, InstallError> {
        let _serial = self.inner.installs.lock().await;
        let current = self.runner().packs(tenant);
        let old = current
            .get(pack_ref)
            .cloned()
            .ok_or_else(|| InstallError::NotInstalled(pack_ref.clone()))?;
        let roots = dir_forms(&old.dir);
        let previous = current.clone();
        let checked = async {
            let (reactor, tenant_id, given) = (self.clone(), tenant.clone(), values.clone());
            let (set, pack) = tokio::task::spawn_blocking(move || {
                let mut pack = match &given {
                    Some(values) => old.with_stored_config(values)?,
                    None => LoadedPack::load(&old.dir)?,
                };
                // Opened as the pack's executions will open them.
                pack.preopens(&reactor.runner().allowed_dirs_for(&tenant_id))?;
                pack.installed = old.installed.clone();
                let pack = Arc::new(pack);
                let mut set = (*current).clone();
                set.put(pack.clone());
                pack.check_workflows(&set)?;
                Ok::<_, InstallError>((set, pack))
            })
            .await
            .map_err(|e| InstallError::Archive(format!("config task failed: {e}")))??;
            self.check_components(&pack).await?;
            Ok::<_, InstallError>((set, pack))
        }
        .await;
        let (set, pack) = checked.map_err(|e| e.in_archive(&roots))?;
        let changed = std::slice::from_ref(pack_ref);
        self.activate_packs(tenant, Arc::new(set), changed).await?;
        let stored = self
            .inner
            .store
            .put_pack_config(tenant, pack_ref.as_str(), values.as_ref())
            .await;
        if let Err(e) = stored {
            // Not stored: the config in force before goes back, so what
            // runs is what a restart would load.
            if let Err(back) = self.activate_packs(tenant, previous, changed).await {
                tracing::error!(%tenant, pack = %pack_ref, error = %back, "could not put the previous config back in force");
            }
            return Err(InstallError::Activation(RuleChangeError::Store(e)));
        }
        tracing::info!(%tenant, pack = %pack_ref, set = values.is_some(), "pack config changed");
        Ok(pack)
    }

    /// On a cluster, store `version` of `pack` (in force on this node) in
    /// the database for every other node; if that fails, `previous` goes
    /// back in force here. Nothing to do on SQLite.
    async fn share_version(
        &self,
        tenant: &TenantId,
        pack: &PackRef,
        version: &str,
        dir: &Path,
        previous: Arc<crate::packs::PackSet>,
    ) -> Result<(), InstallError> {
        let Some(pg) = self.inner.store.postgres() else {
            return Ok(());
        };
        let at = dir.to_owned();
        let archive = tokio::task::spawn_blocking(move || archive_pack(&at))
            .await
            .map_err(|e| InstallError::Archive(format!("archive task failed: {e}")))?;
        let stored = match archive {
            Ok(archive) => pg
                .put_pack(tenant, pack.as_str(), version, &archive)
                .await
                .map_err(|e| InstallError::Activation(RuleChangeError::Store(e))),
            Err(e) => Err(e),
        };
        if stored.is_err() {
            self.put_back(tenant, pack, previous).await;
        }
        stored
    }

    /// Put `previous` back in force after a change of `pack` that could
    /// not be stored.
    async fn put_back(
        &self,
        tenant: &TenantId,
        pack: &PackRef,
        previous: Arc<crate::packs::PackSet>,
    ) {
        if let Err(e) = self
            .activate_packs(tenant, previous, std::slice::from_ref(pack))
            .await
        {
            tracing::error!(%tenant, %pack, error = %e, "could not put the previous packs back in force");
        }
    }

    /// The config `tenant` set for `pack` through the API, if any.
    fn stored_config(
        &self,
        tenant: &TenantId,
        pack: &PackRef,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, InstallError> {
        let stored = self
            .inner
            .store
            .pack_config(tenant, pack.as_str())
            .map_err(|e| InstallError::Activation(RuleChangeError::Store(e)))?;
        Ok(stored.map(|c| c.values))
    }

    /// Build the sources of the pack unpacked in `dir` when the server
    /// builds uploads and the pack needs it: one build at a time, and
    /// before the install's turn (see [`PackBuilder`]).
    async fn build_sources(
        &self,
        tenant: &TenantId,
        pack_ref: &PackRef,
        dir: &Path,
    ) -> Result<(), InstallError> {
        let Some(builder) = self.inner.config.pack_builder.clone() else {
            return Ok(());
        };
        let pack = load_pack(dir.to_owned()).await?;
        if !builder.needs_build(&pack) {
            return Ok(());
        }
        let _turn = self
            .inner
            .builds
            .acquire()
            .await
            .map_err(|_| BuildError::Cancelled)?;
        let reactor = self.clone();
        let cancelled = move || reactor.builds_cancelled();
        if cancelled() {
            return Err(BuildError::Cancelled.into());
        }
        tracing::info!(%tenant, pack = %pack_ref, "building the uploaded pack's sources");
        let built = tokio::task::spawn_blocking(move || builder.build(&pack, &cancelled))
            .await
            .map_err(|e| BuildError::Server(format!("build task failed: {e}")))?;
        if let Err(BuildError::Server(detail)) = &built {
            tracing::error!(%tenant, pack = %pack_ref, %detail, "the server could not build an uploaded pack");
        }
        Ok(built?)
    }

    /// Stop the server-side builds running and refuse those waiting to
    /// start: the server is shutting down. Their uploads are refused
    /// (HTTP 503) and leave nothing installed.
    pub fn cancel_builds(&self) {
        self.inner
            .builds_cancelled
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn builds_cancelled(&self) -> bool {
        self.inner
            .builds_cancelled
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Where this server keeps installed packs, if it does.
    pub fn pack_store(&self) -> Result<&PackStore, InstallError> {
        self.inner
            .config
            .pack_store
            .as_ref()
            .ok_or(InstallError::NoPackDir)
    }

    /// The tenant's packs, with this one in place of its old version, must
    /// fit the tenant's quota.
    fn check_pack_quota(
        &self,
        store: &PackStore,
        tenant: &TenantId,
        pack_ref: &PackRef,
        unpacked: &Path,
    ) -> Result<(), InstallError> {
        let Some(limit) = self.inner.config.quotas.pack_bytes else {
            return Ok(());
        };
        let replaced = std::fs::read_to_string(store.pack_dir(tenant, pack_ref).join("current"))
            .map(|v| dir_bytes(&store.pack_dir(tenant, pack_ref).join(v.trim())))
            .unwrap_or(0);
        let would = store
            .tenant_bytes(tenant)
            .saturating_sub(replaced)
            .saturating_add(dir_bytes(unpacked));
        if would > limit {
            return Err(InstallError::Quota {
                quota: "packs total size",
                message: format!(
                    "tenant '{tenant}' would have {would} bytes of packs; its limit is {limit}"
                ),
            });
        }
        Ok(())
    }

    /// Compile, world-check and instantiate every distinct action
    /// component once; world-check every sensor component.
    pub(crate) async fn check_components(&self, pack: &LoadedPack) -> Result<(), InstallError> {
        let sandbox = self.runner().sandbox().clone();
        let mut seen = std::collections::BTreeSet::new();
        for meta in pack.component_actions() {
            let path = pack.component_path(meta)?;
            if !seen.insert(path.clone()) {
                continue;
            }
            let component = {
                let (sandbox, at) = (sandbox.clone(), path.clone());
                tokio::task::spawn_blocking(move || sandbox.load_action(&at))
                    .await
                    .map_err(|e| InstallError::Archive(format!("compile task failed: {e}")))?
                    .map_err(|cause| PackError::ActionComponent {
                        file: path.clone(),
                        cause,
                    })?
            };
            sandbox
                .check_instantiation(&component, self.runner().limits())
                .await
                .map_err(|message| InstallError::Instantiation {
                    file: path.clone(),
                    message,
                })?;
        }
        for (file, meta) in &pack.sensors {
            let path = pack.sensor_component_path(meta)?;
            let sandbox = sandbox.clone();
            tokio::task::spawn_blocking(move || sandbox.load_sensor(&path))
                .await
                .map_err(|e| InstallError::Archive(format!("compile task failed: {e}")))?
                .map_err(|cause| PackError::SensorComponent {
                    file: file.clone(),
                    cause,
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_ids_name_version_directories() {
        assert!(is_version_id(&squall_core::trigger::new_id()));
        for bad in [
            "..",
            "../../etc",
            "",
            "0123456789abcdef0123456789ABCDEF",
            "a/b",
        ] {
            assert!(!is_version_id(bad), "{bad}");
        }
    }

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // Written raw: the builder's own path check would refuse `..`.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder
            .into_inner()
            .expect("finish")
            .finish()
            .expect("gzip")
    }

    #[test]
    fn a_pack_unpacks_at_the_top_or_in_one_directory() {
        let into = tempfile::tempdir().expect("tempdir");
        let root = unpack(
            &archive(&[("p/pack.yaml", b"name: p\n"), ("p/actions/a.yaml", b"x")]),
            into.path(),
            ArchiveLimits::default(),
        )
        .expect("unpacks");
        assert_eq!(root, into.path().join("p"));
        assert!(root.join("actions/a.yaml").is_file());
    }

    #[test]
    fn a_long_name_bomb_is_stopped_at_the_budget() {
        // A GNU long-name record the tar reader would buffer whole: 16 MiB
        // of zeros, a few KiB compressed.
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let bomb = vec![0u8; 16 << 20];
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(bomb.len() as u64);
        header.set_cksum();
        builder.append(&header, &bomb[..]).expect("append");
        let bytes = builder
            .into_inner()
            .expect("finish")
            .finish()
            .expect("gzip");
        assert!(bytes.len() < 1 << 20, "the bomb is small: {}", bytes.len());
        let into = tempfile::tempdir().expect("tempdir");
        let limits = ArchiveLimits {
            max_unpacked_bytes: 1 << 20,
            max_entries: 10,
        };
        let e = unpack(&bytes, into.path(), limits).expect_err("refused");
        assert!(matches!(e, InstallError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn traversal_links_sizes_and_non_packs_are_refused() {
        let refused = |bytes: Vec<u8>, limits: ArchiveLimits| {
            let into = tempfile::tempdir().expect("tempdir");
            let e = unpack(&bytes, into.path(), limits).expect_err("refused");
            // Nothing escaped the directory.
            assert!(!into.path().parent().expect("parent").join("evil").exists());
            e.to_string()
        };
        let e = refused(
            archive(&[("pack.yaml", b"x"), ("../evil", b"x")]),
            ArchiveLimits::default(),
        );
        assert!(e.contains("'../evil' is refused"), "{e}");
        let e = refused(archive(&[("/etc/evil", b"x")]), ArchiveLimits::default());
        assert!(e.contains("is refused"), "{e}");
        let e = refused(
            archive(&[("pack.yaml", &[0u8; 2048])]),
            ArchiveLimits {
                max_unpacked_bytes: 1024,
                max_entries: 10,
            },
        );
        assert!(e.contains("more than 1024 bytes"), "{e}");
        let e = refused(archive(&[("readme", b"x")]), ArchiveLimits::default());
        assert!(e.contains("no pack.yaml"), "{e}");
        let e = refused(b"not gzip at all".to_vec(), ArchiveLimits::default());
        assert!(e.contains("not a .tar.gz"), "{e}");

        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "pack.yaml", "/etc/passwd")
            .expect("append");
        let bytes = builder
            .into_inner()
            .expect("finish")
            .finish()
            .expect("gzip");
        let e = refused(bytes, ArchiveLimits::default());
        assert!(e.contains("is a symlink"), "{e}");
    }
}
