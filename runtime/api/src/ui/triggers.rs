//! Triggers and events: the tenant's trigger types, the trigger instances
//! with their payloads and what each set off, and re-emitting one.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use squall_store::{EnforcementFilter, Page};

use super::{UiError, Viewer, page, v};
use crate::AppState;
use crate::v1::read;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/triggers", get(types))
        .route("/ui/trigger-instances", get(instances))
        .route("/ui/trigger-instances/{id}", get(instance))
        .route("/ui/trigger-instances/{id}/re-emit", post(re_emit))
}

/// `GET /ui/triggers`: the trigger types, built-in and the packs'.
async fn types(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let types: Vec<Value> = state
        .reactor
        .trigger_types(&viewer.tenant())
        .iter()
        .map(crate::shapes::trigger_type)
        .collect();
    page(
        Some(&viewer),
        "triggers.html",
        minijinja::context! { types => v(types) },
    )
}

/// Instances on a page.
const PAGE: usize = 50;

#[derive(Debug, Default, Deserialize)]
struct InstanceQuery {
    #[serde(default)]
    trigger: String,
    #[serde(default)]
    page: usize,
}

/// `GET /ui/trigger-instances`: newest first, of one type if asked.
async fn instances(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<InstanceQuery>,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant();
    let trigger = Some(q.trigger.trim().to_owned()).filter(|t| !t.is_empty());
    let offset = q.page.saturating_mul(PAGE);
    let (items, total) = read(&state, {
        let trigger = trigger.clone();
        move |s| {
            s.list_trigger_instances(
                &tenant,
                trigger.as_deref(),
                Page {
                    limit: PAGE,
                    offset,
                },
            )
        }
    })
    .await?;
    let items: Vec<Value> = items
        .iter()
        .map(|ti| {
            let mut shape = crate::shapes::trigger_instance(ti);
            shape["payload_short"] = Value::String(short(&ti.payload.to_string(), 120));
            shape
        })
        .collect();
    let more = (offset + items.len()) < usize::try_from(total).unwrap_or(usize::MAX);
    page(
        Some(&viewer),
        "trigger_instances.html",
        minijinja::context! {
            instances => v(items),
            trigger => q.trigger,
            total,
            page => q.page,
            more,
        },
    )
}

/// `text`, cut to `most` characters with an ellipsis.
fn short(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `GET /ui/trigger-instances/{id}`: the payload, and the rules it set
/// off with their executions.
async fn instance(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant();
    let (found, enforcements) = read(&state, {
        let id = id.clone();
        move |s| {
            let found = s.get_trigger_instance(&tenant, &id)?;
            let filter = EnforcementFilter {
                trigger_instance: Some(id),
                ..EnforcementFilter::default()
            };
            let (enforcements, _) = s.list_enforcements(
                &tenant,
                &filter,
                Page {
                    limit: 100,
                    offset: 0,
                },
            )?;
            Ok((found, enforcements))
        }
    })
    .await?;
    let found = found.ok_or_else(|| {
        UiError::new(
            StatusCode::NOT_FOUND,
            format!("trigger instance '{id}' not found"),
        )
    })?;
    let enforcements: Vec<Value> = enforcements
        .iter()
        .map(crate::shapes::enforcement)
        .collect();
    page(
        Some(&viewer),
        "trigger_instance.html",
        minijinja::context! {
            ti => v(crate::shapes::trigger_instance(&found)),
            enforcements => v(enforcements),
        },
    )
}

/// `POST /ui/trigger-instances/{id}/re-emit`: dispatch a copy, through
/// the API's own handler; then to the copy.
async fn re_emit(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let response = crate::v1::re_emit(State(state), viewer.caller(), Path(id)).await?;
    let body = super::json_of(response).await?;
    let new = body["trigger_instance"]["id"].as_str().ok_or_else(|| {
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "re-emit gave no instance",
        )
    })?;
    Ok(Redirect::to(&format!("/ui/trigger-instances/{new}")).into_response())
}
