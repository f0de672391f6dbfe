//! Sensors: each with its state, restarts, events dispatched and last
//! error (a guest's panic message included); one with its recent log,
//! live; enable and disable.

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::{UiError, Viewer, page, v};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/sensors", get(list))
        .route("/ui/sensors/{ref}", get(detail))
        .route("/ui/sensors/{ref}/enabled", post(set_enabled))
}

/// `GET /ui/sensors`.
async fn list(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let sensors: Vec<Value> = state
        .reactor
        .sensors(&viewer.tenant())
        .iter()
        .map(|s| crate::sensors::shape(s, false))
        .collect();
    page(
        Some(&viewer),
        "sensors.html",
        minijinja::context! { sensors => v(sensors) },
    )
}

#[derive(Debug, Default, Deserialize)]
struct DetailQuery {
    /// `log`: only the log's lines (the live refresh).
    #[serde(default)]
    partial: String,
}

/// `GET /ui/sensors/{ref}`.
async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Result<Response, UiError> {
    let sensor = state
        .reactor
        .sensor(&viewer.tenant(), &r)
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("sensor '{r}' not found")))?;
    let template = if q.partial == "log" {
        "sensor_log.html"
    } else {
        "sensor.html"
    };
    page(
        Some(&viewer),
        template,
        minijinja::context! { s => v(crate::sensors::shape(&sensor, true)) },
    )
}

/// `POST /ui/sensors/{ref}/enabled`, as `PUT /api/v1/sensortypes/{ref}`.
async fn set_enabled(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
    Form(form): Form<super::Toggle>,
) -> Result<Response, UiError> {
    state
        .reactor
        .sensor(&viewer.tenant(), &r)
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("sensor '{r}' not found")))?;
    state
        .reactor
        .set_sensor_enabled(&viewer.tenant(), &r, form.on())
        .await
        .map_err(crate::ApiError::from)?;
    Ok(Redirect::to(&format!("/ui/sensors/{r}")).into_response())
}
