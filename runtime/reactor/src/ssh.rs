//! The remote shell runners (`remote-shell-cmd`, `remote-shell-script`:
//! `core.remote`) over SSH, through `russh`.
//!
//! Before anything is sent, each host is resolved once and checked against
//! the operator's allow-list (`--ssh-allowed-hosts`): by its name, or by the
//! resolved address for address and CIDR entries; the connection then goes
//! to that same address. The host's key must be in the known-hosts file
//! (first-use trust only when the operator asks for it). The key to log in
//! with is the action's `private_key` (for example a datastore secret), or
//! the server's `--ssh-key`. A timeout or a cancel closes the channel and
//! the connection, which ends the command on an SSH server that ties it to
//! the session (OpenSSH does).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::ChannelMsg;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use serde_json::{Map, Value, json};
use squall_core::ExecutionStatus;

use crate::host::{HostCommand, HostOutcome, HostRun, quote, shell_result};

/// How remote commands reach hosts.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    /// Hosts remote commands may reach (`--ssh-allowed-hosts`); empty:
    /// none.
    pub allowed: Vec<HostRule>,
    /// The known-hosts file host keys are checked against.
    pub known_hosts: Option<PathBuf>,
    /// Record the key of a host not yet known instead of refusing it.
    pub trust_on_first_use: bool,
    /// The private key (its text) used when an action gives none.
    pub key: Option<Arc<str>>,
    /// The user to log in as when an action names none.
    pub user: Option<String>,
}

/// One entry of the allow-list: `*`, a host name (`*.example.com` for
/// any subdomain), an address, or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    Any,
    Name(String),
    Block { net: IpAddr, bits: u8 },
}

impl HostRule {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self::Any);
        }
        if let Some((net, bits)) = s.split_once('/') {
            let net: IpAddr = net
                .parse()
                .map_err(|_| format!("'{s}': '{net}' is not an address"))?;
            let most = if net.is_ipv4() { 32 } else { 128 };
            let bits = bits
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= most)
                .ok_or_else(|| format!("'{s}': '{bits}' is not a prefix length (0-{most})"))?;
            return Ok(Self::Block { net, bits });
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Self::Block { net: ip, bits });
        }
        let name = s.to_ascii_lowercase();
        let plain = name.strip_prefix("*.").unwrap_or(&name);
        let label_ok =
            |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !plain.split('.').all(label_ok) {
            return Err(format!(
                "'{s}' is not a host name, an address or a CIDR block"
            ));
        }
        Ok(Self::Name(name))
    }

    /// Whether host `name` is allowed by this rule by its name alone.
    fn allows_name(&self, name: &str) -> bool {
        match self {
            Self::Any | Self::Name(_) => self.allows(name, IpAddr::from([0, 0, 0, 0])),
            Self::Block { .. } => false,
        }
    }

    /// Whether host `name`, resolved to `addr`, is allowed by this rule.
    fn allows(&self, name: &str, addr: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Name(rule) => {
                let name = name.to_ascii_lowercase();
                match rule.strip_prefix("*.") {
                    Some(domain) => name.ends_with(&format!(".{domain}")),
                    None => *rule == name,
                }
            }
            Self::Block { net, bits } => in_block(addr, *net, *bits),
        }
    }
}

fn in_block(addr: IpAddr, net: IpAddr, bits: u8) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Where and how a remote command logs in, from its parameters.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// (host, port) each.
    pub(crate) hosts: Vec<(String, u16)>,
    pub(crate) username: Option<String>,
    pub(crate) private_key: Option<String>,
    pub(crate) passphrase: Option<String>,
    pub(crate) parallel: bool,
    /// The host every connection goes through (`bastion_host`).
    pub(crate) bastion: Option<(String, u16)>,
}

