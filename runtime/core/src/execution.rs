//! Executions and their statuses, as StackStorm names them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ActionRef, ExecutionId, TenantId};

/// StackStorm's execution statuses (`st2common/constants/action.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Requested,
    Scheduled,
    Delayed,
    Running,
    Succeeded,
    Failed,
    Timeout,
    Canceling,
    Canceled,
    Abandoned,
    Pending,
    Pausing,
    Paused,
    Resuming,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 14] = [
        Self::Requested,
        Self::Scheduled,
        Self::Delayed,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Timeout,
        Self::Canceling,
        Self::Canceled,
        Self::Abandoned,
        Self::Pending,
        Self::Pausing,
        Self::Paused,
        Self::Resuming,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Scheduled => "scheduled",
            Self::Delayed => "delayed",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Abandoned => "abandoned",
            Self::Pending => "pending",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Resuming => "resuming",
        }
    }

    /// Whether an execution in `self` may move to `next` (StackStorm's
    /// lifecycle; `pausing`, `paused`, `resuming` are a workflow's, `pending`
    /// an inquiry's).
    pub fn can_become(self, next: ExecutionStatus) -> bool {
        use ExecutionStatus::*;
        match self {
            Requested => matches!(next, Scheduled | Delayed | Canceled | Failed),
            Delayed => matches!(next, Requested | Scheduled | Delayed | Canceled | Failed),
            Scheduled => matches!(next, Running | Delayed | Canceled | Failed),
            Running => matches!(
                next,
                Succeeded
                    | Failed
                    | Timeout
                    | Canceling
                    | Canceled
                    | Abandoned
                    | Pausing
                    | Paused
                    | Pending
            ),
            // A pausing workflow's last active task may end it.
            Pausing => matches!(
                next,
                Paused | Running | Resuming | Canceling | Canceled | Succeeded | Failed | Abandoned
            ),
            Resuming => matches!(
                next,
                Running | Canceling | Canceled | Succeeded | Failed | Abandoned
            ),
            // The run may end on its own before the cancel reaches it.
            Canceling => matches!(next, Canceled | Succeeded | Failed | Timeout | Abandoned),
            // An inquiry is answered (`succeeded`) or outlives its ttl
            // (`timeout`).
            Pending => matches!(
                next,
                Succeeded | Timeout | Running | Resuming | Canceled | Canceling | Failed
            ),
            Paused => matches!(next, Running | Resuming | Canceled | Canceling | Failed),
            Succeeded | Failed | Timeout | Canceled | Abandoned => false,
        }
    }

    /// StackStorm's "completed" group: the execution will not change again.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Timeout | Self::Canceled | Self::Abandoned
        )
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that StackStorm does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown execution status '{0}' (expected one of: requested, scheduled, delayed, running, succeeded, failed, timeout, canceling, canceled, abandoned, pending, pausing, paused, resuming)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for ExecutionStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// One entry of an execution's `log`: when it entered a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: ExecutionStatus,
    pub timestamp: String,
}

/// A log line a guest wrote through the `log` interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLogLine {
    pub level: String,
    pub message: String,
}

/// What the guest printed and logged during one execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    pub stdout: String,
    pub stderr: String,
    pub log: Vec<GuestLogLine>,
    /// True when output went beyond the cap and was cut.
    pub truncated: bool,
}

/// One run of an action: the record `squall execution get` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: ExecutionId,
    pub tenant: TenantId,
    pub action: ActionRef,
    pub status: ExecutionStatus,
    /// Parameters as the action received them, with secret ones masked.
    pub parameters: serde_json::Value,
    /// The action's result on success; `{"error": ...}` otherwise.
    pub result: Option<serde_json::Value>,
    pub output: CapturedOutput,
    pub start_timestamp: String,
    pub end_timestamp: Option<String>,
    /// Every status the execution went through, in order.
    pub log: Vec<StatusChange>,
    pub trace_tag: Option<String>,
    /// The trigger instance whose rule requested this execution.
    pub trigger_instance_id: Option<String>,
    /// The rule that requested this execution.
    pub rule_ref: Option<String>,
    /// The type of the trigger instance whose rule requested it.
    #[serde(default)]
    pub trigger_type: Option<String>,
    /// StackStorm's execution context: who asked (`user`), what it re-runs
    /// (`re-run`), which retry it is (`policies.retry`), ...
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Milliseconds to wait after `start_timestamp` before running.
    pub delay: Option<u64>,
}

