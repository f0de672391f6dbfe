//! `/api/v1/sensortypes`: StackStorm's sensor types, with each sensor's
//! state, last error, restarts, counters and recent log lines.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use squall_reactor::SensorView;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::v1::{ApiResult, page, paged};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sensortypes", get(list))
        .route("/api/v1/sensortypes/{ref}", get(get_one).put(update))
}

pub(crate) fn shape(s: &SensorView, with_log: bool) -> Value {
    let m = &s.meta;
    let r = m.sensor_ref();
    let mut body = json!({
        "id": r,
        "ref": r,
        "uid": format!("sensor_type:{}:{}", m.pack, m.class_name),
        "pack": m.pack.as_str(),
        "name": m.class_name,
        "class_name": m.class_name,
        "description": m.description,
        "enabled": s.enabled,
        "entry_point": m.entry_point.display().to_string(),
        "poll_interval": m.poll_interval.map(|d| d.as_secs_f64()),
        "trigger_types": m.trigger_types.iter().map(|t| t.trigger_ref.clone()).collect::<Vec<_>>(),
        "state": s.state.as_str(),
        "last_error": s.last_error,
        "restart_count": s.restarts,
        "next_start_at": s.next_start,
        "dispatched": s.dispatched,
        "invalid_payloads": s.invalid_payloads,
        "poll_errors": s.poll_errors,
        "triggers": s.triggers.iter().map(|(id, t, p)| json!({"id": id, "type": t, "parameters": p})).collect::<Vec<_>>(),
    });
    if with_log {
        body["log"] = json!(s.log);
    }
    body
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    pack: Option<String>,
    enabled: Option<bool>,
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/sensortypes",
    tag = "sensortypes",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let sensors: Vec<_> = state
        .reactor
        .sensors(&caller.tenant())
        .into_iter()
        .filter(|s| {
            q.pack.as_deref().is_none_or(|p| s.meta.pack.as_str() == p)
                && q.enabled.is_none_or(|e| s.enabled == e)
        })
        .collect();
    Ok(paged(sensors, page, |s| shape(s, false)))
}

fn find(state: &AppState, caller: &Caller, r: &str) -> ApiResult<SensorView> {
    state
        .reactor
        .sensor(&caller.tenant(), r)
        .ok_or_else(|| ApiError::NotFound(format!("sensor type '{r}' not found")))
}

#[utoipa::path(
    get,
    path = "/api/v1/sensortypes/{ref}",
    tag = "sensortypes",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(shape(&find(&state, &caller, &r)?, true)))
}

/// StackStorm's clients send the whole object back; only `enabled` changes.
#[derive(Debug, Deserialize)]
pub(crate) struct Update {
    enabled: bool,
}

#[utoipa::path(
    put,
    path = "/api/v1/sensortypes/{ref}",
    tag = "sensortypes",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
    ApiJson(body): ApiJson<Update>,
) -> ApiResult<Json<Value>> {
    find(&state, &caller, &r)?;
    let view = state
        .reactor
        .set_sensor_enabled(&caller.tenant(), &r, body.enabled)
        .await?;
    Ok(Json(shape(&view, true)))
}
