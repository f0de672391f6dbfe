//! `/api/v1/packs` and `/api/v1/runnertypes`.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use squall_reactor::LoadedPack;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::v1::{ApiResult, page, paged};
use squall_core::manifest::RunnerType;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/packs", get(list_packs))
        .route("/api/v1/packs/upload", post(upload))
        .route("/api/v1/packs/register", post(register))
        .route("/api/v1/packs/{ref}", get(get_pack).delete(uninstall))
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
        "installed_version": p.installed,
        "sensors": p.sensors.len(),
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct Paging {
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/packs",
    tag = "packs",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_packs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<Paging>,
) -> ApiResult<Response> {
    let set = state.reactor.runner().packs(&caller.tenant());
    let packs: Vec<&LoadedPack> = set.packs().collect();
    Ok(paged(packs, page(q.limit, q.offset)?, |p| pack_shape(p)))
}

#[utoipa::path(
    get,
    path = "/api/v1/packs/{ref}",
    tag = "packs",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_pack(
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

/// `POST /api/v1/packs/register` (admin): read the server's own packs
/// (`squall serve --packs`) again and put them in force, as StackStorm's
/// `st2 pack register` and `st2ctl reload` do. Executions already running
/// finish on the version they started on; the packs' sensors restart. A
/// pack that fails its checks keeps the version in force, and the answer
/// says why.
#[utoipa::path(
    post,
    path = "/api/v1/packs/register",
    tag = "packs",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn register(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let Some(paths) = state.pack_paths.clone() else {
        return Err(ApiError::BadRequest(
            "this server loads no packs from directories (squall serve --packs)".into(),
        ));
    };
    let report = state.reactor.reload_packs(&paths).await?;
    Ok(Json(json!({
        "reloaded": report.reloaded,
        "removed": report.removed,
        "refused": report.refused.iter().map(|r| json!({
            "dir": r.dir.display().to_string(),
            "error": r.error.to_string(),
        })).collect::<Vec<_>>(),
    })))
}

/// `POST /api/v1/packs/upload`: the body is a `.tar.gz` of a pack directory
/// with its built components; installed for the caller's tenant as a new
/// version.
#[utoipa::path(
    post,
    path = "/api/v1/packs/upload",
    tag = "packs",
    responses((status = 201, description = "Created"), crate::openapi::Faults)
)]
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> ApiResult<Response> {
    // A few uploads at a time: each may unpack hundreds of MiB.
    let permit = state
        .uploads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
    let limit = state.upload_limit;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the upload is larger than this server accepts ({} MiB)",
            limit >> 20
        ))
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let started = std::time::Instant::now();
    let body = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large())?;
    let received = started.elapsed();
    let installed = install_archive(&state, permit, caller.tenant(), body).await?;
    tracing::debug!(
        received_ms = received.as_millis() as u64,
        unpacked_and_installed_ms = (started.elapsed() - received).as_millis() as u64,
        "upload phases"
    );
    let mut shape = pack_shape(&installed.pack);
    shape["replaced_version"] = json!(installed.replaced);
    // Installed, but refused when run: host runners are off for the tenant.
    shape["refused_actions"] = installed
        .refused
        .iter()
        .map(|(action, why)| json!({"ref": action.to_string(), "why": why}))
        .collect();
    Ok((StatusCode::CREATED, Json(shape)).into_response())
}

/// Unpack the `.tar.gz` `body` and install it for `tenant`, holding
/// `permit` (one of [`AppState::uploads`]) until done. Unpacked and
/// installed in a task of its own: a client that hangs up does not leave
/// half an install behind.
pub(crate) async fn install_archive(
    state: &AppState,
    permit: tokio::sync::OwnedSemaphorePermit,
    tenant: squall_core::TenantId,
    body: axum::body::Bytes,
) -> ApiResult<squall_reactor::Installed> {
    let (reactor, limits) = (state.reactor.clone(), state.archive_limits);
    Ok(tokio::spawn(async move {
        let _permit = permit;
        let staging = reactor.pack_store()?.staging()?;
        let into = staging.path().to_owned();
        let root = tokio::task::spawn_blocking(move || {
            squall_reactor::install::unpack(&body, &into, limits)
        })
        .await
        .map_err(|e| squall_reactor::InstallError::Archive(format!("unpack task failed: {e}")))??;
        reactor.install_pack(&tenant, &root).await
    })
    .await
    .map_err(|e| ApiError::Internal(format!("install task failed: {e}")))??)
}

