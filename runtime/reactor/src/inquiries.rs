//! Inquiries (StackStorm's `core.ask`, the `inquirer` runner): an execution
//! that asks a person a question and waits `pending` for the answer.
//!
//! Asking records the execution `pending` with its question as its result,
//! emits `core.st2.generic.inquiry`, and, for a workflow's task, moves the
//! workflow (`pausing`, then `paused`), all in one write. Answering records
//! the response, the execution's end and what that end moves (the
//! workflow resumed and its next tasks) in one write too: the store's
//! check that the record has not ended makes the first answer the only
//! one, and a crash cannot separate the answer from its consequences.
//! A `ttl` ends an unanswered inquiry `timeout` the same way.

use serde_json::{Value, json};
use squall_core::auth::Principal;
use squall_core::inquiry::Question;
use squall_core::manifest::INQUIRER_RUNNER;
use squall_core::trigger::{INQUIRY_TRIGGER, TriggerInstance};
use squall_core::{Execution, ExecutionId, ExecutionStatus, TenantId};

use crate::dispatch::Reactor;
use crate::runner::Prepared;
use crate::workflows::{Plan, Written};

/// Why an inquiry could not be shown or answered. The messages are
/// StackStorm's.
#[derive(Debug, thiserror::Error)]
pub enum InquiryError {
    #[error("inquiry '{0}' not found")]
    NotFound(ExecutionId),
    #[error("Action execution \"{0}\" is not an inquiry.")]
    NotAnInquiry(ExecutionId),
    #[error("Inquiry \"{0}\" timed out and cannot be responded to.")]
    TimedOut(ExecutionId),
    #[error("Inquiry \"{0}\" has already been responded to.")]
    AlreadyResponded(ExecutionId),
    #[error("Inquiry \"{id}\" is {status} and cannot be responded to.")]
    Ended {
        id: ExecutionId,
        status: ExecutionStatus,
    },
    #[error("User \"{user}\" does not have permission to respond to inquiry \"{id}\".")]
    NotAllowed { user: String, id: ExecutionId },
    #[error("Response did not pass schema validation: {}", .problems.join("; "))]
    Invalid { problems: Vec<String> },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] squall_store::Error),
    /// Another node holds the inquiry and could not record the answer.
    #[error("{0}")]
    Elsewhere(String),
}

/// An answer another node could not record, as an inquiry's error.
fn elsewhere(e: crate::ExecutionError) -> InquiryError {
    match e {
        crate::ExecutionError::Store(e) => InquiryError::Store(e),
        other => InquiryError::Elsewhere(other.to_string()),
    }
}

/// Whether `e` is an inquiry (an execution of an `inquirer` action).
pub fn is_inquiry(e: &Execution) -> bool {
    e.runner() == INQUIRER_RUNNER
}

/// `e` may be answered now: an inquiry, still pending.
fn check_pending(e: &Execution) -> Result<(), InquiryError> {
    if !is_inquiry(e) {
        return Err(InquiryError::NotAnInquiry(e.id.clone()));
    }
    match e.status {
        ExecutionStatus::Pending => Ok(()),
        ExecutionStatus::Timeout => Err(InquiryError::TimedOut(e.id.clone())),
        ExecutionStatus::Succeeded => Err(InquiryError::AlreadyResponded(e.id.clone())),
        status => Err(InquiryError::Ended {
            id: e.id.clone(),
            status,
        }),
    }
}