impl Target {
    pub(crate) fn from_parameters(params: &Map<String, Value>) -> Result<Self, String> {
        let text = |name: &str| {
            params
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let bastion = text("bastion_host")
            .map(|b| split_host(b.trim(), 22))
            .transpose()?;
        let port = params
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(22);
        let mut hosts = Vec::new();
        for entry in text("hosts").unwrap_or_default().split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            hosts.push(split_host(entry, port)?);
        }
        if hosts.is_empty() {
            return Err(
                "parameter 'hosts' is required: the hosts to run on, comma-separated".into(),
            );
        }
        Ok(Self {
            hosts,
            username: text("username"),
            private_key: text("private_key"),
            passphrase: text("passphrase"),
            parallel: params
                .get("parallel")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bastion,
        })
    }
}

/// `host`, `host:port`, `[v6]:port` or a bare v6 address.
fn split_host(entry: &str, default: u16) -> Result<(String, u16), String> {
    let bad_port = |p: &str| format!("host '{entry}': '{p}' is not a port");
    if let Some(inner) = entry.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("host '{entry}': unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port(p))?,
            None => default,
        };
        return Ok((h.to_owned(), port));
    }
    if entry.parse::<IpAddr>().is_ok() {
        return Ok((entry.to_owned(), default));
    }
    match entry.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), p.parse().map_err(|_| bad_port(p))?)),
        None => Ok((entry.to_owned(), default)),
    }
}

/// Resolve `host` once and pick the address the allow-list lets it reach;
/// `Err` names why not (before any connection).
pub(crate) async fn admit(
    settings: &SshSettings,
    host: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    if settings.allowed.is_empty() {
        return Err(format!(
            "host '{host}' is not allowed: this server allows no SSH hosts (the operator's --ssh-allowed-hosts)"
        ));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("host '{host}' could not be resolved: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| settings.allowed.iter().any(|r| r.allows(host, a.ip())))
        .copied()
        .ok_or_else(|| {
            let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            format!(
                "host '{host}' ({}) is not allowed by the operator's --ssh-allowed-hosts",
                shown.join(", ")
            )
        })
}

/// Checks the server's key against the known-hosts file.
struct KeyCheck {
    host: String,
    port: u16,
    known_hosts: Option<PathBuf>,
    trust_on_first_use: bool,
    /// Why the key was refused, for the result.
    refused: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for KeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = self.verdict(key);
        if let Err(why) = &verdict {
            *self.refused.lock().expect("refusal lock poisoned") = Some(why.clone());
        }
        Ok(verdict.is_ok())
    }
}

impl KeyCheck {
    fn verdict(&self, key: &PublicKeyOrCertificate) -> Result<(), String> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Err(format!(
                "host '{}' offered a certificate; Squall checks plain host keys against known hosts",
                self.host
            ));
        };
        let Some(path) = &self.known_hosts else {
            return Err(format!(
                "host '{}': no known-hosts file to check its key against (the operator's --ssh-known-hosts)",
                self.host
            ));
        };
        let fingerprint = key.fingerprint(Default::default());
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
            Ok(true) => Ok(()),
            Ok(false) if self.trust_on_first_use => {
                russh::keys::known_hosts::learn_known_hosts_path(&self.host, self.port, key, path)
                    .map_err(|e| {
                        format!("host '{}': its key could not be recorded: {e}", self.host)
                    })?;
                tracing::warn!(host = %self.host, port = self.port, %fingerprint, "trusted a new host key on first use");
                Ok(())
            }
            Ok(false) => Err(format!(
                "host '{}' is not in the known-hosts file (its key is {fingerprint}): the operator adds it, or starts the server with --ssh-trust-on-first-use",
                self.host
            )),
            Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
                "host '{}' offered a key ({fingerprint}) other than the one recorded at line {line} of the known-hosts file: refused",
                self.host
            )),
            Err(e) => Err(format!(
                "host '{}': its key could not be checked: {e}",
                self.host
            )),
        }
    }
}

