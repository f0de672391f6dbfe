//! `/api/v1/tenants` (admin) and `/api/v1/apikeys`.
//!
//! An operator manages the keys of its own tenant, up to its own role; an
//! admin also those of any tenant (`tenant` in the body or query).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use squall_core::TenantId;
use squall_core::auth::{Principal, Role, check_user_name};
use squall_store::ApiKeyInfo;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::v1::{ApiResult, page, paged, read};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants", get(list_tenants).post(create_tenant))
        .route("/api/v1/apikeys", get(list_keys).post(create_key))
        .route(
            "/api/v1/apikeys/{id}",
            get(get_key).put(update_key).delete(delete_key),
        )
}

fn tenant_id(raw: &str) -> ApiResult<TenantId> {
    TenantId::new(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct Paging {
    pub(crate) limit: Option<i64>,
    pub(crate) offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    tag = "tenants",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_tenants(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<Paging>,
) -> ApiResult<Response> {
    let tenants = read(&state, |s| s.tenants()).await?;
    Ok(paged(
        tenants,
        page(q.limit, q.offset)?,
        |t| json!({"id": t.id, "name": t.id, "created_at": t.created_at}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    pub(crate) name: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants",
    tag = "tenants",
    responses((status = 201, description = "Created"), crate::openapi::Faults)
)]
pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewTenant>,
) -> ApiResult<Response> {
    let tenant = tenant_id(&body.name)?;
    state.reactor.store().create_tenant(&tenant).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": tenant, "name": tenant})),
    )
        .into_response())
}

/// The tenant a key request is about: the caller's, or (admin only) the
/// one it names.
fn target_tenant(caller: &Principal, named: Option<&str>) -> ApiResult<TenantId> {
    match named {
        None => Ok(caller.tenant.clone()),
        Some(t) if t == caller.tenant.as_str() => Ok(caller.tenant.clone()),
        Some(t) if caller.role == Role::Admin => tenant_id(t),
        // Another tenant's keys do not exist for this caller.
        Some(t) => Err(ApiError::NotFound(format!("tenant '{t}' not found"))),
    }
}

fn key_shape(k: &ApiKeyInfo) -> Value {
    json!({
        "id": k.id,
        "uid": format!("api_key:{}", k.id),
        "user": k.user,
        "key_hash": "********",
        "enabled": k.enabled,
        "created_at": k.created_at,
        "metadata": {"tenant": k.tenant, "role": k.role},
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyQuery {
    pub(crate) tenant: Option<String>,
    /// Only this user's keys.
    pub(crate) user: Option<String>,
    pub(crate) limit: Option<i64>,
    pub(crate) offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/apikeys",
    tag = "apikeys",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult<Response> {
    let tenant = target_tenant(&caller, q.tenant.as_deref())?;
    let mut keys = read(&state, move |s| s.api_keys(&tenant)).await?;
    if let Some(user) = &q.user {
        keys.retain(|k| k.user == *user);
    }
    Ok(paged(keys, page(q.limit, q.offset)?, key_shape))
}

async fn find_key(state: &AppState, tenant: TenantId, id: &str) -> ApiResult<ApiKeyInfo> {
    let wanted = id.to_owned();
    read(state, move |s| s.api_keys(&tenant))
        .await?
        .into_iter()
        .find(|k| k.id == wanted)
        .ok_or_else(|| ApiError::NotFound(format!("API key '{id}' not found")))
}

#[utoipa::path(
    get,
    path = "/api/v1/apikeys/{id}",
    tag = "apikeys",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = target_tenant(&caller, q.tenant.as_deref())?;
    Ok(Json(key_shape(&find_key(&state, tenant, &id).await?)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewKey {
    pub(crate) user: Option<String>,
    pub(crate) role: Option<Role>,
    pub(crate) tenant: Option<String>,
    /// StackStorm's clients send these; Squall keeps role and tenant here.
    pub(crate) metadata: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/api/v1/apikeys",
    tag = "apikeys",
    responses((status = 201, description = "Created"), crate::openapi::Faults)
)]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<NewKey>,
) -> ApiResult<Response> {
    let meta = |field: &str| {
        body.metadata
            .as_ref()
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let named = body.tenant.clone().or_else(|| meta("tenant"));
    let tenant = target_tenant(&caller, named.as_deref())?;
    let role = match (body.role, meta("role")) {
        (Some(r), _) => r,
        (None, Some(r)) => r
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("metadata.role: {e}")))?,
        (None, None) => Role::Viewer.max(caller.role.min(Role::Operator)),
    };
    if role > caller.role {
        return Err(ApiError::Forbidden(format!(
            "a {} cannot create a key with the {role} role",
            caller.role
        )));
    }
    let user = body.user.unwrap_or_else(|| caller.user.clone());
    check_user_name(&user).map_err(ApiError::BadRequest)?;
    // A key speaks for its user (executions' `context.user`, st2kv.user
    // keys): only an admin may make one for someone else.
    if user != caller.user && caller.role != Role::Admin {
        return Err(ApiError::Forbidden(format!(
            "only an admin may make a key for another user; '{}' may make keys for itself",
            caller.user
        )));
    }
    let (id, key) = state
        .reactor
        .store()
        .create_api_key(&tenant, &user, role)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "key": key,
            "user": user,
            "enabled": true,
            "metadata": {"tenant": tenant, "role": role},
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyUpdate {
    pub(crate) enabled: bool,
    pub(crate) tenant: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/apikeys/{id}",
    tag = "apikeys",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn update_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<KeyUpdate>,
) -> ApiResult<Json<Value>> {
    let tenant = target_tenant(&caller, body.tenant.as_deref())?;
    let key = find_key(&state, tenant.clone(), &id).await?;
    may_manage(&caller, &key)?;
    state
        .reactor
        .store()
        .set_api_key_enabled(&tenant, &id, body.enabled)
        .await?;
    state.auth.clear();
    Ok(Json(key_shape(&find_key(&state, tenant, &id).await?)))
}

/// A key may be changed or deleted only by a caller whose role is at
/// least the key's (an operator cannot revive or remove an admin's key).
fn may_manage(caller: &Principal, key: &ApiKeyInfo) -> ApiResult<()> {
    if key.role > caller.role {
        return Err(ApiError::Forbidden(format!(
            "a {} cannot change a key with the {} role",
            caller.role, key.role
        )));
    }
    Ok(())
}

#[utoipa::path(
    delete,
    path = "/api/v1/apikeys/{id}",
    tag = "apikeys",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::openapi::Faults)
)]
pub(crate) async fn delete_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult<StatusCode> {
    let tenant = target_tenant(&caller, q.tenant.as_deref())?;
    let key = find_key(&state, tenant.clone(), &id).await?;
    may_manage(&caller, &key)?;
    if !state.reactor.store().delete_api_key(&tenant, &id).await? {
        return Err(ApiError::NotFound(format!("API key '{id}' not found")));
    }
    state.auth.clear();
    Ok(StatusCode::NO_CONTENT)
}
