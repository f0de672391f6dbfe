//! Actions: the list by pack, with a search; the run form generated from
//! an action's parameter schema, as st2web generates it.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use squall_core::ActionRef;
use squall_core::manifest::ActionMeta;
use squall_core::params::{ParamError, ParamSchema, ParamType};
use squall_reactor::{ExecutionError, RunError, RunRequest};

use super::{UiError, Viewer, page, v};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/actions", get(list))
        .route("/ui/actions/{ref}", get(form).post(run))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
}

/// `GET /ui/actions`: the tenant's actions by pack; `q` keeps those whose
/// reference or description contains it (in any case).
async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let needle = q.q.trim().to_lowercase();
    let packs = state.reactor.runner().packs(&viewer.tenant());
    let mut by_pack: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pack in packs.packs() {
        for meta in pack.actions.values() {
            let description = meta.description.clone().unwrap_or_default();
            let matches = needle.is_empty()
                || meta.action_ref.to_string().to_lowercase().contains(&needle)
                || description.to_lowercase().contains(&needle);
            if matches {
                by_pack
                    .entry(pack.manifest.pack_ref.to_string())
                    .or_default()
                    .push(serde_json::json!({
                        "ref": meta.action_ref.to_string(),
                        "name": meta.action_ref.name(),
                        "description": description,
                        "runner": meta.runner.as_str(),
                        "enabled": meta.enabled,
                    }));
            }
        }
    }
    page(
        Some(&viewer),
        "actions.html",
        minijinja::context! { packs => v(by_pack), q => q.q },
    )
}

/// One field of a run form.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Field {
    pub(crate) name: String,
    /// `select`, `checkbox`, `integer`, `number`, `password`, `json` (an
    /// object, as JSON), `array` (JSON, or items separated by commas) or
    /// `text`.
    pub(crate) kind: &'static str,
    pub(crate) required: bool,
    pub(crate) description: Option<String>,
    /// The default, as the form shows it.
    pub(crate) default: Option<String>,
    /// For a select: its choices.
    pub(crate) options: Vec<String>,
    /// What the field holds: what was sent, or the execution re-run.
    pub(crate) value: String,
    /// Why the server refused what was sent in it.
    pub(crate) error: Option<String>,
}

/// A value as a form field shows it: strings bare, the rest as JSON.
pub(crate) fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The run form of a parameter schema, by st2web's rules: an `enum` is a
/// select; a boolean a checkbox; integers and numbers number fields;
/// arrays and objects text areas; a `secret` a password field; `immutable`
/// parameters are left out. Fields are ordered by `position`, then
/// required first, then by name; each shows its default.
pub(crate) fn fields(schema: &ParamSchema) -> Vec<Field> {
    let source = schema.source();
    let mut specs: Vec<_> = schema.specs().filter(|s| !s.immutable).collect();
    specs.sort_by(|a, b| {
        (a.position.unwrap_or(u64::MAX), !a.required, &a.name).cmp(&(
            b.position.unwrap_or(u64::MAX),
            !b.required,
            &b.name,
        ))
    });
    specs
        .into_iter()
        .map(|spec| {
            let options: Vec<String> = source
                .get(&spec.name)
                .and_then(|p| p.get("enum"))
                .and_then(Value::as_array)
                .map(|values| values.iter().map(shown).collect())
                .unwrap_or_default();
            let kind = if !options.is_empty() {
                "select"
            } else if spec.secret {
                "password"
            } else {
                match spec.ty {
                    Some(ParamType::Boolean) => "checkbox",
                    Some(ParamType::Integer) => "integer",
                    Some(ParamType::Number) => "number",
                    Some(ParamType::Array) => "array",
                    Some(ParamType::Object) => "json",
                    _ => "text",
                }
            };
            Field {
                name: spec.name.clone(),
                kind,
                required: spec.required,
                description: spec.description.clone(),
                default: spec.default.as_ref().filter(|_| !spec.secret).map(shown),
                options,
                value: String::new(),
                error: None,
            }
        })
        .collect()
}

