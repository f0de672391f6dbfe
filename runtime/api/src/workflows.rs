//! `/api/v1/workflows`: StackStorm's workflow inspection.

use axum::Json;
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/workflows/inspect", post(inspect))
}

/// The kind of a problem, in st2's words.
fn kind(message: &str) -> &'static str {
    if message.starts_with("invalid YAQL")
        || message.starts_with("invalid Jinja")
        || message.contains("mixes YAQL and Jinja")
    {
        "expression"
    } else if message.starts_with("unknown task") || message.contains("inbound transition") {
        "semantic"
    } else {
        "syntax"
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/inspect",
    tag = "workflows",
    request_body(content = String, content_type = "text/plain", description = "An Orquesta workflow definition (YAML)"),
    responses((status = 200, description = "The problems found, each with its path in the definition; [] when there are none"), crate::openapi::Faults)
)]
/// Inspect an Orquesta workflow definition without running it: its
/// structure, task references and expression syntax. Changes nothing, so
/// any role may call it.
pub(crate) async fn inspect(body: String) -> Json<Value> {
    let problems = match squall_workflow::spec::Workflow::parse(&body) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid
            .0
            .into_iter()
            .map(|p| {
                json!({
                    "type": kind(&p.message),
                    "message": p.message,
                    "spec_path": p.path,
                    "schema_path": p.path,
                })
            })
            .collect(),
    };
    Json(Value::Array(problems))
}