/// One remote command, for every host it runs on.
#[derive(Clone, Copy)]
struct Job<'a> {
    line: &'a str,
    /// A script's text, sent on stdin.
    script: Option<&'a [u8]>,
    target: &'a Target,
    settings: &'a SshSettings,
    run: &'a HostRun<'a>,
}

/// Run `cmd` on every host of its target; one result per host.
pub(crate) async fn run_remote(
    cmd: &HostCommand,
    settings: &SshSettings,
    run: HostRun<'_>,
) -> HostOutcome {
    let Some(target) = &cmd.remote else {
        return HostOutcome {
            status: ExecutionStatus::Failed,
            result: json!({"error": "a remote command without hosts"}),
        };
    };
    let line = match remote_line(cmd) {
        Ok(line) => line,
        Err(why) => {
            return HostOutcome {
                status: ExecutionStatus::Failed,
                result: json!({ "error": why }),
            };
        }
    };
    let job = Job {
        line: &line,
        script: cmd.script.as_deref(),
        target,
        settings,
        run: &run,
    };
    let per_host: Vec<(String, (ExecutionStatus, Value))> = if target.parallel {
        futures_util::future::join_all(target.hosts.iter().map(|(h, p)| each_host(&job, h, *p)))
            .await
    } else {
        let mut out = Vec::new();
        for (h, p) in &target.hosts {
            let done = each_host(&job, h, *p).await;
            let stop = matches!(done.1.0, ExecutionStatus::Canceled);
            out.push(done);
            if stop {
                break;
            }
        }
        out
    };
    let mut result = Map::new();
    let mut status = ExecutionStatus::Succeeded;
    for (host, (ran, value)) in per_host {
        let failed = value["failed"].as_bool().unwrap_or(true);
        status = match (status, ran) {
            (ExecutionStatus::Canceled, _) | (_, ExecutionStatus::Canceled) => {
                ExecutionStatus::Canceled
            }
            (ExecutionStatus::Timeout, _) | (_, ExecutionStatus::Timeout) => {
                ExecutionStatus::Timeout
            }
            _ if failed => ExecutionStatus::Failed,
            (s, _) => s,
        };
        result.insert(host, value);
    }
    HostOutcome {
        status,
        result: Value::Object(result),
    }
}

/// Run on one host, bounded by the timeout and the cancel: (host, its
/// status and result).
async fn each_host(job: &Job<'_>, host: &str, port: u16) -> (String, (ExecutionStatus, Value)) {
    let run = job.run;
    let ran = tokio::time::timeout(run.timeout, on_host(job, host, port));
    let outcome = tokio::select! {
        r = ran => match r {
            Ok(Ok((code, stdout, stderr))) => {
                (ExecutionStatus::Succeeded, shell_result(&stdout, &stderr, code))
            }
            Ok(Err(why)) => (ExecutionStatus::Failed, host_error(why, 255)),
            Err(_) => (
                ExecutionStatus::Timeout,
                host_error(
                    format!("Action failed to complete in {} seconds", run.timeout.as_secs()),
                    -9,
                ),
            ),
        },
        _ = run.cancel.canceled() => {
            (ExecutionStatus::Canceled, host_error("canceled while running".into(), -9))
        }
    };
    (host.to_owned(), outcome)
}

fn host_error(why: String, code: i64) -> Value {
    json!({"stdout": "", "stderr": "", "return_code": code, "succeeded": false, "failed": true, "error": why})
}

/// The command line sent to each host: into `cwd`, with `env` exported,
/// under `sudo` when asked (SSH servers rarely accept environment
/// requests, so the variables go in the line).
fn remote_line(cmd: &HostCommand) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Some(cwd) = &cmd.cwd {
        parts.push(format!("cd {} &&", quote(cwd)?));
    }
    for (k, v) in &cmd.env {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("env: '{k}' is not a variable name"));
        }
        parts.push(format!("{k}={}", quote(v)?));
    }
    let line = cmd.shell_line()?;
    if cmd.env.is_empty() && cmd.cwd.is_none() {
        return Ok(line);
    }
    parts.push(format!("/bin/sh -c {}", quote(&line)?));
    Ok(parts.join(" "))
}