/// The parameters a submitted form gives, by the schema's types (as
/// `st2 run` reads `name=value`): empty fields are left to their
/// defaults; a checkbox is sent only when it differs from its default.
/// Each refusal names its field.
pub(crate) fn parameters(
    schema: &ParamSchema,
    form: &BTreeMap<String, String>,
) -> Result<Map<String, Value>, Vec<(String, String)>> {
    let mut out = Map::new();
    let mut errors = Vec::new();
    for field in fields(schema) {
        let text = form
            .get(&field.name)
            .map(String::as_str)
            .unwrap_or_default();
        if field.kind == "checkbox" {
            let checked = !text.is_empty();
            let default = field.default.as_deref() == Some("true");
            if checked != default || field.required {
                out.insert(field.name, Value::Bool(checked));
            }
            continue;
        }
        if text.is_empty() {
            continue;
        }
        match schema.coerce_cli(&field.name, text) {
            Ok(value) => {
                out.insert(field.name, value);
            }
            Err(e) => errors.push((field.name, message_of(&e))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A refusal as the field it names shows it (without the name).
fn message_of(e: &ParamError) -> String {
    match e {
        ParamError::Invalid { message, .. } => message.clone(),
        ParamError::Missing { .. } => "required".into(),
        ParamError::Immutable { .. } => "cannot be set".into(),
        ParamError::Unknown { .. } => e.to_string(),
    }
}

/// The field a refusal names.
fn field_of(e: &ParamError) -> &str {
    match e {
        ParamError::Invalid { name, .. }
        | ParamError::Missing { name }
        | ParamError::Immutable { name }
        | ParamError::Unknown { name, .. } => name,
    }
}

#[derive(Debug, Default, Deserialize)]
struct FormQuery {
    /// An execution to re-run: the form starts with its parameters.
    #[serde(default)]
    rerun: String,
}

fn action_of(state: &AppState, viewer: &Viewer, r: &str) -> Result<ActionMeta, UiError> {
    let action: ActionRef = r.parse().map_err(|e: squall_core::ids::IdError| {
        UiError::new(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    let packs = state.reactor.runner().packs(&viewer.tenant());
    let (_, meta) = packs
        .action(&action)
        .map_err(|e| UiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(meta.clone())
}

/// `GET /ui/actions/{ref}`: the action and its run form.
async fn form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
    Query(q): Query<FormQuery>,
) -> Result<Response, UiError> {
    let meta = action_of(&state, &viewer, &r)?;
    let mut fields = fields(&meta.parameters);
    let rerun = Some(q.rerun.trim()).filter(|s| !s.is_empty());
    if let Some(id) = rerun {
        let id: squall_core::ids::ExecutionId =
            id.parse().map_err(|e: squall_core::ids::IdError| {
                UiError::new(StatusCode::BAD_REQUEST, e.to_string())
            })?;
        let tenant = viewer.tenant();
        let original = crate::v1::read(&state, move |s| s.get_execution(&tenant, &id))
            .await?
            .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "execution not found"))?;
        for field in &mut fields {
            // A secret was stored masked: left empty, the re-run keeps it.
            if let Some(value) = original.parameters.get(&field.name)
                && field.kind != "password"
            {
                field.value = match (field.kind, value) {
                    ("checkbox", Value::Bool(true)) => "on".into(),
                    ("checkbox", _) => String::new(),
                    (_, v) => shown(v),
                };
            }
        }
    } else {
        for field in &mut fields {
            if field.kind == "checkbox" && field.default.as_deref() == Some("true") {
                field.value = "on".into();
            }
        }
    }
    render_form(&viewer, &meta, fields, rerun, None, StatusCode::OK)
}

fn render_form(
    viewer: &Viewer,
    meta: &ActionMeta,
    fields: Vec<Field>,
    rerun: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let mut response = page(
        Some(viewer),
        "action.html",
        minijinja::context! {
            action => v(serde_json::json!({
                "ref": meta.action_ref.to_string(),
                "description": meta.description,
                "runner": meta.runner.as_str(),
                "enabled": meta.enabled,
            })),
            fields => v(fields),
            rerun,
            error,
        },
    )?;
    *response.status_mut() = status;
    Ok(response)
}

/// `POST /ui/actions/{ref}`: run it (or re-run the execution the form
/// names) with the form's parameters, through the API's own checks; a
/// refusal comes back beside the field it names.
async fn run(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
    axum::extract::Form(form): axum::extract::Form<BTreeMap<String, String>>,
) -> Result<Response, UiError> {
    let meta = action_of(&state, &viewer, &r)?;
    let rerun = form
        .get("__rerun")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let mut fields = fields(&meta.parameters);
    for field in &mut fields {
        field.value = form.get(&field.name).cloned().unwrap_or_default();
    }
    let refuse =
        |mut fields: Vec<Field>, errors: Vec<(String, String)>, general: Option<String>| {
            let mut unplaced = Vec::new();
            for (name, message) in errors {
                match fields.iter_mut().find(|f| f.name == name) {
                    Some(field) => field.error = Some(message),
                    None => unplaced.push(format!("{name}: {message}")),
                }
            }
            let error = general.or_else(|| (!unplaced.is_empty()).then(|| unplaced.join("; ")));
            render_form(
                &viewer,
                &meta,
                fields,
                rerun,
                error,
                StatusCode::BAD_REQUEST,
            )
        };
    let parameters = match parameters(&meta.parameters, &form) {
        Ok(p) => p,
        Err(errors) => return refuse(fields, errors, None),
    };
    let started = match rerun {
        Some(id) => {
            let id: squall_core::ids::ExecutionId =
                id.parse().map_err(|e: squall_core::ids::IdError| {
                    UiError::new(StatusCode::BAD_REQUEST, e.to_string())
                })?;
            state
                .reactor
                .re_run(&viewer.principal, &id, parameters, None)
                .await
        }
        None => {
            let mut req = RunRequest::new(viewer.tenant(), meta.action_ref.clone(), parameters);
            req.context
                .insert("user".into(), Value::String(viewer.principal.user.clone()));
            state
                .reactor
                .request_execution(req)
                .await
                .map_err(ExecutionError::Run)
        }
    };
    match started {
        Ok(execution) => {
            Ok(Redirect::to(&format!("/ui/executions/{}", execution.id)).into_response())
        }
        Err(ExecutionError::Run(RunError::Parameters { cause, .. })) => {
            let name = field_of(&cause).to_owned();
            refuse(fields, vec![(name, message_of(&cause))], None)
        }
        Err(e) => {
            let (message, _) = super::refusal(e.into())?;
            refuse(fields, Vec::new(), Some(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(yaml: &str) -> ParamSchema {
        let block: Map<String, Value> = serde_yaml::from_str(yaml).expect("yaml");
        ParamSchema::parse(&block).expect("schema")
    }

    const FIXTURE: &str = r#"
zeta: {type: string}
count: {type: integer, default: 3, position: 1}
level: {type: string, enum: [low, high], default: low}
force: {type: boolean, default: true}
ratio: {type: number}
hosts: {type: array, required: true}
extra: {type: object}
token: {type: string, secret: true, default: hunter2}
region: {type: string, immutable: true, default: eu}
message: {type: string, required: true, position: 0, description: What to say}
"#;

    #[test]
    fn forms_follow_st2webs_rules() {
        let fields = fields(&schema(FIXTURE));
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        // By position, then required first, then by name; immutable left out.
        assert_eq!(
            names,
            [
                "message", "count", "hosts", "extra", "force", "level", "ratio", "token", "zeta"
            ]
        );
        let kind = |name: &str| fields.iter().find(|f| f.name == name).expect(name).kind;
        assert_eq!(kind("message"), "text");
        assert_eq!(kind("count"), "integer");
        assert_eq!(kind("hosts"), "array");
        assert_eq!(kind("extra"), "json");
        assert_eq!(kind("force"), "checkbox");
        assert_eq!(kind("level"), "select");
        assert_eq!(kind("ratio"), "number");
        assert_eq!(kind("token"), "password");
        let field = |name: &str| fields.iter().find(|f| f.name == name).expect(name).clone();
        assert_eq!(field("level").options, ["low", "high"]);
        assert_eq!(field("count").default.as_deref(), Some("3"));
        assert_eq!(field("force").default.as_deref(), Some("true"));
        // A secret's default is not shown.
        assert_eq!(field("token").default, None);
        assert!(field("message").required && field("hosts").required);
        assert_eq!(field("message").description.as_deref(), Some("What to say"));
    }

    #[test]
    fn submitted_forms_become_typed_parameters() {
        let schema = schema(FIXTURE);
        let form: BTreeMap<String, String> = [
            ("message", "hi"),
            ("count", "5"),
            ("hosts", "a, b"),
            ("extra", r#"{"k": 1}"#),
            ("ratio", ""),
            ("level", "high"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let got = parameters(&schema, &form).expect("valid");
        assert_eq!(
            Value::Object(got),
            serde_json::json!({
                "message": "hi",
                "count": 5,
                "hosts": ["a", "b"],
                "extra": {"k": 1},
                "level": "high",
                // Unchecked, against a default of true.
                "force": false,
            })
        );
        let mut bad = form.clone();
        bad.insert("count".into(), "many".into());
        bad.insert("extra".into(), "{".into());
        let errors = parameters(&schema, &bad).expect_err("refused");
        assert_eq!(
            errors,
            [
                ("count".to_owned(), "'many' is not an integer".to_owned()),
                ("extra".to_owned(), "'{' is not a JSON object".to_owned()),
            ]
        );
    }
}
