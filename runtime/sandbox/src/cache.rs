//! Compile once: `.cwasm` files keyed by the component's sha256 and the
//! engine's compatibility hash.
//!
//! Only files this process wrote from bytes it compiled are ever
//! deserialized; a `.cwasm` never comes from a user.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Error, Result};

#[derive(Debug)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_hash: String,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Feeds `Hash` output into sha256, so the key is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the full digest is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    pub(crate) fn new(dir: &Path, engine: &Engine) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|cause| Error::Cache {
            path: dir.to_owned(),
            cause,
        })?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_owned(),
            engine_hash,
        })
    }

    fn entry(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        source: &Path,
        bytes: &[u8],
        digest: &str,
    ) -> Result<Component> {
        let entry = self.entry(digest);
        if entry.exists() {
            match deserialize(engine, &entry) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %entry.display(), error = %e, "discarding unusable compile cache entry");
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| Error::NotAComponent {
                path: source.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let cache_err = |cause| Error::Cache {
            path: entry.clone(),
            cause,
        };
        // Write beside the final name, then rename: readers never see half a file.
        let tmp = tempfile_in(&self.dir).map_err(cache_err)?;
        std::fs::write(&tmp, &compiled).map_err(cache_err)?;
        std::fs::rename(&tmp, &entry).map_err(cache_err)?;
        tracing::debug!(path = %entry.display(), "compiled component");
        deserialize(engine, &entry).map_err(|e| Error::NotAComponent {
            path: source.to_owned(),
            reason: format!("{e:#}"),
        })
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    let unique = format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    Ok(dir.join(unique))
}

#[allow(unsafe_code, reason = "deserializing our own precompiled artifacts")]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `CompileCache::load_or_compile` from
    // `Engine::precompile_component` output, under a name that includes the
    // engine's compatibility hash, in a directory only Squall writes; it is
    // renamed into place whole and never modified afterwards.
    unsafe { Component::deserialize_file(engine, path) }
}
