//! Rules in StackStorm's YAML: parsing into a validated [`Rule`] and
//! evaluating one against a trigger instance's payload.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::manifest::ManifestError;
use crate::operators::{Operator, SearchCondition, lookup};
use crate::template::{RenderContext, TemplateError, Templates};
use crate::{ActionRef, PackRef};

/// Standard rules are evaluated first; backstop rules only when no standard
/// rule matched the same trigger instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Standard,
    Backstop,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Backstop => "backstop",
        }
    }
}

/// One entry of `criteria`.
#[derive(Debug, Clone)]
pub struct Criterion {
    /// The key as written, e.g. `trigger.body.level#2`.
    pub key: String,
    /// The path inside the payload, e.g. `body.level`.
    pub path: String,
    pub operator: Operator,
    pub pattern: Value,
    pub condition: Option<SearchCondition>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pack: PackRef,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub kind: RuleKind,
    pub trigger_type: String,
    pub trigger_parameters: Map<String, Value>,
    pub criteria: Vec<Criterion>,
    pub action: ActionRef,
    pub action_parameters: Map<String, Value>,
    /// The document as given (JSON), for the API.
    pub source: Value,
    /// At most one enforcement per key per window (Squall's addition).
    pub throttle: Option<Throttle>,
    /// Why Squall disabled the rule (e.g. its action's pack was removed);
    /// shown by the API. `None` for rules enabled or disabled by their
    /// document.
    pub disabled_reason: Option<String>,
    /// `{ref, name, pack}`: what templates see as `rule`.
    view: Value,
}

/// A rule's `throttle`: after an enforcement, matches with the same key are
/// suppressed — recorded as enforcements with the reason — until `window`
/// has passed (Automaton Engine's `backoff_seconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    pub window: std::time::Duration,
    /// A template over the trigger (e.g. `{{ trigger.host }}`); one window
    /// per distinct rendering. `None`: one window for the rule.
    pub key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    seconds: f64,
    key: Option<String>,
}

#[derive(Deserialize)]
struct RawRule {
    name: String,
    pack: Option<String>,
    description: Option<String>,
    #[serde(default)]
    enabled: bool,
    #[serde(rename = "type")]
    kind: Option<RawKind>,
    trigger: RawTrigger,
    #[serde(default)]
    criteria: Map<String, Value>,
    action: RawAction,
    throttle: Option<RawThrottle>,
}

#[derive(Deserialize)]
struct RawKind {
    #[serde(rename = "ref")]
    kind_ref: String,
}

#[derive(Deserialize)]
struct RawTrigger {
    #[serde(rename = "type")]
    trigger_type: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(rename = "ref")]
    action_ref: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// The outcome of evaluating a rule's criteria.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    Matched,
    /// The first criterion that did not hold.
    NotMatched {
        key: String,
    },
}

/// Evaluating a rule failed (a bad pattern, a template that did not render).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("criterion '{key}': {message}")]
pub struct EvaluationError {
    pub key: String,
    pub message: String,
}

impl Rule {
    /// This rule, disabled by Squall for `reason`.
    pub fn disabled_because(&self, reason: String) -> Self {
        Self {
            enabled: false,
            disabled_reason: Some(reason),
            ..self.clone()
        }
    }

    /// Parse a rule from YAML (or JSON). `default_pack` is used when the
    /// document has no `pack` (StackStorm's default is `default`).
    pub fn parse(
        text: &str,
        file: &Path,
        default_pack: &PackRef,
        templates: &Templates,
    ) -> Result<Self, ManifestError> {
        let source: Value = serde_yaml::from_str(text).map_err(|e| ManifestError {
            file: file.to_owned(),
            field: None,
            message: format!("invalid YAML: {e}"),
        })?;
        Self::from_value(source, file, default_pack, templates)
    }

