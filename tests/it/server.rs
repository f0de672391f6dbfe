//! The reactor over HTTP: `squall_api::serve` on 127.0.0.1:0 with a real
//! store, sandbox and packs, driven like a user drives it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use squall_reactor::{PackSet, Reactor, ReactorConfig, Runner};
use squall_store::{Store, StoreConfig};
use tempfile::TempDir;

use crate::util::{sandbox, test_limits};

/// Whether this copy of the suite runs on PostgreSQL: the modules of
/// `on_postgres.rs` are these files again, under that module.
pub(crate) fn on_postgres() -> bool {
    module_path!().contains("::on_postgres::")
}

/// The store of a server with its data in `data`, on the test process's
/// PostgreSQL server, as `squall serve --database` opens it: a database of
/// its own, made for `data` the first time (a server started again on the
/// same data uses the same database), written as a node of a name of its
/// own (`config.cluster`, made when the test gives none; a test's is given
/// that name); and the streams' own pool.
async fn postgres_store(
    data: &std::path::Path,
    config: &mut ReactorConfig,
) -> (Store, Option<squall_store::pg::PgStore>) {
    static NODES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let kept = data.join("database-url");
    let url = match std::fs::read_to_string(&kept) {
        Ok(url) => url,
        Err(_) => {
            let url = squall_tests::postgres::Postgres::shared().fresh_database();
            std::fs::write(&kept, &url).expect("keep the database's url");
            url
        }
    };
    let node = format!(
        "it-{}",
        NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let cluster = config
        .cluster
        .get_or_insert_with(|| squall_reactor::ClusterNode {
            name: String::new(),
            claim_ttl: Duration::from_secs(30),
            leads: true,
        });
    cluster.name = node.clone();
    let store = Store::connect_as(&url, 16, None, &node, cluster.claim_ttl)
        .await
        .expect("connect");
    let event_log = squall_store::pg::PgStore::connect(&url, 4)
        .await
        .expect("connect the streams' pool");
    (store, Some(event_log))
}

/// A pack with rules on the webhook `alerts`, next to the core pack.
pub(crate) const RULES: &[(&str, &str)] = &[
    (
        "echo_critical.yaml",
        r#"
name: echo_critical
pack: hooks
enabled: true
trigger: {type: core.st2.webhook, parameters: {url: alerts}}
criteria:
  trigger.body.severity: {type: iequals, pattern: critical}
  trigger.body.host: {type: exists}
action:
  ref: core.echo
  parameters:
    message: "{{ trigger.body.host }} is {{ trigger.body.severity | lower }} ({{ rule.ref }})"
"#,
    ),
    (
        "fallback.yaml",
        r#"
name: fallback
pack: hooks
enabled: true
type: {ref: backstop}
trigger: {type: core.st2.webhook, parameters: {url: alerts}}
action: {ref: core.noop}
"#,
    ),
    (
        "quiet.yaml",
        r#"
name: quiet
pack: hooks
enabled: true
trigger: {type: core.st2.webhook, parameters: {url: quiet}}
criteria:
  trigger.body.never: {type: equals, pattern: "this does not happen"}
action: {ref: core.noop}
"#,
    ),
];

/// The datastore key of every test server (secrets need one).
pub(crate) fn test_secret_key() -> squall_store::SecretKey {
    squall_store::SecretKey::from_bytes(&[7; 32])
}

/// An HTTP client that sends `key` with every request.
pub(crate) fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("St2-Api-Key", key.parse().expect("header value"));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// How a test server is set up beyond its packs.
#[derive(Default)]
pub(crate) struct Setup {
    pub(crate) config: ReactorConfig,
    /// Directories packs may open.
    pub(crate) allowed: Vec<std::path::PathBuf>,
    /// Outbound HTTP settings.
    pub(crate) egress: squall_sandbox::Egress,
    /// Bytes each tenant's datastore may hold.
    pub(crate) kv_quota: Option<u64>,
    /// Which tenants may run commands on hosts.
    pub(crate) host: squall_reactor::HostRunners,
}

pub(crate) struct Server {
    pub(crate) base: String,
    /// Sends the admin key of the default tenant.
    pub(crate) http: reqwest::Client,
    pub(crate) key: String,
    reactor: Reactor,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dirs: Vec<TempDir>,
}

impl Server {
    pub(crate) async fn start() -> Self {
        let hooks = squall_tests::rules_pack("hooks", RULES);
        Self::start_with(
            vec![squall_tests::core_pack(), hooks],
            ReactorConfig::default(),
        )
        .await
    }

    /// A server over `packs` (kept alive with it) and a fresh store.
    pub(crate) async fn start_with(packs: Vec<TempDir>, config: ReactorConfig) -> Self {
        Self::start_with_setup(
            packs,
            Setup {
                config,
                ..Setup::default()
            },
        )
        .await
    }

    /// [`Server::start_with`] with everything settable.
    pub(crate) async fn start_with_setup(packs: Vec<TempDir>, setup: Setup) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let paths: Vec<_> = packs.iter().map(|d| d.path().to_owned()).collect();
        let mut server = Self::start_setup(data.path(), &paths, setup)
            .await
            .expect("server starts");
        server._dirs = packs.into_iter().chain([data]).collect();
        server
    }

    /// A server over the packs at `packs` with its store in `data` (which
    /// the caller keeps), letting packs open directories under `allowed`.
    pub(crate) async fn start_in(
        data: &std::path::Path,
        packs: &[std::path::PathBuf],
        config: ReactorConfig,
        allowed: Vec<std::path::PathBuf>,
    ) -> Result<Self, String> {
        Self::start_setup(
            data,
            packs,
            Setup {
                config,
                allowed,
                ..Setup::default()
            },
        )
        .await
    }

    /// [`Server::start_in`] with everything settable.
    pub(crate) async fn start_setup(
        data: &std::path::Path,
        packs: &[std::path::PathBuf],
        setup: Setup,
    ) -> Result<Self, String> {
        let Setup {
            mut config,
            allowed,
            egress,
            kv_quota,
            host,
        } = setup;
        if config.pack_store.is_none() {
            config.pack_store = Some(
                squall_reactor::PackStore::open(&data.join("packs")).map_err(|e| e.to_string())?,
            );
        }
        let (store, event_log) = match on_postgres() {
            true => postgres_store(data, &mut config).await,
            false => {
                let store = Store::open(&data.join("db"), &StoreConfig::default()).expect("store");
                (store, None)
            }
        };
        let store = store
            .with_secret_key(test_secret_key())
            .with_kv_quota(kv_quota);
        let (_, key) = store
            .create_api_key(
                &squall_core::TenantId::default_tenant(),
                "tester",
                squall_core::auth::Role::Admin,
            )
            .await
            .expect("api key");
        let packs_set = PackSet::load(packs).map_err(|e| e.to_string())?;
        let runner = Runner::new(sandbox(), store.clone(), Arc::new(packs_set), test_limits())
            .with_allowed_dirs(allowed)
            .with_egress(egress)
            .with_host_runners(host);
        let reactor = Reactor::start(store, runner, &config)
            .await
            .map_err(|e| e.to_string())?;
        // As `serve` does (on PostgreSQL only).
        reactor.follow_changes();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut state = squall_api::AppState::new(reactor.clone());
        state.event_log = event_log;
        tokio::spawn(squall_api::serve(state, listener, async {
            let _ = rx.await;
        }));
        Ok(Self {
            base,
            http: client_with_key(&key),
            key,
            reactor,
            shutdown: Some(tx),
            _dirs: Vec::new(),
        })
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    /// `POST /api/v1/executions`; the created execution.
    pub(crate) async fn run(&self, action: &str, parameters: Value) -> Value {
        self.run_with(json!({"action": action, "parameters": parameters}))
            .await
    }

    pub(crate) async fn run_with(&self, body: Value) -> Value {
        let r = self.post("/api/v1/executions", &body).await;
        let status = r.status().as_u16();
        let created: Value = r.json().await.expect("json body");
        assert_eq!(status, 201, "{created}");
        created
    }

    /// Poll an execution until it completes (bounded).
    pub(crate) async fn finished(&self, id: &Value) -> Value {
        let id = id.as_str().expect("id is a string");
        self.wait_for(&format!("/api/v1/executions/{id}"), |e| {
            e["status"]
                .as_str()
                .and_then(|s| s.parse::<squall_core::ExecutionStatus>().ok())
                .is_some_and(|s| s.is_completed())
        })
        .await
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    /// Poll `path` until `done` holds for its body (bounded by
    /// [`crate::util::PATIENCE`]).
    pub(crate) async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        crate::util::eventually(&format!("{path} reaching the expected state"), || async {
            let (_, body) = self.get(path).await;
            if done(&body) {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        })
        .await
    }

    pub(crate) fn store(&self) -> &Store {
        self.reactor.store()
    }

    /// The server's execution events from now on.
    pub(crate) fn events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<squall_reactor::ExecutionEvent> {
        self.reactor.subscribe()
    }

    /// A new tenant `name` (made by the admin key) and a key of `role` in
    /// it.
    pub(crate) async fn tenant_with_key(&self, name: &str, role: &str) -> String {
        let r = self.post("/api/v1/tenants", &json!({"name": name})).await;
        assert!(
            r.status().as_u16() == 201 || r.status().as_u16() == 409,
            "create tenant: {}",
            r.status()
        );
        self.key_in(name, role).await
    }

    /// A new key of `role` in tenant `name` (made by the admin key).
    pub(crate) async fn key_in(&self, name: &str, role: &str) -> String {
        let r = self
            .post(
                "/api/v1/apikeys",
                &json!({"tenant": name, "user": format!("{role}-of-{name}"), "role": role}),
            )
            .await;
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.expect("json");
        body["key"].as_str().expect("key").to_owned()
    }

    /// The same server, seen with another key.
    pub(crate) fn as_key(&self, key: &str) -> Client {
        Client {
            base: self.base.clone(),
            http: client_with_key(key),
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.reactor.shutdown(Duration::from_secs(5)).await;
        self.reactor.release_claims().await;
    }

    /// Lead from now on: run the sensors, timers and file watches (a node
    /// started with `ClusterNode::leads` false).
    #[allow(dead_code)] // by the PostgreSQL-only tests of `cluster.rs`
    pub(crate) fn lead(&self) {
        self.reactor.lead();
    }

    /// Stop as a node that dies does: nothing more runs or is written, and
    /// nothing is handed over (its claims run out on their own).
    #[allow(dead_code)] // by the PostgreSQL-only tests of `cluster.rs`
    pub(crate) async fn kill(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.reactor.shutdown(Duration::ZERO).await;
    }
}

/// Requests to a server with one key.
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Client {
    /// Any request; (status, body as JSON or as a string).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Poll an execution until it completes (bounded).
    pub(crate) async fn finished(&self, id: &str) -> Value {
        crate::util::eventually(&format!("execution {id} completing"), || async {
            let (_, e) = self.get(&format!("/api/v1/executions/{id}")).await;
            match e["status"]
                .as_str()
                .map(str::parse::<squall_core::ExecutionStatus>)
            {
                Some(Ok(s)) if s.is_completed() => Ok(e),
                _ => Err(e.to_string()),
            }
        })
        .await
    }

    /// Poll an execution until it is `running` (bounded).
    pub(crate) async fn running(&self, id: &str) -> Value {
        crate::util::eventually(&format!("execution {id} running"), || async {
            let (_, e) = self.get(&format!("/api/v1/executions/{id}")).await;
            if e["status"] == "running" {
                Ok(e)
            } else {
                Err(e.to_string())
            }
        })
        .await
    }

    /// `POST /api/v1/packs/upload` with `archive`.
    pub(crate) async fn upload(&self, archive: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/packs/upload", self.base))
            .header("Content-Type", "application/gzip")
            .body(archive)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }
}

/// The trigger instance a webhook response announces.
fn instance_id(r: &reqwest::Response) -> String {
    r.headers()["St2-Trigger-Instance-Id"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

fn finished(body: &Value) -> bool {
    body.as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter()
                .all(|e| e["status"] == "succeeded" || e["status"] == "failed")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_runs_the_matching_rule_and_links_one_trace() {
    let s = Server::start().await;
    let r = s
        .http
        .post(format!("{}/api/v1/webhooks/alerts", s.base))
        .header("St2-Trace-Tag", "incident-42")
        .json(&json!({"severity": "CRITICAL", "host": "db-1"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 202);
    let instance_id = instance_id(&r);

    let executions = s
        .wait_for(
            &format!("/api/v1/executions?trigger_instance={instance_id}"),
            finished,
        )
        .await;
    let e = &executions[0];
    assert_eq!(
        executions.as_array().map(Vec::len),
        Some(1),
        "only the standard rule ran: {executions}"
    );
    assert_eq!(e["status"], "succeeded");
    assert_eq!(e["action"]["ref"], "core.echo");
    assert_eq!(
        e["result"]["stdout"],
        "db-1 is critical (hooks.echo_critical)"
    );
    assert_eq!(e["context"]["rule"]["ref"], "hooks.echo_critical");

    let (status, trace) = s.get("/api/v1/traces/incident-42").await;
    assert_eq!(status, 200);
    let webhook_instances: Vec<_> = trace["trigger_instances"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|t| t["ref"] == "core.st2.webhook")
        .collect();
    assert_eq!(webhook_instances.len(), 1);
    assert_eq!(webhook_instances[0]["object_id"], json!(instance_id));
    assert_eq!(trace["rules"][0]["ref"], "hooks.echo_critical");
    assert_eq!(trace["rules"][0]["execution_id"], e["id"]);
    assert_eq!(trace["action_executions"][0]["object_id"], e["id"]);

    let (_, ti) = s
        .get(&format!("/api/v1/triggerinstances/{instance_id}"))
        .await;
    assert_eq!(ti["status"], "processed");
    assert_eq!(ti["payload"]["body"]["host"], "db-1");
    assert_eq!(
        ti["payload"]["headers_lower"]["st2-trace-tag"],
        "incident-42"
    );

    // StackStorm ignores leading and trailing slashes in webhook URLs.
    let r = s
        .post("/api/v1/webhooks/alerts/", &json!({"severity": "low"}))
        .await;
    assert_eq!(r.status().as_u16(), 202);

    // The completion was emitted as core.st2.generic.actiontrigger, on the same trace.
    let trace = s
        .wait_for("/api/v1/traces/incident-42", |t| {
            t["trigger_instances"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|i| i["ref"] == "core.st2.generic.actiontrigger")
            })
        })
        .await;
    assert_eq!(trace["trigger_instances"].as_array().map(Vec::len), Some(2));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backstop_fires_only_without_a_standard_match_and_non_matches_run_nothing() {
    let s = Server::start().await;
    // No standard rule matches: the backstop runs core.noop.
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "info", "host": "web-1"}),
        )
        .await;
    let id = instance_id(&r);
    let executions = s
        .wait_for(
            &format!("/api/v1/executions?trigger_instance={id}"),
            finished,
        )
        .await;
    assert_eq!(executions.as_array().map(Vec::len), Some(1));
    assert_eq!(executions[0]["action"]["ref"], "core.noop");
    assert_eq!(executions[0]["context"]["rule"]["ref"], "hooks.fallback");

    // A rule that does not match: a processed instance, no enforcement, no execution.
    let r = s
        .post("/api/v1/webhooks/quiet", &json!({"anything": 1}))
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let id = instance_id(&r);
    s.wait_for(&format!("/api/v1/triggerinstances/{id}"), |t| {
        t["status"] == "processed"
    })
    .await;
    let (_, executions) = s
        .get(&format!("/api/v1/executions?trigger_instance={id}"))
        .await;
    assert_eq!(executions, json!([]));
    let (_, enforcements) = s
        .get(&format!("/api/v1/ruleenforcements?trigger_instance={id}"))
        .await;
    assert_eq!(enforcements, json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_naming_the_problem_and_the_reactor_keeps_going() {
    let s = Server::start().await;
    let fault = |v: &Value| v["faultstring"].as_str().unwrap_or_default().to_owned();

    let r = s
        .http
        .post(format!("{}/api/v1/webhooks/alerts", s.base))
        .body("severity=critical")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        fault(&body).starts_with("webhook body must be JSON"),
        "{body}"
    );

    let r = s.post("/api/v1/webhooks/nobody-listens", &json!({})).await;
    assert_eq!(r.status().as_u16(), 404);

    let rule = |name: &str, op: &str, action: &str, message: &str| {
        json!({"name": name, "pack": "hooks", "enabled": true,
               "trigger": {"type": "core.st2.webhook", "parameters": {"url": "new"}},
               "criteria": {"trigger.body.x": {"type": op, "pattern": 1}},
               "action": {"ref": action, "parameters": {"message": message}}})
    };
    let cases = [
        (
            rule("a", "equalz", "core.echo", "hi"),
            "unknown operator 'equalz'",
        ),
        (
            rule("b", "equals", "core.nope", "hi"),
            "unknown action 'core.nope'",
        ),
        (
            rule("c", "equals", "core.echo", "{{ trigger.body.x "),
            "field 'action.parameters.message': template",
        ),
        (
            json!({"name": "d"}),
            "invalid rule: missing field `trigger`",
        ),
        (
            json!({"name": "e", "trigger": {"type": "core.st2.IntervalTimer", "parameters": {"unit": "eons", "delta": 1}}, "action": {"ref": "core.noop"}}),
            "trigger parameter field 'unit'",
        ),
    ];
    for (body, expected) in cases {
        let r = s.post("/api/v1/rules", &body).await;
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let got: Value = r.json().await.expect("json");
        assert!(
            fault(&got).contains(expected),
            "expected '{expected}' in {got}"
        );
    }
    let r = s
        .http
        .post(format!("{}/api/v1/rules", s.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);

    // NUL characters, which no engine stores, named where they are.
    let c = s.as_key(&s.key);
    let nul_cases = [
        (
            c.put("/api/v1/keys/k", &json!({"name": "k", "value": "a\u{0}b"}))
                .await,
            "field 'value' holds a NUL character",
        ),
        (
            c.post(
                "/api/v1/executions",
                &json!({"action": "core.echo", "parameters": {"message": "x\u{0}"}}),
            )
            .await,
            "field 'parameters.message' holds a NUL character",
        ),
        (
            c.get("/api/v1/keys/a%00b").await,
            "the path holds a NUL character",
        ),
        (
            c.get("/api/v1/executions?action=core%00").await,
            "the query holds a NUL character",
        ),
    ];
    for ((status, body), expected) in nul_cases {
        assert_eq!(status, 400, "{body}");
        assert!(
            fault(&body).contains(expected),
            "expected '{expected}' in {body}"
        );
    }
    let (status, _) = c.get("/api/v1/keys/k").await;
    assert_eq!(status, 404, "nothing of a refused write is kept");

    // A dispatch through the st2 hook with a payload that breaks its schema.
    let r = s
        .post(
            "/api/v1/webhooks/st2",
            &json!({"trigger": "core.st2.webhook", "payload": {"body": "text"}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let got: Value = r.json().await.expect("json");
    assert!(fault(&got).contains("payload field 'body'"), "{got}");
    let r = s
        .post(
            "/api/v1/webhooks/st2",
            &json!({"trigger": "no.such.type", "payload": {}}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 404);

    // Still healthy.
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "critical", "host": "ok-1"}),
        )
        .await;
    let id = instance_id(&r);
    let executions = s
        .wait_for(
            &format!("/api/v1/executions?trigger_instance={id}"),
            finished,
        )
        .await;
    assert_eq!(executions[0]["status"], "succeeded");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_managed_through_the_api() {
    let s = Server::start().await;
    let (_, rules) = s.get("/api/v1/rules?pack=hooks").await;
    assert_eq!(rules.as_array().map(Vec::len), Some(3));

    let new_rule = json!({"name": "hello", "pack": "hooks", "enabled": true,
        "trigger": {"type": "core.st2.webhook", "parameters": {"url": "hello"}},
        "action": {"ref": "core.echo", "parameters": {"message": "hello {{ trigger.body.who }}"}}});
    assert_eq!(
        s.post("/api/v1/rules", &new_rule).await.status().as_u16(),
        201
    );
    assert_eq!(
        s.post("/api/v1/rules", &new_rule).await.status().as_u16(),
        409
    );
    let (status, got) = s.get("/api/v1/rules/hooks.hello").await;
    assert_eq!(
        (status, got["ref"].clone(), got["enabled"].clone()),
        (200, json!("hooks.hello"), json!(true))
    );

    let r = s
        .post("/api/v1/webhooks/hello", &json!({"who": "world"}))
        .await;
    let id = instance_id(&r);
    let executions = s
        .wait_for(
            &format!("/api/v1/executions?trigger_instance={id}"),
            finished,
        )
        .await;
    assert_eq!(executions[0]["result"]["stdout"], "hello world");

    // Disable (as `st2 rule disable` does: PUT with enabled false).
    let mut disabled = got.clone();
    disabled["enabled"] = json!(false);
    let r = s
        .http
        .put(format!("{}/api/v1/rules/hooks.hello", s.base))
        .json(&disabled)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        s.post("/api/v1/webhooks/hello", &json!({}))
            .await
            .status()
            .as_u16(),
        404
    );

    let r = s
        .http
        .delete(format!("{}/api/v1/rules/hooks.hello", s.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(s.get("/api/v1/rules/hooks.hello").await.0, 404);
    let (_, list) = s.get("/api/v1/executions?limit=1").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_and_cron_timers_fire_rules() {
    let s = Server::start().await;
    for (name, trigger) in [
        (
            "every_second",
            json!({"type": "core.st2.IntervalTimer", "parameters": {"unit": "seconds", "delta": 1}}),
        ),
        (
            "cron_every_second",
            json!({"type": "core.st2.CronTimer", "parameters": {"second": "*"}}),
        ),
    ] {
        let rule = json!({"name": name, "pack": "hooks", "enabled": true, "trigger": trigger,
            "action": {"ref": "core.echo", "parameters": {"message": "{{ rule.name }} at {{ trigger.executed_at }}"}}});
        assert_eq!(s.post("/api/v1/rules", &rule).await.status().as_u16(), 201);
    }
    for name in ["every_second", "cron_every_second"] {
        let body = s
            .wait_for("/api/v1/executions?action=core.echo&limit=100", |b| {
                b.as_array().is_some_and(|a| {
                    a.iter().any(|e| {
                        e["status"] == "succeeded"
                            && e["result"]["stdout"]
                                .as_str()
                                .is_some_and(|m| m.starts_with(&format!("{name} at ")))
                    })
                })
            })
            .await;
        assert!(!body.as_array().expect("list").is_empty());
    }
    s.stop().await;
}

/// Regression: a client that hung up after its event was written left the
/// event's executions `requested` forever (the request future, dropped,
/// held them between the write and the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_do_not_strand_recorded_executions() {
    let s = Server::start().await;
    let mut params = serde_json::Map::new();
    params.insert("url".into(), json!("alerts"));
    let tenant = squall_core::TenantId::default_tenant();
    for i in 0..300u64 {
        let payload =
            json!({"headers": {}, "body": {"severity": "critical", "host": format!("h{i}")}});
        // Give up after 0-299 µs: some dispatches are dropped before their
        // write, some after it.
        let dispatch =
            s.reactor
                .dispatch(&tenant, "core.st2.webhook", params.clone(), payload, None);
        let _ = tokio::time::timeout(Duration::from_micros(i), dispatch).await;
    }
    let body = s
        .wait_for("/api/v1/executions?status=requested&limit=1", |b| {
            b.as_array().is_some_and(Vec::is_empty)
        })
        .await;
    assert_eq!(body, json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_inspected_without_running() {
    let s = Server::start().await;
    // Any role may inspect: it changes nothing.
    let viewer = s.as_key(&s.key_in("default", "viewer").await);
    let inspect = |body: &'static str| {
        viewer
            .http
            .post(format!("{}/api/v1/workflows/inspect", viewer.base))
            .header("Content-Type", "text/plain")
            .body(body)
            .send()
    };
    let r = inspect("version: 1.0\ntasks:\n  t1:\n    action: core.noop\n")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.expect("json"), json!([]));
    let r = inspect(
        "version: 1.0\ntasks:\n  t1:\n    next:\n      - when: <% 1 + %>\n        do: nope\n",
    )
    .await
    .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let problems = r.json::<Value>().await.expect("json");
    let paths: Vec<(&str, &str)> = problems
        .as_array()
        .expect("list")
        .iter()
        .map(|p| {
            (
                p["spec_path"].as_str().expect("path"),
                p["type"].as_str().expect("type"),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("tasks.t1.next[0].when", "expression"),
            ("tasks.t1.next[0].do", "semantic")
        ],
        "{problems}"
    );
    s.stop().await;
}
