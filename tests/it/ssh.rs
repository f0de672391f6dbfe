//! `core.remote` against an SSH server the test runs on 127.0.0.1 (built
//! on russh, as Squall's client is): keys from the datastore, host keys
//! checked against known hosts, the allow-list checked before connecting.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use serde_json::{Value, json};
use squall_core::TenantId;
use squall_reactor::HostRunners;
use squall_reactor::ssh::HostRule;
use tempfile::TempDir;

use crate::server::{Server, Setup};

/// An SSH server on 127.0.0.1 that runs each command with `/bin/sh -c`
/// for one client key, counting connections; stopped when dropped.
struct SshServer {
    addr: SocketAddr,
    host_key: PrivateKey,
    connections: Arc<AtomicUsize>,
    users: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("key")
}

impl SshServer {
    async fn start(client: PublicKey) -> Self {
        let host_key = new_key();
        let config = Arc::new(russh::server::Config {
            keys: vec![host_key.clone()],
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: Some(Duration::from_secs(600)),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let users = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), users.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let handler = Commands {
                    client: client.clone(),
                    users: seen.clone(),
                    stdins: Default::default(),
                };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
                        let _ = session.await;
                    }
                });
            }
        });
        Self {
            addr,
            host_key,
            connections,
            users,
            task,
        }
    }

    /// Its `known_hosts` line.
    fn known_hosts_line(&self, key: &PublicKey) -> String {
        format!(
            "[127.0.0.1]:{} {}\n",
            self.addr.port(),
            key.to_openssh().expect("openssh")
        )
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

struct Commands {
    client: PublicKey,
    users: Arc<Mutex<Vec<String>>>,
    /// The stdin of each channel's command, until the client's EOF.
    stdins: std::collections::HashMap<ChannelId, tokio::process::ChildStdin>,
}

impl russh::server::Handler for Commands {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if key.public_key.key_data() == self.client.key_data() {
            self.users.lock().expect("users").push(user.to_owned());
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let handle = session.handle();
        session.channel_success(channel)?;
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(_) => {
                let _ = handle.exit_status_request(channel, 127).await;
                let _ = handle.close(channel).await;
                return Ok(());
            }
        };
        if let Some(stdin) = child.stdin.take() {
            self.stdins.insert(channel, stdin);
        }
        tokio::spawn(async move {
            let code = match child.wait_with_output().await {
                Ok(out) => {
                    let _ = handle.data(channel, out.stdout).await;
                    let _ = handle.extended_data(channel, 1, out.stderr).await;
                    out.status.code().unwrap_or(255) as u32
                }
                Err(_) => 255,
            };
            let _ = handle.exit_status_request(channel, code).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        use tokio::io::AsyncWriteExt as _;
        if let Some(stdin) = self.stdins.get_mut(&channel) {
            let _ = stdin.write_all(data).await;
        }
        Ok(())
    }

    /// A bastion's tunnel: the TCP connection the client asks for.
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Ok(port) = u16::try_from(port_to_connect) else {
            return Ok(());
        };
        let Ok(mut tcp) = tokio::net::TcpStream::connect((host_to_connect, port)).await else {
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
        });
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.stdins.remove(&channel);
        Ok(())
    }
}

/// A pack with `remote.run`: a workflow that runs `cmd` on `hosts` with
/// the key kept in the datastore as `ssh_key`.
fn remote_pack() -> TempDir {
    let dir = squall_tests::pack_of("remote", &[]);
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(actions.join("workflows")).expect("mkdir");
    std::fs::write(
        actions.join("greet.sh"),
        "#!/bin/sh\necho \"$0\"\nfor a in \"$@\"; do echo \"$a\"; done\n",
    )
    .expect("write script");
    std::fs::write(
        actions.join("greet.yaml"),
        "name: greet\nrunner_type: remote-shell-script\nentry_point: greet.sh\nparameters:\n  who: {type: string, position: 0}\n  loud: {type: boolean}\n",
    )
    .expect("write script action");
    std::fs::write(
        actions.join("run.yaml"),
        "name: run\nrunner_type: orquesta\nentry_point: workflows/run.yaml\nparameters:\n  hosts: {type: string, required: true}\n  cmd: {type: string, required: true}\n",
    )
    .expect("write action");
    std::fs::write(
        actions.join("workflows/run.yaml"),
        "version: 1.0\ninput: [hosts, cmd]\noutput:\n  - ran: <% ctx(ran) %>\ntasks:\n  remote:\n    action: core.remote\n    input:\n      hosts: <% ctx(hosts) %>\n      cmd: <% ctx(cmd) %>\n      username: deploy\n      cwd: /tmp\n      env: {STAGE: blue green}\n      private_key: <% st2kv('system.ssh_key', decrypt => true) %>\n    next:\n      - when: <% succeeded() %>\n        publish: ran=<% result() %>\n",
    )
    .expect("write workflow");
    dir
}

