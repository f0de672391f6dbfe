//! The rules a server knows: from packs' `rules/` directories, changed
//! through the API (persisted as overrides), held in memory and indexed by
//! (tenant, trigger type) for matching. No database query per event.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use squall_core::manifest::ManifestError;
use squall_core::rule::{Rule, RuleKind};
use squall_core::template::Templates;
use squall_core::trigger::{TriggerType, builtin_trigger_types};
use squall_core::{PackRef, TenantId};

use crate::packs::{PackError, PackSet};

/// An immutable snapshot of every rule, with the matching index.
#[derive(Debug, Default)]
pub struct RuleIndex {
    /// Every rule (enabled or not) by tenant and ref.
    pub all: BTreeMap<(TenantId, String), Arc<Rule>>,
    /// Enabled rules by (tenant, trigger type).
    by_trigger: HashMap<(TenantId, String), Bucket>,
}

/// The enabled rules of one trigger type, each list standard rules first.
#[derive(Debug, Default)]
struct Bucket {
    /// Rules without trigger parameters: they see every instance.
    any: Vec<Arc<Rule>>,
    /// Rules by their trigger parameters (canonical JSON), e.g. one webhook URL.
    by_parameters: HashMap<String, Vec<Arc<Rule>>>,
}

fn standard_first(rules: &mut [Arc<Rule>]) {
    rules.sort_by_key(|r| (r.kind == RuleKind::Backstop, r.rule_ref()));
}

/// What an instance's parameters must equal for a rule to see it: all of
/// them, except for webhooks, where only `url` names the trigger (`public`
/// and `hmac` say who may call it).
fn match_key(
    trigger_type: &str,
    parameters: &serde_json::Map<String, serde_json::Value>,
) -> String {
    if trigger_type == squall_core::trigger::WEBHOOK {
        let url = parameters.get("url").cloned().unwrap_or_default();
        return serde_json::json!({ "url": url }).to_string();
    }
    serde_json::Value::Object(parameters.clone()).to_string()
}

impl RuleIndex {
    pub fn build(rules: impl IntoIterator<Item = (TenantId, Arc<Rule>)>) -> Self {
        let mut all = BTreeMap::new();
        let mut by_trigger: HashMap<(TenantId, String), Bucket> = HashMap::new();
        for (tenant, rule) in rules {
            if rule.enabled {
                let bucket = by_trigger
                    .entry((tenant.clone(), rule.trigger_type.clone()))
                    .or_default();
                if rule.trigger_parameters.is_empty() {
                    bucket.any.push(rule.clone());
                } else {
                    let key = match_key(&rule.trigger_type, &rule.trigger_parameters);
                    bucket
                        .by_parameters
                        .entry(key)
                        .or_default()
                        .push(rule.clone());
                }
            }
            all.insert((tenant, rule.rule_ref()), rule);
        }
        for bucket in by_trigger.values_mut() {
            standard_first(&mut bucket.any);
            bucket
                .by_parameters
                .values_mut()
                .for_each(|rules| standard_first(rules));
        }
        Self { all, by_trigger }
    }

