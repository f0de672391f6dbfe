//! `squall bench http`: many executions each waiting on an HTTP response.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use squall_core::{ActionRef, ExecutionStatus, TenantId};
use squall_reactor::{PackSet, RunRequest, Runner};
use squall_sandbox::{Egress, Limits};
use squall_store::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::{proc_status, runtime};
use crate::commands::open_sandbox;

/// A server that answers every request after `wait`.
async fn slow_server(wait: Duration) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(wait).await;
                let body = "{\"ok\":true}";
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    Ok(port)
}

/// (resident bytes, threads) of this process.
fn usage() -> (u64, u64) {
    (proc_status("VmRSS:") * 1024, proc_status("Threads:"))
}

pub(crate) fn http(count: usize, packs: Vec<PathBuf>, action: &str) -> anyhow::Result<ExitCode> {
    let action: ActionRef = action.parse()?;
    let rt = runtime(2)?;
    rt.block_on(async {
        println!("squall bench http");
        let wait = Duration::from_secs(1);
        let port = slow_server(wait).await?;
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("squall.db"), &StoreConfig::default())?;
        let sandbox = Arc::new(open_sandbox(dir.path(), 2000)?);
        // The core pack's allowed_hosts is `*` (so is pyexamples'); this
        // server lets that mean any host, loopback included.
        let egress = Egress {
            allow_any_host: true,
            allow_private: true,
            ..Egress::default()
        };
        let runner = Runner::new(sandbox, store, Arc::new(PackSet::load(&packs)?), Limits::default())
            .with_egress(egress);
        let (rss0, threads0) = usage();
        let url = format!("http://127.0.0.1:{port}/slow");
        let run = |runner: Runner, url: String, action: ActionRef| async move {
            let mut params = serde_json::Map::new();
            params.insert("url".into(), json!(url));
            runner
                .run(RunRequest::new(TenantId::default_tenant(), action, params))
                .await
        };
        // Warm up: compile and map the component once.
        let warm = run(runner.clone(), url.clone(), action.clone()).await?;
        if warm.status != ExecutionStatus::Succeeded {
            bail!("{action} did not succeed: {:?}", warm.result);
        }
        let (rss_warm, _) = usage();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            tasks.spawn(run(runner.clone(), url.clone(), action.clone()));
        }
        let (mut peak_rss, mut peak_threads) = (0, 0);
        let mut succeeded = 0;
        let sampler = async {
            loop {
                let (rss, threads) = usage();
                peak_rss = peak_rss.max(rss);
                peak_threads = peak_threads.max(threads);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let all = async {
            while let Some(done) = tasks.join_next().await {
                if done??.status == ExecutionStatus::Succeeded {
                    succeeded += 1;
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            r = all => r?,
            () = sampler => unreachable!("the sampler never ends"),
        }
        let took = started.elapsed();
        println!(
            "  {count} concurrent {action} executions, each waiting {wait:?} on its response: {succeeded} succeeded in {:.2} s",
            took.as_secs_f64()
        );
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!(
            "  resident memory: {:.0} MiB before, {:.0} MiB after one run, {:.0} MiB peak ({:.2} MiB per execution above one run); threads: {threads0} before, {peak_threads} peak",
            mib(rss0),
            mib(rss_warm),
            mib(peak_rss),
            mib(peak_rss.saturating_sub(rss_warm)) / count.max(1) as f64
        );
        Ok(ExitCode::SUCCESS)
    })
}
