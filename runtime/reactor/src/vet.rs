//! Checking packs as a whole before a server starts on them: directory
//! grants, sensor components against the `sensor` world, rules against the
//! trigger types and actions of the packs accepted, policies against their
//! actions. A pack that fails is refused — all of it — and the others are
//! checked again without it, until what remains holds together.

use std::path::PathBuf;

use squall_core::template::Templates;
use squall_sandbox::Sandbox;

use crate::packs::{PackError, PackSet, Refusal};
use crate::policies::check_policy;
use crate::rules::{check_rule, pack_rules, trigger_types_of};

/// Refuse the packs of `packs` that do not hold together; return the rest.
pub fn vet_packs(
    mut packs: PackSet,
    sandbox: &Sandbox,
    allowed: &[PathBuf],
    templates: &Templates,
) -> (PackSet, Vec<Refusal>) {
    let mut refused = Vec::new();
    loop {
        let types = trigger_types_of(&packs);
        let mut failing = Vec::new();
        for pack in packs.packs() {
            if let Err(error) = check_pack(pack, &packs, &types, sandbox, allowed, templates) {
                failing.push((pack.manifest.pack_ref.clone(), pack.dir.clone(), error));
            }
        }
        if failing.is_empty() {
            return (packs, refused);
        }
        for (pack_ref, dir, error) in failing {
            packs.remove(&pack_ref);
            refused.push(Refusal { dir, error });
        }
    }
}

fn check_pack(
    pack: &crate::packs::LoadedPack,
    packs: &PackSet,
    types: &std::collections::HashMap<String, squall_core::trigger::TriggerType>,
    sandbox: &Sandbox,
    allowed: &[PathBuf],
    templates: &Templates,
) -> Result<(), PackError> {
    pack.preopens(allowed)?;
    pack.check_workflows(packs)?;
    for (file, sensor) in &pack.sensors {
        let path = pack.sensor_component_path(sensor)?;
        sandbox
            .load_sensor(&path)
            .map_err(|cause| PackError::SensorComponent {
                file: file.clone(),
                cause,
            })?;
    }
    for (file, rule) in pack_rules(pack, packs, templates)? {
        check_rule(types, packs, allowed, &rule).map_err(|message| {
            PackError::Manifest(squall_core::manifest::ManifestError {
                file,
                field: None,
                message,
            })
        })?;
    }
    for (file, policy) in &pack.policies {
        check_policy(packs, policy).map_err(|message| {
            PackError::Manifest(squall_core::manifest::ManifestError {
                file: file.clone(),
                field: Some("resource_ref".into()),
                message,
            })
        })?;
    }
    Ok(())
}
