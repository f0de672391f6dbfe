//! `squall bench queue`: the cluster's execution queue on a PostgreSQL
//! database, driven from this process: executions enqueued, then claimed
//! and completed by 1, 2 and 3 claimers at once, each standing for a node.
//! Prints the claim latency (p50, p99) and executions claimed and
//! completed per second.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use squall_core::execution::{CapturedOutput, Execution, ExecutionStatus, StatusChange};
use squall_core::{ExecutionId, TenantId};
use squall_store::pg::PgStore;

use crate::bench::{median, ms, p99, runtime};

pub(crate) fn queue(database: String, executions: usize, batch: usize) -> anyhow::Result<ExitCode> {
    let rt = runtime(2)?;
    rt.block_on(async {
        println!("squall bench queue");
        let store = PgStore::connect(&database, 16).await?;
        println!(
            "  {executions} executions per run, claimed {batch} at a time under a 30 s lease, each completed with its fence"
        );
        for claimers in 1..=3 {
            let enqueued = Instant::now();
            for _ in 0..executions {
                let e = waiting();
                store.insert_execution(&e).await?;
                store.enqueue(&e, Duration::ZERO).await?;
            }
            let enqueue_rate = executions as f64 / enqueued.elapsed().as_secs_f64();
            let started = Instant::now();
            let nodes: Vec<_> = (0..claimers)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move { drain(&store, &format!("bench-{n}"), batch).await })
                })
                .collect();
            let mut latencies = Vec::new();
            let mut done = 0;
            for node in nodes {
                let (n, times) = node.await??;
                done += n;
                latencies.extend(times);
            }
            let took = started.elapsed();
            anyhow::ensure!(done == executions, "{done} of {executions} executions completed");
            println!(
                "  {claimers} claimer(s): {:>7.0} executions/s claimed and completed; claim p50 {:.2} ms, p99 {:.2} ms ({} claims); enqueue {:.0}/s",
                done as f64 / took.as_secs_f64(),
                ms(median(&latencies)),
                ms(p99(&latencies)),
                latencies.len(),
                enqueue_rate,
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Claim and complete until the queue is empty; how many, and how long
/// each claim took.
async fn drain(
    store: &PgStore,
    node: &str,
    batch: usize,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let mut times = Vec::new();
    let mut done = 0;
    loop {
        let asked = Instant::now();
        let claims = store
            .claim(node, batch, Duration::from_secs(30), None)
            .await?;
        times.push(asked.elapsed());
        if claims.is_empty() {
            return Ok((done, times));
        }
        for claim in claims {
            let mut e = claim.execution;
            let ran = e.transition(ExecutionStatus::Scheduled)
                && e.transition(ExecutionStatus::Running)
                && e.transition(ExecutionStatus::Succeeded);
            anyhow::ensure!(ran, "execution {} was not waiting", e.id);
            anyhow::ensure!(
                store.complete_claimed(node, claim.fence, &e).await?,
                "execution {} lost its lease",
                e.id
            );
            done += 1;
        }
    }
}

fn waiting() -> Execution {
    let now = squall_core::time::now_rfc3339();
    Execution {
        id: ExecutionId::generate(),
        tenant: TenantId::default_tenant(),
        action: "core.noop".parse().expect("a valid ref"),
        status: ExecutionStatus::Requested,
        parameters: serde_json::json!({}),
        result: None,
        output: CapturedOutput::default(),
        start_timestamp: now.clone(),
        end_timestamp: None,
        log: vec![StatusChange {
            status: ExecutionStatus::Requested,
            timestamp: now,
        }],
        trace_tag: None,
        trigger_instance_id: None,
        rule_ref: None,
        trigger_type: None,
        context: Default::default(),
        delay: None,
    }
}