    /// Enabled rules that see an instance of `trigger_type` with
    /// `parameters` in `tenant`: those without trigger parameters and those
    /// with exactly these. Standard rules first.
    pub fn candidates(
        &self,
        tenant: &TenantId,
        trigger_type: &str,
        parameters: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<&Arc<Rule>> {
        let Some(bucket) = self
            .by_trigger
            .get(&(tenant.clone(), trigger_type.to_owned()))
        else {
            return Vec::new();
        };
        let exact: &[Arc<Rule>] = if parameters.is_empty() || bucket.by_parameters.is_empty() {
            &[]
        } else {
            let key = match_key(trigger_type, parameters);
            bucket
                .by_parameters
                .get(&key)
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let mut out: Vec<&Arc<Rule>> = bucket.any.iter().chain(exact).collect();
        if !bucket.any.is_empty() && !exact.is_empty() {
            // Stable: each list is already standard-first.
            out.sort_by_key(|r| r.kind == RuleKind::Backstop);
        }
        out
    }

    /// Enabled rules of every tenant, for the timers and the webhook list.
    pub fn enabled(&self) -> impl Iterator<Item = (&TenantId, &Arc<Rule>)> {
        self.by_trigger.iter().flat_map(|((t, _), bucket)| {
            bucket
                .any
                .iter()
                .chain(bucket.by_parameters.values().flatten())
                .map(move |r| (t, r))
        })
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

/// Built-in trigger types plus those declared by packs' sensors.
pub fn trigger_types_of(packs: &PackSet) -> HashMap<String, TriggerType> {
    let mut types: HashMap<String, TriggerType> = builtin_trigger_types()
        .into_iter()
        .map(|t| (t.trigger_ref.clone(), t))
        .collect();
    for pack in packs.packs() {
        for tt in &pack.trigger_types {
            types.insert(tt.trigger_ref.clone(), tt.clone());
        }
    }
    types
}

/// What a rule needs beyond its own syntax: an action that exists, a known
/// trigger type, trigger parameters that fit it, and for timers a schedule.
pub fn check_rule(
    types: &HashMap<String, TriggerType>,
    packs: &PackSet,
    allowed_dirs: &[std::path::PathBuf],
    rule: &Rule,
) -> Result<(), String> {
    packs.action(&rule.action).map_err(|e| e.to_string())?;
    let tt = types
        .get(&rule.trigger_type)
        .ok_or_else(|| format!("unknown trigger type '{}'", rule.trigger_type))?;
    tt.validate_parameters(&serde_json::Value::Object(rule.trigger_parameters.clone()))?;
    if rule.trigger_type == squall_core::trigger::FILE_WATCH {
        crate::file_watch::watch_of(&rule.trigger_parameters, allowed_dirs)?;
    }
    if crate::timers::is_timer(&rule.trigger_type) {
        crate::timers::schedule(&rule.trigger_type, &rule.trigger_parameters)
            .map_err(|e| format!("trigger.parameters: {e}"))?;
    }
    Ok(())
}

/// One pack's `rules/*.yaml`, each with its file: parsed, of this pack,
/// naming an action that exists in `packs`. The error names the file.
pub fn pack_rules(
    pack: &crate::packs::LoadedPack,
    packs: &PackSet,
    templates: &Templates,
) -> Result<Vec<(std::path::PathBuf, Rule)>, PackError> {
    let mut out = Vec::new();
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
        if let Err(e) = packs.action(&rule.action) {
            return Err(PackError::Manifest(ManifestError {
                file,
                field: Some("action.ref".into()),
                message: e.to_string(),
            }));
        }
        out.push((file, rule));
    }
    Ok(out)
}

/// `tenant`'s rules: every pack's `rules/*.yaml`, then the API's changes
/// (a stored document replaces the pack's, a deletion removes it).
/// A pack rule that fails `check` (see [`check_rule`]) is an error naming
/// its file; a rule from the API that no longer passes (its action's pack
/// was removed) is kept, disabled, with the reason.
pub fn load_rules(
    tenant: &TenantId,
    packs: &PackSet,
    changes: &[(TenantId, String, Option<String>)],
    templates: &Templates,
    check: impl Fn(&Rule) -> Result<(), String>,
) -> Result<Vec<Arc<Rule>>, PackError> {
    let mut rules: BTreeMap<String, Arc<Rule>> = BTreeMap::new();
    for pack in packs.packs() {
        for (file, rule) in pack_rules(pack, packs, templates)? {
            check(&rule).map_err(|message| {
                PackError::Manifest(ManifestError {
                    file,
                    field: None,
                    message,
                })
            })?;
            rules.insert(rule.rule_ref(), Arc::new(rule));
        }
    }
    for (_, rule_ref, body) in changes.iter().filter(|(t, _, _)| t == tenant) {
        match body {
            None => {
                rules.remove(rule_ref);
            }
            Some(body) => {
                let origin = format!("<api rule {rule_ref}>");
                let default_pack = PackRef::new("default").expect("valid ref");
                let rule = match Rule::parse(body, Path::new(&origin), &default_pack, templates) {
                    Ok(rule) => rule,
                    Err(e) => {
                        tracing::error!(%tenant, rule = %rule_ref, error = %e, "stored rule no longer parses; skipped");
                        continue;
                    }
                };
                let rule = match check(&rule) {
                    Ok(()) => rule,
                    Err(reason) if rule.enabled => rule.disabled_because(reason),
                    Err(_) => rule,
                };
                rules.insert(rule_ref.clone(), Arc::new(rule));
            }
        }
    }
    Ok(rules.into_values().collect())
}
