//! `/api/v1/packs` and `/api/v1/runnertypes`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use squall_reactor::LoadedPack;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::v1::{ApiResult, page, paged};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/packs", get(list_packs))
        .route("/api/v1/packs/{ref}", get(get_pack))
        .route("/api/v1/runnertypes", get(list_runners))
        .route("/api/v1/runnertypes/{name}", get(get_runner))
}

pub(crate) fn pack_shape(p: &LoadedPack) -> Value {
    let m = &p.manifest;
    json!({
        "id": m.pack_ref,
        "uid": format!("pack:{}", m.pack_ref),
        "ref": m.pack_ref,
        "name": m.name,
        "description": m.description,
        "version": m.version,
        "author": m.author,
        "email": m.email,
        "keywords": m.keywords,
        "dependencies": [],
        "system": {},
        "actions": p.actions.len(),
        "sensors": p.sensors.len(),
    })
}

#[derive(Debug, Deserialize)]
struct Paging {
    limit: Option<i64>,
    offset: Option<u64>,
}

async fn list_packs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<Paging>,
) -> ApiResult<Response> {
    let set = state.reactor.runner().packs(&caller.tenant());
    let packs: Vec<&LoadedPack> = set.packs().collect();
    Ok(paged(packs, page(q.limit, q.offset)?, |p| pack_shape(p)))
}

async fn get_pack(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    let set = state.reactor.runner().packs(&caller.tenant());
    set.packs()
        .find(|p| p.manifest.pack_ref.as_str() == r)
        .map(|p| Json(pack_shape(p)))
        .ok_or_else(|| ApiError::NotFound(format!("pack '{r}' not found")))
}

/// Squall's one runner: a WebAssembly component of the `action` world.
fn wasm_runner() -> Value {
    json!({
        "id": "wasm",
        "uid": "runner_type:wasm",
        "name": "wasm",
        "enabled": true,
        "description": "Runs the action as a WebAssembly component (squall:automation action world) in its own sandbox.",
        "runner_module": "wasm",
        "runner_parameters": {
            "timeout": {
                "type": "integer",
                "description": "Seconds the action may run before it is stopped (status timeout).",
                "default": squall_core::manifest::DEFAULT_TIMEOUT_SECS,
            },
        },
    })
}

#[derive(Debug, Deserialize)]
struct RunnerQuery {
    name: Option<String>,
}

async fn list_runners(ApiQuery(q): ApiQuery<RunnerQuery>) -> Json<Value> {
    let runner = wasm_runner();
    let matches = q.name.as_deref().is_none_or(|n| n == "wasm");
    Json(if matches { json!([runner]) } else { json!([]) })
}

async fn get_runner(Path(name): Path<String>) -> ApiResult<Json<Value>> {
    if name == "wasm" {
        Ok(Json(wasm_runner()))
    } else {
        Err(ApiError::NotFound(format!(
            "runner type '{name}' not found (Squall's one runner is 'wasm')"
        )))
    }
}