/// `result` (an inquiry's question) with `key` set to `value`.
fn with(result: Option<Value>, key: &str, value: Value) -> Value {
    let mut map = match result {
        Some(Value::Object(m)) => m,
        _ => Default::default(),
    };
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

impl Reactor {
    /// `tenant`'s inquiry `id`, as `/api/v1/inquiries/{id}` shows it; only
    /// a pending one.
    pub fn inquiry(&self, tenant: &TenantId, id: &ExecutionId) -> Result<Value, InquiryError> {
        let e = self
            .inner
            .store
            .get_execution(tenant, id)?
            .ok_or_else(|| InquiryError::NotFound(id.clone()))?;
        check_pending(&e)?;
        Ok(Question::from_result(e.result.as_ref()).to_api(e.id.as_str()))
    }

    /// Answer `caller`'s tenant's inquiry `id` with `response`: checked
    /// against who may answer and the schema, then recorded with
    /// everything it moves, once. Returns StackStorm's reply,
    /// `{"id", "response"}`.
    pub async fn respond(
        &self,
        caller: &Principal,
        id: &ExecutionId,
        response: Value,
    ) -> Result<Value, InquiryError> {
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(InquiryError::ShuttingDown);
        }
        // In a task of its own: once the answer moves a workflow in
        // memory, a caller that hangs up must not stop it short of the
        // write.
        let (reactor, caller, id) = (self.clone(), caller.clone(), id.clone());
        tokio::spawn(async move { reactor.respond_now(&caller, &id, response).await })
            .await
            .map_err(|e| {
                InquiryError::Store(squall_store::Error::Corrupt(format!(
                    "respond task failed: {e}"
                )))
            })?
    }

    async fn respond_now(
        &self,
        caller: &Principal,
        id: &ExecutionId,
        response: Value,
    ) -> Result<Value, InquiryError> {
        let store = &self.inner.store;
        let mut e = store
            .get_execution(&caller.tenant, id)?
            .ok_or_else(|| InquiryError::NotFound(id.clone()))?;
        check_pending(&e)?;
        let question = Question::from_result(e.result.as_ref());
        if !question.may_answer(caller) {
            return Err(InquiryError::NotAllowed {
                user: caller.user.clone(),
                id: id.clone(),
            });
        }
        question
            .check(&response)
            .map_err(|problems| InquiryError::Invalid { problems })?;
        // Another node holds it (and its workflow): that node records it.
        if let Some(node) = self.held_elsewhere(id).await.map_err(elsewhere)? {
            return match self.answer_on(node, caller, id, response).await {
                Ok(answer) => Ok(answer),
                Err(err) => {
                    // Ended meanwhile: say how, as here.
                    let now = store
                        .get_execution(&caller.tenant, id)?
                        .ok_or_else(|| InquiryError::NotFound(id.clone()))?;
                    check_pending(&now)?;
                    Err(elsewhere(err))
                }
            };
        }
        e.transition(ExecutionStatus::Succeeded);
        e.result = Some(with(e.result.take(), "response", response.clone()));
        let mut plan = Plan::default();
        self.plan_ending(e, None, &mut plan).await;
        match self.commit_reporting(plan).await {
            Written::Yes => {}
            Written::Superseded => {
                // Answered, timed out or canceled meanwhile: say which.
                let now = store
                    .get_execution(&caller.tenant, id)?
                    .ok_or_else(|| InquiryError::NotFound(id.clone()))?;
                check_pending(&now)?;
                return Err(InquiryError::AlreadyResponded(id.clone()));
            }
            Written::Failed => {
                return Err(InquiryError::Store(squall_store::Error::Corrupt(format!(
                    "inquiry {id}: the answer could not be recorded with its workflow's step (see the server's log)"
                ))));
            }
        }
        tracing::info!(execution_id = %id, user = %caller.user, "inquiry answered");
        Ok(json!({"id": id.as_str(), "response": response}))
    }

    /// Ask: record `job`'s execution `pending` with its question, with the
    /// inquiry trigger and its workflow's step, then wait out its `ttl`.
    pub(crate) async fn ask(&self, job: Prepared) {
        let question = Question::from_parameters(job.parameters());
        let mut e = job.execution.clone();
        if e.status != ExecutionStatus::Scheduled {
            e.transition(ExecutionStatus::Scheduled);
        }
        e.transition(ExecutionStatus::Running);
        match question.validator() {
            Ok(_) => {
                e.result = Some(question.to_result());
                e.transition(ExecutionStatus::Pending);
            }
            // Never answerable: it fails now rather than wait for ever.
            Err(why) => {
                e.result = Some(with(
                    Some(question.to_result()),
                    "error",
                    json!(format!("schema is not a valid JSON schema: {why}")),
                ));
                e.transition(ExecutionStatus::Failed);
            }
        }
        let mut plan = Plan::default();
        self.plan_ending(e.clone(), None, &mut plan).await;
        let written = self.commit(plan).await;
        self.inner.scheduler.forget(&e.id);
        if !written || e.status != ExecutionStatus::Pending {
            return;
        }
        if job.live.is_canceled() {
            // A cancel came while it was being asked: it found it
            // starting, not yet pending.
            if let Err(err) = self.cancel(&e.tenant, &e.id).await {
                tracing::debug!(execution_id = %e.id, error = %err, "inquiry not canceled");
            }
            return;
        }
        self.expire_later(&e);
    }

    /// `core.st2.generic.inquiry` for `e`, now pending.
    pub(crate) fn inquiry_trigger(&self, e: &Execution) -> TriggerInstance {
        let route = Question::from_result(e.result.as_ref()).route;
        self.emitted(
            e,
            INQUIRY_TRIGGER,
            json!({"id": e.id.as_str(), "route": route}),
        )
    }

    /// End `e` (a pending inquiry) `timeout` once its `ttl` has passed
    /// since it began to wait, unless it is answered first.
    pub(crate) fn expire_later(&self, e: &Execution) {
        let ttl = Question::from_result(e.result.as_ref()).ttl;
        if !(ttl > 0.0 && ttl.is_finite()) {
            return;
        }
        let since = e
            .log
            .iter()
            .rev()
            .find(|c| c.status == ExecutionStatus::Pending)
            .and_then(|c| squall_core::time::parse_rfc3339(&c.timestamp))
            .map(std::time::SystemTime::from)
            .unwrap_or_else(std::time::SystemTime::now);
        let ttl =
            std::time::Duration::try_from_secs_f64(ttl * 60.0).unwrap_or(std::time::Duration::MAX);
        // Past the end of the clock: it never times out.
        let Some(at) = since.checked_add(ttl) else {
            return;
        };
        let wait = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let (reactor, tenant, id) = (self.clone(), e.tenant.clone(), e.id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if reactor
                .inner
                .closed
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return;
            }
            if let Err(err) = reactor.expire(&tenant, &id).await {
                tracing::error!(execution_id = %id, error = %err, "inquiry could not be timed out");
            }
        });
    }

    /// End pending inquiry `id` `timeout` (its ttl passed): its task fails,
    /// so `when: <% failed() %>` routes it.
    async fn expire(&self, tenant: &TenantId, id: &ExecutionId) -> Result<(), InquiryError> {
        let Some(mut e) = self.inner.store.get_execution(tenant, id)? else {
            return Ok(());
        };
        if e.status != ExecutionStatus::Pending {
            return Ok(());
        }
        let ttl = Question::from_result(e.result.as_ref()).ttl;
        e.transition(ExecutionStatus::Timeout);
        e.result = Some(with(
            e.result.take(),
            "error",
            json!(format!("no response within its ttl ({ttl} minutes)")),
        ));
        let mut plan = Plan::default();
        self.plan_ending(e, None, &mut plan).await;
        if self.commit(plan).await {
            tracing::info!(execution_id = %id, "inquiry timed out");
        }
        Ok(())
    }

    /// After a restart: wait out the ttl of every inquiry still pending
    /// (one whose ttl passed meanwhile times out now).
    pub(crate) fn recover_inquiries(
        &self,
        scope: Option<&std::collections::HashSet<ExecutionId>>,
    ) -> Result<(), squall_store::Error> {
        let mut waiting = self.inner.store.waiting_inquiries()?;
        waiting.retain(|e| scope.is_none_or(|s| s.contains(&e.id)));
        if !waiting.is_empty() {
            tracing::info!(
                inquiries = waiting.len(),
                "inquiries waiting for a response"
            );
        }
        for e in &waiting {
            // Its workflow ended, and a stop came before the cancel it
            // asked for: canceled now.
            let workflow_ended = match crate::workflows::task_of(e) {
                Some((workflow, _, _)) => self
                    .inner
                    .store
                    .get_execution(&e.tenant, &workflow)?
                    .is_none_or(|w| w.status.is_completed()),
                None => false,
            };
            if workflow_ended {
                let (reactor, tenant, id) = (self.clone(), e.tenant.clone(), e.id.clone());
                tokio::spawn(async move {
                    if let Err(err) = reactor.cancel(&tenant, &id).await {
                        tracing::warn!(execution_id = %id, error = %err, "inquiry of an ended workflow not canceled");
                    }
                });
                continue;
            }
            self.expire_later(e);
        }
        Ok(())
    }
}

/// The result of an inquiry canceled while it waited: its question, and
/// why it ended.
pub(crate) fn canceled_result(result: Option<Value>) -> Value {
    with(
        result,
        "error",
        json!("canceled while waiting for a response"),
    )
}
