//! Take one action from a request to a finished, durable execution record.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use squall_core::execution::CapturedOutput;
use squall_core::kv::KvStore;
use squall_core::params::ParamError;
use squall_core::time::now_rfc3339;
use squall_core::{ActionRef, Execution, ExecutionId, ExecutionStatus, StatusChange, TenantId};
use squall_sandbox::{Invocation, Limits, Outcome, Sandbox};
use squall_store::Store;

use crate::packs::{PackError, PackSet};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub tenant: TenantId,
    pub action: ActionRef,
    pub parameters: Map<String, Value>,
    pub trace_tag: Option<String>,
}

/// Why an execution was not started. When one of these is returned, no
/// execution record exists.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("action '{0}' is disabled")]
    Disabled(ActionRef),
    #[error("invalid parameters for '{action}': {cause}")]
    Parameters {
        action: ActionRef,
        cause: ParamError,
    },
    #[error("action '{action}': {cause}")]
    Component {
        action: ActionRef,
        cause: squall_sandbox::Error,
    },
    #[error(transparent)]
    Store(#[from] squall_store::Error),
}

/// Runs actions in the sandbox and records them in the store.
#[derive(Debug, Clone)]
pub struct Runner {
    sandbox: Arc<Sandbox>,
    store: Store,
    packs: Arc<PackSet>,
    limits: Limits,
}

impl Runner {
    /// `limits` are the defaults for every execution; an execution's
    /// `timeout` parameter overrides the timeout.
    pub fn new(sandbox: Arc<Sandbox>, store: Store, packs: Arc<PackSet>, limits: Limits) -> Self {
        Self {
            sandbox,
            store,
            packs,
            limits,
        }
    }

    pub fn packs(&self) -> &PackSet {
        &self.packs
    }

    /// Validate, record, run and record again. Returns the finished execution;
    /// an `Err` means nothing ran and nothing was recorded.
    #[tracing::instrument(skip_all, fields(action = %req.action))]
    pub async fn run(&self, req: RunRequest) -> Result<Execution, RunError> {
        let (pack, meta) = self.packs.action(&req.action)?;
        if !meta.enabled {
            return Err(RunError::Disabled(req.action));
        }
        let (parameters, options) =
            meta.resolve(req.parameters)
                .map_err(|cause| RunError::Parameters {
                    action: req.action.clone(),
                    cause,
                })?;
        let component = self
            .sandbox
            .load_action(&pack.component_path(meta)?)
            .map_err(|cause| RunError::Component {
                action: req.action.clone(),
                cause,
            })?;

        let now = now_rfc3339();
        let mut execution = Execution {
            id: ExecutionId::generate(),
            tenant: req.tenant.clone(),
            action: req.action.clone(),
            status: ExecutionStatus::Requested,
            parameters: Value::Object(meta.parameters.mask_secrets(&parameters)),
            result: None,
            output: CapturedOutput::default(),
            start_timestamp: now.clone(),
            end_timestamp: None,
            log: vec![StatusChange {
                status: ExecutionStatus::Requested,
                timestamp: now,
            }],
            trace_tag: req.trace_tag.clone(),
            trigger_instance_id: None,
            rule_ref: None,
        };
        self.store.insert_execution(&execution).await?;
        transition(&mut execution, ExecutionStatus::Scheduled);
        transition(&mut execution, ExecutionStatus::Running);
        self.store.update_execution(&execution).await?;

        let limits = Limits {
            timeout: options.timeout,
            ..self.limits
        };
        let invocation = Invocation {
            execution_id: execution.id.clone(),
            tenant: req.tenant,
            action: req.action,
            parameters,
            config: pack.config.clone(),
            kv: Some(Arc::new(self.store.clone()) as Arc<dyn KvStore>),
            trace_tag: req.trace_tag,
            limits,
        };
        let report = self.sandbox.run_action(&component, invocation).await;
        let (status, result) = match report.outcome {
            Outcome::Succeeded(value) => (ExecutionStatus::Succeeded, value),
            Outcome::Failed(failure) => {
                (ExecutionStatus::Failed, json!({ "error": failure.message }))
            }
            Outcome::Timeout { after } => (
                ExecutionStatus::Timeout,
                json!({ "error": format!("action timed out after {:.1} s", after.as_secs_f64()) }),
            ),
        };
        execution.result = Some(result);
        execution.output = report.output;
        transition(&mut execution, status);
        execution.end_timestamp = execution.log.last().map(|c| c.timestamp.clone());
        self.store.update_execution(&execution).await?;
        tracing::info!(execution_id = %execution.id, status = %execution.status, elapsed_us = report.elapsed.as_micros() as u64, "execution finished");
        Ok(execution)
    }
}

fn transition(execution: &mut Execution, status: ExecutionStatus) {
    execution.status = status;
    execution.log.push(StatusChange {
        status,
        timestamp: now_rfc3339(),
    });
}