async fn connect(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A logged-in SSH session.
type Session = russh::client::Handle<KeyCheck>;

/// Where and as whom to log in: the key, the user, the client's config.
struct Login {
    key: Arc<PrivateKey>,
    user: String,
    config: Arc<russh::client::Config>,
}

impl Login {
    fn of(target: &Target, settings: &SshSettings) -> Result<Self, String> {
        let key_text = target
            .private_key
            .as_deref()
            .or(settings.key.as_deref())
            .ok_or("no private key: give 'private_key' (e.g. a datastore secret) or start the server with --ssh-key")?;
        let key = russh::keys::decode_secret_key(key_text, target.passphrase.as_deref())
            .map_err(|e| format!("'private_key' is not a usable private key: {e}"))?;
        Ok(Self {
            key: Arc::new(key),
            user: target
                .username
                .clone()
                .or_else(|| settings.user.clone())
                .unwrap_or_else(|| "root".to_owned()),
            config: Arc::new(russh::client::Config {
                inactivity_timeout: None,
                ..Default::default()
            }),
        })
    }

    /// Check `host`'s key, then log in, over `stream` (a TCP connection,
    /// or a channel through a bastion).
    async fn over<S>(
        &self,
        settings: &SshSettings,
        host: &str,
        port: u16,
        stream: S,
    ) -> Result<Session, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let refused = Arc::new(Mutex::new(None));
        let check = KeyCheck {
            host: host.to_owned(),
            port,
            known_hosts: settings.known_hosts.clone(),
            trust_on_first_use: settings.trust_on_first_use,
            refused: refused.clone(),
        };
        let mut session = match russh::client::connect_stream(self.config.clone(), stream, check)
            .await
        {
            Ok(session) => session,
            Err(e) => {
                let why = refused.lock().expect("refusal lock poisoned").take();
                return Err(why.unwrap_or_else(|| format!("could not reach {host}:{port}: {e}")));
            }
        };
        let hash = session
            .best_supported_rsa_hash()
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .flatten();
        let auth = session
            .authenticate_publickey(
                &self.user,
                PrivateKeyWithHashAlg::new(self.key.clone(), hash),
            )
            .await
            .map_err(|e| format!("{host}: authentication failed: {e}"))?;
        if !auth.success() {
            return Err(format!(
                "{host}: the key was not accepted for user '{}'",
                self.user
            ));
        }
        Ok(session)
    }
}

/// Log in to `host` directly, or through the target's bastion. A host
/// behind a bastion is resolved by the bastion, so the allow-list checks
/// its name (or its address, when it is one) rather than an address
/// resolved here.
async fn log_in(
    job: &Job<'_>,
    login: &Login,
    host: &str,
    port: u16,
) -> Result<(Session, Option<Session>), String> {
    let Job {
        settings,
        run,
        target,
        line,
        ..
    } = *job;
    let Some((bastion, bastion_port)) = &target.bastion else {
        let addr = admit(settings, host, port).await?;
        run.output.push_log(
            "info",
            format!(
                "{}: ssh {}@{host}:{port} ({addr}): {line}",
                cmd_name(target),
                login.user
            ),
        );
        let tcp = connect(addr)
            .await
            .map_err(|e| format!("could not connect to {host}:{port} ({addr}): {e}"))?;
        return Ok((login.over(settings, host, port, tcp).await?, None));
    };
    let literal = host.parse::<std::net::IpAddr>().ok();
    let named_ok = settings.allowed.iter().any(|r| match literal {
        Some(ip) => r.allows(host, ip),
        None => r.allows_name(host),
    });
    if !named_ok {
        return Err(format!(
            "host '{host}' (behind bastion '{bastion}') is not allowed by the operator's --ssh-allowed-hosts"
        ));
    }
    let addr = admit(settings, bastion, *bastion_port).await?;
    run.output.push_log(
        "info",
        format!(
            "{}: ssh {}@{host}:{port} through {bastion}:{bastion_port} ({addr}): {line}",
            cmd_name(target),
            login.user
        ),
    );
    let tcp = connect(addr).await.map_err(|e| {
        format!("could not connect to bastion {bastion}:{bastion_port} ({addr}): {e}")
    })?;
    let hop = login.over(settings, bastion, *bastion_port, tcp).await?;
    let tunnel = hop
        .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
        .await
        .map_err(|e| format!("bastion '{bastion}' could not reach {host}:{port}: {e}"))?;
    let session = login
        .over(settings, host, port, tunnel.into_stream())
        .await?;
    Ok((session, Some(hop)))
}

