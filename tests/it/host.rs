//! Host runners through the API: `core.local` and shell scripts run on this
//! host for a tenant the operator allowed, and are refused for any other;
//! a command's whole process group is gone after a timeout or a cancel.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::{Value, json};
use squall_core::TenantId;
use squall_reactor::HostRunners;
use tempfile::TempDir;

use crate::server::{Server, Setup};

/// A pack with a script: `scripts.greet` prints its arguments, one per
/// line; with `workflow`, `scripts.uses_local` runs `core.local`.
fn scripts_pack(workflow: bool) -> TempDir {
    let dir = squall_tests::pack_of("scripts", &[]);
    let actions = dir.path().join("actions");
    let script = actions.join("greet.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if workflow {
        write_uses_local(&actions);
    }
    std::fs::write(
        actions.join("greet.yaml"),
        "name: greet\nrunner_type: local-shell-script\nentry_point: greet.sh\nparameters:\n  who: {type: string, position: 0}\n  loud: {type: boolean, default: false}\n  times: {type: integer}\n",
    )
    .expect("write action");
    dir
}

fn write_uses_local(actions: &std::path::Path) {
    std::fs::create_dir(actions.join("workflows")).expect("mkdir");
    std::fs::write(
        actions.join("uses_local.yaml"),
        "name: uses_local\nrunner_type: orquesta\nentry_point: workflows/uses_local.yaml\n",
    )
    .expect("write workflow action");
    std::fs::write(
        actions.join("workflows/uses_local.yaml"),
        "version: 1.0\ntasks:\n  run:\n    action: core.local cmd=id\n",
    )
    .expect("write workflow");
}

async fn server_for(host: HostRunners) -> Server {
    Server::start_with_setup(
        vec![squall_tests::core_pack(), scripts_pack(true)],
        Setup {
            host,
            ..Setup::default()
        },
    )
    .await
}

fn default_tenant() -> HostRunners {
    HostRunners::for_tenants([TenantId::default_tenant()])
}

