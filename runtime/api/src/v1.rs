//! `/api/v1` routes.

use std::collections::BTreeSet;
use std::path::Path as FsPath;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use squall_core::rule::Rule;
use squall_core::trigger::WEBHOOK;
use squall_core::{PackRef, TenantId};
use squall_store::Page;

use crate::auth::{Caller, MaybeCaller};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::{AppState, shapes};

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/openapi.json", get(crate::openapi::document))
        .route("/auth/v1/tokens", post(crate::auth::create_token))
        .route("/api/v1/webhooks", get(list_webhooks))
        .route("/api/v1/webhooks/{*url}", post(webhook).get(get_webhook))
        .route("/api/v1/ruletypes", get(list_rule_types))
        .route("/api/v1/ruletypes/{id}", get(get_rule_type))
        .route("/api/v1/triggertypes", get(list_trigger_types))
        .route("/api/v1/triggertypes/{ref}", get(get_trigger_type))
        .route("/api/v1/triggers", get(list_triggers))
        .route("/api/v1/triggerinstances", get(list_trigger_instances))
        .route("/api/v1/triggerinstances/{id}", get(get_trigger_instance))
        .route("/api/v1/triggerinstances/{id}/re_emit", post(re_emit))
        .route("/api/v1/ruleenforcements", get(list_enforcements))
        .route("/api/v1/ruleenforcements/{id}", get(get_enforcement))
        .route("/api/v1/rules", get(list_rules).post(create_rule))
        .route(
            "/api/v1/rules/{ref}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
        .route("/api/v1/traces", get(list_traces))
        .route("/api/v1/traces/{id}", get(get_trace))
        .merge(crate::executions::routes())
        .merge(crate::sensors::routes())
        .merge(crate::accounts::routes())
        .merge(crate::keys::routes())
        .merge(crate::packs::routes())
        .merge(crate::configs::routes())
        .merge(crate::stream::routes())
        .merge(crate::workflows::routes())
        .merge(crate::inquiries::routes())
}

/// Whether the server answers (no authentication needed).
#[utoipa::path(
    get,
    path = "/health",
    tag = "server",
    responses((status = 200, description = "OK"))
)]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Run a store read on tokio's blocking pool: SQLite calls block.
pub(crate) async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&squall_store::Store) -> squall_store::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let store = state.reactor.store().clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))?
        .map_err(ApiError::from)
}

/// StackStorm's paging: `limit` (default 50, at most 1000; -1 for 1000),
/// `offset`.
pub(crate) fn page(limit: Option<i64>, offset: Option<u64>) -> ApiResult<Page> {
    {
        let limit = match limit {
            None => 50,
            Some(n) if (1..=1000).contains(&n) => n as usize,
            // st2's `-n -1`: all there is, as far as one page goes.
            Some(-1) => 1000,
            Some(n) => {
                return Err(ApiError::BadRequest(format!(
                    "limit must be between 1 and 1000 (or -1 for 1000), got {n}"
                )));
            }
        };
        Ok(Page {
            limit,
            offset: offset.unwrap_or(0) as usize,
        })
    }
}

/// A list body with StackStorm's `X-Total-Count` and `X-Limit` headers.
pub(crate) fn listing(items: Vec<Value>, total: u64, page: Page) -> Response {
    let mut response = Json(items).into_response();
    let headers = response.headers_mut();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    headers.insert("X-Limit", HeaderValue::from(page.limit as u64));
    response
}

pub(crate) fn paged<T>(all: Vec<T>, page: Page, shape: impl Fn(&T) -> Value) -> Response {
    let total = all.len() as u64;
    let items = all
        .iter()
        .skip(page.offset)
        .take(page.limit)
        .map(shape)
        .collect();
    listing(items, total, page)
}

// --- webhooks --------------------------------------------------------------

