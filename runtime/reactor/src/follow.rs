//! Changes made through other nodes reach this one. On PostgreSQL every
//! change to what nodes hold in memory for a tenant (its rules, policies,
//! sensor switches, packs and their configs) bumps the tenant's epoch in
//! the changing transaction and sends a `NOTIFY` (`squall_store::pg`'s
//! `changes`). A node follows: woken by the notification, or by reading
//! the epochs every second should a notification be lost, it brings each
//! tenant whose epoch moved in line with the database
//! ([`Reactor::resync_tenant`]); after its listening connection
//! reconnects, it brings every tenant in line. The same listener hears the
//! requests other nodes address to this one (`claims.rs`), and the slots
//! of concurrency gates freed anywhere, for the executions waiting here at
//! those gates (`lifecycle.rs`), which also try again at every poll.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use squall_core::{PackRef, TenantId};
use squall_store::pg::{Heard, PgStore};

use crate::dispatch::Reactor;
use crate::dispatch::RuleChangeError;
use crate::install::InstallError;
use crate::packs::{LoadedPack, PackSet};

/// How often the epochs are read when no notification comes.
const POLL: Duration = Duration::from_secs(1);

/// How many polls pass before a node that could not listen tries again.
const LISTEN_AGAIN: u32 = 30;

impl Reactor {
    /// Bring `tenant` in line with the database: the packs installed,
    /// replaced or removed through another node, the configs set there
    /// (only packs whose config changed are read again), then its rules,
    /// policies and sensor switches. Packs that did not change keep
    /// running as they are; those that changed restart their sensors. A
    /// pack that cannot be read or checked here keeps its version in force,
    /// and is said. Returns the packs that changed.
    pub async fn resync_tenant(&self, tenant: &TenantId) -> Result<Vec<PackRef>, InstallError> {
        let store_error = |e| InstallError::Activation(RuleChangeError::Store(e));
        let _serial = self.inner.installs.lock().await;
        let pack_store = self.inner.config.pack_store.clone();
        if let (Some(packs), Some(pg)) = (&pack_store, self.inner.store.postgres()) {
            packs.sync_with_database(pg).await?;
        }
        let configs = self.inner.store.pack_configs(tenant).map_err(store_error)?;
        let current = self.runner().packs(tenant);
        let tenant_owned = tenant.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_changes(&tenant_owned, &current, pack_store.as_ref(), &configs)
        })
        .await
        .map_err(|e| InstallError::Archive(format!("resync task failed: {e}")))?;
        let Changes {
            mut set,
            mut changed,
            fresh,
            previous,
        } = read;
        for pack in fresh {
            let pack_ref = pack.manifest.pack_ref.clone();
            let checked = match self.check_components(&pack).await {
                Ok(()) => pack.check_workflows(&set).map_err(InstallError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = checked {
                tracing::error!(%tenant, pack = %pack_ref, error = %e, "a pack changed through another node fails its checks here; the version in force stays");
                set.remove(&pack_ref);
                if let Some(old) = previous.get(&pack_ref) {
                    set.put(old.clone());
                }
                changed.retain(|p| p != &pack_ref);
            }
        }
        self.activate_packs(tenant, Arc::new(set), &changed).await?;
        self.apply_sensor_switches(tenant).map_err(store_error)?;
        Ok(changed)
    }

    /// Follow changes made through other nodes for as long as this reactor
    /// runs: on PostgreSQL (a SQLite file has one server).
    pub fn follow_changes(&self) {
        let Some(pg) = self.inner.store.postgres().cloned() else {
            return;
        };
        let reactor = self.clone();
        self.spawn(async move { reactor.follow(pg).await });
    }

    async fn follow(&self, pg: PgStore) {
        let mut known: HashMap<TenantId, i64> = HashMap::new();
        loop {
            let mut changes = match pg.listen_changes().await {
                Ok(rx) => Some(rx),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for changes made through other nodes; reading the epochs every second");
                    None
                }
            };
            // Anything may have changed, or been asked, while this node
            // was not listening.
            self.resync_moved(&pg, &mut known, true).await;
            let (reactor, requests) = (self.clone(), pg.clone());
            tokio::spawn(async move { reactor.serve_requests(&requests).await });
            // A steady stream of notifications never postpones the polls.
            let mut poll = tokio::time::interval(POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll.tick().await;
            let mut polls = 0u32;
            loop {
                // What woke this round: tenants' changes, requests to this
                // node, or neither (a poll, which looks for both).
                let (mut changed, mut asked) = (false, false);
                match &mut changes {
                    Some(rx) => tokio::select! {
                        heard = rx.recv() => {
                            let Some(first) = heard else {
                                // The connection ended: listen anew.
                                break;
                            };
                            // One round for a burst.
                            let mut burst = vec![first];
                            while let Ok(more) = rx.try_recv() {
                                burst.push(more);
                            }
                            let mut freed: Vec<TenantId> = Vec::new();
                            for heard in burst {
                                match heard {
                                    Heard::Tenant(_) => changed = true,
                                    Heard::Requests { node } => asked |= self.is_node(&node),
                                    Heard::Gates(tenant) if !freed.contains(&tenant) => {
                                        freed.push(tenant);
                                    }
                                    Heard::Gates(_) => {}
                                }
                            }
                            for tenant in &freed {
                                self.wake_shared_gates(Some(tenant));
                            }
                        }
                        _ = poll.tick() => (changed, asked) = (true, true),
                    },
                    None => {
                        poll.tick().await;
                        (changed, asked) = (true, true);
                    }
                }
                if changed && asked {
                    // A poll: slots freed anywhere, heard of or not.
                    self.wake_shared_gates(None);
                }
                if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                if changed && asked {
                    polls += 1;
                }
                if changes.is_none() && polls >= LISTEN_AGAIN {
                    break;
                }
                if asked {
                    // In a task of its own: a resync must not hold a
                    // request up, nor a request the resync.
                    let (reactor, pg) = (self.clone(), pg.clone());
                    tokio::spawn(async move { reactor.serve_requests(&pg).await });
                }
                if changed {
                    self.resync_moved(&pg, &mut known, false).await;
                }
            }
        }
    }

    /// Resync each tenant whose epoch is not the one last seen (`all`:
    /// every tenant).
    async fn resync_moved(&self, pg: &PgStore, known: &mut HashMap<TenantId, i64>, all: bool) {
        let epochs = match pg.epochs().await {
            Ok(epochs) => epochs,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the tenants' change epochs");
                return;
            }
        };
        for (tenant, epoch) in epochs {
            if !all && known.get(&tenant) == Some(&epoch) {
                continue;
            }
            match self.resync_tenant(&tenant).await {
                Ok(changed) => {
                    known.insert(tenant.clone(), epoch);
                    if changed.is_empty() {
                        tracing::debug!(%tenant, epoch, "changes from other nodes applied")
                    } else {
                        tracing::info!(%tenant, epoch, packs = ?changed, "packs changed through other nodes are in force")
                    }
                }
                // Tried again at the next poll; said once per epoch, which
                // is kept negated (epochs start at 1) until it applies.
                Err(e) => {
                    let failed = -epoch;
                    if known.insert(tenant.clone(), failed) != Some(failed) {
                        tracing::error!(%tenant, epoch, error = %e, "changes made through other nodes could not be applied; trying again every second")
                    }
                }
            }
        }
    }
}

