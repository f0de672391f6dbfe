//! Every hostile guest ends with a clear status, and the host keeps going.

use std::time::Duration;

use serde_json::json;
use squall_core::ExecutionStatus;
use squall_reactor::RunError;

use crate::util::{Harness, error_of, running_time, test_limits};

/// A pack with the hostile guest as `bad.go`, plus the core pack.
fn with(guest: &str) -> Harness {
    Harness::new(vec![
        squall_tests::pack_of("bad", &[("go", guest, "")]),
        squall_tests::core_pack(),
    ])
}

/// After a hostile execution the same host still runs a normal one.
async fn host_still_works(h: &Harness) {
    let e = h
        .run_ok("core.echo", json!({"message": "still here"}))
        .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
}

#[tokio::test]
pub(crate) async fn infinite_loop_times_out() {
    let h = with(squall_tests::LOOP);
    let e = h.run_ok("bad.go", json!({"timeout": 1})).await;
    assert_eq!(e.status, ExecutionStatus::Timeout, "{:?}", e.result);
    // Its own 1 s limit ended it (the default is 60 s).
    let took = running_time(&e);
    assert!(took < Duration::from_secs(30), "timed out after {took:?}");
    assert_eq!(error_of(&e), "action timed out after 1.0 s");
    host_still_works(&h).await;
}

#[tokio::test]
pub(crate) async fn memory_bomb_hits_the_limit() {
    let h = with(squall_tests::MEMBOMB);
    let e = h.run_ok("bad.go", json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    let error = error_of(&e);
    assert!(error.starts_with("memory limit exceeded"), "{error}");
    assert!(
        error.contains(&format!(
            "{:.1} MiB",
            (test_limits().memory_bytes >> 20) as f64
        )),
        "{error}"
    );
    host_still_works(&h).await;
}

#[tokio::test]
pub(crate) async fn stack_overflow_is_reported() {
    let h = with(squall_tests::STACKOVERFLOW);
    let e = h.run_ok("bad.go", json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert!(
        error_of(&e).starts_with("stack overflow"),
        "{}",
        error_of(&e)
    );
    host_still_works(&h).await;
}

#[tokio::test]
pub(crate) async fn panic_text_is_reported() {
    let h = with(squall_tests::PANIC);
    let e = h.run_ok("bad.go", json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert_eq!(error_of(&e), "guest panicked: the guest gave up: 42");
    assert!(
        e.output.stderr.contains("panicked at"),
        "stderr kept: {}",
        e.output.stderr
    );
    host_still_works(&h).await;
}

#[tokio::test]
pub(crate) async fn flood_is_truncated_not_fatal() {
    let h = with(squall_tests::FLOOD);
    let e = h.run_ok("bad.go", json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.result);
    assert_eq!(e.result, Some(json!({"written": 16 * 1024 * 1024})));
    let cap = test_limits().output_bytes;
    assert!(e.output.truncated);
    assert_eq!(e.output.stdout.len(), cap);
    assert_eq!(e.output.stderr.len(), cap);
    let logged: usize = e.output.log.iter().map(|l| l.message.len()).sum();
    assert!(
        logged <= cap && logged > cap / 2,
        "log kept up to the cap: {logged}"
    );
    host_still_works(&h).await;
}

#[tokio::test]
pub(crate) async fn wrong_world_is_refused_before_running() {
    let h = with(squall_tests::WRONG_WORLD);
    let err = h
        .run("bad.go", json!({}))
        .await
        .expect_err("must be refused");
    assert!(matches!(err, RunError::Component { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("does not implement the squall:automation/action world"),
        "{msg}"
    );
    assert!(h.executions().is_empty());
    host_still_works(&h).await;
}

#[tokio::test]
async fn a_component_that_traps_while_instantiated_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("trap_start.wasm");
    std::fs::write(&wasm, squall_tests::trap_at_instantiation_component()).expect("write");
    let h = with(wasm.to_str().expect("utf-8"));
    let e = h.run_ok("bad.go", json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Failed, "{:?}", e.result);
    assert!(
        error_of(&e).starts_with("failed to start the action"),
        "{}",
        error_of(&e)
    );
    host_still_works(&h).await;
}

#[tokio::test]
async fn many_hostile_executions_at_once_leave_the_host_healthy() {
    let h = std::sync::Arc::new(Harness::new(vec![
        squall_tests::pack_of(
            "bad",
            &[
                ("spin", squall_tests::LOOP, ""),
                ("bomb", squall_tests::MEMBOMB, ""),
                ("boom", squall_tests::PANIC, ""),
            ],
        ),
        squall_tests::core_pack(),
    ]));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let h = h.clone();
        let action = ["bad.spin", "bad.bomb", "bad.boom", "core.noop"][i % 4];
        // Only the loop is meant to time out.
        let params = if action == "bad.spin" {
            json!({"timeout": 1})
        } else {
            json!({})
        };
        tasks.push(tokio::spawn(async move {
            h.run_ok(action, params).await.status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    for (i, status) in statuses.iter().enumerate() {
        let expected = [
            ExecutionStatus::Timeout,
            ExecutionStatus::Failed,
            ExecutionStatus::Failed,
            ExecutionStatus::Succeeded,
        ][i % 4];
        assert_eq!(*status, expected, "execution {i}");
    }
    host_still_works(&h).await;
}