/// A server whose default tenant has host runners, allowing `allowed`,
/// checking host keys against `known_hosts`.
async fn server(allowed: &[&str], known_hosts: &Path, trust_on_first_use: bool) -> Server {
    let mut host = HostRunners::for_tenants([TenantId::default_tenant()]);
    host.ssh.allowed = allowed
        .iter()
        .map(|r| HostRule::parse(r).expect("rule"))
        .collect();
    host.ssh.known_hosts = Some(known_hosts.to_owned());
    host.ssh.trust_on_first_use = trust_on_first_use;
    let rules = squall_tests::rules_pack(
        "deploys",
        &[(
            "deploy.yaml",
            "name: deploy\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: deploy}}\naction:\n  ref: core.remote\n  parameters:\n    hosts: '{{ trigger.body.host }}'\n    cmd: echo ruled\n    private_key: '{{ st2kv.system.ssh_key | decrypt_kv }}'\n",
        )],
    );
    Server::start_with_setup(
        vec![squall_tests::core_pack(), remote_pack(), rules],
        Setup {
            host,
            ..Setup::default()
        },
    )
    .await
}

fn pem(key: &PrivateKey) -> String {
    key.to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .expect("pem")
        .to_string()
}

/// `core.remote` run directly, with the key as a parameter.
async fn remote(server: &Server, host: &str, key: &PrivateKey, cmd: &str) -> Value {
    let created = server
        .run(
            "core.remote",
            json!({"hosts": host, "cmd": cmd, "private_key": pem(key)}),
        )
        .await;
    server.finished(&created["id"]).await
}

