//! The policies a server knows: from packs' `policies/` directories and
//! changed through the API (persisted as overrides, like rules), indexed by
//! (tenant, action) so scheduling looks them up without a query.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use squall_core::manifest::ManifestError;
use squall_core::policy::{Policy, PolicyKind};
use squall_core::{ActionRef, PackRef, TenantId};

use crate::packs::{PackError, PackSet};

/// An immutable snapshot of every policy.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    /// Every policy (enabled or not) by tenant and ref.
    pub all: BTreeMap<(TenantId, String), Arc<Policy>>,
    by_action: HashMap<(TenantId, ActionRef), Vec<Arc<Policy>>>,
}

impl PolicyIndex {
    pub fn build(policies: impl IntoIterator<Item = ((TenantId, String), Arc<Policy>)>) -> Self {
        let all: BTreeMap<_, _> = policies.into_iter().collect();
        let mut by_action: HashMap<(TenantId, ActionRef), Vec<Arc<Policy>>> = HashMap::new();
        for ((tenant, _), policy) in &all {
            if policy.enabled {
                by_action
                    .entry((tenant.clone(), policy.resource_ref.clone()))
                    .or_default()
                    .push(policy.clone());
            }
        }
        Self { all, by_action }
    }

    /// Enabled policies on `action`, in ref order.
    pub fn of(&self, tenant: &TenantId, action: &ActionRef) -> &[Arc<Policy>] {
        self.by_action
            .get(&(tenant.clone(), action.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The enabled retry policy on `action`, if any (the first by ref).
    pub fn retry(&self, tenant: &TenantId, action: &ActionRef) -> Option<&Arc<Policy>> {
        self.of(tenant, action)
            .iter()
            .find(|p| matches!(p.kind, PolicyKind::Retry { .. }))
    }
}

/// The live index, replaced whole on every change.
#[derive(Debug, Default)]
pub struct PolicyRegistry {
    current: RwLock<Arc<PolicyIndex>>,
}

impl PolicyRegistry {
    pub fn snapshot(&self) -> Arc<PolicyIndex> {
        self.current
            .read()
            .expect("policy index lock poisoned")
            .clone()
    }

    pub fn replace(&self, index: PolicyIndex) {
        *self.current.write().expect("policy index lock poisoned") = Arc::new(index);
    }
}

/// A policy must name an action that exists.
pub fn check_policy(packs: &PackSet, policy: &Policy) -> Result<(), String> {
    packs
        .action(&policy.resource_ref)
        .map(|_| ())
        .map_err(|e| format!("resource_ref: {e}"))
}

/// `tenant`'s policies: every pack's `policies/*.yaml`, then the API's
/// changes. A policy from the API whose action is gone is dropped, with a
/// log line.
pub fn load_policies(
    tenant: &TenantId,
    packs: &PackSet,
    changes: &[(TenantId, String, Option<String>)],
) -> Result<BTreeMap<(TenantId, String), Arc<Policy>>, PackError> {
    let invalid = |file: &Path, field: &str, message: String| {
        PackError::Manifest(ManifestError {
            file: file.to_owned(),
            field: Some(field.to_owned()),
            message,
        })
    };
    let mut all: BTreeMap<(TenantId, String), Arc<Policy>> = BTreeMap::new();
    for pack in packs.packs() {
        for (file, policy) in &pack.policies {
            if policy.pack != pack.manifest.pack_ref {
                return Err(invalid(
                    file,
                    "pack",
                    format!(
                        "'{}' does not match the pack's ref '{}'",
                        policy.pack, pack.manifest.pack_ref
                    ),
                ));
            }
            check_policy(packs, policy).map_err(|m| invalid(file, "resource_ref", m))?;
            all.insert(
                (tenant.clone(), policy.policy_ref()),
                Arc::new(policy.clone()),
            );
        }
    }
    for (_, policy_ref, body) in changes.iter().filter(|(t, _, _)| t == tenant) {
        let key = (tenant.clone(), policy_ref.clone());
        match body {
            None => {
                all.remove(&key);
            }
            Some(body) => {
                let origin = format!("<api policy {policy_ref}>");
                let default_pack = PackRef::new("default").expect("valid ref");
                let checked = Policy::parse(body, Path::new(&origin), &default_pack)
                    .map_err(|e| e.to_string())
                    .and_then(|p| check_policy(packs, &p).map(|()| p));
                match checked {
                    Ok(policy) => {
                        all.insert(key, Arc::new(policy));
                    }
                    Err(e) => {
                        tracing::warn!(%tenant, policy = %policy_ref, error = %e, "stored policy no longer applies; not loaded");
                    }
                }
            }
        }
    }
    Ok(all)
}
