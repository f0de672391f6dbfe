//! The datastore: keys by scope; set, update and delete; secrets masked,
//! shown in clear only to roles that may decrypt them. Every read and
//! write goes through the `/api/v1/keys` handlers themselves.

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::{UiError, Viewer, json_of, page, v};
use crate::AppState;
use crate::error::{ApiJson, ApiQuery};
use crate::keys::{Flag, ListQuery, OneQuery, PutBody};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/keys", get(list).post(set))
        // The key's name is a form field, not a path segment: a name may
        // hold `/` or be `..`.
        .route("/ui/keys/delete", post(delete))
}

#[derive(Debug, Default, Deserialize)]
struct ListForm {
    #[serde(default)]
    scope: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    decrypt: String,
}

/// `GET /ui/keys`.
async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListForm>,
) -> Result<Response, UiError> {
    render(&state, &viewer, &q, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    q: &ListForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let scope = if q.scope.is_empty() {
        "st2kv.system"
    } else {
        q.scope.as_str()
    };
    let decrypt = q.decrypt == "true";
    let listed = crate::keys::list_keys(
        State(state.clone()),
        viewer.caller(),
        ApiQuery(ListQuery {
            prefix: Some(q.prefix.clone()).filter(|p| !p.is_empty()),
            scope: Some(scope.to_owned()),
            user: None,
            decrypt: Flag(decrypt),
            limit: Some(1000),
            offset: None,
        }),
    )
    .await;
    let (keys, error) = match listed {
        Ok(response) => (json_of(response).await?, error),
        Err(e) if e.status().is_server_error() => return Err(e.into()),
        Err(e) => (Value::Array(Vec::new()), Some(e.public_message())),
    };
    let mut response = page(
        Some(viewer),
        "keys.html",
        minijinja::context! {
            keys => v(keys),
            scope,
            prefix => q.prefix.clone(),
            decrypt,
            error,
        },
    )?;
    *response.status_mut() = status;
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct SetForm {
    name: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    ttl: String,
}

/// `POST /ui/keys`: set a key, as `PUT /api/v1/keys/{name}`.
async fn set(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<SetForm>,
) -> Result<Response, UiError> {
    let scope = if form.scope.is_empty() {
        "st2kv.system".to_owned()
    } else {
        form.scope.clone()
    };
    let back = ListForm {
        scope: scope.clone(),
        ..ListForm::default()
    };
    let ttl = match form.ttl.trim() {
        "" => None,
        t => match t.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let message = format!("ttl: '{t}' is not a number of seconds");
                return render(
                    &state,
                    &viewer,
                    &back,
                    Some(message),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        },
    };
    let put = crate::keys::put_key(
        State(state.clone()),
        viewer.caller(),
        Path(form.name.trim().to_owned()),
        ApiJson(PutBody {
            name: None,
            value: Value::String(form.value),
            scope: Some(scope.clone()),
            user: None,
            secret: !form.secret.is_empty(),
            encrypted: false,
            ttl,
        }),
    )
    .await;
    match put {
        Ok(_) => Ok(back_to(&scope)),
        Err(e) => {
            let (message, status) = super::refusal(e)?;
            render(&state, &viewer, &back, Some(message), status).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    name: String,
    #[serde(default)]
    scope: String,
}

/// `POST /ui/keys/delete`, the key in the form's `name`.
async fn delete(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<DeleteForm>,
) -> Result<Response, UiError> {
    let scope = if form.scope.is_empty() {
        "st2kv.system".to_owned()
    } else {
        form.scope
    };
    crate::keys::delete_key(
        State(state.clone()),
        viewer.caller(),
        Path(form.name),
        ApiQuery(OneQuery {
            scope: Some(scope.clone()),
            user: None,
            decrypt: Flag(false),
        }),
    )
    .await?;
    Ok(back_to(&scope))
}

/// Back to the list of `scope`'s keys.
fn back_to(scope: &str) -> Response {
    let scope: String = form_urlencoded::byte_serialize(scope.as_bytes()).collect();
    Redirect::to(&format!("/ui/keys?scope={scope}")).into_response()
}
