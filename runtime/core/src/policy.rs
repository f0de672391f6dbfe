//! Action policies in StackStorm's format (`policies/*.yaml`):
//! `action.concurrency`, `action.concurrency.attr` and `action.retry`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::manifest::ManifestError;
use crate::{ActionRef, ExecutionStatus, PackRef};

pub const CONCURRENCY: &str = "action.concurrency";
pub const CONCURRENCY_ATTR: &str = "action.concurrency.attr";
pub const RETRY: &str = "action.retry";

/// The longest retry delay: 30 days, in seconds.
pub const MAX_RETRY_DELAY_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// What a concurrency policy does with an execution over its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Wait (`delayed`) until a slot frees.
    Delay,
    /// End it as `canceled`.
    Cancel,
}

/// Which endings an `action.retry` policy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    Failure,
    Timeout,
}

impl RetryOn {
    /// Whether an execution ending in `status` is retried. An execution
    /// abandoned by a server that stopped counts as a failure.
    pub fn covers(self, status: ExecutionStatus) -> bool {
        match self {
            Self::Failure => matches!(status, ExecutionStatus::Failed | ExecutionStatus::Abandoned),
            Self::Timeout => status == ExecutionStatus::Timeout,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyKind {
    /// At most `threshold` executions of the action scheduled or running at
    /// once; with `attributes`, per distinct values of those parameters.
    Concurrency {
        threshold: usize,
        action: OverLimit,
        attributes: Vec<String>,
    },
    /// Run the action again (a new execution) when it ends as `retry_on`
    /// says, up to `max_retry_count` times, after `delay`.
    Retry {
        retry_on: RetryOn,
        max_retry_count: u32,
        delay: Duration,
    },
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub pack: PackRef,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub resource_ref: ActionRef,
    pub kind: PolicyKind,
    /// The document as given, for the API.
    pub source: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    pack: Option<String>,
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    resource_ref: String,
    policy_type: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    // Fields the API echoes back.
    #[serde(default, rename = "ref")]
    _ref: Option<String>,
    #[serde(default, rename = "id")]
    _id: Option<String>,
    #[serde(default, rename = "uid")]
    _uid: Option<String>,
}

fn yes() -> bool {
    true
}

impl Policy {
    /// `<pack>.<name>`.
    pub fn policy_ref(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }

    pub fn policy_type(&self) -> &'static str {
        match &self.kind {
            PolicyKind::Concurrency { attributes, .. } if attributes.is_empty() => CONCURRENCY,
            PolicyKind::Concurrency { .. } => CONCURRENCY_ATTR,
            PolicyKind::Retry { .. } => RETRY,
        }
    }

    /// Parse a policy file (YAML or JSON).
    pub fn parse(text: &str, file: &Path, default_pack: &PackRef) -> Result<Self, ManifestError> {
        let source: Value = serde_yaml::from_str(text).map_err(|e| ManifestError {
            file: file.to_owned(),
            field: None,
            message: format!("invalid YAML: {e}"),
        })?;
        Self::from_value(source, file, default_pack)
    }

    /// [`Policy::parse`] for a decoded document (an API body).
    pub fn from_value(
        source: Value,
        file: &Path,
        default_pack: &PackRef,
    ) -> Result<Self, ManifestError> {
        let field = |field: &str, message: String| ManifestError {
            file: file.to_owned(),
            field: Some(field.to_owned()),
            message,
        };
        let raw: RawPolicy = serde_json::from_value(source.clone()).map_err(|e| ManifestError {
            file: file.to_owned(),
            field: None,
            message: format!("invalid policy: {e}"),
        })?;
        let pack = match &raw.pack {
            Some(p) => PackRef::new(p.clone()).map_err(|e| field("pack", e.to_string()))?,
            None => default_pack.clone(),
        };
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(field(
                "name",
                format!(
                    "'{}' is not a valid policy name (use letters, digits, '_', '-' or '.')",
                    raw.name
                ),
            ));
        }
        let resource_ref: ActionRef = raw.resource_ref.parse().map_err(|e| {
            field(
                "resource_ref",
                format!("'{}' is not an action ref: {e}", raw.resource_ref),
            )
        })?;
        let params = &raw.parameters;
        let kind = match raw.policy_type.as_str() {
            CONCURRENCY | CONCURRENCY_ATTR => {
                let threshold = match params.get("threshold") {
                    None => 10,
                    Some(v) => v
                        .as_u64()
                        .filter(|n| *n >= 1)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            field(
                                "parameters.threshold",
                                format!("{v} is not an integer >= 1"),
                            )
                        })?,
                };
                let action = match params.get("action").map(|v| v.as_str()) {
                    None | Some(Some("delay")) => OverLimit::Delay,
                    Some(Some("cancel")) => OverLimit::Cancel,
                    Some(_) => {
                        return Err(field(
                            "parameters.action",
                            format!(
                                "{} is not one of delay, cancel",
                                params.get("action").unwrap_or(&Value::Null)
                            ),
                        ));
                    }
                };
                let attributes = if raw.policy_type == CONCURRENCY_ATTR {
                    let list = params
                        .get("attributes")
                        .and_then(Value::as_array)
                        .filter(|a| !a.is_empty())
                        .ok_or_else(|| {
                            field(
                                "parameters.attributes",
                                "a non-empty list of parameter names is required".into(),
                            )
                        })?;
                    list.iter()
                        .map(|a| {
                            a.as_str().map(str::to_owned).ok_or_else(|| {
                                field(
                                    "parameters.attributes",
                                    format!("{a} is not a parameter name"),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?
                } else {
                    Vec::new()
                };
                let known: &[&str] = if attributes.is_empty() {
                    &["threshold", "action"]
                } else {
                    &["threshold", "action", "attributes"]
                };
                check_known(params, known, &field)?;
                PolicyKind::Concurrency {
                    threshold,
                    action,
                    attributes,
                }
            }
            RETRY => {
                let retry_on = match params.get("retry_on").and_then(Value::as_str) {
                    Some("failure") => RetryOn::Failure,
                    Some("timeout") => RetryOn::Timeout,
                    _ => {
                        return Err(field(
                            "parameters.retry_on",
                            format!(
                                "{} is not one of failure, timeout",
                                params.get("retry_on").unwrap_or(&Value::Null)
                            ),
                        ));
                    }
                };
                let max_retry_count = match params.get("max_retry_count") {
                    None => 2,
                    Some(v) => v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            field(
                                "parameters.max_retry_count",
                                format!("{v} is not an integer >= 0"),
                            )
                        })?,
                };
                let delay = match params.get("delay") {
                    None => Duration::ZERO,
                    Some(v) => v
                        .as_f64()
                        .filter(|s| (0.0..=MAX_RETRY_DELAY_SECS).contains(s))
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .ok_or_else(|| {
                            field(
                                "parameters.delay",
                                format!(
                                    "{v} is not a number of seconds from 0 to {MAX_RETRY_DELAY_SECS}"
                                ),
                            )
                        })?,
                };
                check_known(params, &["retry_on", "max_retry_count", "delay"], &field)?;
                PolicyKind::Retry {
                    retry_on,
                    max_retry_count,
                    delay,
                }
            }
            other => {
                return Err(field(
                    "policy_type",
                    format!(
                        "unknown policy type '{other}' (expected {CONCURRENCY}, {CONCURRENCY_ATTR} or {RETRY})"
                    ),
                ));
            }
        };
        Ok(Self {
            pack,
            name: raw.name,
            description: raw.description,
            enabled: raw.enabled,
            resource_ref,
            kind,
            source,
        })
    }

    /// The concurrency key of an execution with `parameters`, or `None` when
    /// this is not a concurrency policy. Executions sharing a key share the
    /// threshold.
    pub fn concurrency_key(&self, parameters: &Map<String, Value>) -> Option<String> {
        let PolicyKind::Concurrency { attributes, .. } = &self.kind else {
            return None;
        };
        let mut key = self.policy_ref();
        for attr in attributes {
            key.push('\0');
            key.push_str(&parameters.get(attr).unwrap_or(&Value::Null).to_string());
        }
        Some(key)
    }
}

fn check_known(
    params: &Map<String, Value>,
    known: &[&str],
    field: &impl Fn(&str, String) -> ManifestError,
) -> Result<(), ManifestError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(field(
            &format!("parameters.{k}"),
            format!("unknown parameter (expected one of: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// StackStorm's policy types, as `/api/v1/policytypes` lists them.
pub fn policy_types() -> Vec<Value> {
    let mut types = vec![
        json!({
            "resource_type": "action", "name": "concurrency", "ref": CONCURRENCY,
            "enabled": true, "module": "squall",
            "description": "Limits the number of executions of an action scheduled or running at once.",
            "parameters": {
                "threshold": {"type": "integer", "default": 10, "minimum": 1},
                "action": {"type": "string", "enum": ["delay", "cancel"], "default": "delay"},
            },
        }),
        json!({
            "resource_type": "action", "name": "concurrency.attr", "ref": CONCURRENCY_ATTR,
            "enabled": true, "module": "squall",
            "description": "Limits concurrent executions of an action per distinct values of some parameters.",
            "parameters": {
                "threshold": {"type": "integer", "default": 10, "minimum": 1},
                "action": {"type": "string", "enum": ["delay", "cancel"], "default": "delay"},
                "attributes": {"type": "array", "items": {"type": "string"}, "required": true},
            },
        }),
        json!({
            "resource_type": "action", "name": "retry", "ref": RETRY,
            "enabled": true, "module": "squall",
            "description": "Runs an action again when it fails or times out.",
            "parameters": {
                "retry_on": {"type": "string", "enum": ["failure", "timeout"], "required": true},
                "max_retry_count": {"type": "integer", "default": 2, "minimum": 0},
                "delay": {"type": "number", "default": 0, "minimum": 0, "description": "Seconds to wait before retrying."},
            },
        }),
    ];
    // StackStorm's ids are database ids; the ref identifies a type here.
    for t in &mut types {
        let (r, name) = (t["ref"].clone(), t["name"].clone());
        t["id"] = r;
        t["uid"] = format!("policy_type:action:{}", name.as_str().unwrap_or_default()).into();
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, ManifestError> {
        Policy::parse(
            text,
            Path::new("policies/p.yaml"),
            &PackRef::new("examples").expect("valid"),
        )
    }

    #[test]
    fn stackstorm_documents_parse() {
        let p = parse(
            "name: my_action.concurrency\ndescription: d\nenabled: true\nresource_ref: examples.my_action\npolicy_type: action.concurrency\nparameters:\n  action: cancel\n  threshold: 2\n",
        )
        .expect("valid");
        assert_eq!(p.policy_ref(), "examples.my_action.concurrency");
        assert_eq!(
            p.kind,
            PolicyKind::Concurrency {
                threshold: 2,
                action: OverLimit::Cancel,
                attributes: vec![]
            }
        );
        let p = parse("name: r\nresource_ref: examples.a\npolicy_type: action.retry\nparameters:\n  retry_on: timeout\n  max_retry_count: 3\n  delay: 0.5\n").expect("valid");
        assert_eq!(
            p.kind,
            PolicyKind::Retry {
                retry_on: RetryOn::Timeout,
                max_retry_count: 3,
                delay: Duration::from_millis(500)
            }
        );
        let p = parse("name: c\nresource_ref: examples.a\npolicy_type: action.concurrency.attr\nparameters:\n  threshold: 1\n  attributes: [host]\n").expect("valid");
        let a = p.concurrency_key(
            &json!({"host": "a", "x": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let b = p.concurrency_key(
            &json!({"host": "b", "x": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_ne!(a, b);
        assert_eq!(p.policy_type(), CONCURRENCY_ATTR);
    }

    #[test]
    fn bad_documents_name_the_field() {
        let cases = [
            (
                "name: c\nresource_ref: examples.a\npolicy_type: action.nope\n",
                "policy_type",
            ),
            (
                "name: c\nresource_ref: nodot\npolicy_type: action.retry\nparameters: {retry_on: failure}\n",
                "resource_ref",
            ),
            (
                "name: c\nresource_ref: examples.a\npolicy_type: action.retry\nparameters: {retry_on: sometimes}\n",
                "parameters.retry_on",
            ),
            (
                "name: c\nresource_ref: examples.a\npolicy_type: action.concurrency\nparameters: {threshold: 0}\n",
                "parameters.threshold",
            ),
            (
                "name: c\nresource_ref: examples.a\npolicy_type: action.concurrency\nparameters: {action: wait}\n",
                "parameters.action",
            ),
            (
                "name: c\nresource_ref: examples.a\npolicy_type: action.concurrency.attr\nparameters: {threshold: 1}\n",
                "parameters.attributes",
            ),
            (
                "name: c\nresource_ref: examples.a\npolicy_type: action.concurrency\nparameters: {treshold: 1}\n",
                "parameters.treshold",
            ),
            (
                "name: c\nresource_ref: examples.a\npolicy_type: action.retry\nparameters: {retry_on: failure, delay: -1}\n",
                "parameters.delay",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.field.as_deref(), Some(field), "{err}");
        }
        assert!(parse("name: [").is_err());
        assert!(
            parse("name: c\nresource_ref: a.b\npolicy_type: action.retry\nbogus: 1\n").is_err()
        );
    }

    #[test]
    fn retry_covers_what_it_says() {
        assert!(RetryOn::Failure.covers(ExecutionStatus::Failed));
        assert!(RetryOn::Failure.covers(ExecutionStatus::Abandoned));
        assert!(!RetryOn::Failure.covers(ExecutionStatus::Timeout));
        assert!(RetryOn::Timeout.covers(ExecutionStatus::Timeout));
        assert!(!RetryOn::Timeout.covers(ExecutionStatus::Succeeded));
    }
}
