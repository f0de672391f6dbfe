//! Rules: the list, enable and disable, one rule with its enforcements and
//! the rule tester, and create and edit as YAML.

use std::path::Path as FsPath;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use squall_core::PackRef;
use squall_core::rule::{Evaluation, Rule};
use squall_core::template::RenderContext;
use squall_store::{EnforcementFilter, Page};

use super::{UiError, Viewer, page, v};
use crate::AppState;
use crate::v1::read;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/rules", get(list).post(create))
        .route("/ui/rules/new", get(new_form))
        .route("/ui/rules/{ref}", get(detail).post(update))
        .route("/ui/rules/{ref}/edit", get(edit_form))
        .route("/ui/rules/{ref}/enabled", post(set_enabled))
        .route("/ui/rules/{ref}/test", post(test))
}

/// The file name rule errors are reported against: the form's text.
const FORM_FILE: &str = "rule.yaml";

fn find(state: &AppState, viewer: &Viewer, r: &str) -> Result<std::sync::Arc<Rule>, UiError> {
    state
        .reactor
        .rules()
        .all
        .get(&(viewer.tenant(), r.to_owned()))
        .cloned()
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("rule '{r}' not found")))
}

/// `GET /ui/rules`: the tenant's rules.
async fn list(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let index = state.reactor.rules();
    let tenant = viewer.tenant();
    let rules: Vec<Value> = index
        .all
        .iter()
        .filter(|((t, _), _)| *t == tenant)
        .map(|(_, r)| summary(r))
        .collect();
    page(
        Some(&viewer),
        "rules.html",
        minijinja::context! { rules => v(rules) },
    )
}

fn summary(r: &Rule) -> Value {
    serde_json::json!({
        "ref": r.rule_ref(),
        "description": r.description,
        "enabled": r.enabled,
        "trigger": r.trigger_type,
        "action": r.action.to_string(),
        "disabled_reason": r.disabled_reason,
    })
}

/// `POST /ui/rules/{ref}/enabled`: enable or disable, as `st2 rule
/// enable` does (the rule, changed, through the API's own update).
async fn set_enabled(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
    Form(form): Form<super::Toggle>,
) -> Result<Response, UiError> {
    let rule = find(&state, &viewer, &r)?;
    let mut source = rule.source.clone();
    let enabled = form.on();
    if let Some(map) = source.as_object_mut() {
        map.insert("enabled".into(), Value::Bool(enabled));
    }
    let changed = Rule::from_value(
        source,
        FsPath::new(FORM_FILE),
        &rule.pack,
        state.reactor.templates(),
    )
    .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    state
        .reactor
        .put_rule(&viewer.tenant(), changed, true)
        .await
        .map_err(crate::ApiError::from)?;
    Ok(Redirect::to(&format!("/ui/rules/{r}")).into_response())
}

/// `GET /ui/rules/{ref}`: the rule as YAML, its enforcements, the tester.
async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
) -> Result<Response, UiError> {
    let rule = find(&state, &viewer, &r)?;
    render_detail(&state, &viewer, &rule, None, None, StatusCode::OK).await
}