/// `DELETE /api/v1/packs/{ref}`: uninstall a pack installed through the API.
#[utoipa::path(
    delete,
    path = "/api/v1/packs/{ref}",
    tag = "packs",
    params(("ref" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::openapi::Faults)
)]
pub(crate) async fn uninstall(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<StatusCode> {
    let pack = squall_core::PackRef::new(r).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state
        .reactor
        .uninstall_pack(&caller.tenant(), &pack)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A runner as `/api/v1/runnertypes` shows it.
fn runner_shape(name: &str, description: &str, parameters: Value) -> Value {
    json!({
        "id": name,
        "uid": format!("runner_type:{name}"),
        "name": name,
        "enabled": true,
        "description": description,
        "runner_module": name,
        "runner_parameters": parameters,
    })
}

/// The runner `runner`, with the parameters it adds to its actions'.
pub(crate) fn runner_type(runner: RunnerType) -> Value {
    let description = match runner {
        RunnerType::Wasm => {
            "Runs the action as a WebAssembly component (squall:automation action world) in its own sandbox."
        }
        RunnerType::PythonScript => {
            "Runs a Python action (a subclass of StackStorm's Action) in the pack's Python component, in its own sandbox."
        }
        RunnerType::Orquesta => {
            "Runs a workflow in Orquesta's language; each task runs an action of its own."
        }
        RunnerType::Inquirer => {
            "Asks a person a question and waits (pending) for a response that passes its schema."
        }
        RunnerType::LocalShellCmd => {
            "Runs a shell command on the server's host (only for tenants the operator allows)."
        }
        RunnerType::LocalShellScript => {
            "Runs a script of the pack on the server's host (only for tenants the operator allows)."
        }
        RunnerType::RemoteShellCmd => {
            "Runs a shell command on remote hosts over SSH (only for tenants the operator allows)."
        }
        RunnerType::RemoteShellScript => {
            "Runs a script of the pack on remote hosts over SSH (only for tenants the operator allows)."
        }
    };
    let mut parameters = runner.parameters();
    if runner == RunnerType::Wasm
        && let Some(timeout) = parameters.get_mut("timeout")
    {
        timeout["description"] =
            json!("Seconds the action may run before it is stopped (status timeout).");
    }
    runner_shape(runner.as_str(), description, Value::Object(parameters))
}

/// Every runner Squall has.
const RUNNERS: [RunnerType; 8] = RunnerType::ALL;

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerQuery {
    name: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/runnertypes",
    tag = "runnertypes",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_runners(ApiQuery(q): ApiQuery<RunnerQuery>) -> Json<Value> {
    let runners = RUNNERS
        .into_iter()
        .filter(|r| q.name.as_deref().is_none_or(|n| n == r.as_str()))
        .map(runner_type)
        .collect();
    Json(Value::Array(runners))
}

#[utoipa::path(
    get,
    path = "/api/v1/runnertypes/{name}",
    tag = "runnertypes",
    params(("name" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_runner(Path(name): Path<String>) -> ApiResult<Json<Value>> {
    RUNNERS
        .into_iter()
        .find(|r| r.as_str() == name)
        .map(|r| Json(runner_type(r)))
        .ok_or_else(|| {
            let names: Vec<&str> = RUNNERS.iter().map(|r| r.as_str()).collect();
            ApiError::NotFound(format!(
                "runner type '{name}' not found (Squall's runners: {})",
                names.join(", ")
            ))
        })
}
