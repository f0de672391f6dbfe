//! `squall bench ui`: the server time of the web UI's pages over a history
//! of a million executions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use squall_core::ExecutionStatus;

use crate::bench::{median, ms, p99, runtime};
use crate::bench_api::{BenchServer, finished};

/// Actions the rows are spread over, and rules that requested some.
const ACTIONS: usize = 20;
const RULES: usize = 5;

pub(crate) fn ui(rows: usize, requests: usize, packs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let rt = runtime(2)?;
    rt.block_on(async {
        println!("squall bench ui");
        let server = BenchServer::start(&packs).await?;
        let middle = seed(&server, rows).await?;
        println!(
            "  server time of each page (its Server-Timing), median and p99 of {requests} requests, {rows} executions:"
        );
        let pages = [
            ("history, first page", "/ui/executions".to_owned()),
            ("history, an older page", format!("/ui/executions?before={middle}")),
            ("history, status=failed", "/ui/executions?status=failed".to_owned()),
            ("history, one action", "/ui/executions?action=bench.op_03".to_owned()),
            (
                "history, one action, status=canceled (0.1%)",
                "/ui/executions?action=bench.op_03&status=canceled".to_owned(),
            ),
            ("history, one rule (2%)", "/ui/executions?rule=bench.rule_1".to_owned()),
            (
                "history, one rule, status=timeout (0.06%)",
                "/ui/executions?rule=bench.rule_1&status=timeout".to_owned(),
            ),
            (
                "history, a rule with no executions",
                "/ui/executions?rule=bench.rule_none".to_owned(),
            ),
            (
                "history, an action with no executions",
                "/ui/executions?action=bench.none".to_owned(),
            ),
            (
                "history, trigger type webhook (8%)",
                "/ui/executions?trigger_type=core.st2.webhook".to_owned(),
            ),
            (
                "history, trigger type timer, status=timeout (0.1%)",
                "/ui/executions?trigger_type=core.st2.IntervalTimer&status=timeout".to_owned(),
            ),
            (
                "history, a trigger type with no executions",
                "/ui/executions?trigger_type=core.st2.CronTimer".to_owned(),
            ),
            ("history, one user (14%)", "/ui/executions?user=user3".to_owned()),
            (
                "history, a user with no executions",
                "/ui/executions?user=nobody".to_owned(),
            ),
            ("history, the last hour", "/ui/executions?range=1h".to_owned()),
            ("history, live refresh (rows only)", "/ui/executions?partial=rows".to_owned()),
            ("one execution", format!("/ui/executions/{middle}")),
            ("actions", "/ui/actions".to_owned()),
            ("run form of core.echo", "/ui/actions/core.echo".to_owned()),
        ];
        let mut worst = Duration::ZERO;
        for (name, path) in &pages {
            let mut times = Vec::with_capacity(requests);
            for _ in 0..requests {
                times.push(server_time(&server, path).await?);
            }
            let (p50, p99) = (median(&times), p99(&times));
            worst = worst.max(p50);
            println!("    {name:<45} p50 {:>7.2} ms  p99 {:>7.2} ms", ms(p50), ms(p99));
        }
        println!("  slowest page's median: {:.2} ms (target 50 ms)", ms(worst));
        server.reactor.shutdown(Duration::from_secs(5)).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Write `rows` finished executions: 85% succeeded, 10% failed, 3%
/// timeout, 2% canceled, over 20 actions; one in ten requested by one of
/// 5 rules (one on timers, four on webhooks). Returns the id of the one
/// in the middle.
async fn seed(s: &BenchServer, rows: usize) -> anyhow::Result<String> {
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut middle = String::new();
    for i in 0..rows {
        let status = match (i / ACTIONS) % 100 {
            0..85 => ExecutionStatus::Succeeded,
            85..95 => ExecutionStatus::Failed,
            95..98 => ExecutionStatus::Timeout,
            _ => ExecutionStatus::Canceled,
        };
        let mut e = finished(&format!("bench.op_{:02}", i % ACTIONS), status);
        if i % 10 == 0 {
            let rule = (i / 10) % RULES;
            e.rule_ref = Some(format!("bench.rule_{rule}"));
            // Rule 0 fires on timers, the others on webhooks.
            e.trigger_type = Some(
                if rule == 0 {
                    "core.st2.IntervalTimer"
                } else {
                    "core.st2.webhook"
                }
                .to_owned(),
            );
        }
        e.context
            .insert("user".into(), serde_json::json!(format!("user{}", i % 7)));
        if i == rows / 2 {
            middle = e.id.as_str().to_owned();
        }
        batch.push(e);
        if batch.len() == 10_000 || i + 1 == rows {
            s.store.insert_executions(&batch).await?;
            batch.clear();
        }
    }
    println!(
        "  {rows} executions written in {:.1} s (setup, not measured)",
        t.elapsed().as_secs_f64()
    );
    Ok(middle)
}

/// The server time of one `GET path`, from its `Server-Timing`.
async fn server_time(s: &BenchServer, path: &str) -> anyhow::Result<Duration> {
    let r = s.http.get(format!("{}{path}", s.base)).send().await?;
    let status = r.status();
    let timing = r
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("app;dur="))
        .and_then(|v| v.parse::<f64>().ok());
    let body = r.bytes().await?;
    if !status.is_success() {
        bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let Some(took) = timing else {
        bail!("{path}: no Server-Timing header");
    };
    Ok(Duration::from_secs_f64(took / 1000.0))
}
