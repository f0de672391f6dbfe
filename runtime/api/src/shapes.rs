//! Squall's records in StackStorm's JSON shapes.

use serde_json::{Value, json};
use squall_core::Execution;
use squall_core::rule::Rule;
use squall_core::trigger::{EnforcementStatus, RuleEnforcement, TriggerInstance, TriggerType};
use squall_store::Trace;

pub(crate) fn execution(e: &Execution) -> Value {
    let mut context = json!({"user": "squall"});
    for (k, v) in &e.context {
        context[k] = v.clone();
    }
    if let Some(ti) = &e.trigger_instance_id {
        context["trigger_instance"] = json!({"id": ti});
    }
    if let Some(rule) = &e.rule_ref {
        let name = rule.split_once('.').map(|(_, n)| n).unwrap_or(rule);
        context["rule"] = json!({"ref": rule, "name": name});
    }
    if let Some(tag) = &e.trace_tag {
        context["trace_context"] = json!({"trace_tag": tag});
    }
    // A workflow's own execution carries its workflow record's id.
    let runner = e.runner();
    let parent = e
        .context
        .get("parent")
        .and_then(|p| p.get("execution_id"))
        .cloned();
    let trigger_type = e.trigger_type.as_deref().map(|t| {
        let (pack, name) = t.split_once('.').unwrap_or(("", t));
        json!({"ref": t, "pack": pack, "name": name})
    });
    json!({
        "id": e.id.as_str(),
        "action": {
            "ref": e.action.to_string(),
            "name": e.action.name(),
            "pack": e.action.pack().as_str(),
            "runner_type": runner,
        },
        "runner": {"name": runner},
        "parent": parent,
        "trigger_type": trigger_type,
        "status": e.status.as_str(),
        "parameters": e.parameters,
        "result": e.result,
        "start_timestamp": e.start_timestamp,
        "end_timestamp": e.end_timestamp,
        "log": e.log,
        "context": context,
        "trace_tag": e.trace_tag,
        "delay": e.delay,
        "output": {
            "stdout": e.output.stdout,
            "stderr": e.output.stderr,
            "log": e.output.log,
            "truncated": e.output.truncated,
        },
    })
}

pub(crate) fn trigger_instance(ti: &TriggerInstance) -> Value {
    json!({
        "id": ti.id,
        "trigger": ti.trigger_type,
        "trigger_parameters": ti.trigger_parameters,
        "payload": ti.payload,
        "occurrence_time": ti.occurrence_time,
        "status": ti.status.as_str(),
        "trace_tag": ti.trace_tag,
    })
}

pub(crate) fn enforcement(re: &RuleEnforcement) -> Value {
    json!({
        "id": re.id,
        "rule": {"ref": re.rule_ref},
        "trigger_instance_id": re.trigger_instance_id,
        "execution_id": re.execution_id.as_ref().map(|id| id.as_str()),
        "status": match re.status { EnforcementStatus::Succeeded => "succeeded", EnforcementStatus::Failed => "failed" },
        "failure_reason": re.failure_reason,
        "enforced_at": re.enforced_at,
        "trace_tag": re.trace_tag,
    })
}

pub(crate) fn rule(r: &Rule) -> Value {
    let mut body = r.source.clone();
    if !body.is_object() {
        body = json!({});
    }
    body["ref"] = json!(r.rule_ref());
    body["id"] = json!(r.rule_ref());
    body["uid"] = json!(format!("rule:{}:{}", r.pack, r.name));
    body["pack"] = json!(r.pack.as_str());
    body["name"] = json!(r.name);
    body["enabled"] = json!(r.enabled);
    body["type"] = json!({"ref": r.kind.as_str(), "parameters": {}});
    if let Some(reason) = &r.disabled_reason {
        body["disabled_reason"] = json!(reason);
    }
    body
}

pub(crate) fn trigger_type(t: &TriggerType) -> Value {
    let (pack, name) = t
        .trigger_ref
        .split_once('.')
        .unwrap_or(("", &t.trigger_ref));
    json!({
        "id": t.trigger_ref,
        "ref": t.trigger_ref,
        "uid": format!("trigger_type:{pack}:{name}"),
        "pack": pack,
        "name": name,
        "description": t.description,
        "payload_schema": t.payload_schema,
        "parameters_schema": t.parameters_schema,
        "tags": [],
    })
}

pub(crate) fn trace(tag: &str, t: &Trace) -> Value {
    let start = t
        .trigger_instances
        .first()
        .map(|ti| ti.occurrence_time.clone())
        .or_else(|| t.executions.first().map(|e| e.start_timestamp.clone()));
    json!({
        "id": tag,
        "uid": format!("trace:{tag}"),
        "trace_tag": tag,
        "start_timestamp": start,
        "trigger_instances": t.trigger_instances.iter().map(|ti| json!({
            "object_id": ti.id, "ref": ti.trigger_type, "updated_at": ti.occurrence_time,
            "caused_by": {},
        })).collect::<Vec<_>>(),
        "rules": t.rule_enforcements.iter().map(|re| json!({
            "object_id": re.id, "ref": re.rule_ref, "updated_at": re.enforced_at,
            "caused_by": {"type": "trigger_instance", "id": re.trigger_instance_id},
            "execution_id": re.execution_id.as_ref().map(|id| id.as_str()),
        })).collect::<Vec<_>>(),
        "action_executions": t.executions.iter().map(|e| json!({
            "object_id": e.id.as_str(), "ref": e.action.to_string(), "updated_at": e.end_timestamp.clone().unwrap_or_else(|| e.start_timestamp.clone()),
            "status": e.status.as_str(),
            "caused_by": match (&e.rule_ref, &e.trigger_instance_id) {
                (Some(rule), Some(ti)) => json!({"type": "rule", "id": format!("{rule}:{ti}")}),
                _ => json!({}),
            },
        })).collect::<Vec<_>>(),
    })
}
