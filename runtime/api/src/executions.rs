//! `/api/v1/executions` (list, get, run, cancel, re-run, output) and
//! `/api/v1/policies`, `/api/v1/policytypes`.

use std::path::Path as FsPath;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};
use squall_core::execution::CapturedOutput;
use squall_core::policy::{Policy, policy_types};
use squall_core::{ActionRef, ExecutionId, PackRef};
use squall_reactor::{ExecutionError, RunError, RunRequest};
use squall_store::{ExecutionFilter, StoredExecution};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::v1::{ApiResult, listing, page, paged, read};
use crate::{AppState, shapes};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/executions",
            get(list_executions).post(create_execution),
        )
        .route(
            "/api/v1/executions/{id}",
            get(get_execution)
                .put(update_execution)
                .delete(cancel_execution),
        )
        .route("/api/v1/executions/{id}/re_run", post(re_run))
        .route("/api/v1/executions/{id}/children", get(children))
        .route("/api/v1/executions/{id}/output", get(output))
        .route("/api/v1/policies", get(list_policies).post(create_policy))
        .route(
            "/api/v1/policies/{ref}",
            get(get_policy).put(update_policy).delete(delete_policy),
        )
        .route("/api/v1/actions", get(list_actions))
        .route("/api/v1/actions/{ref}", get(get_action))
        .route("/api/v1/actions/views/overview", get(list_overview))
        .route("/api/v1/actions/views/overview/{ref}", get(get_overview))
        .route(
            "/api/v1/actions/views/parameters/{ref}",
            get(get_parameters),
        )
        .route("/api/v1/policytypes", get(list_policy_types))
        .route("/api/v1/policytypes/{ref}", get(get_policy_type))
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Store(e) => e.into(),
            RunError::Pack(squall_reactor::PackError::UnknownAction { .. }) => {
                Self::NotFound(e.to_string())
            }
            // The server's own component is missing or broken.
            RunError::Component { .. } => Self::Internal(e.to_string()),
            RunError::ShuttingDown => Self::Unavailable(e.to_string()),
            RunError::Quota(_) => Self::TooManyRequests(e.to_string()),
            RunError::HostRunnersOff(_) => Self::Forbidden(e.to_string()),
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl From<ExecutionError> for ApiError {
    fn from(e: ExecutionError) -> Self {
        match e {
            ExecutionError::NotFound(_) => Self::NotFound(e.to_string()),
            ExecutionError::AlreadyCompleted { .. } => Self::Conflict(e.to_string()),
            ExecutionError::NotAWorkflow(_) | ExecutionError::StatusNotSettable(_) => {
                Self::BadRequest(e.to_string())
            }
            ExecutionError::Run(e) => e.into(),
            ExecutionError::Store(e) => e.into(),
            ExecutionError::Elsewhere { .. } => Self::Unavailable(e.to_string()),
        }
    }
}

fn execution_id(id: &str) -> ApiResult<ExecutionId> {
    id.parse()
        .map_err(|e: squall_core::ids::IdError| ApiError::BadRequest(e.to_string()))
}

/// An execution's JSON with its stored result spliced in as the text it was
/// stored as: a large result is copied, never parsed again.
fn stored_json(stored: &StoredExecution) -> String {
    let mut shape = shapes::execution(&stored.execution);
    if let Some(map) = shape.as_object_mut() {
        map.remove("result");
    }
    let rest = shape.to_string();
    let result = stored.result_json.as_deref().unwrap_or("null");
    // `rest` is a non-empty object: `{"id":...}`.
    format!("{{\"result\":{result},{}", &rest[1..])
}

fn json_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExecutionQuery {
    action: Option<String>,
    status: Option<String>,
    trigger_instance: Option<String>,
    /// Those a rule started for an instance of this trigger type.
    trigger_type: Option<String>,
    /// Those this rule started.
    rule_ref: Option<String>,
    /// Those this user asked for.
    user: Option<String>,
    /// A workflow execution's id: its tasks only; `null`: top-level only.
    parent: Option<String>,
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/executions",
    tag = "executions",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_executions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExecutionQuery>,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let mut filter = ExecutionFilter::for_tenant(caller.tenant());
    filter.action = q
        .action
        .map(|a| a.parse())
        .transpose()
        .map_err(|e: squall_core::ids::IdError| ApiError::BadRequest(e.to_string()))?;
    filter.status =
        q.status.map(|s| s.parse()).transpose().map_err(
            |e: squall_core::execution::UnknownStatus| ApiError::BadRequest(e.to_string()),
        )?;
    filter.trigger_instance = q.trigger_instance;
    filter.trigger_type = q.trigger_type;
    filter.rule = q.rule_ref;
    filter.user = q.user;
    filter.parent = match q.parent.as_deref() {
        None => None,
        Some("null") => Some(None),
        Some(id) => Some(Some(execution_id(id)?)),
    };
    filter.limit = page.limit;
    filter.offset = page.offset;
    let (items, total) = read(&state, move |s| s.list_executions_stored(&filter)).await?;
    let body = format!(
        "[{}]",
        items.iter().map(stored_json).collect::<Vec<_>>().join(",")
    );
    let mut response = json_text(StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert("X-Total-Count", total.into());
    headers.insert("X-Limit", (page.limit as u64).into());
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}",
    tag = "executions",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = execution_id(&id)?;
    let stored = read(&state, {
        let id = id.clone();
        move |s| s.get_execution_stored(&caller.tenant(), &id)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("execution '{id}' not found")))?;
    Ok(json_text(StatusCode::OK, stored_json(&stored)))
}

