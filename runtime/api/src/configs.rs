//! `/api/v1/configs` and `/api/v1/config_schemas`: a pack's config, as
//! StackStorm's API has it. A config set here (`PUT`) takes the place of the
//! `config.yaml` the pack ships, for the caller's tenant: it is checked
//! against the pack's schema, stored (sealed under the server's key), and
//! the pack is put in force with it at once. Reads show the config the
//! pack's guests get (defaults applied), with secret values masked unless
//! `show_secrets=true` is asked by a role that may decrypt.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use squall_core::PackRef;
use squall_reactor::LoadedPack;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::keys::Flag;
use crate::v1::{ApiResult, read};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/configs", get(list_configs))
        .route(
            "/api/v1/configs/{pack}",
            get(get_config).put(put_config).delete(delete_config),
        )
        .route("/api/v1/config_schemas", get(list_schemas))
        .route("/api/v1/config_schemas/{pack}", get(get_schema))
}

/// What a masked secret reads as.
pub(crate) const MASK: &str = "********";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ShowQuery {
    /// Show secret values in clear (operator and admin only).
    #[serde(default)]
    pub(crate) show_secrets: Flag,
}

/// The pack `name` of the caller's tenant.
fn pack_of(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Arc<LoadedPack>> {
    let set = state.reactor.runner().packs(&caller.tenant());
    PackRef::new(name)
        .ok()
        .and_then(|r| set.get(&r).cloned())
        .ok_or_else(|| ApiError::NotFound(format!("pack '{name}' not found")))
}

fn schema_of(pack: &LoadedPack) -> ApiResult<Map<String, Value>> {
    match pack.config_schema() {
        Ok(Some(Value::Object(schema))) => Ok(schema),
        Ok(_) => Ok(Map::new()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// Replace the values of secret properties (`secret: true`, in nested
/// objects too) with [`MASK`].
pub(crate) fn mask(values: &mut Map<String, Value>, schema: &Map<String, Value>) {
    for (name, value) in values.iter_mut() {
        let Some(property) = schema.get(name) else {
            continue;
        };
        if property.get("secret").and_then(Value::as_bool) == Some(true) {
            *value = Value::String(MASK.into());
        } else if let (Value::Object(inner), Some(Value::Object(properties))) =
            (&mut *value, property.get("properties"))
        {
            mask(inner, properties);
        }
    }
}

/// Put back the values in force of secret properties given as [`MASK`]
/// (a config read masked and sent back, as the UI's form or a client
/// does): a mask never replaces a secret.
pub(crate) fn unmask(
    values: &mut Map<String, Value>,
    in_force: &Map<String, Value>,
    schema: &Map<String, Value>,
) {
    let names: Vec<String> = values.keys().cloned().collect();
    for name in names {
        let Some(property) = schema.get(&name) else {
            continue;
        };
        let secret = property.get("secret").and_then(Value::as_bool) == Some(true);
        if secret && values.get(&name).and_then(Value::as_str) == Some(MASK) {
            match in_force.get(&name) {
                Some(value) => {
                    values.insert(name, value.clone());
                }
                None => {
                    values.remove(&name);
                }
            }
        } else if let (Some(Value::Object(inner)), Some(Value::Object(properties))) =
            (values.get_mut(&name), property.get("properties"))
        {
            let empty = Map::new();
            let before = in_force
                .get(&name)
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            unmask(inner, before, properties);
        }
    }
}

/// The config `pack`'s guests get, in StackStorm's shape: masked unless
/// `clear`; `source` says whether it was set through the API or is the
/// pack's own `config.yaml` (or its schema's defaults).
pub(crate) fn config_shape(pack: &LoadedPack, from_api: bool, clear: bool) -> ApiResult<Value> {
    let mut values: Map<String, Value> = serde_json::from_str(&pack.config).map_err(|e| {
        ApiError::Internal(format!("config of pack '{}': {e}", pack.manifest.pack_ref))
    })?;
    if !clear {
        mask(&mut values, &schema_of(pack)?);
    }
    let name = pack.manifest.pack_ref.as_str();
    Ok(json!({
        "id": name,
        "uid": format!("config:{name}"),
        "pack": name,
        "values": values,
        "source": if from_api { "api" } else { "pack" },
    }))
}

fn may_show(caller: &Caller, q: &ShowQuery) -> ApiResult<bool> {
    if q.show_secrets.0 && !caller.0.role.can_write() {
        return Err(ApiError::Forbidden(format!(
            "showing secrets needs the operator or admin role; '{}' is {}",
            caller.0.user, caller.0.role
        )));
    }
    Ok(q.show_secrets.0)
}

/// Whether `tenant` set `pack`'s config through the API.
async fn set_through_api(state: &AppState, caller: &Caller, pack: &str) -> ApiResult<bool> {
    let (tenant, pack) = (caller.tenant(), pack.to_owned());
    read(state, move |s| Ok(s.pack_config(&tenant, &pack)?.is_some())).await
}

/// `GET /api/v1/configs`: every pack's config.
#[utoipa::path(
    get,
    path = "/api/v1/configs",
    tag = "packs",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_configs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> ApiResult<Json<Value>> {
    let clear = may_show(&caller, &q)?;
    let tenant = caller.tenant();
    let stored = read(&state, move |s| s.pack_configs(&tenant)).await?;
    let set = state.reactor.runner().packs(&caller.tenant());
    let configs = set
        .packs()
        .map(|p| {
            let from_api = stored
                .readable
                .iter()
                .any(|c| c.pack == p.manifest.pack_ref.as_str());
            config_shape(p, from_api, clear)
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Value::Array(configs)))
}

/// `GET /api/v1/configs/{pack}`.
#[utoipa::path(
    get,
    path = "/api/v1/configs/{pack}",
    tag = "packs",
    params(("pack" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> ApiResult<Json<Value>> {
    let clear = may_show(&caller, &q)?;
    let pack = pack_of(&state, &caller, &name)?;
    let from_api = set_through_api(&state, &caller, &name).await?;
    Ok(Json(config_shape(&pack, from_api, clear)?))
}

/// `PUT /api/v1/configs/{pack}`: the body is the config's values (an
/// object), in place of the pack's `config.yaml`. Checked against the
/// pack's schema (a refusal names the property), stored, and in force at
/// once: the pack's sensors restart with it, and executions prepared from
/// now on get it.
#[utoipa::path(
    put,
    path = "/api/v1/configs/{pack}",
    tag = "packs",
    params(("pack" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn put_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(mut values): ApiJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let pack = pack_of(&state, &caller, &name)?;
    let in_force: Map<String, Value> = serde_json::from_str(&pack.config).unwrap_or_default();
    unmask(&mut values, &in_force, &schema_of(&pack)?);
    let configured = state
        .reactor
        .configure_pack(&caller.tenant(), &pack.manifest.pack_ref, Some(values))
        .await?;
    Ok(Json(config_shape(&configured, true, false)?))
}

/// `DELETE /api/v1/configs/{pack}`: drop the config set through the API;
/// the pack's own `config.yaml` (or its schema's defaults) applies again.
#[utoipa::path(
    delete,
    path = "/api/v1/configs/{pack}",
    tag = "packs",
    params(("pack" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::openapi::Faults)
)]
pub(crate) async fn delete_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let pack = pack_of(&state, &caller, &name)?;
    if !set_through_api(&state, &caller, &name).await? {
        return Err(ApiError::NotFound(format!(
            "pack '{name}' has no config set through the API"
        )));
    }
    state
        .reactor
        .configure_pack(&caller.tenant(), &pack.manifest.pack_ref, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn schema_shape(pack: &LoadedPack) -> ApiResult<Value> {
    let name = pack.manifest.pack_ref.as_str();
    Ok(json!({
        "id": name,
        "uid": format!("config_schema:{name}"),
        "pack": name,
        "attributes": schema_of(pack)?,
    }))
}

/// `GET /api/v1/config_schemas`: the config schemas of the packs that
/// have one.
#[utoipa::path(
    get,
    path = "/api/v1/config_schemas",
    tag = "packs",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_schemas(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    let set = state.reactor.runner().packs(&caller.tenant());
    let schemas = set
        .packs()
        .filter(|p| p.dir.join("config.schema.yaml").is_file())
        .map(schema_shape)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Value::Array(schemas)))
}

/// `GET /api/v1/config_schemas/{pack}`.
#[utoipa::path(
    get,
    path = "/api/v1/config_schemas/{pack}",
    tag = "packs",
    params(("pack" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let pack = pack_of(&state, &caller, &name)?;
    if !pack.dir.join("config.schema.yaml").is_file() {
        return Err(ApiError::NotFound(format!(
            "pack '{name}' has no config schema"
        )));
    }
    Ok(Json(schema_shape(&pack)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_sent_back_keeps_the_secret_in_force() {
        let schema = json!({
            "password": {"type": "string", "secret": true},
            "smtp": {"type": "object", "properties": {
                "token": {"type": "string", "secret": true},
            }},
        });
        let in_force = json!({"password": "hunter2", "smtp": {"token": "t0k3n"}});
        let mut sent = json!({
            "password": MASK,
            "smtp": {"token": MASK, "host": "mail"},
        });
        unmask(
            sent.as_object_mut().expect("object"),
            in_force.as_object().expect("object"),
            schema.as_object().expect("object"),
        );
        assert_eq!(
            sent,
            json!({"password": "hunter2", "smtp": {"token": "t0k3n", "host": "mail"}})
        );
        // A new value replaces it; a mask with nothing in force is dropped.
        let mut sent = json!({"password": "new", "smtp": {"token": MASK}});
        unmask(
            sent.as_object_mut().expect("object"),
            &Map::new(),
            schema.as_object().expect("object"),
        );
        assert_eq!(sent, json!({"password": "new", "smtp": {}}));
    }

    #[test]
    fn secrets_are_masked_however_deep() {
        let schema = json!({
            "user": {"type": "string"},
            "password": {"type": "string", "secret": true},
            "smtp": {"type": "object", "properties": {
                "host": {"type": "string"},
                "token": {"type": "string", "secret": true},
            }},
        });
        let mut values = json!({
            "user": "bob",
            "password": "hunter2",
            "smtp": {"host": "mail", "token": "t0k3n"},
            "extra": "kept",
        });
        mask(
            values.as_object_mut().expect("object"),
            schema.as_object().expect("object"),
        );
        assert_eq!(
            values,
            json!({
                "user": "bob",
                "password": MASK,
                "smtp": {"host": "mail", "token": MASK},
                "extra": "kept",
            })
        );
    }
}
