//! A pack's config: a form generated from its `config.schema.yaml` by the
//! run form's rules, saved through `PUT /api/v1/configs/{pack}` (the API's
//! own handler and checks), or dropped so the pack's `config.yaml` applies
//! again.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};
use squall_core::params::ParamSchema;

use super::actions::{Field, fields, parameters, shown};
use super::{UiError, Viewer, page, v};
use crate::AppState;
use crate::configs::ShowQuery;
use crate::error::{ApiJson, ApiQuery};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/packs/{ref}/config", get(form).post(save))
        .route("/ui/packs/{ref}/config/reset", post(reset))
}

/// The pack's schema as the form reads it, and the config in force (in
/// clear: secrets are never put in the page, but a secret left empty
/// keeps its value).
async fn current(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
) -> Result<(ParamSchema, Value), UiError> {
    let schema =
        crate::configs::get_schema(State(state.clone()), viewer.caller(), Path(name.to_owned()))
            .await?;
    let attributes = schema.0["attributes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let schema = ParamSchema::parse(&attributes).map_err(|e| {
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config schema of pack '{name}': {}", e.message),
        )
    })?;
    let config = crate::configs::get_config(
        State(state.clone()),
        viewer.caller(),
        Path(name.to_owned()),
        ApiQuery(ShowQuery::default()),
    )
    .await?
    .0;
    Ok((schema, config))
}

/// The form's fields holding `values` (secrets left empty).
fn filled(schema: &ParamSchema, values: &Value) -> Vec<Field> {
    let mut fields = fields(schema);
    for field in &mut fields {
        if field.kind == "password" {
            continue;
        }
        field.value = match (field.kind, values.get(&field.name)) {
            ("checkbox", Some(Value::Bool(true))) => "on".into(),
            ("checkbox", _) | (_, None | Some(Value::Null)) => String::new(),
            (_, Some(v)) => shown(v),
        };
    }
    fields
}

fn render(
    viewer: &Viewer,
    name: &str,
    config: &Value,
    fields: Vec<Field>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let mut response = page(
        Some(viewer),
        "pack_config.html",
        minijinja::context! {
            pack => name,
            source => config["source"].as_str().unwrap_or("pack").to_owned(),
            has_secrets => fields.iter().any(|f| f.kind == "password"),
            fields => v(fields),
            error,
        },
    )?;
    *response.status_mut() = status;
    Ok(response)
}

/// `GET /ui/packs/{ref}/config`.
async fn form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    let (schema, config) = current(&state, &viewer, &name).await?;
    let fields = filled(&schema, &config["values"]);
    render(&viewer, &name, &config, fields, None, StatusCode::OK)
}

/// `POST /ui/packs/{ref}/config`: save the form as the pack's config, as
/// `PUT /api/v1/configs/{ref}` does. A secret left empty keeps the value
/// in force.
async fn save(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Result<Response, UiError> {
    let (schema, config) = current(&state, &viewer, &name).await?;
    let mut fields = fields(&schema);
    for field in &mut fields {
        if field.kind != "password" {
            field.value = form.get(&field.name).cloned().unwrap_or_default();
        }
    }
    let refuse =
        |mut fields: Vec<Field>, errors: Vec<(String, String)>, general: Option<String>| {
            for (name, message) in errors {
                if let Some(field) = fields.iter_mut().find(|f| f.name == name) {
                    field.error = Some(message);
                }
            }
            render(
                &viewer,
                &name,
                &config,
                fields,
                general,
                StatusCode::BAD_REQUEST,
            )
        };
    let mut values: Map<String, Value> = match parameters(&schema, &form) {
        Ok(values) => values,
        Err(errors) => return refuse(fields, errors, None),
    };
    let secrets: Vec<String> = fields
        .iter()
        .filter(|f| f.kind == "password" && !values.contains_key(&f.name))
        .map(|f| f.name.clone())
        .collect();
    if !secrets.is_empty() {
        // Left empty: the value in force, read in clear for this write only.
        let clear = crate::configs::get_config(
            State(state.clone()),
            viewer.caller(),
            Path(name.clone()),
            ApiQuery(ShowQuery {
                show_secrets: crate::keys::Flag(true),
            }),
        )
        .await?
        .0;
        for secret in secrets {
            if let Some(value) = clear["values"].get(&secret).filter(|v| !v.is_null()) {
                values.insert(secret, value.clone());
            }
        }
    }
    let saved = crate::configs::put_config(
        State(state.clone()),
        viewer.caller(),
        Path(name.clone()),
        ApiJson(values),
    )
    .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&format!("/ui/packs/{name}/config")).into_response()),
        Err(e) => {
            let (message, _) = super::refusal(e)?;
            refuse(fields, Vec::new(), Some(message))
        }
    }
}

/// `POST /ui/packs/{ref}/config/reset`: drop the config set here; the
/// pack's own `config.yaml` applies again.
async fn reset(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    crate::configs::delete_config(State(state.clone()), viewer.caller(), Path(name.clone()))
        .await?;
    Ok(Redirect::to(&format!("/ui/packs/{name}/config")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_holds_the_config_but_never_a_secret() {
        let block: Map<String, Value> = serde_yaml::from_str(
            "region: {type: string, enum: [eu, us]}\nverbose: {type: boolean}\nretries: {type: integer, default: 3}\ntoken: {type: string, secret: true}\n",
        )
        .expect("yaml");
        let schema = ParamSchema::parse(&block).expect("schema");
        let fields = filled(
            &schema,
            &serde_json::json!({"region": "eu", "verbose": true, "retries": 5, "token": "hunter2"}),
        );
        let by_name = |n: &str| fields.iter().find(|f| f.name == n).expect("field");
        assert_eq!(by_name("region").kind, "select");
        assert_eq!(by_name("region").value, "eu");
        assert_eq!(by_name("verbose").value, "on");
        assert_eq!(by_name("retries").value, "5");
        assert_eq!(by_name("token").kind, "password");
        assert_eq!(by_name("token").value, "");
    }
}
