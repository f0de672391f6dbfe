//! The rules a server knows: from packs' `rules/` directories, changed
//! through the API (persisted as overrides), held in memory and indexed by
//! (tenant, trigger type) for matching. No database query per event.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use squall_core::manifest::ManifestError;
use squall_core::rule::{Rule, RuleKind};
use squall_core::template::Templates;
use squall_core::{PackRef, TenantId};

use crate::packs::{PackError, PackSet};

/// An immutable snapshot of every rule, with the matching index.
#[derive(Debug, Default)]
pub struct RuleIndex {
    /// Every rule (enabled or not) by tenant and ref.
    pub all: BTreeMap<(TenantId, String), Arc<Rule>>,
    /// Enabled rules by (tenant, trigger type): standard ones first.
    by_trigger: HashMap<(TenantId, String), Vec<Arc<Rule>>>,
}

impl RuleIndex {
    pub fn build(rules: impl IntoIterator<Item = (TenantId, Arc<Rule>)>) -> Self {
        let mut all = BTreeMap::new();
        let mut by_trigger: HashMap<(TenantId, String), Vec<Arc<Rule>>> = HashMap::new();
        for (tenant, rule) in rules {
            if rule.enabled {
                by_trigger
                    .entry((tenant.clone(), rule.trigger_type.clone()))
                    .or_default()
                    .push(rule.clone());
            }
            all.insert((tenant, rule.rule_ref()), rule);
        }
        for rules in by_trigger.values_mut() {
            rules.sort_by_key(|r| (r.kind == RuleKind::Backstop, r.rule_ref()));
        }
        Self { all, by_trigger }
    }

    /// Enabled rules listening to `trigger_type` in `tenant`, standard first.
    pub fn for_trigger(&self, tenant: &TenantId, trigger_type: &str) -> &[Arc<Rule>] {
        self.by_trigger
            .get(&(tenant.clone(), trigger_type.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Enabled rules of every tenant, for the timers.
    pub fn enabled(&self) -> impl Iterator<Item = (&TenantId, &Arc<Rule>)> {
        self.by_trigger
            .iter()
            .flat_map(|((t, _), rules)| rules.iter().map(move |r| (t, r)))
    }
}

/// The live rule set: a snapshot readers clone cheaply, replaced on change.
#[derive(Debug, Default)]
pub struct RuleRegistry {
    current: RwLock<Arc<RuleIndex>>,
}

impl RuleRegistry {
    pub fn snapshot(&self) -> Arc<RuleIndex> {
        self.current
            .read()
            .expect("rule index lock poisoned")
            .clone()
    }

    pub fn replace(&self, index: RuleIndex) {
        *self.current.write().expect("rule index lock poisoned") = Arc::new(index);
    }
}

/// Read every pack's `rules/*.yaml` (default tenant), then apply the API's
/// changes: a stored document replaces the pack's, a deletion removes it.
pub fn load_rules(
    packs: &PackSet,
    changes: &[(TenantId, String, Option<String>)],
    templates: &Templates,
) -> Result<Vec<(TenantId, Arc<Rule>)>, PackError> {
    let mut rules: BTreeMap<(TenantId, String), Arc<Rule>> = BTreeMap::new();
    let tenant = TenantId::default_tenant();
    for pack in packs.packs() {
        for file in crate::packs::yaml_files(&pack.dir.join("rules"))? {
            let text = std::fs::read_to_string(&file).map_err(|cause| PackError::Io {
                path: file.clone(),
                cause,
            })?;
            let rule = Rule::parse(&text, &file, &pack.manifest.pack_ref, templates)?;
            if rule.pack != pack.manifest.pack_ref {
                return Err(PackError::Manifest(ManifestError {
                    file,
                    field: Some("pack".into()),
                    message: format!(
                        "'{}' does not match the pack's ref '{}'",
                        rule.pack, pack.manifest.pack_ref
                    ),
                }));
            }
            packs.action(&rule.action)?;
            rules.insert((tenant.clone(), rule.rule_ref()), Arc::new(rule));
        }
    }
    for (tenant, rule_ref, body) in changes {
        let key = (tenant.clone(), rule_ref.clone());
        match body {
            None => {
                rules.remove(&key);
            }
            Some(body) => {
                let origin = format!("<api rule {rule_ref}>");
                let default_pack = PackRef::new("default").expect("valid ref");
                let rule = Rule::parse(body, Path::new(&origin), &default_pack, templates)?;
                rules.insert(key, Arc::new(rule));
            }
        }
    }
    Ok(rules.into_iter().map(|((t, _), r)| (t, r)).collect())
}