async fn render_detail(
    state: &AppState,
    viewer: &Viewer,
    rule: &Rule,
    payload: Option<&str>,
    tested: Option<Value>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant();
    let filter = EnforcementFilter {
        rule_ref: Some(rule.rule_ref()),
        ..EnforcementFilter::default()
    };
    let trigger = rule.trigger_type.clone();
    let (enforcements, total, recent) = read(state, move |s| {
        let (enforcements, total) = s.list_enforcements(
            &tenant,
            &filter,
            Page {
                limit: 50,
                offset: 0,
            },
        )?;
        // The latest events of the rule's trigger type, to test it on.
        let (recent, _) = s.list_trigger_instances(
            &tenant,
            Some(&trigger),
            Page {
                limit: 10,
                offset: 0,
            },
        )?;
        Ok((enforcements, total, recent))
    })
    .await?;
    let recent: Vec<Value> = recent
        .iter()
        .map(|ti| serde_json::json!({"id": ti.id, "when": ti.occurrence_time}))
        .collect();
    let enforcements: Vec<Value> = enforcements
        .iter()
        .map(crate::shapes::enforcement)
        .collect();
    let yaml = serde_yaml::to_string(&rule.source).unwrap_or_default();
    let mut response = page(
        Some(viewer),
        "rule.html",
        minijinja::context! {
            rule => v(summary(rule)),
            yaml,
            enforcements => v(enforcements),
            total,
            payload => payload.unwrap_or("{\n  \n}"),
            recent => v(recent),
            tested => v(tested),
        },
    )?;
    *response.status_mut() = status;
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct TestForm {
    #[serde(default)]
    payload: String,
    /// A trigger instance picked instead: its payload is tested.
    #[serde(default)]
    instance: String,
}

/// `POST /ui/rules/{ref}/test`: would the rule match a trigger instance
/// with this payload, and with which parameters would its action run?
/// Changes nothing (a viewer may ask too).
async fn test(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
    Form(form): Form<TestForm>,
) -> Result<Response, UiError> {
    let rule = find(&state, &viewer, &r)?;
    let mut text = form.payload;
    let picked = form.instance.trim().to_owned();
    if !picked.is_empty() {
        let tenant = viewer.tenant();
        let found = read(&state, {
            let picked = picked.clone();
            move |s| s.get_trigger_instance(&tenant, &picked)
        })
        .await?
        .ok_or_else(|| {
            UiError::new(
                StatusCode::NOT_FOUND,
                format!("trigger instance '{picked}' not found"),
            )
        })?;
        text = serde_json::to_string_pretty(&found.payload).unwrap_or_default();
    }
    let verdict = match serde_yaml::from_str::<Value>(&text) {
        Err(e) => serde_json::json!({"error": format!("the payload is not JSON or YAML: {e}")}),
        Ok(payload) => judge(&state, &viewer, &rule, &payload),
    };
    render_detail(
        &state,
        &viewer,
        &rule,
        Some(&text),
        Some(verdict),
        StatusCode::OK,
    )
    .await
}

/// The rule tester's verdict, as `squall rule test` gives it.
fn judge(state: &AppState, viewer: &Viewer, rule: &Rule, payload: &Value) -> Value {
    let templates = state.reactor.templates();
    let ctx = RenderContext {
        trigger: payload,
        rule: rule.template_view(),
        kv: None,
    };
    match rule.evaluate(payload, templates, &ctx) {
        Err(e) => serde_json::json!({"error": e.to_string()}),
        Ok(Evaluation::NotMatched { key }) => serde_json::json!({
            "matched": false,
            "why": format!("criterion '{key}' does not hold"),
        }),
        Ok(Evaluation::Matched) => match rule.render_parameters(templates, &ctx) {
            Err(e) => serde_json::json!({"error": e.to_string()}),
            Ok(parameters) => {
                let packs = state.reactor.runner().packs(&viewer.tenant());
                let problem = match packs.action(&rule.action) {
                    Err(e) => Some(e.to_string()),
                    Ok((_, meta)) => meta
                        .resolve(parameters.clone())
                        .err()
                        .map(|e| e.to_string()),
                };
                serde_json::json!({
                    "matched": true,
                    "action": rule.action.to_string(),
                    "parameters": parameters,
                    "problem": problem,
                })
            }
        },
    }
}

const NEW_RULE: &str = "name: my_rule
pack: default
description: What this rule does
enabled: true
trigger:
  type: core.st2.webhook
  parameters:
    url: my-hook
criteria:
  trigger.body.severity:
    type: equals
    pattern: critical
action:
  ref: core.echo
  parameters:
    message: \"{{ trigger.body.host }} is down\"
";

async fn new_form(viewer: Viewer) -> Result<Response, UiError> {
    editor(&viewer, None, NEW_RULE, None, StatusCode::OK)
}

async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
) -> Result<Response, UiError> {
    let rule = find(&state, &viewer, &r)?;
    let yaml = serde_yaml::to_string(&rule.source).unwrap_or_default();
    editor(&viewer, Some(&r), &yaml, None, StatusCode::OK)
}

/// A refusal of the YAML, and the line of the form it is about.
#[derive(Debug, serde::Serialize)]
struct YamlError {
    line: Option<usize>,
    message: String,
}

fn editor(
    viewer: &Viewer,
    rule: Option<&str>,
    yaml: &str,
    error: Option<YamlError>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let lines: Vec<(usize, &str)> = yaml.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
    let mut response = page(
        Some(viewer),
        "rule_edit.html",
        minijinja::context! {
            rule, yaml, error => v(error), lines => v(lines),
            rows => yaml.lines().count().clamp(12, 40),
        },
    )?;
    *response.status_mut() = status;
    Ok(response)
}

