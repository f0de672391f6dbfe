//! Tenants, keys and roles over HTTP: tenant B sees nothing of tenant A
//! (404, never 403, for A's objects), a viewer changes nothing, only an
//! admin manages tenants, secrets stay secret, tokens and public or signed
//! webhooks work.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::server::{Client, Server};

/// Everything of tenant A that B must never see, and the paths to reach it.
struct Objects {
    execution: String,
    trigger_instance: String,
    enforcement: String,
    trace: String,
    apikey: String,
}

/// Tenant A (the default tenant, with the `hooks` and `core` packs): an
/// execution, a webhook event with its enforcement and trace, an API rule,
/// a policy, keys (plain and secret), an API key.
async fn populate(s: &Server) -> Objects {
    let a = s.as_key(&s.key);
    let e = s
        .run("core.echo", json!({"message": "tenant a only"}))
        .await;
    let execution = e["id"].as_str().expect("id").to_owned();
    s.finished(&e["id"]).await;
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "critical", "host": "a-db1"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let trace = r.headers()["St2-Trace-Tag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let trigger_instance = r.headers()["St2-Trigger-Instance-Id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let enforcements = s
        .wait_for(
            &format!("/api/v1/ruleenforcements?trigger_instance={trigger_instance}"),
            |b| b.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let enforcement = enforcements[0]["id"].as_str().expect("id").to_owned();
    let (status, body) = a
        .post(
            "/api/v1/rules",
            &json!({"name": "a_rule", "pack": "hooks", "enabled": true,
                    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "a-only"}},
                    "action": {"ref": "core.noop"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = a
        .post(
            "/api/v1/policies",
            &json!({"name": "a_policy", "pack": "hooks", "resource_ref": "core.noop",
                    "policy_type": "action.concurrency", "parameters": {"threshold": 3}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = a
        .put("/api/v1/keys/a_plain", &json!({"value": "a-plain-value"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = a
        .put(
            "/api/v1/keys/a_secret",
            &json!({"value": "a-secret-value", "secret": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, keys) = a.get("/api/v1/apikeys").await;
    let apikey = keys[0]["id"].as_str().expect("id").to_owned();
    Objects {
        execution,
        trigger_instance,
        enforcement,
        trace,
        apikey,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_b_sees_nothing_of_tenant_a() {
    let s = Server::start().await;
    let a = populate(&s).await;
    // What B must not see, A does.
    let (status, params) = s.get("/api/v1/actions/views/parameters/core.echo").await;
    assert_eq!(status, 200);
    assert!(
        params["parameters"]["message"].is_object() && params["parameters"]["timeout"].is_object(),
        "{params}"
    );
    let (status, _) = s.get("/api/v1/webhooks/alerts").await;
    assert_eq!(status, 200);
    let (_, types) = s.get("/api/v1/ruletypes").await;
    assert_eq!(types.as_array().map(Vec::len), Some(2));
    let b = s.as_key(&s.tenant_with_key("b", "operator").await);
    // Words of A that must not appear in anything B gets back.
    let leaks = [
        a.execution.as_str(),
        a.trigger_instance.as_str(),
        a.enforcement.as_str(),
        a.apikey.as_str(),
        "tenant a only",
        "a-db1",
        "a_rule",
        "a_policy",
        "a_plain",
        "a-plain-value",
        "a_secret",
        "a-secret-value",
        "hooks.",
        "core.echo",
        "tester",
    ];
    let mut checked = 0;
    // `what` is the request: what it names itself may come back (as in
    // "rule 'hooks.a_rule' not found"); nothing else of A may.
    let mut check = |what: String, status: u16, body: &Value, want: u16| {
        assert_eq!(status, want, "{what}: {body}");
        let text = body.to_string();
        for word in leaks.iter().filter(|w| !what.contains(**w)) {
            assert!(!text.contains(word), "{what} leaks '{word}': {text}");
        }
        checked += 1;
    };

    // Every object of A, by id or ref: 404.
    let one = [
        format!("/api/v1/executions/{}", a.execution),
        format!("/api/v1/executions/{}/output", a.execution),
        format!("/api/v1/triggerinstances/{}", a.trigger_instance),
        format!("/api/v1/ruleenforcements/{}", a.enforcement),
        format!("/api/v1/traces/{}", a.trace),
        "/api/v1/rules/hooks.a_rule".into(),
        "/api/v1/rules/hooks.echo_critical".into(),
        "/api/v1/policies/hooks.a_policy".into(),
        "/api/v1/actions/core.echo".into(),
        "/api/v1/actions/views/overview/core.echo".into(),
        "/api/v1/actions/views/parameters/core.echo".into(),
        "/api/v1/webhooks/alerts".into(),
        "/api/v1/packs/core".into(),
        "/api/v1/packs/hooks".into(),
        "/api/v1/keys/a_plain".into(),
        "/api/v1/keys/a_secret?decrypt=true".into(),
        format!("/api/v1/apikeys/{}", a.apikey),
        format!("/api/v1/apikeys?tenant={}", "default"),
    ];
    for path in &one {
        let (status, body) = b.get(path).await;
        check(format!("GET {path}"), status, &body, 404);
    }
    // Every list: only B's (nothing).
    let lists = [
        "/api/v1/executions",
        "/api/v1/triggerinstances",
        "/api/v1/ruleenforcements",
        "/api/v1/rules",
        "/api/v1/policies",
        "/api/v1/actions",
        "/api/v1/actions/views/overview",
        "/api/v1/packs",
        "/api/v1/keys",
        "/api/v1/keys?scope=st2kv.system&decrypt=true",
        "/api/v1/triggers",
        "/api/v1/webhooks",
        "/api/v1/sensortypes",
        "/api/v1/apikeys",
    ];
    for path in lists {
        let (status, body) = b.get(path).await;
        check(format!("GET {path}"), status, &body, 200);
        let items = body.as_array().expect("a list");
        // B's own API key is the one thing B may list.
        let own = usize::from(path == "/api/v1/apikeys");
        assert_eq!(items.len(), own, "GET {path}: {body}");
    }
    let (status, body) = b
        .get(&format!("/api/v1/traces?trace_tag={}", a.trace))
        .await;
    check("GET traces by tag".into(), status, &body, 200);
    assert_eq!(body, json!([]));
    // Trigger types: the built-ins only.
    let (status, body) = b.get("/api/v1/triggertypes").await;
    check("GET triggertypes".into(), status, &body, 200);

    // Changes to A's objects: 404, and A's objects are unchanged.
    let writes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::DELETE,
            format!("/api/v1/executions/{}", a.execution),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/executions/{}/re_run", a.execution),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/v1/triggerinstances/{}/re_emit", a.trigger_instance),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/rules/hooks.a_rule".into(),
            Some(json!({"name": "a_rule", "pack": "hooks", "enabled": false,
                        "trigger": {"type": "core.st2.webhook", "parameters": {"url": "x"}},
                        "action": {"ref": "core.noop"}})),
        ),
        (Method::DELETE, "/api/v1/rules/hooks.a_rule".into(), None),
        (
            Method::DELETE,
            "/api/v1/policies/hooks.a_policy".into(),
            None,
        ),
        (Method::DELETE, "/api/v1/keys/a_plain".into(), None),
        (
            Method::DELETE,
            format!("/api/v1/apikeys/{}", a.apikey),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/apikeys/{}", a.apikey),
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, "/api/v1/packs/hooks".into(), None),
        (
            Method::POST,
            "/api/v1/executions".into(),
            Some(json!({"action": "core.echo", "parameters": {"message": "x"}})),
        ),
        (
            Method::POST,
            "/api/v1/webhooks/alerts".into(),
            Some(json!({"severity": "critical", "host": "b"})),
        ),
        (
            Method::POST,
            "/api/v1/apikeys".into(),
            Some(json!({"tenant": "default", "role": "viewer"})),
        ),
    ];
    for (method, path, body) in &writes {
        let (status, got) = b.call(method.clone(), path, body.as_ref()).await;
        let asked = format!("{method} {path} {}", body.clone().unwrap_or_default());
        check(asked, status, &got, 404);
    }
    // B's own key named the same as A's is B's alone.
    let (status, _) = b
        .put("/api/v1/keys/a_plain_b", &json!({"value": "b"}))
        .await;
    assert_eq!(status, 200);
    let (_, mine) = s.get("/api/v1/keys/a_plain").await;
    assert_eq!(mine["value"], "a-plain-value");
    let (_, rule) = s.get("/api/v1/rules/hooks.a_rule").await;
    assert_eq!(rule["enabled"], true);
    let (status, e) = s.get(&format!("/api/v1/executions/{}", a.execution)).await;
    assert_eq!((status, e["status"].as_str()), (200, Some("succeeded")));
    assert!(checked >= 40, "walked {checked} endpoints");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_bound_what_a_key_may_do() {
    let s = Server::start().await;
    let anonymous = Client {
        base: s.base.clone(),
        http: reqwest::Client::new(),
    };
    let (status, body) = anonymous.get("/api/v1/executions").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["faultstring"]
            .as_str()
            .unwrap_or_default()
            .contains("API key")
    );
    let (status, _) = anonymous.get("/health").await;
    assert_eq!(status, 200);
    let wrong = s.as_key("sq_wrong");
    let (status, _) = wrong.get("/api/v1/executions").await;
    assert_eq!(status, 401);

    let viewer = s.as_key(&s.key_in("default", "viewer").await);
    let (status, _) = viewer.get("/api/v1/actions").await;
    assert_eq!(status, 200);
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/executions",
            json!({"action": "core.noop"}),
        ),
        (Method::PUT, "/api/v1/keys/k", json!({"value": "v"})),
        (Method::DELETE, "/api/v1/rules/hooks.quiet", json!(null)),
        (Method::POST, "/api/v1/apikeys", json!({"role": "viewer"})),
    ] {
        let (status, got) = viewer.call(method.clone(), path, Some(&body)).await;
        assert_eq!(status, 403, "viewer {method} {path}: {got}");
        assert!(
            got["faultstring"]
                .as_str()
                .unwrap_or_default()
                .contains("viewer")
        );
    }
    let (status, executions) = s.get("/api/v1/executions").await;
    assert_eq!((status, executions), (200, json!([])), "nothing ran");

    let operator = s.as_key(&s.key_in("default", "operator").await);
    for (method, path, body) in [
        (Method::GET, "/api/v1/tenants", json!(null)),
        (Method::POST, "/api/v1/tenants", json!({"name": "sneaky"})),
        (Method::POST, "/api/v1/apikeys", json!({"role": "admin"})),
        (
            Method::POST,
            "/api/v1/apikeys",
            json!({"tenant": "other", "role": "viewer"}),
        ),
    ] {
        let (status, got) = operator.call(method.clone(), path, Some(&body)).await;
        assert!(
            status == 403 || status == 404,
            "operator {method} {path}: {status} {got}"
        );
    }
    let (_, tenants) = s.get("/api/v1/tenants").await;
    assert_eq!(
        tenants.as_array().map(Vec::len),
        Some(1),
        "no tenant was made: {tenants}"
    );
    // An operator makes keys for itself in its tenant, up to its own
    // role; not for another user, and it cannot touch an admin's key.
    let (status, _) = operator
        .post("/api/v1/apikeys", &json!({"user": "ci", "role": "viewer"}))
        .await;
    assert_eq!(status, 403);
    let (_, keys) = operator.get("/api/v1/apikeys").await;
    let admin_key = keys
        .as_array()
        .expect("list")
        .iter()
        .find(|k| k["metadata"]["role"] == "admin")
        .expect("the admin's key is listed")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _) = operator
        .put(
            &format!("/api/v1/apikeys/{admin_key}"),
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = operator
        .delete(&format!("/api/v1/apikeys/{admin_key}"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        s.get("/api/v1/rules").await.0,
        200,
        "the admin's key still works"
    );
    let (status, made) = operator
        .post("/api/v1/apikeys", &json!({"role": "viewer"}))
        .await;
    assert_eq!(status, 201, "{made}");
    let ci = s.as_key(made["key"].as_str().expect("key"));
    assert_eq!(ci.get("/api/v1/rules").await.0, 200);
    // Disabling it takes effect at once.
    let id = made["id"].as_str().expect("id");
    let (status, _) = operator
        .put(&format!("/api/v1/apikeys/{id}"), &json!({"enabled": false}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ci.get("/api/v1/rules").await.0, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_decrypted_by_operators_and_sealed_at_rest() {
    let data = tempfile::tempdir().expect("tempdir");
    let core = squall_tests::core_pack();
    let s = Server::start_in(
        data.path(),
        &[core.path().to_owned()],
        Default::default(),
        vec![],
    )
    .await
    .expect("server");
    let operator = s.as_key(&s.key_in("default", "operator").await);
    let viewer = s.as_key(&s.key_in("default", "viewer").await);
    let plain = "correct-horse-battery-staple";
    let (status, set) = operator
        .put(
            "/api/v1/keys/db_password",
            &json!({"value": plain, "secret": true}),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert!(!set.to_string().contains(plain), "{set}");

    let (_, masked) = operator.get("/api/v1/keys/db_password").await;
    assert_eq!(masked["value"], "********");
    assert_eq!(masked["encrypted"], true);
    let (_, listed) = viewer.get("/api/v1/keys").await;
    assert!(!listed.to_string().contains(plain), "{listed}");
    let (_, clear) = operator.get("/api/v1/keys/db_password?decrypt=true").await;
    assert_eq!(clear["value"], plain);
    let (status, refused) = viewer.get("/api/v1/keys/db_password?decrypt=true").await;
    assert_eq!(status, 403, "{refused}");
    let (status, _) = viewer.get("/api/v1/keys?decrypt=true").await;
    assert_eq!(status, 403);
    // User scope: the caller's own keys, apart from the tenant's.
    let (status, _) = operator
        .put(
            "/api/v1/keys/token",
            &json!({"value": "mine", "scope": "st2kv.user"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, system) = operator.get("/api/v1/keys?scope=st2kv.system").await;
    assert!(!system.to_string().contains("mine"), "{system}");
    let (_, user) = operator.get("/api/v1/keys?scope=user").await;
    assert_eq!(user[0]["name"], "token");
    assert_eq!(user[0]["scope"], "st2kv.user");
    let (status, _) = viewer.get("/api/v1/keys/token?scope=user").await;
    assert_eq!(status, 404, "another user's key is not the viewer's");
    s.stop().await;

    // Nowhere in the database files in clear.
    for entry in std::fs::read_dir(data.path()).expect("data dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("db") {
            let bytes = std::fs::read(entry.path()).expect("read");
            assert!(
                !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
                "{name} holds the secret in clear"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_passwords_and_public_or_signed_webhooks() {
    // `mixed`: one URL, two rules; the call fires both, so both must accept it.
    let rules = [
        ("open", "url: open, public: true"),
        (
            "signed",
            "url: signed, hmac: {header: X-Hub-Signature-256, secret_key: hook_secret}",
        ),
        ("mixed_open", "url: mixed, public: true"),
        ("mixed_closed", "url: mixed"),
        ("closed", "url: closed"),
    ]
    .map(|(name, parameters)| (format!("{name}.yaml"), webhook_rule(name, parameters)));
    let files: Vec<(&str, &str)> = rules
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let hooks = squall_tests::rules_pack("hooks", &files);
    let s = Server::start_with(vec![squall_tests::core_pack(), hooks], Default::default()).await;
    let anonymous = reqwest::Client::new();
    let post = |url: &str, body: &'static str, sig: Option<String>| {
        let mut req = anonymous
            .post(format!("{}/api/v1/webhooks/{url}", s.base))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(sig) = sig {
            req = req.header("X-Hub-Signature-256", sig);
        }
        req.send()
    };
    assert_eq!(post("open", "{}", None).await.expect("send").status(), 202);
    for refused in ["closed", "mixed", "nobody-listens", "signed"] {
        let status = post(refused, "{}", None).await.expect("send").status();
        assert_eq!(status, 401, "anonymous POST to {refused}");
    }
    assert_eq!(
        post("signed", "{}", None).await.expect("send").status(),
        401
    );
    let (status, _) = s
        .as_key(&s.key)
        .put(
            "/api/v1/keys/hook_secret",
            &json!({"value": "s3cret", "secret": true}),
        )
        .await;
    assert_eq!(status, 200);
    let body = r#"{"action":"opened"}"#;
    let good = hmac_sha256_hex(b"s3cret", body.as_bytes());
    let r = post("signed", body, Some(format!("sha256={good}")))
        .await
        .expect("send");
    assert_eq!(r.status(), 202);
    let r = post("signed", body, Some(format!("sha256={}", "0".repeat(64))))
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // Anonymous calls never reach the generic hook.
    assert_eq!(
        post("st2", r#"{"trigger": "core.st2.webhook"}"#, None)
            .await
            .expect("send")
            .status(),
        401
    );

    // Tokens: Basic auth in, a token that works as X-Auth-Token.
    s.store()
        .put_user(
            &squall_core::TenantId::default_tenant(),
            "ana",
            squall_core::auth::Role::Viewer,
            Some("pa55word"),
        )
        .await
        .expect("user");
    let token_url = format!("{}/auth/v1/tokens", s.base);
    let r = anonymous
        .post(&token_url)
        .basic_auth("ana", Some("nope"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = anonymous
        .post(&token_url)
        .basic_auth("ana", Some("pa55word"))
        .json(&json!({"ttl": 60}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 201);
    let token: Value = r.json().await.expect("json");
    assert_eq!(token["user"], "ana");
    let t = token["token"].as_str().expect("token");
    let r = anonymous
        .get(format!("{}/api/v1/rules", s.base))
        .header("X-Auth-Token", t)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = anonymous
        .post(format!("{}/api/v1/executions", s.base))
        .bearer_auth(t)
        .json(&json!({"action": "core.noop"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403, "ana is a viewer");
    s.stop().await;
}

/// A `hooks` rule on the webhook with `parameters` that runs core.noop.
fn webhook_rule(name: &str, parameters: &str) -> String {
    format!(
        "name: {name}\npack: hooks\nenabled: true\ntrigger: {{type: core.st2.webhook, parameters: {{{parameters}}}}}\naction: {{ref: core.noop}}\n"
    )
}

/// HMAC-SHA256 as a webhook sender computes it (RFC 2104, by hand).
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_one_tenant_and_leave_the_others_alone() {
    let data = tempfile::tempdir().expect("tempdir");
    let core = squall_tests::core_pack();
    let hooks = squall_tests::rules_pack(
        "hooks",
        &[("each.yaml", &webhook_rule("each", "url: each"))],
    );
    let config = squall_reactor::ReactorConfig {
        quotas: squall_reactor::Quotas {
            executions_per_minute: Some(3),
            pack_bytes: Some(1 << 20),
        },
        ..Default::default()
    };
    let s = Server::start_setup(
        data.path(),
        &[core.path().to_owned(), hooks.path().to_owned()],
        super::server::Setup {
            config,
            kv_quota: Some(2048),
            ..Default::default()
        },
    )
    .await
    .expect("server");
    let acme = s.as_key(&s.tenant_with_key("acme", "operator").await);

    // Executions per minute: the fourth request is refused with 429.
    let (status, body) = acme
        .upload(squall_reactor::install::archive_pack(core.path()).expect("archive"))
        .await;
    assert_eq!(status, 201, "{body}");
    for _ in 0..3 {
        let (status, body) = acme
            .post("/api/v1/executions", &json!({"action": "core.noop"}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = acme
        .post("/api/v1/executions", &json!({"action": "core.noop"}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["faultstring"]
            .as_str()
            .unwrap_or_default()
            .contains("3 executions per minute"),
        "{body}"
    );
    // The default tenant's own budget is untouched: a rule's executions
    // run until its budget, then the enforcement fails saying why.
    for _ in 0..4 {
        let r = s.post("/api/v1/webhooks/each", &json!({})).await;
        assert_eq!(r.status().as_u16(), 202);
    }
    let enforcements = s
        .wait_for("/api/v1/ruleenforcements?rule_ref=hooks.each", |b| {
            b.as_array().is_some_and(|a| a.len() == 4)
        })
        .await;
    let failed: Vec<&Value> = enforcements
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{enforcements}");
    assert!(
        failed[0]["failure_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("quota exceeded"),
        "{enforcements}"
    );

    // Datastore bytes: acme's writes stop at its limit; the default
    // tenant still writes.
    let (status, _) = acme
        .put("/api/v1/keys/big", &json!({"value": "x".repeat(1500)}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = acme
        .put("/api/v1/keys/more", &json!({"value": "y".repeat(600)}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["faultstring"]
            .as_str()
            .unwrap_or_default()
            .contains("limit is 2048"),
        "{body}"
    );
    // Replacing a key counts its new size, not both.
    let (status, _) = acme
        .put("/api/v1/keys/big", &json!({"value": "z".repeat(1900)}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .as_key(&s.key)
        .put("/api/v1/keys/fine", &json!({"value": "x".repeat(1500)}))
        .await;
    assert_eq!(status, 200);

    // Packs total size: a pack that would pass 1 MiB is refused whole.
    let big = squall_tests::pack_of("big", &[("go", squall_tests::VERSIONED, "")]);
    std::fs::write(big.path().join("padding.bin"), vec![7u8; 1 << 20]).expect("write");
    let (status, body) = acme
        .upload(squall_reactor::install::archive_pack(big.path()).expect("archive"))
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["faultstring"]
            .as_str()
            .unwrap_or_default()
            .contains("packs total size"),
        "{body}"
    );
    let (_, packs) = acme.get("/api/v1/packs").await;
    assert_eq!(packs.as_array().map(Vec::len), Some(1), "{packs}");
    s.stop().await;
}

/// Read an SSE response until `done` holds for what arrived, or `limit`.
async fn read_events(
    r: &mut reqwest::Response,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_and_metrics() {
    let s = Server::start().await;
    let b_key = s.tenant_with_key("b", "viewer").await;
    let open = |key: &str| {
        reqwest::Client::new()
            .get(format!(
                "{}/stream/v1/stream?events=st2.execution__create,st2.execution__update",
                s.base
            ))
            .header("St2-Api-Key", key)
            .send()
    };
    let mut mine = open(&s.key).await.expect("stream");
    assert_eq!(mine.status(), 200);
    let mut theirs = open(&b_key).await.expect("stream");
    let e = s.run("core.echo", json!({"message": "streamed"})).await;
    let id = e["id"].as_str().expect("id").to_owned();
    // Until its end is told (on PostgreSQL the create event itself may
    // show it ended: read on for the updates).
    let seen = read_events(&mut mine, crate::util::PATIENCE, |t| {
        t.contains("st2.execution__create")
            && t.contains("event: st2.execution__update")
            && t.contains("\"status\":\"succeeded\"")
    })
    .await;
    assert!(seen.contains(&format!("\"id\":\"{id}\"")), "{seen}");
    assert!(seen.contains("event: st2.execution__create"), "{seen}");
    assert!(seen.contains("event: st2.execution__update"), "{seen}");
    // On PostgreSQL an event carries the execution as it is when the
    // stream reads it (docs/cluster.md): on a busy machine, the update that
    // made it `running` may be read once it has ended.
    if !super::server::on_postgres() {
        assert!(seen.contains("\"status\":\"running\""), "{seen}");
    }
    let leaked = read_events(&mut theirs, Duration::from_millis(300), |t| !t.is_empty()).await;
    assert!(
        !leaked.contains(&id),
        "tenant b saw a's execution: {leaked}"
    );

    let (status, _) = s.as_key(&b_key).get("/metrics").await;
    assert_eq!(status, 403);
    let (status, doc) = s.as_key(&b_key).get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["paths"]["/api/v1/packs/upload"]["post"].is_object(),
        "{doc}"
    );
    let r = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    for needle in [
        "squall_executions_completed_total{status=\"succeeded\"}",
        "squall_executions_requested_total",
        "squall_trigger_instances_total",
        "squall_queue_depth",
        "squall_executions_running",
        "squall_sandbox_instantiation_seconds_count",
        "squall_store_batch_size_count",
        "squall_store_commit_seconds_count",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let completed: f64 = text
        .lines()
        .find(|l| l.starts_with("squall_executions_completed_total{status=\"succeeded\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(completed >= 1.0, "{text}");
    // A stream lives as long as its key: disabled, the stream ends.
    let (_, keys) = s.get("/api/v1/apikeys?tenant=b").await;
    let b_id = keys[0]["id"].as_str().expect("id").to_owned();
    let (status, _) = s
        .as_key(&s.key)
        .put(
            &format!("/api/v1/apikeys/{b_id}"),
            &json!({"enabled": false, "tenant": "b"}),
        )
        .await;
    assert_eq!(status, 200);
    let ended = tokio::time::timeout(crate::util::PATIENCE, async {
        while let Ok(Some(_)) = theirs.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream of a disabled key must end");
    s.stop().await;
}
