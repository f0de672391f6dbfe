//! StackStorm's datastore API, `/api/v1/keys`: scopes `st2kv.system` (the
//! tenant's) and `st2kv.user` (the caller's own; an admin may name another
//! user), `prefix`, `ttl`, `secret` and `decrypt`.
//!
//! Secret values are never shown without `decrypt=true`, and decrypting
//! needs a role that may write (operator or admin): a viewer is refused.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use squall_core::auth::{Principal, Role};
use squall_core::kv::{KvEntry, KvError, KvScope, KvStore, check_key};
use squall_core::time::{rfc3339_of_unix, unix_now};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::v1::{ApiResult, page, paged};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/keys", get(list_keys)).route(
        "/api/v1/keys/{name}",
        get(get_key).put(put_key).delete(delete_key),
    )
}

/// Longest value accepted, in bytes.
const MAX_VALUE_BYTES: usize = 1 << 20;

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::InvalidKey { .. } => Self::BadRequest(e.to_string()),
            KvError::EncryptionUnavailable => Self::Unavailable(e.to_string()),
            KvError::Quota { .. } => Self::TooManyRequests(e.to_string()),
            KvError::Backend(_) => Self::Internal(e.to_string()),
        }
    }
}

/// The user whose `st2kv.user` keys a request is about.
fn user_of(caller: &Principal, named: Option<&str>) -> ApiResult<String> {
    match named.filter(|u| !u.is_empty()) {
        None => Ok(caller.user.clone()),
        Some(u) if u == caller.user => Ok(u.to_owned()),
        Some(u) if caller.role == Role::Admin => Ok(u.to_owned()),
        Some(u) => Err(ApiError::Forbidden(format!(
            "'{}' may not read or change the keys of user '{u}'",
            caller.user
        ))),
    }
}

fn scope_of(caller: &Principal, scope: Option<&str>, user: Option<&str>) -> ApiResult<KvScope> {
    let user = user_of(caller, user)?;
    KvScope::parse(scope.unwrap_or(KvScope::SYSTEM), &user).map_err(ApiError::BadRequest)
}

fn check_decrypt(caller: &Principal, decrypt: bool) -> ApiResult<()> {
    if decrypt && !caller.role.can_write() {
        return Err(ApiError::Forbidden(format!(
            "decrypting secrets needs the operator or admin role; '{}' is {}",
            caller.user, caller.role
        )));
    }
    Ok(())
}

/// An entry in StackStorm's KeyValuePair shape. `revealed`: the value of a
/// secret is in clear.
fn shape(e: &KvEntry, revealed: bool) -> Value {
    let (scope, name) = KvScope::of_storage_key(&e.key);
    let mut body = json!({
        "id": format!("{}:{name}", scope.name()),
        "uid": format!("key_value_pair:{}:{name}", scope.name()),
        "name": name,
        "value": e.value,
        "secret": e.secret,
        "encrypted": e.secret && !revealed,
        "scope": scope.name(),
    });
    if let KvScope::User(user) = &scope {
        body["user"] = json!(user);
    }
    if let Some(at) = e.expires_at {
        body["expire_timestamp"] = json!(rfc3339_of_unix(at));
    }
    body
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    pub(crate) prefix: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) decrypt: Flag,
    pub(crate) limit: Option<i64>,
    pub(crate) offset: Option<u64>,
}

/// A boolean query flag as StackStorm's clients send it (`true`, `True`,
/// `1`, ...).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flag(pub(crate) bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Flag(true)),
            "false" | "0" | "no" | "" => Ok(Flag(false)),
            other => Err(serde::de::Error::custom(format!(
                "expected true or false, got '{other}'"
            ))),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    check_decrypt(&caller, q.decrypt.0)?;
    let prefix = q.prefix.unwrap_or_default();
    let scopes = match q.scope.as_deref().unwrap_or("all") {
        "all" => vec![
            KvScope::System,
            KvScope::User(user_of(&caller, q.user.as_deref())?),
        ],
        one => vec![scope_of(&caller, Some(one), q.user.as_deref())?],
    };
    let mut entries = Vec::new();
    for scope in scopes {
        let mut found = state
            .reactor
            .store()
            .kv_list(&caller.tenant, &scope.storage_key(&prefix), q.decrypt.0)
            .await?;
        // A system listing holds no user keys (theirs sort apart).
        found.retain(|e| KvScope::of_storage_key(&e.key).0 == scope);
        entries.extend(found);
    }
    let revealed = q.decrypt.0;
    Ok(paged(entries, page(q.limit, q.offset)?, |e| {
        shape(e, revealed)
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct OneQuery {
    pub(crate) scope: Option<String>,
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) decrypt: Flag,
}

#[utoipa::path(
    get,
    path = "/api/v1/keys/{name}",
    tag = "keys",
    params(("name" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<OneQuery>,
) -> ApiResult<Json<Value>> {
    check_decrypt(&caller, q.decrypt.0)?;
    check_key(&name)?;
    let scope = scope_of(&caller, q.scope.as_deref(), q.user.as_deref())?;
    let entry = KvStore::get(
        state.reactor.store(),
        &caller.tenant,
        &scope.storage_key(&name),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("key '{name}' not found in {}", scope.name())))?;
    let mut entry = entry;
    if entry.secret && !q.decrypt.0 {
        entry.value = "********".into();
    }
    Ok(Json(shape(&entry, q.decrypt.0)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PutBody {
    pub(crate) name: Option<String>,
    pub(crate) value: Value,
    pub(crate) scope: Option<String>,
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) secret: bool,
    #[serde(default)]
    pub(crate) encrypted: bool,
    pub(crate) ttl: Option<u64>,
}

#[utoipa::path(
    put,
    path = "/api/v1/keys/{name}",
    tag = "keys",
    params(("name" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn put_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PutBody>,
) -> ApiResult<Json<Value>> {
    check_key(&name)?;
    if let Some(n) = body.name.as_deref().filter(|n| *n != name) {
        return Err(ApiError::BadRequest(format!(
            "the body names key '{n}', the path '{name}'"
        )));
    }
    if body.encrypted {
        return Err(ApiError::BadRequest(
            "field 'encrypted': values encrypted elsewhere cannot be imported; send the clear value with \"secret\": true".into(),
        ));
    }
    let value = match body.value {
        Value::String(s) => s,
        other => {
            return Err(ApiError::BadRequest(format!(
                "field 'value' must be a string, got {other}"
            )));
        }
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::BadRequest(format!(
            "field 'value' is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    let scope = scope_of(&caller, body.scope.as_deref(), body.user.as_deref())?;
    let entry = KvEntry {
        key: scope.storage_key(&name),
        value,
        expires_at: body.ttl.map(|t| unix_now().saturating_add(t)),
        secret: body.secret,
    };
    let mut shown = entry.clone();
    KvStore::set(state.reactor.store(), &caller.tenant, entry).await?;
    if shown.secret {
        shown.value = "********".into();
    }
    Ok(Json(shape(&shown, false)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/keys/{name}",
    tag = "keys",
    params(("name" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::openapi::Faults)
)]
pub(crate) async fn delete_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<OneQuery>,
) -> ApiResult<StatusCode> {
    check_key(&name)?;
    let scope = scope_of(&caller, q.scope.as_deref(), q.user.as_deref())?;
    if !KvStore::delete(
        state.reactor.store(),
        &caller.tenant,
        &scope.storage_key(&name),
    )
    .await?
    {
        return Err(ApiError::NotFound(format!(
            "key '{name}' not found in {}",
            scope.name()
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