/// Run `line` on one host: (exit code, stdout, stderr).
async fn on_host(job: &Job<'_>, host: &str, port: u16) -> Result<(i64, String, String), String> {
    let Job {
        line,
        script,
        target,
        settings,
        run,
    } = *job;
    let login = Login::of(target, settings)?;
    // The bastion's session lives as long as the one through it.
    let (session, _hop) = log_in(job, &login, host, port).await?;
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    channel
        .exec(true, line)
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    // A script goes on stdin; a command reads none (as a local one).
    if let Some(script) = script {
        channel
            .data(script)
            .await
            .map_err(|e| format!("{host}: sending the script: {e}"))?;
    }
    channel.eof().await.map_err(|e| format!("{host}: {e}"))?;
    let cap = run.output_cap;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut code = None;
    let keep = |buf: &mut Vec<u8>, data: &[u8]| {
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    };
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                run.output.push_stdout(&data);
                keep(&mut stdout, &data);
            }
            ChannelMsg::ExtendedData { data, .. } => {
                run.output.push_stderr(&data);
                keep(&mut stderr, &data);
            }
            ChannelMsg::ExitStatus { exit_status } => code = Some(i64::from(exit_status)),
            ChannelMsg::ExitSignal { .. } => code = code.or(Some(-1)),
            _ => {}
        }
    }
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    Ok((
        code.unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}

fn cmd_name(target: &Target) -> &'static str {
    if target.parallel {
        "remote (parallel)"
    } else {
        "remote"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_rules_match_names_addresses_and_blocks() {
        let rule = |s: &str| HostRule::parse(s).expect(s);
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.1.2.3".parse().expect("ip");
        assert!(rule("127.0.0.1").allows("localhost", lo));
        assert!(!rule("127.0.0.1").allows("localhost", other));
        assert!(rule("10.0.0.0/8").allows("db1", other));
        assert!(!rule("10.0.0.0/16").allows("db1", other));
        assert!(rule("*.example.com").allows("db.example.com", other));
        assert!(!rule("*.example.com").allows("example.com", other));
        assert!(rule("DB1").allows("db1", other));
        assert!(rule("*").allows("anything", other));
        assert!(HostRule::parse("10.0.0.0/33").is_err());
        assert!(HostRule::parse("bad host").is_err());
    }

    #[test]
    fn hosts_are_split_with_their_ports() {
        let params = json!({"hosts": "a, b:2222, [::1]:23, 10.0.0.1", "port": 2200})
            .as_object()
            .cloned()
            .expect("object");
        let t = Target::from_parameters(&params).expect("valid");
        assert_eq!(
            t.hosts,
            [
                ("a".to_owned(), 2200),
                ("b".to_owned(), 2222),
                ("::1".to_owned(), 23),
                ("10.0.0.1".to_owned(), 2200)
            ]
        );
        let none = json!({"hosts": " , "})
            .as_object()
            .cloned()
            .expect("object");
        assert!(Target::from_parameters(&none).is_err());
    }
}
