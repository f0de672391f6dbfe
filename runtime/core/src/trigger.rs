//! Trigger types, trigger instances and rule enforcements (StackStorm's
//! `TriggerTypeDB`, `TriggerInstanceDB`, `RuleEnforcementDB`).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{ExecutionId, TenantId};

pub const WEBHOOK: &str = "core.st2.webhook";
pub const INTERVAL_TIMER: &str = "core.st2.IntervalTimer";
pub const DATE_TIMER: &str = "core.st2.DateTimer";
pub const CRON_TIMER: &str = "core.st2.CronTimer";
pub const ACTION_TRIGGER: &str = "core.st2.generic.actiontrigger";
pub const NOTIFY_TRIGGER: &str = "core.st2.generic.notifytrigger";
pub const INQUIRY_TRIGGER: &str = "core.st2.generic.inquiry";
pub const FILE_WATCH: &str = "core.file_watch";

/// A kind of event, with the schemas of its payload and parameters.
#[derive(Clone)]
pub struct TriggerType {
    pub trigger_ref: String,
    pub description: String,
    pub payload_schema: Value,
    pub parameters_schema: Value,
    payload: Arc<jsonschema::Validator>,
    parameters: Arc<jsonschema::Validator>,
}

impl fmt::Debug for TriggerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerType")
            .field("ref", &self.trigger_ref)
            .finish_non_exhaustive()
    }
}

impl TriggerType {
    pub fn new(
        trigger_ref: &str,
        description: &str,
        payload_schema: Value,
        parameters_schema: Value,
    ) -> Result<Self, String> {
        let compile = |what: &str, schema: &Value| {
            jsonschema::draft4::new(schema)
                .map(Arc::new)
                .map_err(|e| format!("trigger type '{trigger_ref}': invalid {what}: {e}"))
        };
        Ok(Self {
            trigger_ref: trigger_ref.to_owned(),
            description: description.to_owned(),
            payload: compile("payload_schema", &payload_schema)?,
            parameters: compile("parameters_schema", &parameters_schema)?,
            payload_schema,
            parameters_schema,
        })
    }

    /// `Err` names the offending field.
    pub fn validate_payload(&self, payload: &Value) -> Result<(), String> {
        first_error(&self.payload, payload, "payload")
    }

    pub fn validate_parameters(&self, parameters: &Value) -> Result<(), String> {
        first_error(&self.parameters, parameters, "trigger parameter")
    }
}

fn first_error(validator: &jsonschema::Validator, value: &Value, what: &str) -> Result<(), String> {
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(e) => {
            let path = e.instance_path().to_string();
            let field = path.trim_start_matches('/').replace('/', ".");
            Err(if field.is_empty() {
                format!("{what}: {e}")
            } else {
                format!("{what} field '{field}': {e}")
            })
        }
    }
}

