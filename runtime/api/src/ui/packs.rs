//! Packs: those the tenant has, with their versions; upload a `.tar.gz`;
//! remove one installed through the API.

use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::{UiError, Viewer, page, v};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        // The upload's size is bounded by the server's --max-upload-mib,
        // counted as it arrives (below), not by axum's default.
        .route(
            super::UPLOAD_PATH,
            get(list)
                .post(upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/ui/packs/{ref}/remove", post(remove))
}

/// `GET /ui/packs`.
async fn list(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    render(&state, &viewer, None, None, StatusCode::OK)
}

fn render(
    state: &AppState,
    viewer: &Viewer,
    done: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let set = state.reactor.runner().packs(&viewer.tenant());
    let packs: Vec<Value> = set
        .packs()
        .map(|p| {
            let mut shape = crate::packs::pack_shape(p);
            shape["removable"] = Value::Bool(p.installed.is_some());
            shape["configurable"] = Value::Bool(p.dir.join("config.schema.yaml").is_file());
            shape
        })
        .collect();
    let mut response = page(
        Some(viewer),
        "packs.html",
        minijinja::context! {
            packs => v(packs),
            done,
            error,
            limit_mib => state.upload_limit >> 20,
        },
    )?;
    *response.status_mut() = status;
    Ok(response)
}

/// `POST /ui/packs` (multipart, the file in `archive`): install it, as
/// `POST /api/v1/packs/upload` does.
///
/// A cookie session's upload carries its CSRF token as the form's first
/// field (`csrf`): the file is not read until it is checked.
async fn upload(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: Option<axum::Extension<super::UploadCsrf>>,
    mut form: Multipart,
) -> Result<Response, UiError> {
    let mut unchecked = csrf.map(|c| c.0);
    let refuse =
        |message: String, status: StatusCode| render(&state, &viewer, None, Some(message), status);
    let permit = state.uploads.clone().acquire_owned().await.map_err(|_| {
        UiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
    })?;
    let mut archive = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return refuse(format!("the upload did not arrive whole: {e}"), e.status()),
        };
        if let Some(expected) = &unchecked {
            if field.name() != Some(super::CSRF_FIELD) {
                return Err(super::csrf_refused());
            }
            // A token is short: more than a little is refused unread.
            let mut field = field;
            let mut given = Vec::new();
            while let Ok(Some(chunk)) = field.chunk().await {
                given.extend_from_slice(&chunk);
                if given.len() > 256 {
                    return Err(super::csrf_refused());
                }
            }
            match std::str::from_utf8(&given) {
                Ok(given) if expected.accepts(given) => unchecked = None,
                _ => return Err(super::csrf_refused()),
            }
            continue;
        }
        if field.name() != Some("archive") {
            continue;
        }
        let mut field = field;
        let mut bytes = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() > state.upload_limit => {
                    return refuse(
                        format!(
                            "the upload is larger than this server accepts ({} MiB)",
                            state.upload_limit >> 20
                        ),
                        StatusCode::PAYLOAD_TOO_LARGE,
                    );
                }
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return refuse(format!("the upload did not arrive whole: {e}"), e.status());
                }
            }
        }
        archive = Some(axum::body::Bytes::from(bytes));
    }
    if unchecked.is_some() {
        return Err(super::csrf_refused());
    }
    let Some(archive) = archive.filter(|a| !a.is_empty()) else {
        return refuse(
            "choose a pack's .tar.gz to upload".into(),
            StatusCode::BAD_REQUEST,
        );
    };
    match crate::packs::install_archive(&state, permit, viewer.tenant(), archive).await {
        Ok(installed) => {
            let pack = &installed.pack;
            let mut done = format!(
                "Installed pack {} {} ({} actions, {} sensors).",
                pack.manifest.pack_ref,
                pack.manifest.version,
                pack.actions.len(),
                pack.sensors.len()
            );
            if !installed.refused.is_empty() {
                let refused: Vec<String> = installed
                    .refused
                    .iter()
                    .map(|(a, _)| a.to_string())
                    .collect();
                done.push_str(&format!(
                    " Refused when run (host runners are off for this tenant): {}.",
                    refused.join(", ")
                ));
            }
            render(&state, &viewer, Some(done), None, StatusCode::CREATED)
        }
        Err(e) => {
            let (message, status) = super::refusal(e)?;
            refuse(message, status)
        }
    }
}

/// `POST /ui/packs/{ref}/remove`.
async fn remove(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(r): Path<String>,
) -> Result<Response, UiError> {
    let pack = squall_core::PackRef::new(r)
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    state
        .reactor
        .uninstall_pack(&viewer.tenant(), &pack)
        .await
        .map_err(crate::ApiError::from)?;
    Ok(Redirect::to("/ui/packs").into_response())
}