/// The line of `yaml` that holds `field` (`action.ref`, `criteria`): each
/// segment's key is looked for below the previous one's; `None` when a
/// segment is not found.
fn line_of(yaml: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut at = 0;
    for (i, segment) in field.split('.').enumerate() {
        let key = segment.split('[').next().unwrap_or(segment);
        let from = if i == 0 { 0 } else { at + 1 };
        at = (from..lines.len()).find(|&n| {
            let t = lines[n].trim_start().trim_start_matches("- ");
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })?;
    }
    Some(at + 1)
}

/// The line a YAML parser's message names (`at line 3 column 5`).
fn parser_line(message: &str) -> Option<usize> {
    let at = message.find("line ")?;
    message[at + 5..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[derive(Debug, Deserialize)]
struct YamlForm {
    yaml: String,
}

/// Parse the form's YAML as the API parses a rule's body; a refusal names
/// the line.
fn parse_form(state: &AppState, yaml: &str) -> Result<Rule, YamlError> {
    let default_pack = PackRef::new("default").expect("valid ref");
    Rule::parse(
        yaml,
        FsPath::new(FORM_FILE),
        &default_pack,
        state.reactor.templates(),
    )
    .map_err(|e| {
        let line = match &e.field {
            Some(field) => line_of(yaml, field),
            None => parser_line(&e.message),
        };
        let message = match &e.field {
            Some(field) => format!("field '{field}': {}", e.message),
            None => e.message.clone(),
        };
        YamlError { line, message }
    })
}

/// `POST /ui/rules`: create a rule from YAML.
async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<YamlForm>,
) -> Result<Response, UiError> {
    save(&state, &viewer, None, &form.yaml).await
}

/// `POST /ui/rules/{ref}`: replace the rule with the YAML.
async fn update(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
    Form(form): Form<YamlForm>,
) -> Result<Response, UiError> {
    find(&state, &viewer, &r)?;
    save(&state, &viewer, Some(&r), &form.yaml).await
}

async fn save(
    state: &AppState,
    viewer: &Viewer,
    existing: Option<&str>,
    yaml: &str,
) -> Result<Response, UiError> {
    let refuse =
        |error: YamlError| editor(viewer, existing, yaml, Some(error), StatusCode::BAD_REQUEST);
    let rule = match parse_form(state, yaml) {
        Ok(rule) => rule,
        Err(error) => return refuse(error),
    };
    let rule_ref = rule.rule_ref();
    if let Some(existing) = existing
        && rule_ref != existing
    {
        return refuse(YamlError {
            line: line_of(yaml, "name"),
            message: format!("this describes rule '{rule_ref}', not '{existing}'"),
        });
    }
    match state
        .reactor
        .put_rule(&viewer.tenant(), rule, existing.is_some())
        .await
    {
        Ok(()) => Ok(Redirect::to(&format!("/ui/rules/{rule_ref}")).into_response()),
        Err(e) => {
            let (message, _) = super::refusal(e.into())?;
            // An action or trigger the tenant lacks: the line naming it.
            let field = if message.contains("action") {
                Some("action.ref")
            } else if message.contains("trigger.parameters") {
                Some("trigger.parameters")
            } else if message.contains("trigger") {
                Some("trigger.type")
            } else {
                None
            };
            let line = field.and_then(|f| line_of(yaml, f));
            refuse(YamlError { line, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_find_their_line() {
        assert_eq!(line_of(NEW_RULE, "action.ref"), Some(14));
        assert_eq!(line_of(NEW_RULE, "trigger.parameters.url"), Some(8));
        assert_eq!(line_of(NEW_RULE, "trigger.type"), Some(6));
        assert_eq!(line_of(NEW_RULE, "action.parameters"), Some(15));
        assert_eq!(line_of(NEW_RULE, "criteria"), Some(9));
        assert_eq!(line_of(NEW_RULE, "nothing"), None);
        assert_eq!(
            parser_line("invalid YAML: did not find expected key at line 3 column 1"),
            Some(3)
        );
        assert_eq!(parser_line("no line here"), None);
    }
}
