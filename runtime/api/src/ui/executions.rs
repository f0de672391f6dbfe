//! Executions: the history, newest first and live; one execution with its
//! trace, output and tasks; cancel, pause, resume.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use squall_core::execution::ExecutionStatus;
use squall_core::ids::ExecutionId;
use squall_store::ExecutionFilter;

use super::{UiError, Viewer, page, v};
use crate::AppState;
use crate::v1::read;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/executions", get(list))
        .route("/ui/executions/{id}", get(detail))
        .route("/ui/executions/{id}/tasks", get(tasks))
        // The API's own handler: the session cookie authenticates it here.
        .route("/ui/executions/{id}/output", get(crate::executions::output))
        .route("/ui/executions/{id}/cancel", post(cancel))
        .route("/ui/executions/{id}/pause", post(pause))
        .route("/ui/executions/{id}/resume", post(resume))
}

/// Rows on a page of the history.
const PAGE: usize = 50;

/// The time ranges the history offers, by name: seconds back from now.
const RANGES: [(&str, &str, u64); 4] = [
    ("1h", "the last hour", 3600),
    ("24h", "the last 24 hours", 24 * 3600),
    ("7d", "the last 7 days", 7 * 24 * 3600),
    ("30d", "the last 30 days", 30 * 24 * 3600),
];

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    trigger_type: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    range: String,
    /// The last id of the previous page.
    #[serde(default)]
    before: String,
    /// `rows`: only the table's rows (the live refresh).
    #[serde(default)]
    partial: String,
}

/// The filter `q` asks for, or the field it names wrongly and why.
fn filter_of(viewer: &Viewer, q: &ListQuery) -> Result<ExecutionFilter, (&'static str, String)> {
    let mut filter = ExecutionFilter::for_tenant(viewer.tenant());
    filter.parent = Some(None);
    filter.limit = PAGE;
    let text = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(action) = text(&q.action) {
        filter.action = Some(
            action
                .parse()
                .map_err(|e: squall_core::ids::IdError| ("action", e.to_string()))?,
        );
    }
    if let Some(status) = text(&q.status) {
        filter.status = Some(
            status
                .parse()
                .map_err(|e: squall_core::execution::UnknownStatus| ("status", e.to_string()))?,
        );
    }
    filter.rule = text(&q.rule);
    filter.trigger_type = text(&q.trigger_type);
    filter.user = text(&q.user);
    if let Some(range) = text(&q.range) {
        let (_, _, seconds) = RANGES
            .iter()
            .find(|(name, _, _)| *name == range)
            .ok_or_else(|| ("range", format!("'{range}' is not a time range offered")))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let since = now.saturating_sub(std::time::Duration::from_secs(*seconds));
        filter.since = Some(ExecutionFilter::id_at_millis(
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        ));
    }
    if let Some(before) = text(&q.before) {
        let id: ExecutionId = before
            .parse()
            .map_err(|e: squall_core::ids::IdError| ("before", e.to_string()))?;
        filter.before = Some(id.as_str().to_owned());
    }
    Ok(filter)
}

/// `GET /ui/executions`: the history, filtered, a page at a time.
async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let statuses: Vec<&str> = ExecutionStatus::ALL.iter().map(|s| s.as_str()).collect();
    let ranges: Vec<(&str, &str)> = RANGES.iter().map(|(n, l, _)| (*n, *l)).collect();
    let (rows, error) = match filter_of(&viewer, &q) {
        Ok(filter) => (
            read(&state, move |s| s.list_execution_summaries(&filter)).await?,
            None,
        ),
        Err((field, message)) => (Vec::new(), Some(minijinja::context! { field, message })),
    };
    let refused = error.is_some();
    let older = (rows.len() == PAGE)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let partial = q.partial == "rows";
    let template = if partial {
        "execution_rows.html"
    } else {
        "executions.html"
    };
    // What the trigger type field offers.
    let trigger_types: Vec<String> = if partial {
        Vec::new()
    } else {
        state
            .reactor
            .trigger_types(&viewer.tenant())
            .into_iter()
            .map(|t| t.trigger_ref)
            .collect()
    };
    let mut response = page(
        Some(&viewer),
        template,
        minijinja::context! {
            rows => v(rows),
            q => minijinja::context! {
                action => q.action, status => q.status, rule => q.rule,
                trigger_type => q.trigger_type, user => q.user, range => q.range,
                before => q.before,
            },
            trigger_types,
            statuses,
            ranges,
            error,
            older,
        },
    )?;
    if refused {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

/// `GET /ui/executions/{id}/tasks`: a workflow's tasks as rows of the
/// history (a row's "tasks" button fetches them).
async fn tasks(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let id = parse_id(&id)?;
    let mut filter = ExecutionFilter::for_tenant(viewer.tenant());
    filter.parent = Some(Some(id));
    filter.limit = 1000;
    let mut rows = read(&state, move |s| s.list_execution_summaries(&filter)).await?;
    rows.reverse();
    page(
        Some(&viewer),
        "execution_rows.html",
        minijinja::context! { rows => v(rows), nested => true },
    )
}

fn parse_id(id: &str) -> Result<ExecutionId, UiError> {
    id.parse().map_err(|e: squall_core::ids::IdError| {
        UiError::new(StatusCode::BAD_REQUEST, e.to_string())
    })
}

/// `GET /ui/executions/{id}`: one execution, its trace, output and tasks.
async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let id = parse_id(&id)?;
    let tenant = viewer.tenant();
    let (execution, children, trace) = read(&state, {
        let id = id.clone();
        move |s| {
            let Some(execution) = s.get_execution(&tenant, &id)? else {
                return Ok(None);
            };
            let children = s.children(&tenant, &id)?;
            let trace = match &execution.trace_tag {
                Some(tag) => Some(s.trace(&tenant, tag)?),
                None => None,
            };
            Ok(Some((execution, children, trace)))
        }
    })
    .await?
    .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("execution '{id}' not found")))?;
    let output = if execution.status.is_completed() {
        execution.output.clone()
    } else {
        state
            .reactor
            .live_output(&id)
            .unwrap_or_else(|| execution.output.clone())
    };
    let shape = crate::shapes::execution(&execution);
    let workflow = execution.runner() == "orquesta";
    let parent = shape["parent"].as_str().map(str::to_owned);
    let graph = workflow
        .then(|| graph_of(&state, &viewer, &execution, &children))
        .flatten();
    let children: Vec<serde_json::Value> = children
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id.as_str(),
                "action": c.action.to_string(),
                "status": c.status.as_str(),
                "task": c.context.get("orquesta").and_then(|o| o.get("task_name")).cloned(),
                "start_timestamp": c.start_timestamp,
            })
        })
        .collect();
    page(
        Some(&viewer),
        "execution.html",
        minijinja::context! {
            e => v(shape),
            completed => execution.status.is_completed(),
            workflow,
            paused => execution.status == ExecutionStatus::Paused,
            parent,
            children => v(children),
            graph => graph.map(minijinja::Value::from_safe_string),
            trace => v(trace.map(|t| trace_steps(&t))),
            output => v(output),
        },
    )
}