/// The trigger types every server has.
pub fn builtin_trigger_types() -> Vec<TriggerType> {
    let timer_payload = json!({"type": "object", "properties": {"executed_at": {"type": "string"}, "schedule": {}}});
    let tz = json!({"type": "string"});
    let field = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
    let types = [
        (
            WEBHOOK,
            "Trigger type for registering webhooks that can consume arbitrary payload.",
            json!({"type": "object", "properties": {"headers": {"type": "object"}, "body": {"anyOf": [{"type": "object"}, {"type": "array"}]}}}),
            json!({"type": "object", "properties": {
                "url": {"type": "string"},
                "public": {"type": "boolean", "description": "Anyone may call this webhook, without an API key."},
                "hmac": {"type": "object", "description": "Callers without an API key may call it when the body is signed: HMAC-SHA256 of the raw body under the secret in the datastore key `secret_key`, hex in header `header` (optionally prefixed `sha256=`).",
                    "properties": {"header": {"type": "string", "minLength": 1}, "secret_key": {"type": "string", "minLength": 1}},
                    "required": ["header", "secret_key"], "additionalProperties": false}},
                "required": ["url"], "additionalProperties": false}),
        ),
        (
            INTERVAL_TIMER,
            "Triggers on specified intervals. e.g. every 30s, 1week etc.",
            timer_payload.clone(),
            json!({"type": "object", "properties": {
                "timezone": tz,
                "unit": {"enum": ["weeks", "days", "hours", "minutes", "seconds"]},
                "delta": {"type": "integer", "minimum": 1}},
                "required": ["unit", "delta"], "additionalProperties": false}),
        ),
        (
            DATE_TIMER,
            "Triggers exactly once when the current time matches the specified time.",
            timer_payload.clone(),
            json!({"type": "object", "properties": {"timezone": tz, "date": {"type": "string"}},
                "required": ["date"], "additionalProperties": false}),
        ),
        (
            CRON_TIMER,
            "Triggers whenever current time matches the specified time constaints like a UNIX cron scheduler.",
            timer_payload,
            json!({"type": "object", "properties": {
                "timezone": tz, "year": field, "month": field, "day": field, "week": field,
                "day_of_week": field, "hour": field, "minute": field, "second": field},
                "additionalProperties": false}),
        ),
        (
            ACTION_TRIGGER,
            "Trigger encapsulating the completion of an action execution.",
            json!({"type": "object", "properties": {
                "execution_id": {}, "status": {}, "start_timestamp": {}, "action_name": {},
                "action_ref": {}, "runner_ref": {}, "parameters": {}, "result": {}}}),
            json!({"type": "object"}),
        ),
        (
            FILE_WATCH,
            "A file under `path` was created, modified or deleted (inotify; `glob` matches file names; `recursive` watches subdirectories).",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "event": {"type": "string", "enum": ["created", "modified", "deleted"]},
                "time": {"type": "string"}},
                "required": ["path", "event", "time"]}),
            json!({"type": "object", "properties": {
                "path": {"type": "string", "minLength": 1},
                "glob": {"type": "string"},
                "recursive": {"type": "boolean"}},
                "required": ["path"], "additionalProperties": false}),
        ),
        (
            INQUIRY_TRIGGER,
            "Trigger indicating a new \"inquiry\" has entered \"pending\" status",
            json!({"type": "object", "properties": {
                "id": {"type": "string", "description": "ID of the new inquiry."},
                "route": {"type": "string", "description": "An arbitrary value for allowing rules to route to proper notification channel."}},
                "additionalProperties": false}),
            json!({"type": "object"}),
        ),
        (
            NOTIFY_TRIGGER,
            "Notification trigger: an action's notify block, sent when an execution ends.",
            json!({"type": "object", "properties": {
                "execution_id": {}, "status": {}, "start_timestamp": {}, "end_timestamp": {},
                "action_ref": {}, "runner_ref": {}, "channel": {}, "route": {}, "message": {},
                "data": {}, "context": {}}}),
            json!({"type": "object"}),
        ),
    ];
    types
        .into_iter()
        .map(|(r, d, p, s)| TriggerType::new(r, d, p, s).expect("built-in schemas compile"))
        .collect()
}

/// StackStorm's trigger instance statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerInstanceStatus {
    Pending,
    Processing,
    Processed,
    ProcessingFailed,
}

impl TriggerInstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::ProcessingFailed => "processing_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Processing,
            Self::Processed,
            Self::ProcessingFailed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One occurrence of a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerInstance {
    pub id: String,
    pub tenant: TenantId,
    pub trigger_type: String,
    pub trigger_parameters: Map<String, Value>,
    pub payload: Value,
    pub occurrence_time: String,
    pub status: TriggerInstanceStatus,
    pub trace_tag: String,
}

/// Whether a matched rule produced an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementStatus {
    Succeeded,
    Failed,
}

/// The record of a rule acting on a trigger instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleEnforcement {
    pub id: String,
    pub tenant: TenantId,
    pub rule_ref: String,
    pub trigger_instance_id: String,
    pub execution_id: Option<ExecutionId>,
    pub status: EnforcementStatus,
    pub failure_reason: Option<String>,
    pub enforced_at: String,
    pub trace_tag: String,
}

/// A fresh id for trigger instances and enforcements (UUIDv7, hex).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_payload_and_parameters_are_checked() {
        let types = builtin_trigger_types();
        let hook = types
            .iter()
            .find(|t| t.trigger_ref == WEBHOOK)
            .expect("webhook exists");
        assert!(
            hook.validate_payload(&json!({"headers": {}, "body": {"a": 1}}))
                .is_ok()
        );
        assert!(
            hook.validate_payload(&json!({"headers": {}, "body": [1]}))
                .is_ok()
        );
        let err = hook
            .validate_payload(&json!({"headers": {}, "body": "text"}))
            .expect_err("string body");
        assert!(err.starts_with("payload field 'body':"), "{err}");
        let err = hook
            .validate_parameters(&json!({}))
            .expect_err("url required");
        assert!(err.contains("url"), "{err}");
        let timer = types
            .iter()
            .find(|t| t.trigger_ref == INTERVAL_TIMER)
            .expect("timer exists");
        let err = timer
            .validate_parameters(&json!({"unit": "fortnights", "delta": 1}))
            .expect_err("bad unit");
        assert!(err.starts_with("trigger parameter field 'unit':"), "{err}");
    }
}
