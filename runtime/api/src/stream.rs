//! `/stream/v1/stream` (StackStorm's event stream, Server-Sent Events) and
//! `/metrics` (Prometheus).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use serde::Deserialize;
use squall_reactor::ExecutionEventKind;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiQuery;
use crate::shapes;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/stream/v1/stream", get(stream))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    /// Comma-separated event names; all when absent.
    events: Option<String>,
}

/// The caller's tenant's execution events as they happen (until its key
/// or token is no longer valid):
/// `st2.execution__create` and `st2.execution__update`, each with the
/// execution in the API's shape.
#[utoipa::path(
    get,
    path = "/stream/v1/stream",
    tag = "stream",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StreamQuery>,
    used: Option<axum::Extension<crate::auth::UsedCredential>>,
) -> impl IntoResponse {
    // The stream lives as long as the credential that opened it: checked
    // again every few seconds, it ends once the key is disabled or the
    // token expires. (On `/ui/stream`, the page's session cookie.)
    let credential = used.map(|u| u.0.0).unwrap_or_default();
    let revoked = {
        let state = state.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match crate::auth::resolve(&state, credential.clone()).await {
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        }
    };
    let wanted: Option<Vec<String>> = q
        .events
        .map(|e| e.split(',').map(|s| s.trim().to_owned()).collect());
    let wants = move |kind: ExecutionEventKind| {
        wanted
            .as_ref()
            .is_none_or(|w| w.iter().any(|n| n == kind.name()))
    };
    let tenant = caller.tenant();
    let events = BroadcastStream::new(state.reactor.subscribe()).filter_map(move |item| {
        match item {
            Ok(e) if e.execution.tenant == tenant && wants(e.kind) => Some(Ok::<_, Infallible>(
                Event::default()
                    .event(e.kind.name())
                    .data(shapes::execution(&e.execution).to_string()),
            )),
            Ok(_) => None,
            // Told, not hidden: the reader was too slow and missed events.
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(Event::default()
                .event("st2.stream__lagged")
                .data(format!("{{\"missed\": {n}}}")))),
        }
    });
    Sse::new(futures_util::StreamExt::take_until(
        events,
        Box::pin(revoked),
    ))
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Prometheus' text format; the live gauges are read now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = squall_core::metrics::metrics();
    m.executions_running
        .set(i64::try_from(state.reactor.running_now()).unwrap_or(i64::MAX));
    m.queue_depth
        .set(i64::try_from(state.reactor.queue_depth()).unwrap_or(i64::MAX));
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}