/// StackStorm's LiveAction body (fields it sends that Squall does not use
/// are accepted and ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct NewExecution {
    action: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    delay: Option<u64>,
    #[serde(default)]
    context: Map<String, Value>,
    trace_tag: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/executions",
    tag = "executions",
    responses((status = 201, description = "Created"), crate::openapi::Faults)
)]
pub(crate) async fn create_execution(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewExecution>,
) -> ApiResult<Response> {
    let action: ActionRef = body
        .action
        .parse()
        .map_err(|e: squall_core::ids::IdError| {
            ApiError::BadRequest(format!("field 'action': {e}"))
        })?;
    let mut req = RunRequest::new(caller.tenant(), action, body.parameters);
    req.delay = body.delay;
    req.context = body.context;
    // Who asked is the caller, whatever the body says.
    req.context
        .insert("user".into(), Value::String(caller.0.user.clone()));
    req.trace_tag = body.trace_tag.filter(|t| !t.is_empty());
    let execution = state.reactor.request_execution(req).await?;
    Ok((StatusCode::CREATED, Json(shapes::execution(&execution))).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/executions/{id}",
    tag = "executions",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn cancel_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = execution_id(&id)?;
    let execution = state.reactor.cancel(&caller.tenant(), &id).await?;
    Ok(Json(shapes::execution(&execution)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusChange {
    status: String,
}

/// Pause or resume a workflow: `{"status": "pausing"}` or
/// `{"status": "resuming"}` (st2's `execution pause` and `resume`).
#[utoipa::path(
    put,
    path = "/api/v1/executions/{id}",
    tag = "executions",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn update_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StatusChange>,
) -> ApiResult<Json<Value>> {
    let id = execution_id(&id)?;
    let status = body
        .status
        .parse()
        .map_err(|e: squall_core::execution::UnknownStatus| {
            ApiError::BadRequest(format!("field 'status': {e}"))
        })?;
    let execution = state
        .reactor
        .set_workflow_status(&caller.tenant(), &id, status)
        .await?;
    Ok(Json(shapes::execution(&execution)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChildrenQuery {
    /// How many levels down: 1 for the direct tasks, -1 (the default) for
    /// all.
    depth: Option<i64>,
}

/// A workflow's task executions, and theirs (subworkflows) down to `depth`,
/// in the order they were made.
#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}/children",
    tag = "executions",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn children(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ChildrenQuery>,
) -> ApiResult<Json<Value>> {
    let id = execution_id(&id)?;
    let tenant = caller.tenant();
    let depth = q.depth.unwrap_or(-1);
    let all = read(&state, move |s| {
        if s.get_execution(&tenant, &id)?.is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut level = vec![id];
        let mut down = 0;
        while !level.is_empty() && (depth < 0 || down < depth) {
            let mut next = Vec::new();
            for parent in &level {
                for child in s.children(&tenant, parent)? {
                    next.push(child.id.clone());
                    out.push(child);
                }
            }
            level = next;
            down += 1;
        }
        out.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(Some(out))
    })
    .await?
    .ok_or_else(|| ApiError::NotFound("execution not found".into()))?;
    Ok(Json(Value::Array(
        all.iter().map(shapes::execution).collect(),
    )))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReRun {
    #[serde(default)]
    parameters: Map<String, Value>,
    delay: Option<u64>,
    /// Workflow tasks to re-run from. (st2client also sends `reset`: a
    /// with-items task re-run here always runs all its items again.)
    #[serde(default)]
    tasks: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/executions/{id}/re_run",
    tag = "executions",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn re_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReRun>,
) -> ApiResult<Response> {
    let id = execution_id(&id)?;
    if !body.tasks.is_empty() {
        if !body.parameters.is_empty() {
            return Err(ApiError::BadRequest(
                "field 'parameters': a re-run from tasks takes the workflow's own parameters"
                    .into(),
            ));
        }
        let execution = state
            .reactor
            .re_run_tasks(&caller.0, &id, &body.tasks)
            .await?;
        return Ok((StatusCode::CREATED, Json(shapes::execution(&execution))).into_response());
    }
    let execution = state
        .reactor
        .re_run(&caller.0, &id, body.parameters, body.delay)
        .await?;
    Ok((StatusCode::CREATED, Json(shapes::execution(&execution))).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct OutputQuery {
    output_type: Option<String>,
}

/// The execution's output as text: `stdout`, `stderr`, `log` (guest log
/// lines) or `all` (the three in that order). Live while it runs.
#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}/output",
    tag = "executions",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn output(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> ApiResult<Response> {
    let id = execution_id(&id)?;
    let kind = q.output_type.unwrap_or_else(|| "all".into());
    if !["all", "stdout", "stderr", "log"].contains(&kind.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "output_type '{kind}' is not one of all, stdout, stderr, log"
        )));
    }
    let stored = read(&state, {
        let id = id.clone();
        move |s| s.get_execution_stored(&caller.tenant(), &id)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("execution '{id}' not found")))?;
    let e = stored.execution;
    let out: CapturedOutput = if e.status.is_completed() {
        e.output
    } else {
        state.reactor.live_output(&id).unwrap_or(e.output)
    };
    let mut text = String::new();
    if matches!(kind.as_str(), "all" | "stdout") {
        text.push_str(&out.stdout);
    }
    if matches!(kind.as_str(), "all" | "stderr") {
        text.push_str(&out.stderr);
    }
    if matches!(kind.as_str(), "all" | "log") {
        for line in &out.log {
            text.push_str(&format!("[{}] {}\n", line.level, line.message));
        }
    }
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response();
    response.headers_mut().insert(
        "X-Execution-Status",
        e.status.as_str().parse().expect("ascii"),
    );
    Ok(response)
}

// --- actions --------------------------------------------------------------------

fn action_shape(meta: &squall_core::manifest::ActionMeta) -> Value {
    let r = meta.action_ref.to_string();
    serde_json::json!({
        "id": r,
        "ref": r,
        "uid": format!("action:{}:{}", meta.action_ref.pack(), meta.action_ref.name()),
        "pack": meta.action_ref.pack().as_str(),
        "name": meta.action_ref.name(),
        "description": meta.description,
        "enabled": meta.enabled,
        "runner_type": meta.runner.as_str(),
        "entry_point": meta.entry_point.display().to_string(),
        "parameters": meta.parameters.source(),
        "output_schema": meta.output_schema,
        "tags": [],
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActionQuery {
    pack: Option<String>,
    limit: Option<i64>,
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/actions",
    tag = "actions",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_actions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ActionQuery>,
) -> ApiResult<Response> {
    list_of_actions(&state, &caller, &q, action_shape)
}

/// The caller's actions (of `q.pack`, if given), one page, each as `shape`
/// makes it.
fn list_of_actions(
    state: &AppState,
    caller: &Caller,
    q: &ActionQuery,
    shape: impl Fn(&squall_core::manifest::ActionMeta) -> Value,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let packs = state.reactor.runner().packs(&caller.tenant());
    let actions: Vec<_> = packs
        .packs()
        .filter(|p| {
            q.pack
                .as_deref()
                .is_none_or(|x| p.manifest.pack_ref.as_str() == x)
        })
        .flat_map(|p| p.actions.values())
        .collect();
    Ok(paged(actions, page, |a| shape(a)))
}

#[utoipa::path(
    get,
    path = "/api/v1/actions/{ref}",
    tag = "actions",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    one_action(&state, &caller, &r, action_shape).map(Json)
}

/// `f` of the caller's action `r`, or 404.
fn one_action(
    state: &AppState,
    caller: &Caller,
    r: &str,
    f: impl Fn(&squall_core::manifest::ActionMeta) -> Value,
) -> ApiResult<Value> {
    let action: ActionRef = r
        .parse()
        .map_err(|e: squall_core::ids::IdError| ApiError::BadRequest(e.to_string()))?;
    let packs = state.reactor.runner().packs(&caller.tenant());
    let (_, meta) = packs
        .action(&action)
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    Ok(f(meta))
}

/// The action's parameters with the runner's beneath them (an action's
/// own declaration of a runner parameter wins), as StackStorm merges them.
fn merged_parameters(meta: &squall_core::manifest::ActionMeta) -> Value {
    let mut all = crate::packs::runner_type(meta.runner)["runner_parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    all.extend(meta.parameters.source().clone());
    Value::Object(all)
}

/// StackStorm's overview: the action with its runner's parameters merged in.
fn overview_shape(meta: &squall_core::manifest::ActionMeta) -> Value {
    let mut shape = action_shape(meta);
    shape["parameters"] = merged_parameters(meta);
    shape
}

#[utoipa::path(
    get,
    path = "/api/v1/actions/views/overview",
    tag = "actions",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
/// Every action of the caller's tenant, runner parameters included.
pub(crate) async fn list_overview(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ActionQuery>,
) -> ApiResult<Response> {
    list_of_actions(&state, &caller, &q, overview_shape)
}

#[utoipa::path(
    get,
    path = "/api/v1/actions/views/overview/{ref}",
    tag = "actions",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
/// One action, runner parameters included.
pub(crate) async fn get_overview(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    one_action(&state, &caller, &r, overview_shape).map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/actions/views/parameters/{ref}",
    tag = "actions",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
/// `{"parameters": ...}`: the action's and its runner's parameters, merged.
pub(crate) async fn get_parameters(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    one_action(
        &state,
        &caller,
        &r,
        |meta| serde_json::json!({ "parameters": merged_parameters(meta) }),
    )
    .map(Json)
}

// --- policies -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct PolicyQuery {
    pack: Option<String>,
    resource_ref: Option<String>,
    policy_type: Option<String>,
    limit: Option<i64>,
    offset: Option<u64>,
}

fn policy_shape(p: &Policy) -> Value {
    let mut body = p.source.clone();
    if !body.is_object() {
        body = Value::Object(Map::new());
    }
    let r = p.policy_ref();
    body["ref"] = r.clone().into();
    body["id"] = r.into();
    body["uid"] = format!("policy:{}:{}", p.pack, p.name).into();
    body["pack"] = p.pack.as_str().into();
    body["name"] = p.name.clone().into();
    body["enabled"] = p.enabled.into();
    body["resource_ref"] = p.resource_ref.to_string().into();
    body["policy_type"] = p.policy_type().into();
    body
}

#[utoipa::path(
    get,
    path = "/api/v1/policies",
    tag = "policies",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Response> {
    let page = page(q.limit, q.offset)?;
    let index = state.reactor.policies();
    let policies: Vec<_> = index
        .all
        .iter()
        .filter(|((t, _), p)| {
            *t == caller.tenant()
                && q.pack.as_deref().is_none_or(|x| p.pack.as_str() == x)
                && q.resource_ref
                    .as_deref()
                    .is_none_or(|x| p.resource_ref.to_string() == x)
                && q.policy_type
                    .as_deref()
                    .is_none_or(|x| p.policy_type() == x)
        })
        .map(|(_, p)| p.clone())
        .collect();
    Ok(paged(policies, page, |p| policy_shape(p)))
}

#[utoipa::path(
    get,
    path = "/api/v1/policies/{ref}",
    tag = "policies",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .reactor
        .policies()
        .all
        .get(&(caller.tenant(), r.clone()))
        .map(|p| Json(policy_shape(p)))
        .ok_or_else(|| ApiError::NotFound(format!("policy '{r}' not found")))
}

fn parse_policy(body: Value) -> ApiResult<Policy> {
    let default_pack = PackRef::new("default").expect("valid ref");
    let mut body = body;
    if let Some(map) = body.as_object_mut() {
        for key in ["id", "ref", "uid"] {
            map.remove(key);
        }
    }
    Policy::from_value(body, FsPath::new("request body"), &default_pack)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[utoipa::path(
    post,
    path = "/api/v1/policies",
    tag = "policies",
    responses((status = 201, description = "Created"), crate::openapi::Faults)
)]
pub(crate) async fn create_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let policy = parse_policy(body)?;
    let shape = policy_shape(&policy);
    state
        .reactor
        .put_policy(&caller.tenant(), policy, false)
        .await?;
    Ok((StatusCode::CREATED, Json(shape)).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/policies/{ref}",
    tag = "policies",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn update_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let policy = parse_policy(body)?;
    if policy.policy_ref() != r {
        return Err(ApiError::BadRequest(format!(
            "the body describes policy '{}', not '{r}'",
            policy.policy_ref()
        )));
    }
    let shape = policy_shape(&policy);
    state
        .reactor
        .put_policy(&caller.tenant(), policy, true)
        .await?;
    Ok(Json(shape))
}

#[utoipa::path(
    delete,
    path = "/api/v1/policies/{ref}",
    tag = "policies",
    params(("ref" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::openapi::Faults)
)]
pub(crate) async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(r): Path<String>,
) -> ApiResult<StatusCode> {
    state.reactor.delete_policy(&caller.tenant(), &r).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/policytypes",
    tag = "policytypes",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn list_policy_types() -> Response {
    let types = policy_types();
    let total = types.len() as u64;
    listing(
        types,
        total,
        squall_store::Page {
            limit: 50,
            offset: 0,
        },
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/policytypes/{ref}",
    tag = "policytypes",
    params(("ref" = String, Path)),
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn get_policy_type(Path(r): Path<String>) -> ApiResult<Json<Value>> {
    policy_types()
        .into_iter()
        .find(|t| t["ref"] == r.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("policy type '{r}' not found")))
}
