//! The core pack and the SDK, end to end.

use serde_json::json;
use squall_core::ExecutionStatus;
use squall_reactor::RunError;

use crate::util::{Harness, error_of, running_time};

fn core() -> Harness {
    Harness::new(vec![squall_tests::core_pack()])
}

#[tokio::test]
pub(crate) async fn core_actions_all_behave() {
    let h = core();

    let e = h.run_ok("core.echo", json!({"message": "hello"})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(
        e.result,
        Some(
            json!({"stdout": "hello", "stderr": "", "return_code": 0, "succeeded": true, "failed": false})
        )
    );
    let statuses: Vec<_> = e.log.iter().map(|c| c.status.as_str()).collect();
    assert_eq!(statuses, ["requested", "scheduled", "running", "succeeded"]);
    assert!(e.end_timestamp.is_some());
    assert_eq!(h.stored(&e), e, "the record returned is the record stored");

    let e = h.run_ok("core.noop", json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);

    let e = h.run_ok("core.sleep", json!({"seconds": 0.05})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(e.result, Some(json!({"slept": 0.05})));

    let e = h
        .run_ok("core.fail", json!({"message": "on purpose"}))
        .await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert_eq!(error_of(&e), "on purpose");
    let e = h.run_ok("core.fail", json!({})).await;
    assert_eq!(error_of(&e), "failed on purpose", "default applied");

    assert_eq!(h.executions().len(), 5);
}

#[tokio::test]
async fn sleep_waiting_in_a_host_call_still_times_out() {
    let h = core();
    let e = h
        .run_ok("core.sleep", json!({"seconds": 600, "timeout": 1}))
        .await;
    assert_eq!(e.status, ExecutionStatus::Timeout);
    // Its 1 s limit ended it, not the sleep (600 s) nor the default (60 s).
    let took = running_time(&e);
    assert!(took.as_secs_f64() < 30.0, "{took:?}");
    assert_eq!(error_of(&e), "action timed out after 1.0 s");
}

#[tokio::test]
async fn bad_requests_are_refused_and_nothing_runs() {
    let h = core();
    let err = h
        .run("core.echo", json!({"message": 5}))
        .await
        .expect_err("wrong type");
    assert!(
        err.to_string()
            .starts_with("invalid parameters for 'core.echo': parameter 'message':"),
        "{err}"
    );
    let err = h.run("core.echo", json!({})).await.expect_err("missing");
    assert_eq!(
        err.to_string(),
        "invalid parameters for 'core.echo': missing required parameter 'message'"
    );
    let err = h.run("core.nope", json!({})).await.expect_err("unknown");
    assert!(matches!(err, RunError::Pack(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "unknown action 'core.nope': pack 'core' has no action 'nope' (it has: ask, echo, fail, http, local, local_sudo, noop, remote, remote_sudo, sleep)"
    );
    let err = h
        .run("core.echo", json!({"message": "x", "timeout": 0}))
        .await
        .expect_err("bad timeout");
    assert!(err.to_string().contains("parameter 'timeout'"), "{err}");
    assert!(h.executions().is_empty(), "no execution may be recorded");
}

#[tokio::test]
pub(crate) async fn probe_sees_context_config_log_and_kv() {
    let pack = squall_tests::pack_of(
        "probe",
        &[(
            "probe",
            squall_tests::PROBE,
            "parameters:\n  key: {type: string, required: true}\n  value: {type: string, required: true, secret: true}\n",
        )],
    );
    std::fs::write(
        pack.path().join("config.schema.yaml"),
        "region:\n  type: string\n  default: eu\n",
    )
    .expect("write schema");
    let h = Harness::new(vec![pack]);

    let e = h
        .run_ok("probe.probe", json!({"key": "k", "value": "v1"}))
        .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.result);
    let r = e.result.clone().expect("result");
    assert_eq!(r["ctx"]["execution_id"], json!(e.id.as_str()));
    assert_eq!(r["ctx"]["tenant"], json!("default"));
    assert_eq!(r["ctx"]["pack"], json!("probe"));
    assert_eq!(r["ctx"]["action"], json!("probe"));
    assert_eq!(r["config"], json!({"region": "eu"}));
    assert_eq!(r["before"], json!(null));
    assert_eq!(r["after"], json!("v1"));
    assert_eq!(r["listed"], json!(["k", "k:ttl"]));
    assert!(
        r["empty_key_error"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be empty")),
        "{r}"
    );
    assert!(
        r["encrypt_error"]
            .as_str()
            .is_some_and(|m| m.contains("no datastore key for secrets")),
        "{r}"
    );
    assert_eq!(
        e.parameters["value"],
        json!("********"),
        "secret parameters are masked"
    );
    assert_eq!(e.output.log.len(), 1);
    assert_eq!(e.output.log[0].message, "probing with key k");
    assert_eq!(e.output.log[0].level, "info");

    // kv state survives into the next execution (a fresh instance).
    let e = h
        .run_ok("probe.probe", json!({"key": "k", "value": "v2"}))
        .await;
    assert_eq!(e.result.expect("result")["before"], json!("v1"));
}