/// A tenant's packs as the database holds them, read.
struct Changes {
    set: PackSet,
    changed: Vec<PackRef>,
    /// The packs read anew, to be checked before they are put in force.
    fresh: Vec<Arc<LoadedPack>>,
    /// What each changed pack replaces, if it replaces one.
    previous: HashMap<PackRef, Arc<LoadedPack>>,
}

/// `current` (a tenant's packs in force here) brought in line with the pack
/// store (its versions, as synced with the database) and the configs stored.
fn read_changes(
    tenant: &TenantId,
    current: &PackSet,
    pack_store: Option<&crate::install::PackStore>,
    configs: &squall_store::StoredConfigs,
) -> Changes {
    let versions = pack_store.map(|p| p.current_versions()).unwrap_or_default();
    let stored = |pack: &PackRef| configs.readable.iter().find(|c| c.pack == pack.as_str());
    let config_text = |pack: &PackRef| {
        stored(pack).map(|c| serde_json::Value::Object(c.values.clone()).to_string())
    };
    let mut out = Changes {
        set: PackSet::default(),
        changed: Vec::new(),
        fresh: Vec::new(),
        previous: HashMap::new(),
    };
    let read = |out: &mut Changes,
                pack_ref: PackRef,
                dir: std::path::PathBuf,
                installed: Option<String>,
                old: Option<&Arc<LoadedPack>>| {
        let loaded = LoadedPack::load(&dir).and_then(|mut pack| {
            pack.installed = installed;
            match stored(&pack_ref) {
                Some(config) => pack.with_stored_config(&config.values),
                None => Ok(pack),
            }
        });
        match loaded {
            Ok(pack) => {
                let pack = Arc::new(pack);
                out.set.put(pack.clone());
                out.fresh.push(pack);
                if let Some(old) = old {
                    out.previous.insert(pack_ref.clone(), old.clone());
                }
                out.changed.push(pack_ref);
            }
            Err(e) => {
                tracing::error!(%tenant, pack = %pack_ref, error = %e, "a pack changed through another node cannot be read here; the version in force stays");
                if let Some(old) = old {
                    out.set.put(old.clone());
                }
            }
        }
    };
    for pack in current.shared() {
        let pack_ref = pack.manifest.pack_ref.clone();
        let key = (tenant.clone(), pack_ref.as_str().to_owned());
        let replaced_by = match (&pack.installed, pack_store) {
            (Some(version), Some(store)) => match versions.get(&key) {
                // Removed through another node.
                None => {
                    out.changed.push(pack_ref);
                    continue;
                }
                Some(now) if now != version => {
                    Some((now.clone(), store.pack_dir(tenant, &pack_ref).join(now)))
                }
                Some(_) => None,
            },
            _ => None,
        };
        let config_changed = config_text(&pack_ref).as_deref() != pack.stored_config.as_deref();
        match replaced_by {
            Some((version, dir)) => read(&mut out, pack_ref, dir, Some(version), Some(pack)),
            None if config_changed => {
                let (dir, installed) = (pack.dir.clone(), pack.installed.clone());
                read(&mut out, pack_ref, dir, installed, Some(pack));
            }
            None => out.set.put(pack.clone()),
        }
    }
    // Installed through another node, new here.
    if let Some(store) = pack_store {
        for ((t, pack), version) in &versions {
            let Ok(pack_ref) = PackRef::new(pack.clone()) else {
                continue;
            };
            if t != tenant || current.get(&pack_ref).is_some() {
                continue;
            }
            let dir = store.pack_dir(tenant, &pack_ref).join(version);
            read(&mut out, pack_ref, dir, Some(version.clone()), None);
        }
    }
    out
}