async fn local(server: &Server, parameters: Value) -> Value {
    let created = server.run("core.local", parameters).await;
    server.finished(&created["id"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_runners_are_refused_to_a_tenant_without_them() {
    // On for tenant `ops` only.
    let server = server_for(HostRunners::for_tenants([
        TenantId::new("ops".to_owned()).expect("tenant")
    ]))
    .await;
    let r = server
        .post(
            "/api/v1/executions",
            &json!({"action": "core.local", "parameters": {"cmd": "id"}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.expect("json");
    let fault = body["faultstring"].as_str().unwrap_or_default();
    assert!(
        fault.contains("has not turned host runners on for tenant 'default'")
            && fault.contains("--host-runners default"),
        "{body}"
    );
    let (_, listed) = server.get("/api/v1/executions?action=core.local").await;
    assert_eq!(listed, json!([]), "nothing recorded");

    // Nor as a workflow's task: the task fails, saying why.
    let created = server.run("scripts.uses_local", json!({})).await;
    let wf = server.finished(&created["id"]).await;
    assert_eq!(wf["status"], "failed", "{wf}");
    let task =
        crate::workflows::task_execution(&server, wf["id"].as_str().expect("id"), "run").await;
    assert!(
        task["result"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("has not turned host runners on")),
        "{task}"
    );

    // A tenant without them installs such a pack, told which actions it
    // will be refused, and is refused when it runs one.
    let other = server.tenant_with_key("acme", "admin").await;
    let other = server.as_key(&other);
    let archive =
        squall_reactor::install::archive_pack(scripts_pack(false).path()).expect("archive");
    let (status, body) = other.upload(archive).await;
    assert_eq!(status, 201, "{body}");
    let refused = &body["refused_actions"];
    assert_eq!(refused.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(refused[0]["ref"], "scripts.greet");
    assert!(
        refused[0]["why"]
            .as_str()
            .is_some_and(|w| w.contains("tenant 'acme'")),
        "{body}"
    );
    let (status, body) = other
        .post(
            "/api/v1/executions",
            &json!({"action": "scripts.greet", "parameters": {"who": "x"}}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // The runners are listed all the same.
    let (_, runners) = server.get("/api/v1/runnertypes").await;
    let names: Vec<&str> = runners
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"local-shell-cmd") && names.contains(&"remote-shell-script"),
        "{names:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_commands_get_cwd_env_and_exit_codes() {
    let server = server_for(default_tenant()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path().canonicalize().expect("canonical");
    let e = local(
        &server,
        json!({
            "cmd": "pwd; echo \"$GREETING\"; echo \"$ST2_ACTION_PACK_NAME $ST2_ACTION_EXECUTION_ID\"; env | grep -c '^CARGO' ; echo oops >&2",
            "cwd": cwd.to_str(),
            "env": {"GREETING": "hello there"},
        }),
    )
    .await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let id = e["id"].as_str().expect("id");
    let out = e["result"]["stdout"].as_str().expect("stdout");
    assert_eq!(
        out,
        format!("{}\nhello there\ncore {id}\n0", cwd.display()),
        "the server's own environment (CARGO_*) is not passed on"
    );
    assert_eq!(e["result"]["stderr"], "oops");
    assert_eq!(e["result"]["return_code"], 0);
    assert_eq!(e["result"]["succeeded"], true);
    assert_eq!(e["runner"]["name"], "local-shell-cmd");
    let log = e["output"]["log"].to_string();
    assert!(
        log.contains("local-shell-cmd: /bin/sh -c"),
        "the command is recorded: {log}"
    );

    let e = local(&server, json!({"cmd": "echo '{\"n\": 2}'; exit 3"})).await;
    assert_eq!(e["status"], "failed");
    assert_eq!(e["result"]["return_code"], 3);
    assert_eq!(
        e["result"]["stdout"],
        json!({"n": 2}),
        "JSON stdout is parsed"
    );
    assert_eq!(e["result"]["failed"], true);

    let e = local(&server, json!({"cmd": "true", "cwd": "/no/such/dir"})).await;
    assert_eq!(e["status"], "failed");
    assert!(
        e["result"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("/no/such/dir")),
        "{e}"
    );

    // core.local_sudo runs the command under sudo, never asking for a
    // password (whether sudo is there or not).
    let created = server.run("core.local_sudo", json!({"cmd": "id -u"})).await;
    let e = server.finished(&created["id"]).await;
    assert!(
        e["output"]["log"]
            .to_string()
            .contains("sudo -n -E -- /bin/sh -c"),
        "{e}"
    );

    // Output past the cap is cut, not fatal.
    let e = local(
        &server,
        json!({"cmd": "head -c 200000 /dev/zero | tr '\\0' a"}),
    )
    .await;
    assert_eq!(e["status"], "succeeded");
    assert_eq!(e["output"]["truncated"], true);
    assert_eq!(
        e["result"]["stdout"].as_str().map(str::len),
        Some(64 << 10),
        "stdout kept up to the cap"
    );

    // A script: named arguments first, then positional ones, as st2 does.
    let created = server
        .run(
            "scripts.greet",
            json!({"who": "Ann Lee", "loud": true, "times": 2}),
        )
        .await;
    let e = server.finished(&created["id"]).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout"], "--loud\n--times=2\nAnn Lee");
    server.stop().await;
}

/// Every process whose process group is `group`.
fn members_of(group: i64) -> Vec<i64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces.
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
        let pgrp = after
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse::<i64>().ok());
        if pgrp == Some(group) {
            out.push(pid);
        }
    }
    out
}

/// Wait for the command's shell to write its pid (its process group).
async fn group_of(file: &std::path::Path) -> i64 {
    crate::util::eventually("the command writing its pid", || async {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
}

async fn group_gone(group: i64) {
    crate::util::eventually(&format!("process group {group} gone"), || async {
        let left = members_of(group);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?} left"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_or_a_cancel_kills_the_whole_process_group() {
    let server = server_for(default_tenant()).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Timeout: the shell and its background children all go.
    let pid_file = dir.path().join("timeout.pid");
    let cmd = format!(
        // The pid is written once both background sleeps are forked.
        "sleep 600 & sleep 600 & echo $$ > {}; sleep 600",
        pid_file.display()
    );
    let created = server
        .run("core.local", json!({"cmd": cmd, "timeout": 5}))
        .await;
    let group = group_of(&pid_file).await;
    assert!(members_of(group).len() >= 3, "the shell and its sleeps run");
    let e = server.finished(&created["id"]).await;
    assert_eq!(e["status"], "timeout", "{e}");
    assert_eq!(e["result"]["return_code"], -9);
    group_gone(group).await;

    // Cancel.
    let pid_file = dir.path().join("cancel.pid");
    let cmd = format!("echo $$ > {}; sleep 600 & sleep 600", pid_file.display());
    let created = server
        .run("core.local", json!({"cmd": cmd, "timeout": 600}))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let group = group_of(&pid_file).await;
    let (status, body) = server.delete(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let e = server.finished(&json!(id)).await;
    assert_eq!(e["status"], "canceled", "{e}");
    group_gone(group).await;

    // A command that ends leaves nothing behind it either.
    let pid_file = dir.path().join("done.pid");
    let cmd = format!("echo $$ > {}; sleep 600 & echo started", pid_file.display());
    let e = local(&server, json!({"cmd": cmd})).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    group_gone(group_of(&pid_file).await).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_commands_run_as_the_configured_user() {
    let root = squall_tests::running_as_root();
    if !root {
        eprintln!("skipped: changing the user of a command needs root");
        return;
    }
    let mut host = default_tenant();
    host.run_as = Some(squall_reactor::RunAs::parse("65534:65534").expect("nobody"));
    let server = server_for(host).await;
    let e = local(&server, json!({"cmd": "id -u; id -g; id -G"})).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["stdout"], "65534\n65534\n65534",
        "uid, gid and no supplementary groups of the server's"
    );
    server.stop().await;
}
