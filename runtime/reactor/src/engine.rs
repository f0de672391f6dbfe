//! Matching one trigger instance against the rule index: StackStorm's two
//! passes (standard, then backstop only if no standard rule matched), the
//! trigger's parameters, the criteria, and the rendered action parameters.

use std::sync::Arc;

use serde_json::{Map, Value};
use squall_core::rule::{Evaluation, Rule, RuleKind};
use squall_core::template::{KvLookup, RenderContext, Templates};
use squall_core::trigger::TriggerInstance;

use crate::rules::RuleIndex;

/// What one rule decided about one trigger instance.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Matched: run the action with these rendered parameters.
    Enforce {
        rule: Arc<Rule>,
        parameters: Map<String, Value>,
        /// The rendered throttle key, when the rule has a throttle.
        throttle_key: Option<String>,
    },
    /// Matched or tried to, but could not produce an execution.
    Fail { rule: Arc<Rule>, reason: String },
}

/// Decide every rule for `instance`.
pub fn decide(
    index: &RuleIndex,
    instance: &TriggerInstance,
    templates: &Templates,
    kv: Option<Arc<dyn KvLookup>>,
) -> Vec<Decision> {
    let mut decisions = Vec::new();
    let mut standard_matched = false;
    // The index hands over only rules whose trigger parameters select this
    // instance (none, or exactly the instance's), standard rules first.
    for rule in index.candidates(
        &instance.tenant,
        &instance.trigger_type,
        &instance.trigger_parameters,
    ) {
        if rule.kind == RuleKind::Backstop && standard_matched {
            break;
        }
        let ctx = RenderContext {
            trigger: &instance.payload,
            rule: rule.template_view(),
            kv: kv.clone(),
        };
        match rule.evaluate(&instance.payload, templates, &ctx) {
            Ok(Evaluation::NotMatched { .. }) => continue,
            Ok(Evaluation::Matched) => {
                if rule.kind == RuleKind::Standard {
                    standard_matched = true;
                }
                let rendered = rule
                    .render_parameters(templates, &ctx)
                    .map_err(|e| format!("failed to render action parameters: {e}"))
                    .and_then(|parameters| {
                        rule.throttle_key(templates, &ctx)
                            .map(|key| (parameters, key))
                            .map_err(|e| format!("failed to render the throttle key: {e}"))
                    });
                match rendered {
                    Ok((parameters, throttle_key)) => decisions.push(Decision::Enforce {
                        rule: rule.clone(),
                        parameters,
                        throttle_key,
                    }),
                    Err(reason) => decisions.push(Decision::Fail {
                        rule: rule.clone(),
                        reason,
                    }),
                }
            }
            Err(e) => decisions.push(Decision::Fail {
                rule: rule.clone(),
                reason: format!("failed to evaluate criteria: {e}"),
            }),
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;
    use squall_core::time::now_rfc3339;
    use squall_core::trigger::{TriggerInstanceStatus, new_id};
    use squall_core::{PackRef, TenantId};

    use super::*;

    fn rule(yaml: &str) -> (TenantId, Arc<Rule>) {
        let pack = PackRef::new("t").expect("ref");
        let r =
            Rule::parse(yaml, Path::new("r.yaml"), &pack, &Templates::new()).expect("valid rule");
        (TenantId::default_tenant(), Arc::new(r))
    }

    fn instance(url: &str, body: Value) -> TriggerInstance {
        TriggerInstance {
            id: new_id(),
            tenant: TenantId::default_tenant(),
            trigger_type: "core.st2.webhook".into(),
            trigger_parameters: json!({"url": url}).as_object().cloned().unwrap_or_default(),
            payload: json!({"headers": {}, "body": body}),
            occurrence_time: now_rfc3339(),
            status: TriggerInstanceStatus::Pending,
            trace_tag: "t".into(),
        }
    }

    fn refs(d: &[Decision]) -> Vec<String> {
        d.iter()
            .map(|d| match d {
                Decision::Enforce { rule, .. } => rule.rule_ref(),
                Decision::Fail { rule, reason } => format!("{} FAILED {reason}", rule.rule_ref()),
            })
            .collect()
    }

    fn index() -> RuleIndex {
        RuleIndex::build([
            rule(
                "name: crit\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: alerts}}\ncriteria: {trigger.body.level: {type: eq, pattern: critical}}\naction: {ref: core.echo, parameters: {message: '{{ trigger.body.host }}'}}\n",
            ),
            rule(
                "name: fallback\nenabled: true\ntype: {ref: backstop}\ntrigger: {type: core.st2.webhook, parameters: {url: alerts}}\naction: {ref: core.noop}\n",
            ),
            rule(
                "name: other_url\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: other}}\naction: {ref: core.noop}\n",
            ),
            rule(
                "name: off\nenabled: false\ntrigger: {type: core.st2.webhook, parameters: {url: alerts}}\naction: {ref: core.noop}\n",
            ),
            rule(
                "name: bad_regex\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: regex}}\ncriteria: {trigger.body.x: {type: regex, pattern: '('}}\naction: {ref: core.noop}\n",
            ),
        ])
    }

    #[test]
    fn standard_rules_match_and_render() {
        let d = decide(
            &index(),
            &instance("alerts", json!({"level": "critical", "host": "db-1"})),
            &Templates::new(),
            None,
        );
        assert_eq!(refs(&d), ["t.crit"]);
        let Decision::Enforce { parameters, .. } = &d[0] else {
            panic!("enforce")
        };
        assert_eq!(parameters["message"], json!("db-1"));
    }

    #[test]
    fn backstop_fires_only_when_no_standard_rule_matched() {
        let d = decide(
            &index(),
            &instance("alerts", json!({"level": "info"})),
            &Templates::new(),
            None,
        );
        assert_eq!(refs(&d), ["t.fallback"]);
    }

    #[test]
    fn other_urls_and_disabled_rules_do_not_fire() {
        let d = decide(
            &index(),
            &instance("nobody", json!({"level": "critical"})),
            &Templates::new(),
            None,
        );
        assert!(d.is_empty());
    }

    #[test]
    fn evaluation_errors_become_failed_decisions() {
        let d = decide(
            &index(),
            &instance("regex", json!({"x": "y"})),
            &Templates::new(),
            None,
        );
        assert_eq!(d.len(), 1);
        assert!(refs(&d)[0].starts_with("t.bad_regex FAILED failed to evaluate criteria: criterion 'trigger.body.x': operator 'regex': invalid regex"), "{:?}", refs(&d));
    }
}