fn error_of(e: &Value, host: &str) -> String {
    e["result"][host]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_command_runs_over_ssh_with_a_key_from_the_datastore() {
    let client = new_key();
    let ssh = SshServer::start(client.public_key().clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, ssh.known_hosts_line(ssh.host_key.public_key())).expect("write");
    let server = server(&["127.0.0.1"], &known, false).await;
    let (status, body) = server
        .as_key(&server.key)
        .put(
            "/api/v1/keys/ssh_key",
            &json!({"name": "ssh_key", "value": pem(&client), "secret": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let created = server
        .run(
            "remote.run",
            json!({"hosts": ssh.host(), "cmd": "echo \"$STAGE in $(pwd)\"; echo warned >&2"}),
        )
        .await;
    let wf = server.finished(&created["id"]).await;
    assert_eq!(wf["status"], "succeeded", "{wf}");
    let ran = &wf["result"]["output"]["ran"]["127.0.0.1"];
    assert_eq!(ran["stdout"], "blue green in /tmp", "{wf}");
    assert_eq!(ran["stderr"], "warned");
    assert_eq!(ran["return_code"], 0);
    assert_eq!(ssh.users.lock().expect("users").as_slice(), ["deploy"]);
    let task =
        crate::workflows::task_execution(&server, wf["id"].as_str().expect("id"), "remote").await;
    assert_ne!(
        task["parameters"]["private_key"].as_str(),
        Some(pem(&client).as_str()),
        "the key is not stored in clear"
    );

    // A rule passes the key with StackStorm's `decrypt_kv`.
    let r = server
        .post("/api/v1/webhooks/deploy", &json!({"host": ssh.host()}))
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let ruled = server
        .wait_for("/api/v1/executions?action=core.remote", |l| {
            l.as_array()
                .into_iter()
                .flatten()
                .any(|e| e["result"]["127.0.0.1"]["stdout"] == "ruled")
        })
        .await;
    let by_rule = ruled
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["result"]["127.0.0.1"]["stdout"] == "ruled")
        .expect("the rule's execution");
    assert_eq!(by_rule["status"], "succeeded", "{by_rule}");
    assert_eq!(by_rule["context"]["rule"]["ref"], "deploys.deploy");
    assert_ne!(
        by_rule["parameters"]["private_key"].as_str(),
        Some(pem(&client).as_str()),
        "recorded masked"
    );

    // A script of the pack is sent to the host and run there from a copy,
    // with its arguments.
    let created = server
        .run(
            "remote.greet",
            json!({"hosts": ssh.host(), "who": "Ann Lee", "loud": true, "private_key": pem(&client)}),
        )
        .await;
    let e = server.finished(&created["id"]).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let out = e["result"]["127.0.0.1"]["stdout"]
        .as_str()
        .unwrap_or_default();
    let (first, rest) = out.split_once('\n').unwrap_or_default();
    assert!(
        first.starts_with('/') && !first.contains("greet.sh"),
        "run from a temporary copy: {out}"
    );
    assert_eq!(rest, "--loud\nAnn Lee");
    assert!(
        !std::path::Path::new(first).exists(),
        "the copy is removed: {first}"
    );

    // A failing command fails the execution, with its exit code.
    let e = remote(&server, &ssh.host(), &client, "exit 4").await;
    assert_eq!(e["status"], "failed");
    assert_eq!(e["result"]["127.0.0.1"]["return_code"], 4);
    // A key the server does not know is not let in.
    let e = remote(&server, &ssh.host(), &new_key(), "true").await;
    assert_eq!(e["status"], "failed");
    assert!(error_of(&e, "127.0.0.1").contains("not accepted"), "{e}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_changed_host_keys_are_refused() {
    let client = new_key();
    let ssh = SshServer::start(client.public_key().clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Not in known hosts: refused.
    let known = dir.path().join("empty_known_hosts");
    std::fs::write(&known, "").expect("write");
    let strict = server(&["127.0.0.1"], &known, false).await;
    let e = remote(&strict, &ssh.host(), &client, "echo never").await;
    assert_eq!(e["status"], "failed", "{e}");
    assert!(
        error_of(&e, "127.0.0.1").contains("not in the known-hosts file"),
        "{e}"
    );
    assert!(
        ssh.users.lock().expect("users").is_empty(),
        "never logged in"
    );
    strict.stop().await;

    // Another key recorded for it: refused.
    let changed = dir.path().join("changed_known_hosts");
    std::fs::write(&changed, ssh.known_hosts_line(new_key().public_key())).expect("write");
    let strict = server(&["127.0.0.1"], &changed, false).await;
    let e = remote(&strict, &ssh.host(), &client, "echo never").await;
    assert_eq!(e["status"], "failed", "{e}");
    assert!(
        error_of(&e, "127.0.0.1").contains("other than the one recorded"),
        "{e}"
    );
    strict.stop().await;

    // First-use trust when the operator asks for it: recorded, then checked.
    let tofu = dir.path().join("tofu_known_hosts");
    let trusting = server(&["127.0.0.1"], &tofu, true).await;
    let e = remote(&trusting, &ssh.host(), &client, "echo first").await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let recorded = std::fs::read_to_string(&tofu).expect("recorded");
    assert!(
        recorded.contains(&format!("[127.0.0.1]:{}", ssh.addr.port())),
        "{recorded}"
    );
    let e = remote(&trusting, &ssh.host(), &client, "echo again").await;
    assert_eq!(e["result"]["127.0.0.1"]["stdout"], "again");
    // Several hosts at once: one result each.
    let both = format!("{},localhost:{}", ssh.host(), ssh.addr.port());
    let created = trusting
        .run(
            "core.remote",
            json!({"hosts": both, "cmd": "echo each", "parallel": true, "private_key": pem(&client)}),
        )
        .await;
    let e = trusting.finished(&created["id"]).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    for host in ["127.0.0.1", "localhost"] {
        assert_eq!(e["result"][host]["stdout"], "each", "{e}");
    }
    trusting.stop().await;
}

async fn through(server: &Server, body: &Value) -> Value {
    let created = server.run("core.remote", body.clone()).await;
    server.finished(&created["id"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_behind_a_bastion_is_reached_through_it() {
    let client = new_key();
    // One server is both: the bastion as 127.0.0.1, the host as localhost.
    let ssh = SshServer::start(client.public_key().clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    let key = ssh.host_key.public_key();
    let lines = format!(
        "{}[localhost]:{} {}\n",
        ssh.known_hosts_line(key),
        ssh.addr.port(),
        key.to_openssh().expect("openssh")
    );
    std::fs::write(&known, lines).expect("write");
    let behind = format!("localhost:{}", ssh.addr.port());
    let body = json!({"hosts": behind, "bastion_host": ssh.host(), "cmd": "echo through", "private_key": pem(&client)});
    let direct = server(&["127.0.0.1", "localhost"], &known, false).await;
    let e = through(&direct, &body).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["localhost"]["stdout"], "through");
    assert_eq!(
        ssh.connections.load(Ordering::SeqCst),
        2,
        "one to the bastion, one through it"
    );
    direct.stop().await;

    // The host behind it is checked against the allow-list by its name.
    let strict = server(&["127.0.0.1"], &known, false).await;
    let e = through(&strict, &body).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert!(error_of(&e, "localhost").contains("behind bastion"), "{e}");
    assert_eq!(
        ssh.connections.load(Ordering::SeqCst),
        2,
        "no new connection"
    );
    strict.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_off_the_allow_list_is_refused_before_connecting() {
    let client = new_key();
    let ssh = SshServer::start(client.public_key().clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, ssh.known_hosts_line(ssh.host_key.public_key())).expect("write");

    let elsewhere = server(&["10.0.0.0/8", "*.example.com"], &known, false).await;
    let e = remote(&elsewhere, &ssh.host(), &client, "echo never").await;
    assert_eq!(e["status"], "failed", "{e}");
    assert!(
        error_of(&e, "127.0.0.1").contains("not allowed by the operator's --ssh-allowed-hosts"),
        "{e}"
    );
    elsewhere.stop().await;

    let none = server(&[], &known, false).await;
    let e = remote(&none, &ssh.host(), &client, "echo never").await;
    assert!(
        error_of(&e, "127.0.0.1").contains("allows no SSH hosts"),
        "{e}"
    );
    none.stop().await;
    assert_eq!(
        ssh.connections.load(Ordering::SeqCst),
        0,
        "no connection was made"
    );
}