    /// [`Rule::parse`] for a document already decoded (an API body).
    pub fn from_value(
        source: Value,
        file: &Path,
        default_pack: &PackRef,
        templates: &Templates,
    ) -> Result<Self, ManifestError> {
        let field = |field: &str, message: String| ManifestError {
            file: file.to_owned(),
            field: Some(field.to_owned()),
            message,
        };
        let raw: RawRule = serde_json::from_value(source.clone()).map_err(|e| ManifestError {
            file: file.to_owned(),
            field: None,
            message: format!("invalid rule: {e}"),
        })?;
        let pack = match &raw.pack {
            Some(p) => PackRef::new(p.clone()).map_err(|e| field("pack", e.to_string()))?,
            None => default_pack.clone(),
        };
        if pack != *default_pack && raw.pack.is_some() && default_pack.as_str() != "default" {
            return Err(field(
                "pack",
                format!("'{pack}' does not match the pack's ref '{default_pack}'"),
            ));
        }
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(field(
                "name",
                format!(
                    "'{}' is not a valid rule name (use letters, digits, '_' or '-')",
                    raw.name
                ),
            ));
        }
        let kind = match raw.kind.as_ref().map(|k| k.kind_ref.as_str()) {
            None | Some("standard") => RuleKind::Standard,
            Some("backstop") => RuleKind::Backstop,
            Some(other) => {
                return Err(field(
                    "type.ref",
                    format!("unknown rule type '{other}' (expected standard or backstop)"),
                ));
            }
        };
        if !raw.trigger.trigger_type.contains('.') {
            return Err(field(
                "trigger.type",
                format!(
                    "'{}' is not a trigger type ref (expected <pack>.<name>)",
                    raw.trigger.trigger_type
                ),
            ));
        }
        let mut trigger_parameters = raw.trigger.parameters;
        if raw.trigger.trigger_type == crate::trigger::WEBHOOK
            && let Some(Value::String(url)) = trigger_parameters.get_mut("url")
        {
            // StackStorm ignores leading and trailing slashes in webhook URLs.
            *url = url.trim_matches('/').to_owned();
        }
        let action: ActionRef = raw
            .action
            .action_ref
            .parse()
            .map_err(|e: crate::ids::IdError| field("action.ref", e.to_string()))?;
        let mut criteria = Vec::new();
        for (key, spec) in &raw.criteria {
            let at = format!("criteria.{key}");
            let path_key = key.split('#').next().unwrap_or(key);
            let path = if path_key == "trigger" {
                String::new()
            } else {
                path_key
                    .strip_prefix("trigger.")
                    .ok_or_else(|| field(&at, "a criteria key is a path into the trigger payload, starting with 'trigger.'".into()))?
                    .to_owned()
            };
            let Value::Object(spec) = spec else {
                return Err(field(
                    &at,
                    format!("expected a mapping with 'type' and 'pattern', found {spec}"),
                ));
            };
            let op_name = spec
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| field(&format!("{at}.type"), "missing operator".into()))?;
            let operator = Operator::from_name(op_name).ok_or_else(|| {
                field(
                    &format!("{at}.type"),
                    format!("unknown operator '{op_name}'"),
                )
            })?;
            let pattern = spec.get("pattern").cloned().unwrap_or(Value::Null);
            templates
                .check_value(&pattern)
                .map_err(|e| field(&format!("{at}.pattern"), e.to_string()))?;
            let condition = match (operator, spec.get("condition")) {
                (Operator::Search, Some(Value::String(c))) => {
                    Some(SearchCondition::parse(c).ok_or_else(|| {
                        field(
                            &format!("{at}.condition"),
                            format!(
                                "unknown condition '{c}' (expected any, all, any2any or all2any)"
                            ),
                        )
                    })?)
                }
                (Operator::Search, _) => {
                    return Err(field(
                        &format!("{at}.condition"),
                        "search needs a condition: any, all, any2any or all2any".into(),
                    ));
                }
                _ => None,
            };
            if operator == Operator::Search {
                // Validate the nested criteria now: an empty list always parses.
                Operator::apply_search(
                    Some(&Value::Array(Vec::new())),
                    condition.unwrap_or(SearchCondition::Any),
                    &pattern,
                )
                .map_err(|e| field(&format!("{at}.pattern"), e.to_string()))?;
            }
            criteria.push(Criterion {
                key: key.clone(),
                path,
                operator,
                pattern,
                condition,
            });
        }
        for (name, value) in &raw.action.parameters {
            templates
                .check_value(value)
                .map_err(|e| field(&format!("action.parameters.{name}"), e.to_string()))?;
        }
        let throttle = match raw.throttle {
            None => None,
            Some(t) => {
                if !(t.seconds > 0.0 && t.seconds <= 30.0 * 86_400.0) {
                    return Err(field(
                        "throttle.seconds",
                        format!("{} is not a number of seconds from 0 to 2592000", t.seconds),
                    ));
                }
                if let Some(key) = &t.key {
                    templates
                        .check(key)
                        .map_err(|e| field("throttle.key", e.to_string()))?;
                }
                Some(Throttle {
                    window: std::time::Duration::from_secs_f64(t.seconds),
                    key: t.key,
                })
            }
        };
        Ok(Self {
            name: raw.name.clone(),
            description: raw.description,
            enabled: raw.enabled,
            kind,
            trigger_type: raw.trigger.trigger_type,
            trigger_parameters,
            criteria,
            action,
            action_parameters: raw.action.parameters,
            view: serde_json::json!({"ref": format!("{}.{}", pack, raw.name), "name": raw.name, "pack": pack.as_str()}),
            pack,
            source,
            throttle,
            disabled_reason: None,
        })
    }

    /// The throttle key of a match, rendered with `ctx` (`""` for a
    /// throttle without a key); `None` when the rule has no throttle.
    pub fn throttle_key(
        &self,
        templates: &Templates,
        ctx: &RenderContext<'_>,
    ) -> Result<Option<String>, TemplateError> {
        let Some(t) = &self.throttle else {
            return Ok(None);
        };
        let Some(key) = &t.key else {
            return Ok(Some(String::new()));
        };
        let rendered = templates.render_value(&Value::String(key.clone()), ctx)?;
        let key_text = match rendered {
            Value::Null => {
                return Err(TemplateError {
                    template: key.clone(),
                    message: "the throttle key renders to nothing (is the field in the payload?)"
                        .into(),
                });
            }
            Value::String(s) => s,
            other => other.to_string(),
        };
        // Long keys are kept short: a prefix and a hash of the whole.
        Ok(Some(if key_text.len() > 256 {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key_text.hash(&mut h);
            format!(
                "{}…#{:016x}",
                &key_text[..key_text.floor_char_boundary(200)],
                h.finish()
            )
        } else {
            key_text
        }))
    }

    /// `<pack>.<name>`.
    pub fn rule_ref(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }

    /// The `rule` object templates see.
    pub fn template_view(&self) -> &Value {
        &self.view
    }

    /// Do all criteria hold for `payload`? (AND, as StackStorm.)
    pub fn evaluate(
        &self,
        payload: &Value,
        templates: &Templates,
        ctx: &RenderContext,
    ) -> Result<Evaluation, EvaluationError> {
        let empty_payload = payload.is_null() || payload.as_object().is_some_and(|m| m.is_empty());
        if !self.criteria.is_empty() && empty_payload {
            return Ok(Evaluation::NotMatched {
                key: self.criteria[0].key.clone(),
            });
        }
        for c in &self.criteria {
            let err = |message: String| EvaluationError {
                key: c.key.clone(),
                message,
            };
            let pattern = templates
                .render_value(&c.pattern, ctx)
                .map_err(|e: TemplateError| err(e.to_string()))?;
            let value = lookup(payload, &c.path);
            let holds = match c.condition {
                Some(condition) => Operator::apply_search(value, condition, &pattern),
                None => c.operator.apply(value, &pattern),
            }
            .map_err(|e| err(e.to_string()))?;
            if !holds {
                return Ok(Evaluation::NotMatched { key: c.key.clone() });
            }
        }
        Ok(Evaluation::Matched)
    }

    /// The action parameters with templates rendered.
    pub fn render_parameters(
        &self,
        templates: &Templates,
        ctx: &RenderContext,
    ) -> Result<Map<String, Value>, TemplateError> {
        match templates.render_value(&Value::Object(self.action_parameters.clone()), ctx)? {
            Value::Object(map) => Ok(map),
            _ => unreachable!("rendering an object yields an object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const RULE: &str = r#"
name: on_alert
pack: examples
description: Echo critical alerts
enabled: true
trigger:
  type: core.st2.webhook
  parameters:
    url: alerts
criteria:
  trigger.body.level:
    type: equals
    pattern: critical
  trigger.body.host#1:
    type: startswith
    pattern: "{{ st2kv.system.prefix }}"
  trigger.body.host#2:
    type: nequals
    pattern: web-9
action:
  ref: core.echo
  parameters:
    message: "{{ trigger.body.host }} is {{ trigger.body.level }} ({{ rule.ref }})"
"#;

    fn examples() -> PackRef {
        PackRef::new("examples").expect("valid")
    }

    fn parse(text: &str) -> Result<Rule, ManifestError> {
        Rule::parse(
            text,
            Path::new("rules/r.yaml"),
            &examples(),
            &Templates::new(),
        )
    }

    #[derive(Debug)]
    struct Prefix;

    impl crate::template::KvLookup for Prefix {
        fn get(&self, scope: &str, key: &str) -> Option<String> {
            (scope == "system" && key == "prefix").then(|| "web-".to_owned())
        }
    }

    fn ctx<'a>(rule: &'a Rule, payload: &'a Value) -> RenderContext<'a> {
        RenderContext {
            trigger: payload,
            rule: rule.template_view(),
            kv: Some(std::sync::Arc::new(Prefix)),
        }
    }

    #[test]
    fn a_stackstorm_rule_parses_and_matches() {
        let rule = parse(RULE).expect("valid");
        assert_eq!(rule.rule_ref(), "examples.on_alert");
        assert_eq!(rule.trigger_parameters["url"], json!("alerts"));
        assert_eq!(rule.criteria.len(), 3);
        let t = Templates::new();
        let hit = json!({"body": {"level": "critical", "host": "web-1"}});
        assert_eq!(
            rule.evaluate(&hit, &t, &ctx(&rule, &hit)),
            Ok(Evaluation::Matched)
        );
        let params = rule
            .render_parameters(&t, &ctx(&rule, &hit))
            .expect("renders");
        assert_eq!(
            params["message"],
            json!("web-1 is critical (examples.on_alert)")
        );

        let miss = json!({"body": {"level": "info", "host": "web-1"}});
        assert_eq!(
            rule.evaluate(&miss, &t, &ctx(&rule, &miss)),
            Ok(Evaluation::NotMatched {
                key: "trigger.body.level".into()
            })
        );
        let excluded = json!({"body": {"level": "critical", "host": "web-9"}});
        assert_eq!(
            rule.evaluate(&excluded, &t, &ctx(&rule, &excluded)),
            Ok(Evaluation::NotMatched {
                key: "trigger.body.host#2".into()
            })
        );
        assert!(matches!(
            rule.evaluate(&json!({}), &t, &ctx(&rule, &json!({}))),
            Ok(Evaluation::NotMatched { .. })
        ));
    }

    #[test]
    fn bad_rules_name_the_field() {
        let err = |text: String| parse(&text).expect_err("must fail").to_string();
        assert_eq!(
            err(RULE.replace("type: equals", "type: equalz")),
            "rules/r.yaml: field 'criteria.trigger.body.level.type': unknown operator 'equalz'"
        );
        assert!(
            err(RULE.replace("ref: core.echo", "ref: echo"))
                .starts_with("rules/r.yaml: field 'action.ref':")
        );
        assert!(
            err(RULE.replace("{{ trigger.body.host }} is", "{{ trigger.body.host is"))
                .starts_with("rules/r.yaml: field 'action.parameters.message': template")
        );
        assert!(
            err(RULE.replace("trigger.body.level:", "body.level:"))
                .contains("starting with 'trigger.'")
        );
        assert!(err("name: [x\n".into()).starts_with("rules/r.yaml: invalid YAML"));
        assert!(
            err("name: x\n".into())
                .starts_with("rules/r.yaml: invalid rule: missing field `trigger`")
        );
    }

    #[test]
    fn search_criteria_are_validated_and_evaluated() {
        let text = r#"
name: any_critical
trigger: {type: examples.checks}
criteria:
  trigger.checks:
    type: search
    condition: any
    pattern:
      item.status: {type: equals, pattern: critical}
      item.name: {type: startswith, pattern: disk}
action: {ref: core.noop}
"#;
        let rule = parse(text).expect("valid");
        let t = Templates::new();
        let p = json!({"checks": [{"name": "cpu", "status": "critical"}, {"name": "disk0", "status": "critical"}]});
        assert_eq!(
            rule.evaluate(&p, &t, &ctx(&rule, &p)),
            Ok(Evaluation::Matched)
        );
        let bad = text.replace("condition: any", "condition: some");
        assert!(
            parse(&bad)
                .expect_err("bad condition")
                .to_string()
                .contains("unknown condition 'some'")
        );
        let bad = text.replace("item.status", "status");
        assert!(
            parse(&bad)
                .expect_err("bad key")
                .to_string()
                .contains("must start with 'item.'")
        );
    }

    #[test]
    fn webhook_urls_lose_their_slashes_as_in_stackstorm() {
        let rule = parse("name: w\ntrigger: {type: core.st2.webhook, parameters: {url: /alerts/}}\naction: {ref: core.noop}\n").expect("valid");
        assert_eq!(rule.trigger_parameters["url"], json!("alerts"));
    }

    #[test]
    fn backstop_and_defaults() {
        let rule = parse("name: fallback\ntype: {ref: backstop}\ntrigger: {type: core.st2.webhook}\naction: {ref: core.noop}\n").expect("valid");
        assert_eq!(rule.kind, RuleKind::Backstop);
        assert!(
            !rule.enabled,
            "rules are disabled unless they say otherwise, as in StackStorm"
        );
        assert_eq!(rule.pack.as_str(), "examples");
    }
}
