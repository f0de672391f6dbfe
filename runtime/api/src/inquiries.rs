//! `/api/v1/inquiries`: questions that executions (`core.ask`) wait on, and
//! their answers.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use squall_core::inquiry::Question;
use squall_core::{ExecutionId, ExecutionStatus};
use squall_reactor::InquiryError;
use squall_store::ExecutionFilter;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::v1::{ApiResult, listing, read};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/inquiries", get(list_inquiries))
        .route("/api/v1/inquiries/{id}", get(get_inquiry).put(respond))
}

impl From<InquiryError> for ApiError {
    fn from(e: InquiryError) -> Self {
        match e {
            InquiryError::NotFound(_) => Self::NotFound(e.to_string()),
            InquiryError::NotAllowed { .. } => Self::Forbidden(e.to_string()),
            InquiryError::ShuttingDown | InquiryError::Elsewhere(_) => {
                Self::Unavailable(e.to_string())
            }
            InquiryError::Store(e) => e.into(),
            InquiryError::NotAnInquiry(_)
            | InquiryError::TimedOut(_)
            | InquiryError::AlreadyResponded(_)
            | InquiryError::Ended { .. }
            | InquiryError::Invalid { .. } => Self::BadRequest(e.to_string()),
        }
    }
}

fn inquiry_id(id: &str) -> ApiResult<ExecutionId> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("inquiry '{id}' not found")))
}

#[derive(Debug, Deserialize)]
pub(crate) struct InquiryQuery {
    limit: Option<i64>,
    offset: Option<u64>,
}

/// StackStorm's default page of inquiries is 20.
const DEFAULT_LIMIT: i64 = 20;

#[utoipa::path(
    get,
    path = "/api/v1/inquiries",
    tag = "inquiries",
    responses((status = 200, description = "The inquiries waiting for a response, newest first: `[{id, route, ttl, users, roles, schema}]`"), crate::openapi::Faults)
)]
/// The tenant's inquiries waiting for a response.
pub(crate) async fn list_inquiries(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InquiryQuery>,
) -> ApiResult<Response> {
    let page = crate::v1::page(Some(q.limit.unwrap_or(DEFAULT_LIMIT)), q.offset)?;
    let mut filter = ExecutionFilter::for_tenant(caller.tenant());
    filter.status = Some(ExecutionStatus::Pending);
    filter.limit = page.limit;
    filter.offset = page.offset;
    let (items, total) = read(&state, move |s| s.list_executions_counted(&filter)).await?;
    let items = items
        .iter()
        .filter(|e| squall_reactor::inquiries::is_inquiry(e))
        .map(|e| Question::from_result(e.result.as_ref()).to_api(e.id.as_str()))
        .collect();
    Ok(listing(items, total, page))
}

#[utoipa::path(
    get,
    path = "/api/v1/inquiries/{id}",
    tag = "inquiries",
    params(("id" = String, Path)),
    responses((status = 200, description = "The inquiry: `{id, route, ttl, users, roles, schema}`; 400 when it no longer waits"), crate::openapi::Faults)
)]
/// One inquiry waiting for a response.
pub(crate) async fn get_inquiry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = inquiry_id(&id)?;
    let reactor = state.reactor.clone();
    let found = tokio::task::spawn_blocking(move || reactor.inquiry(&caller.tenant(), &id))
        .await
        .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))??;
    Ok(Json(found))
}

/// StackStorm's body: the inquiry's id again, and the response.
#[derive(Debug, Deserialize)]
pub(crate) struct Answer {
    id: Option<String>,
    response: Option<Value>,
}

#[utoipa::path(
    put,
    path = "/api/v1/inquiries/{id}",
    tag = "inquiries",
    params(("id" = String, Path)),
    request_body(content = Object, description = "`{\"id\": \"<inquiry id>\", \"response\": {...}}`; the response must pass the inquiry's schema"),
    responses((status = 200, description = "Answered: `{id, response}`; the waiting execution succeeded and its workflow goes on"), crate::openapi::Faults)
)]
/// Answer an inquiry. 400 when the response fails the schema or the
/// inquiry no longer waits (answered, timed out), 403 when the caller is
/// not among its users or roles.
pub(crate) async fn respond(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Answer>,
) -> ApiResult<Json<Value>> {
    let id = inquiry_id(&id)?;
    if let Some(given) = body.id.as_deref()
        && given.parse::<ExecutionId>().ok().as_ref() != Some(&id)
    {
        return Err(ApiError::BadRequest(format!(
            "field 'id': '{given}' does not match the inquiry in the path ('{id}')"
        )));
    }
    let response = body
        .response
        .ok_or_else(|| ApiError::BadRequest("field 'response': is required".into()))?;
    let reply = state.reactor.respond(&caller.0, &id, response).await?;
    Ok(Json(reply))
}