/// What set an execution off, when a rule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub trigger_instance: String,
    pub rule: String,
    pub trigger_type: String,
}

impl Execution {
    /// What set it off, when a rule did (a retry or a re-run keeps it).
    pub fn origin(&self) -> Option<Origin> {
        Some(Origin {
            trigger_instance: self.trigger_instance_id.clone()?,
            rule: self.rule_ref.clone()?,
            trigger_type: self.trigger_type.clone().unwrap_or_default(),
        })
    }

    /// The name of the runner that ran it: `orquesta` for a workflow (its
    /// context names its workflow record), the name its context keeps for
    /// another runner (`inquirer`), else `wasm`.
    pub fn runner(&self) -> &str {
        if self.context.contains_key("workflow_execution") {
            return "orquesta";
        }
        self.context
            .get("runner")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("wasm")
    }

    /// Move to `status`, timestamped in the log. Returns false (and changes
    /// nothing) when StackStorm's lifecycle does not allow it.
    pub fn transition(&mut self, status: ExecutionStatus) -> bool {
        if !self.status.can_become(status) {
            return false;
        }
        let now = crate::time::now_rfc3339();
        if status.is_completed() {
            self.end_timestamp = Some(now.clone());
        }
        self.status = status;
        self.log.push(StatusChange {
            status,
            timestamp: now,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in ExecutionStatus::ALL {
            assert_eq!(status.as_str().parse::<ExecutionStatus>(), Ok(status));
        }
        assert!("done".parse::<ExecutionStatus>().is_err());
    }

    #[test]
    fn completed_statuses_never_change() {
        for from in ExecutionStatus::ALL
            .into_iter()
            .filter(|s| s.is_completed())
        {
            for to in ExecutionStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_lifecycle_reaches_every_final_status_from_requested() {
        use ExecutionStatus::*;
        let paths: &[&[ExecutionStatus]] = &[
            &[Requested, Scheduled, Running, Succeeded],
            &[Requested, Scheduled, Running, Failed],
            &[Requested, Scheduled, Running, Timeout],
            &[Requested, Scheduled, Running, Canceling, Canceled],
            &[Requested, Scheduled, Running, Abandoned],
            &[Requested, Delayed, Scheduled, Running, Succeeded],
            &[Requested, Delayed, Canceled],
            &[Requested, Scheduled, Delayed, Scheduled, Canceled],
            &[Requested, Canceled],
            // An inquiry: answered, or past its ttl.
            &[Requested, Scheduled, Running, Pending, Succeeded],
            &[Requested, Scheduled, Running, Pending, Timeout],
            &[Requested, Scheduled, Running, Pending, Canceled],
        ];
        for path in paths {
            for pair in path.windows(2) {
                assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
            }
        }
        assert!(!Requested.can_become(Running), "scheduling comes first");
        assert!(!Running.can_become(Requested));
        assert!(!Canceling.can_become(Running));
        assert!(
            !Paused.can_become(Timeout),
            "only an inquiry times out waiting"
        );
    }

    #[test]
    fn transition_logs_and_refuses() {
        let mut e = Execution {
            id: crate::ExecutionId::generate(),
            tenant: TenantId::default_tenant(),
            action: "core.noop".parse().expect("valid"),
            status: ExecutionStatus::Requested,
            parameters: serde_json::json!({}),
            result: None,
            output: CapturedOutput::default(),
            start_timestamp: crate::time::now_rfc3339(),
            end_timestamp: None,
            log: vec![],
            trace_tag: None,
            trigger_instance_id: None,
            rule_ref: None,
            trigger_type: None,
            context: Default::default(),
            delay: None,
        };
        assert!(e.transition(ExecutionStatus::Scheduled));
        assert!(!e.transition(ExecutionStatus::Succeeded));
        assert!(e.transition(ExecutionStatus::Canceled));
        assert_eq!(e.log.len(), 2);
        assert!(e.end_timestamp.is_some());
        assert!(!e.transition(ExecutionStatus::Running));
        assert_eq!(e.status, ExecutionStatus::Canceled);
    }

    #[test]
    fn completed_group_matches_stackstorm() {
        let completed: Vec<_> = ExecutionStatus::ALL
            .into_iter()
            .filter(|s| s.is_completed())
            .map(ExecutionStatus::as_str)
            .collect();
        assert_eq!(
            completed,
            ["succeeded", "failed", "timeout", "canceled", "abandoned"]
        );
    }
}