/// An anonymous call is accepted when *every* enabled rule on this webhook
/// accepts it — each is `public`, or its `hmac` signature matches the body
/// — since the call fires them all. 401 otherwise, saying nothing about
/// which rules exist.
async fn anonymous_webhook_allowed(
    state: &AppState,
    tenant: &TenantId,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<()> {
    let refused = || {
        ApiError::Unauthorized(format!(
            "webhook '{url}' needs an API key or token, or a valid signature"
        ))
    };
    if url == "st2" {
        return Err(refused());
    }
    let mut params = Map::new();
    params.insert("url".into(), Value::String(url.to_owned()));
    let index = state.reactor.rules();
    let rules = index.candidates(tenant, WEBHOOK, &params);
    if rules.is_empty() {
        return Err(refused());
    }
    for rule in rules {
        if rule.trigger_parameters.get("public") == Some(&Value::Bool(true)) {
            continue;
        }
        let hmac = rule.trigger_parameters.get("hmac");
        let header = hmac.and_then(|h| h.get("header")).and_then(Value::as_str);
        let key = hmac
            .and_then(|h| h.get("secret_key"))
            .and_then(Value::as_str);
        let (Some(header), Some(key)) = (header, key) else {
            return Err(refused());
        };
        let Some(given) = headers.get(header).and_then(|v| v.to_str().ok()) else {
            return Err(refused());
        };
        // A key name a request could not name (user-scoped keys) is none.
        if squall_core::kv::check_key(key).is_err() {
            return Err(refused());
        }
        let secret = {
            let (store, tenant, key) = (
                state.reactor.store().clone(),
                tenant.clone(),
                key.to_owned(),
            );
            tokio::task::spawn_blocking(move || store.kv_get_blocking(&tenant, &key))
                .await
                .map_err(|e| ApiError::Internal(format!("kv task failed: {e}")))?
                .map_err(|e| ApiError::Internal(e.to_string()))?
        };
        let Some(secret) = secret.filter(|s| !s.value.is_empty()) else {
            tracing::warn!(
                webhook = url,
                key,
                "webhook hmac secret_key is missing or empty in the datastore"
            );
            return Err(refused());
        };
        if !crate::auth::signature_matches(secret.value.as_bytes(), body, given) {
            return Err(refused());
        }
    }
    Ok(())
}

/// Headers StackStorm strips before a webhook payload is dispatched.
const SECRET_HEADERS: [&str; 4] = ["x-auth-token", "st2-api-key", "cookie", "authorization"];

#[derive(Debug, Deserialize)]
pub(crate) struct WebhookQuery {
    /// The tenant of an anonymous call (a key's calls use the key's).
    tenant: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{url}",
    tag = "webhooks",
    params(("url" = String, Path)),
    responses((status = 202, description = "Accepted: the trigger instance is durable (St2-Trigger-Instance-Id, St2-Trace-Tag headers)"), crate::openapi::Faults)
)]
pub(crate) async fn webhook(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    Path(url): Path<String>,
    ApiQuery(q): ApiQuery<WebhookQuery>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    // StackStorm ignores leading and trailing slashes in webhook URLs.
    let url = url.trim_matches('/').to_owned();
    let tenant = match &caller {
        Some(p) => p.tenant.clone(),
        None => {
            let tenant = match q.tenant {
                Some(t) => TenantId::new(t).map_err(|e| ApiError::BadRequest(e.to_string()))?,
                None => TenantId::default_tenant(),
            };
            anonymous_webhook_allowed(&state, &tenant, &url, &headers, &raw).await?;
            tenant
        }
    };
    let body: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::BadRequest(format!("webhook body must be JSON: {e}")))?;
    let trace_tag = headers
        .get("st2-trace-tag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reactor = &state.reactor;
    let instance = if url == "st2" {
        // StackStorm's generic hook: {"trigger": "<type ref>", "payload": {...}}.
        let trigger = body.get("trigger").and_then(Value::as_str).ok_or_else(|| {
            ApiError::BadRequest(
                "the st2 webhook needs {\"trigger\": \"<trigger type ref>\", \"payload\": {...}}"
                    .into(),
            )
        })?;
        let payload = body.get("payload").cloned().unwrap_or_else(|| json!({}));
        let tag = trace_tag.or_else(|| {
            body.get("trace_tag")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        reactor
            .dispatch(&tenant, trigger, Map::new(), payload, tag)
            .await?
    } else {
        let mut params = Map::new();
        params.insert("url".into(), Value::String(url.clone()));
        if reactor
            .rules()
            .candidates(&tenant, WEBHOOK, &params)
            .is_empty()
        {
            return Err(ApiError::NotFound(format!(
                "no enabled rule listens on webhook '{url}'"
            )));
        }
        let mut header_map = Map::new();
        for (name, value) in &headers {
            if SECRET_HEADERS.contains(&name.as_str()) {
                continue;
            }
            if let Ok(v) = value.to_str() {
                // A repeated header keeps every value, comma-joined (RFC 9110).
                match header_map.get_mut(name.as_str()) {
                    Some(Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(v);
                    }
                    _ => {
                        header_map.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
                    }
                }
            }
        }
        let headers_lower: Map<String, Value> = header_map
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let payload = json!({"headers": header_map, "headers_lower": headers_lower, "body": body});
        reactor
            .dispatch(&tenant, WEBHOOK, params, payload, trace_tag)
            .await?
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&instance.id) {
        h.insert("St2-Trigger-Instance-Id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&instance.trace_tag) {
        h.insert("St2-Trace-Tag", v);
    }
    Ok(response)
}

/// Webhook URLs that enabled rules listen on.
fn webhook_urls(state: &AppState, tenant: &TenantId) -> BTreeSet<String> {
    state
        .reactor
        .rules()
        .enabled()
        .filter(|(t, r)| *t == tenant && r.trigger_type == WEBHOOK)
        .filter_map(|(_, r)| {
            r.trigger_parameters
                .get("url")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_webhooks(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let hooks: Vec<Value> = webhook_urls(&state, &caller.tenant())
        .into_iter()
        .map(|url| webhook_shape(&url))
        .collect();
    Json(Value::Array(hooks))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{url}",
    tag = "webhooks",
    params(("url" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
/// One webhook URL that an enabled rule of the caller's tenant listens on.
pub(crate) async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(url): Path<String>,
) -> ApiResult<Json<Value>> {
    let url = url.trim_matches('/').to_owned();
    if webhook_urls(&state, &caller.tenant()).contains(&url) {
        Ok(Json(webhook_shape(&url)))
    } else {
        Err(ApiError::NotFound(format!(
            "no enabled rule listens on webhook '{url}'"
        )))
    }
}

/// A webhook as st2's `/webhooks` shows it: the trigger its rules open,
/// identified by its URL.
fn webhook_shape(url: &str) -> Value {
    json!({
        "id": url, "uid": format!("trigger:core:webhook:{url}"), "name": url, "pack": "core",
        "type": WEBHOOK, "parameters": {"url": url},
        "description": format!("POST /api/v1/webhooks/{url}"),
    })
}

// --- rule types ------------------------------------------------------------

fn rule_types() -> Value {
    json!([
        {"id": "standard", "name": "standard", "enabled": true, "parameters": {},
         "description": "Standard rule: runs its action when the trigger matches its criteria."},
        {"id": "backstop", "name": "backstop", "enabled": true, "parameters": {},
         "description": "Backstop rule: runs its action only when no standard rule matched the trigger instance."},
    ])
}

#[utoipa::path(
    get,
    path = "/api/v1/ruletypes",
    tag = "ruletypes",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
/// StackStorm's two rule types: `standard` and `backstop`.
pub(crate) async fn list_rule_types() -> Json<Value> {
    Json(rule_types())
}

#[utoipa::path(
    get,
    path = "/api/v1/ruletypes/{id}",
    tag = "ruletypes",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
/// One rule type.
pub(crate) async fn get_rule_type(Path(id): Path<String>) -> ApiResult<Json<Value>> {
    rule_types()
        .as_array()
        .and_then(|all| all.iter().find(|t| t["id"] == id.as_str()).cloned())
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!("rule type '{id}' not found (standard or backstop)"))
        })
}

// --- trigger types, triggers, instances ----------------------------------

/// `/triggertypes` and `/triggers`: paging, and st2's filters.
#[derive(Debug, Deserialize)]
pub(crate) struct TriggerQuery {
    pack: Option<String>,
    #[serde(rename = "type")]
    trigger_type: Option<String>,
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/triggertypes",
    tag = "triggertypes",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_trigger_types(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TriggerQuery>,
) -> ApiResult<Response> {
    let mut types = state.reactor.trigger_types(&caller.tenant());
    if let Some(pack) = &q.pack {
        types.retain(|t| {
            t.trigger_ref
                .split_once('.')
                .is_some_and(|(p, _)| p == pack)
        });
    }
    Ok(paged(types, page(q.limit, q.offset)?, shapes::trigger_type))
}

#[utoipa::path(
    get,
    path = "/api/v1/triggertypes/{ref}",
    tag = "triggertypes",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_trigger_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .reactor
        .trigger_types(&caller.tenant())
        .iter()
        .find(|t| t.trigger_ref == r)
        .map(|t| Json(shapes::trigger_type(t)))
        .ok_or_else(|| ApiError::NotFound(format!("trigger type '{r}' not found")))
}

/// Triggers are trigger types with parameters, as rules use them.
#[utoipa::path(
    get,
    path = "/api/v1/triggers",
    tag = "triggers",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_triggers(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TriggerQuery>,
) -> ApiResult<Response> {
    let rules = state.reactor.rules();
    let mut seen = BTreeSet::new();
    for ((t, _), rule) in &rules.all {
        let pack = rule.trigger_type.split_once('.').map(|(p, _)| p);
        if *t != caller.tenant()
            || q.trigger_type
                .as_ref()
                .is_some_and(|w| *w != rule.trigger_type)
            || q.pack.as_deref().is_some_and(|w| Some(w) != pack)
        {
            continue;
        }
        let params = Value::Object(rule.trigger_parameters.clone());
        seen.insert((rule.trigger_type.clone(), params.to_string()));
    }
    let triggers: Vec<(String, String)> = seen.into_iter().collect();
    Ok(paged(triggers, page(q.limit, q.offset)?, |(t, p)| {
        let params: Value = serde_json::from_str(p).unwrap_or_else(|_| json!({}));
        let (pack, name) = t.split_once('.').unwrap_or(("", t));
        json!({"id": format!("{t}:{p}"), "ref": t, "pack": pack, "name": name, "type": t, "parameters": params})
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct InstanceQuery {
    trigger: Option<String>,
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/triggerinstances",
    tag = "triggerinstances",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_trigger_instances(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InstanceQuery>,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let (items, total) = read(&state, move |s| {
        s.list_trigger_instances(&caller.tenant(), q.trigger.as_deref(), page)
    })
    .await?;
    Ok(listing(
        items.iter().map(shapes::trigger_instance).collect(),
        total,
        page,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/triggerinstances/{id}",
    tag = "triggerinstances",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_trigger_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let ti = read(&state, {
        let id = id.clone();
        move |s| s.get_trigger_instance(&caller.tenant(), &id)
    })
    .await?;
    ti.map(|ti| Json(shapes::trigger_instance(&ti)))
        .ok_or_else(|| ApiError::NotFound(format!("trigger instance '{id}' not found")))
}

/// Dispatch a copy of a trigger instance (StackStorm's re_emit).
#[utoipa::path(
    post,
    path = "/api/v1/triggerinstances/{id}/re_emit",
    tag = "triggerinstances",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn re_emit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let found = read(&state, {
        let id = id.clone();
        move |s| s.get_trigger_instance(&caller.tenant(), &id)
    })
    .await?;
    let Some(ti) = found else {
        return Err(ApiError::NotFound(format!(
            "trigger instance '{id}' not found"
        )));
    };
    let new = state
        .reactor
        .dispatch(
            &ti.tenant,
            &ti.trigger_type,
            ti.trigger_parameters.clone(),
            ti.payload.clone(),
            None,
        )
        .await?;
    Ok((StatusCode::OK, Json(json!({"message": format!("Trigger instance {id} succesfully re-sent."), "trigger_instance": shapes::trigger_instance(&new)}))).into_response())
}

// --- enforcements ----------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct EnforcementQuery {
    rule_ref: Option<String>,
    trigger_instance: Option<String>,
    execution: Option<String>,
    enforced_at_gt: Option<String>,
    enforced_at_lt: Option<String>,
    limit: Option<i64>,
    offset: Option<u64>,
}

/// A timestamp filter as the store compares it: RFC 3339, normalized.
fn timestamp_filter(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    value
        .map(|v| {
            squall_core::time::parse_rfc3339(&v)
                .map(squall_core::time::format_rfc3339)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{name}: '{v}' is not an RFC 3339 timestamp (e.g. 2026-01-31T12:00:00Z)"
                    ))
                })
        })
        .transpose()
}

#[utoipa::path(
    get,
    path = "/api/v1/ruleenforcements",
    tag = "ruleenforcements",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_enforcements(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EnforcementQuery>,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter = squall_store::EnforcementFilter {
        rule_ref: q.rule_ref,
        trigger_instance: q.trigger_instance,
        execution: q.execution,
        enforced_after: timestamp_filter("enforced_at_gt", q.enforced_at_gt)?,
        enforced_before: timestamp_filter("enforced_at_lt", q.enforced_at_lt)?,
    };
    let (items, total) = read(&state, move |s| {
        s.list_enforcements(&caller.tenant(), &filter, page)
    })
    .await?;
    Ok(listing(
        items.iter().map(shapes::enforcement).collect(),
        total,
        page,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/ruleenforcements/{id}",
    tag = "ruleenforcements",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_enforcement(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let re = read(&state, {
        let id = id.clone();
        move |s| s.get_enforcement(&caller.tenant(), &id)
    })
    .await?;
    re.map(|re| Json(shapes::enforcement(&re)))
        .ok_or_else(|| ApiError::NotFound(format!("rule enforcement '{id}' not found")))
}

// --- rules -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct RuleQuery {
    pack: Option<String>,
    enabled: Option<bool>,
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/rules",
    tag = "rules",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RuleQuery>,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let index = state.reactor.rules();
    let rules: Vec<_> = index
        .all
        .iter()
        .filter(|((t, _), r)| {
            *t == caller.tenant()
                && q.pack.as_deref().is_none_or(|p| r.pack.as_str() == p)
                && q.enabled.is_none_or(|e| r.enabled == e)
        })
        .map(|(_, r)| r.clone())
        .collect();
    Ok(paged(rules, page, |r| shapes::rule(r)))
}

fn find_rule(state: &AppState, tenant: TenantId, r: &str) -> ApiResult<std::sync::Arc<Rule>> {
    state
        .reactor
        .rules()
        .all
        .get(&(tenant, r.to_owned()))
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("rule '{r}' not found")))
}

#[utoipa::path(
    get,
    path = "/api/v1/rules/{ref}",
    tag = "rules",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    let rule = find_rule(&state, caller.tenant(), &r)?;
    Ok(Json(shapes::rule(&rule)))
}

fn parse_rule(state: &AppState, body: Value) -> ApiResult<Rule> {
    let default_pack = PackRef::new("default").expect("valid ref");
    // API-only fields StackStorm's clients send back; not part of the rule.
    let mut body = body;
    if let Some(map) = body.as_object_mut() {
        for key in ["id", "ref", "uid"] {
            map.remove(key);
        }
    }
    Rule::from_value(
        body,
        FsPath::new("request body"),
        &default_pack,
        state.reactor.templates(),
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[utoipa::path(
    post,
    path = "/api/v1/rules",
    tag = "rules",
    responses((status = 201, description = "Created"), crate::openapi::Faults)
)]
pub(crate) async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let rule = parse_rule(&state, body)?;
    let shape = shapes::rule(&rule);
    state
        .reactor
        .put_rule(&caller.tenant(), rule, false)
        .await?;
    Ok((StatusCode::CREATED, Json(shape)).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/rules/{ref}",
    tag = "rules",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn update_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let rule = parse_rule(&state, body)?;
    if rule.rule_ref() != r {
        return Err(ApiError::BadRequest(format!(
            "the body describes rule '{}', not '{r}'",
            rule.rule_ref()
        )));
    }
    let shape = shapes::rule(&rule);
    state.reactor.put_rule(&caller.tenant(), rule, true).await?;
    Ok(Json(shape))
}

#[utoipa::path(
    delete,
    path = "/api/v1/rules/{ref}",
    tag = "rules",
    params(("ref" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::openapi::Faults)
)]
pub(crate) async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<StatusCode> {
    state.reactor.delete_rule(&caller.tenant(), &r).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- traces ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct TraceQuery {
    trace_tag: Option<String>,
    execution: Option<String>,
    rule: Option<String>,
    trigger_instance: Option<String>,
    sort_asc: Option<String>,
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/traces",
    tag = "traces",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_traces(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TraceQuery>,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let tenant = caller.tenant();
    let oldest_first = q
        .sort_asc
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (traces, total) = read(&state, move |s| {
        let (tags, total) = match q.trace_tag {
            Some(tag) => (vec![tag], None),
            None => {
                let filter = squall_store::TraceFilter {
                    execution: q.execution,
                    rule_ref: q.rule,
                    trigger_instance: q.trigger_instance,
                };
                let (tags, total) = s.trace_tags(&tenant, &filter, oldest_first, page)?;
                (tags, Some(total))
            }
        };
        let mut traces = Vec::new();
        for tag in tags {
            let trace = s.trace(&tenant, &tag)?;
            if !(trace.trigger_instances.is_empty() && trace.executions.is_empty()) {
                traces.push(shapes::trace(&tag, &trace));
            }
        }
        let total = total.unwrap_or(traces.len() as u64);
        Ok((traces, total))
    })
    .await?;
    Ok(listing(traces, total, page))
}

#[utoipa::path(
    get,
    path = "/api/v1/traces/{id}",
    tag = "traces",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_trace(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let trace = read(&state, {
        let id = id.clone();
        move |s| s.trace(&caller.tenant(), &id)
    })
    .await?;
    if trace.trigger_instances.is_empty() && trace.executions.is_empty() {
        return Err(ApiError::NotFound(format!("trace '{id}' not found")));
    }
    Ok(Json(shapes::trace(&id, &trace)))
}