/// Most steps of a trace the page lists.
const TRACE_STEPS: usize = 200;

/// Everything in an execution's trace, oldest first: the trigger instances
/// (the event, and the actiontriggers of completed executions), the rules
/// they set off, and the executions.
fn trace_steps(trace: &squall_store::Trace) -> Vec<serde_json::Value> {
    let mut steps: Vec<(String, serde_json::Value)> = Vec::new();
    for ti in &trace.trigger_instances {
        steps.push((
            ti.id.clone(),
            serde_json::json!({
                "kind": "trigger instance", "id": ti.id, "what": ti.trigger_type,
                "status": ti.status.as_str(), "page": "trigger-instances", "target": ti.id,
            }),
        ));
    }
    for re in &trace.rule_enforcements {
        let status = match re.status {
            squall_core::trigger::EnforcementStatus::Succeeded => "succeeded",
            squall_core::trigger::EnforcementStatus::Failed => "failed",
        };
        steps.push((
            re.id.clone(),
            serde_json::json!({
                "kind": "rule enforcement", "id": re.id, "what": re.rule_ref,
                "status": status, "why": re.failure_reason,
                "page": "rules", "target": re.rule_ref,
            }),
        ));
    }
    for e in &trace.executions {
        steps.push((
            e.id.as_str().to_owned(),
            serde_json::json!({
                "kind": "execution", "id": e.id.as_str(), "what": e.action.to_string(),
                "status": e.status.as_str(), "page": "executions", "target": e.id.as_str(),
            }),
        ));
    }
    // Ids are time-ordered (UUIDv7).
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    steps
        .into_iter()
        .take(TRACE_STEPS)
        .map(|(_, step)| step)
        .collect()
}

/// The workflow's graph, from its action's definition (the pack's version
/// in force), its tasks coloured by their executions.
fn graph_of(
    state: &AppState,
    viewer: &Viewer,
    execution: &squall_core::Execution,
    children: &[squall_core::Execution],
) -> Option<String> {
    let packs = state.reactor.runner().packs(&viewer.tenant());
    let pack = packs.get(execution.action.pack())?;
    let spec = pack.workflows.get(execution.action.name())?;
    let mut runs: std::collections::BTreeMap<String, super::graph::TaskRun> = Default::default();
    for child in children {
        let Some(task) = child
            .context
            .get("orquesta")
            .and_then(|o| o.get("task_name"))
            .and_then(serde_json::Value::as_str)
        else {
            continue;
        };
        let run = runs
            .entry(task.to_owned())
            .or_insert(super::graph::TaskRun {
                id: String::new(),
                status: String::new(),
                runs: 0,
            });
        // Children come in the order they were made: the last one wins.
        run.id = child.id.as_str().to_owned();
        run.status = child.status.as_str().to_owned();
        run.runs += 1;
    }
    Some(super::graph::svg(spec, &runs))
}

/// Back to the execution's page once a change is made.
fn to_execution(id: &ExecutionId) -> Response {
    Redirect::to(&format!("/ui/executions/{id}")).into_response()
}

async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let id = parse_id(&id)?;
    state
        .reactor
        .cancel(&viewer.tenant(), &id)
        .await
        .map_err(crate::ApiError::from)?;
    Ok(to_execution(&id))
}

async fn set_status(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    status: ExecutionStatus,
) -> Result<Response, UiError> {
    let id = parse_id(id)?;
    state
        .reactor
        .set_workflow_status(&viewer.tenant(), &id, status)
        .await
        .map_err(crate::ApiError::from)?;
    Ok(to_execution(&id))
}

async fn pause(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    set_status(&state, &viewer, &id, ExecutionStatus::Pausing).await
}

async fn resume(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    set_status(&state, &viewer, &id, ExecutionStatus::Resuming).await
}
