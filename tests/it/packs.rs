//! Pack upload over HTTP: what is accepted, what is refused (and that a
//! refusal leaves nothing behind), and hot swap: an execution started on
//! one version finishes on it while the next is installed.

use std::io::{Read as _, Write as _};
use std::path::Path;

use serde_json::{Value, json};
use squall_reactor::install::archive_pack;

use super::server::{Client, Server};

/// The `versioned` guest as `swap.go`, its config saying `version`.
pub(crate) fn swap_pack(version: &str) -> tempfile::TempDir {
    let dir = squall_tests::pack_of(
        "swap",
        &[(
            "go",
            squall_tests::VERSIONED,
            "parameters:\n  seconds: {type: number, default: 0}\n  hold: {type: string}\n",
        )],
    );
    std::fs::write(
        dir.path().join("config.schema.yaml"),
        "version: {type: string, required: true}\n",
    )
    .expect("write schema");
    std::fs::write(
        dir.path().join("config.yaml"),
        format!("version: {version}\n"),
    )
    .expect("write config");
    dir
}

/// Installed packs of a tenant, by ref.
async fn pack_refs(c: &Client) -> Vec<String> {
    let (status, list) = c.get("/api/v1/packs").await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["ref"].as_str().map(str::to_owned))
        .collect()
}

/// What is on disk for a tenant, besides upload staging.
fn files_of(data: &Path, tenant: &str) -> Vec<String> {
    let root = data.join("packs").join(tenant);
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(&root).expect("under").display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A .tar.gz with one entry written raw (no path checks of the builder).
pub(crate) fn raw_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar_builder();
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let name = header.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).expect("append");
    }
    builder
        .into_inner()
        .expect("finish")
        .finish()
        .expect("gzip")
}

fn tar_builder() -> tar::Builder<flate2::write::GzEncoder<Vec<u8>>> {
    tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_install_or_are_refused_whole() {
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
    let acme = s.as_key(&s.tenant_with_key("acme", "operator").await);

    // A valid pack: installed for acme only, and it runs.
    let (status, body) = acme
        .upload(archive_pack(swap_pack("v1").path()).expect("archive"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ref"], "swap");
    assert_eq!(pack_refs(&acme).await, ["swap"]);
    let (status, e) = acme
        .post("/api/v1/executions", &json!({"action": "swap.go"}))
        .await;
    assert_eq!(status, 201, "{e}");
    let done = s.as_key(&s.key_in("acme", "viewer").await);
    let e = done.finished(e["id"].as_str().expect("id")).await;
    assert_eq!(e["result"]["version"], "v1", "{e}");
    let (status, _) = s.get("/api/v1/actions/swap.go").await;
    assert_eq!(status, 404, "the default tenant does not see acme's pack");
    let installed_files = files_of(data.path(), "acme");
    assert!(installed_files.iter().any(|f| f.ends_with("current")));

    // Each refusal names the problem and leaves nothing behind.
    let refused = |status: u16, body: &Value, needle: &str| {
        assert_eq!(status, 400, "{body}");
        let fault = body["faultstring"].as_str().unwrap_or_default();
        assert!(fault.contains(needle), "{fault}");
    };
    let (status, body) = acme
        .upload(raw_archive(&[
            ("pack.yaml", b"name: evil\n"),
            ("../../escaped", b"x"),
        ]))
        .await;
    refused(status, &body, "'../../escaped' is refused");
    assert!(!data.path().join("packs/escaped").exists());
    assert!(!data.path().join("escaped").exists());

    let wrong = squall_tests::pack_of("wrong", &[("go", squall_tests::WRONG_WORLD, "")]);
    let (status, body) = acme
        .upload(archive_pack(wrong.path()).expect("archive"))
        .await;
    refused(
        status,
        &body,
        "does not implement the squall:automation/action world",
    );

    let trap_dir = tempfile::tempdir().expect("tempdir");
    let trap_wasm = trap_dir.path().join("trap.wasm");
    std::fs::write(&trap_wasm, squall_tests::trap_at_instantiation_component()).expect("write");
    let trap = squall_tests::pack_of("trap", &[("go", trap_wasm.to_str().expect("utf-8"), "")]);
    let (status, body) = acme
        .upload(archive_pack(trap.path()).expect("archive"))
        .await;
    refused(status, &body, "the component does not start");
    assert!(
        body["faultstring"]
            .as_str()
            .unwrap_or_default()
            .contains("trap.wasm")
            || body["faultstring"]
                .as_str()
                .unwrap_or_default()
                .contains("go.wasm"),
        "{body}"
    );

    let (status, body) = acme.upload(b"definitely not gzip".to_vec()).await;
    refused(status, &body, "not a .tar.gz");

    let (status, body) = acme
        .upload(raw_archive(&[("pack.yaml", b"name: Not A Ref\n")]))
        .await;
    refused(status, &body, "pack.yaml");

    // A 1 GB body is refused without being read.
    let (status, fault, sent) = huge_upload(&s.base, &s.key_in("acme", "operator").await);
    assert_eq!(status, 413, "{fault}");
    assert!(fault.contains("larger than this server accepts"), "{fault}");
    assert!(sent < 512 << 20, "the server read {sent} bytes");

    // After all that: acme still has exactly its one pack, same files.
    assert_eq!(pack_refs(&acme).await, ["swap"]);
    assert_eq!(files_of(data.path(), "acme"), installed_files);
    // A viewer cannot install.
    let (status, _) = done
        .upload(archive_pack(swap_pack("v9").path()).expect("archive"))
        .await;
    assert_eq!(status, 403);
    // The default tenant cannot replace a pack of its --packs.
    let (status, body) = s
        .as_key(&s.key)
        .upload(archive_pack(core.path()).expect("archive"))
        .await;
    assert_eq!(status, 409, "{body}");
    s.stop().await;
}

/// POST 1 GiB (declared) of zeros on a raw connection, while reading the
/// answer: (status, body, bytes written before the server stopped us).
fn huge_upload(base: &str, key: &str) -> (u16, String, u64) {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(crate::util::PATIENCE))
        .expect("timeout");
    let total: u64 = 1 << 30;
    write!(
        conn,
        "POST /api/v1/packs/upload HTTP/1.1\r\nHost: {addr}\r\nSt2-Api-Key: {key}\r\nContent-Type: application/gzip\r\nContent-Length: {total}\r\n\r\n"
    )
    .expect("write head");
    let mut writer = conn.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        let chunk = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < total {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the head and a little body have arrived.
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&response).contains("faultstring") {
            break;
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    let sent = sending.join().expect("writer");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn an_execution_started_on_v1_finishes_on_v1_while_v2_is_installed() {
    let s = Server::start().await;
    let acme = s.as_key(&s.tenant_with_key("acme", "operator").await);
    let (status, v1) = acme
        .upload(archive_pack(swap_pack("v1").path()).expect("archive"))
        .await;
    assert_eq!(status, 201, "{v1}");

    // An API rule on swap.go, to see what an uninstall does to it.
    let (status, body) = acme
        .post(
            "/api/v1/rules",
            &json!({"name": "on_hook", "pack": "ops", "enabled": true, "trigger": {"type": "core.st2.webhook", "parameters": {"url": "swap"}}, "action": {"ref": "swap.go"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // Runs on v1 until the key `release` is set.
    let (_, slow) = acme
        .post(
            "/api/v1/executions",
            &json!({"action": "swap.go", "parameters": {"hold": "release", "timeout": 600}}),
        )
        .await;
    let slow_id = slow["id"].as_str().expect("id").to_owned();
    acme.running(&slow_id).await;
    let (status, v2) = acme
        .upload(archive_pack(swap_pack("v2").path()).expect("archive"))
        .await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["replaced_version"], v1["installed_version"]);
    let (_, running) = acme.get(&format!("/api/v1/executions/{slow_id}")).await;
    assert_eq!(
        running["status"], "running",
        "v2 was installed while v1 ran"
    );

    let (_, fresh) = acme
        .post("/api/v1/executions", &json!({"action": "swap.go"}))
        .await;
    let fresh = acme.finished(fresh["id"].as_str().expect("id")).await;
    assert_eq!(fresh["result"]["version"], "v2", "{fresh}");
    let (status, body) = acme
        .put(
            "/api/v1/keys/release",
            &json!({"name": "release", "value": "now"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let slow = acme.finished(&slow_id).await;
    assert_eq!(slow["status"], "succeeded", "{slow}");
    assert_eq!(slow["result"]["version"], "v1", "{slow}");

    // Uninstall: the pack goes, the rule stays, disabled, saying why.
    let (status, _) = acme.delete("/api/v1/packs/swap").await;
    assert_eq!(status, 204);
    assert!(pack_refs(&acme).await.is_empty());
    let (_, rule) = acme.get("/api/v1/rules/ops.on_hook").await;
    assert_eq!(rule["enabled"], false, "{rule}");
    assert!(
        rule["disabled_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("swap"),
        "{rule}"
    );
    let (status, _) = acme
        .post("/api/v1/executions", &json!({"action": "swap.go"}))
        .await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_paths_inside_the_archive_never_the_servers() {
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
    let acme = s.as_key(&s.tenant_with_key("acme", "operator").await);
    // The server's directories, as given and resolved.
    let server_dirs = [
        data.path().display().to_string(),
        std::fs::canonicalize(data.path())
            .expect("canonical")
            .display()
            .to_string(),
        ".staging".to_owned(),
    ];
    const PACK: &str = "name: broken\nversion: 1.0.0\ndescription: d\nauthor: a\n";
    let core_wasm = std::fs::read(squall_tests::CORE_ACTIONS).expect("core component");
    let wrong_world = std::fs::read(squall_tests::WRONG_WORLD).expect("wrong-world component");
    let trap = squall_tests::trap_at_instantiation_component();
    let action = "name: go\nrunner_type: wasm\nentry_point: go.wasm\n".as_bytes();
    // (what is wrong, the archive's entries, what the answer must say)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no version",
            vec![("pack.yaml", b"name: broken\ndescription: d\nauthor: a\n")],
            "pack.yaml: field 'version': is required",
        ),
        (
            "not YAML",
            vec![("pack.yaml", b"name: [broken\n")],
            "pack.yaml: invalid YAML",
        ),
        (
            "a component not shipped",
            vec![("pack.yaml", PACK.as_bytes()), ("actions/go.yaml", action)],
            "component 'go.wasm' is not in the archive: an uploaded pack ships each built component beside its metadata, as 'actions/go.wasm'",
        ),
        (
            "a sensor's component not shipped",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                (
                    "sensors/s.yaml",
                    b"class_name: S\nentry_point: s.wasm\npoll_interval: 1\n",
                ),
            ],
            "as 'sensors/s.wasm'",
        ),
        (
            "a bad parameter type",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                (
                    "actions/go.yaml",
                    b"name: go\nrunner_type: wasm\nentry_point: go.wasm\nparameters: {n: {type: nope}}\n",
                ),
                ("actions/go.wasm", &core_wasm),
            ],
            "actions/go.yaml",
        ),
        (
            "a component of the wrong world",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                ("actions/go.yaml", action),
                ("actions/go.wasm", &wrong_world),
            ],
            "actions/go.wasm",
        ),
        (
            "a component that traps as it starts",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                ("actions/go.yaml", action),
                ("actions/go.wasm", &trap),
            ],
            "the component does not start",
        ),
        (
            "a rule for an unknown action",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                (
                    "rules/r.yaml",
                    b"name: r\ntrigger: {type: core.st2.webhook, parameters: {url: x}}\naction: {ref: broken.nope}\n",
                ),
            ],
            "rules/r.yaml",
        ),
        (
            "a config its schema refuses",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                ("config.schema.yaml", b"url: {type: string, required: true}\n"),
            ],
            "config.yaml",
        ),
        (
            "a policy of an unknown type",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                (
                    "policies/p.yaml",
                    b"name: p\nresource_ref: core.echo\npolicy_type: action.nope\nparameters: {}\n",
                ),
            ],
            "policies/p.yaml",
        ),
        (
            "a directory the server does not allow",
            vec![
                ("pack.yaml", PACK.as_bytes()),
                (
                    "config.schema.yaml",
                    b"dirs: {type: array, items: {type: string}, directory: read-only}\n",
                ),
                ("config.yaml", b"dirs: [/etc]\n"),
            ],
            "'/etc'",
        ),
    ];
    for (what, entries, needle) in cases {
        let (status, body) = acme.upload(raw_archive(&entries)).await;
        assert_eq!(status, 400, "{what}: {body}");
        let fault = body["faultstring"].as_str().unwrap_or_default();
        println!("{what}: {fault}");
        assert!(fault.contains(needle), "{what}: {fault}");
        for dir in &server_dirs {
            assert!(!fault.contains(dir.as_str()), "{what} names {dir}: {fault}");
        }
    }
    assert!(pack_refs(&acme).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn configs_set_through_the_api_reach_the_pack_and_outlive_its_versions() {
    let data = tempfile::tempdir().expect("tempdir");
    let s = Server::start_in(data.path(), &[], Default::default(), vec![])
        .await
        .expect("server");
    let acme = s.as_key(&s.tenant_with_key("acme", "operator").await);
    let viewer = s.as_key(&s.key_in("acme", "viewer").await);
    let with_secret = |version: &str| {
        let pack = swap_pack(version);
        std::fs::write(
            pack.path().join("config.schema.yaml"),
            "version: {type: string, required: true}\ntoken: {type: string, secret: true}\nsmtp:\n  type: object\n  properties:\n    password: {type: string, secret: true}\n",
        )
        .expect("write schema");
        archive_pack(pack.path()).expect("archive")
    };
    let (status, body) = acme.upload(with_secret("v1")).await;
    assert_eq!(status, 201, "{body}");

    let (status, schema) = acme.get("/api/v1/config_schemas/swap").await;
    assert_eq!(status, 200, "{schema}");
    assert_eq!(schema["attributes"]["version"]["required"], true);
    let (status, config) = acme.get("/api/v1/configs/swap").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["values"]["version"], "v1");
    assert_eq!(config["source"], "pack");

    // Set: in force at once, secrets masked when read.
    let given = json!({"version": "from-api", "token": "hunter2", "smtp": {"password": "s3cret"}});
    let (status, body) = acme.put("/api/v1/configs/swap", &given).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(swap_version(&acme).await, "from-api");
    for c in [&acme, &viewer] {
        let (_, config) = c.get("/api/v1/configs/swap").await;
        assert_eq!(config["source"], "api");
        assert_eq!(config["values"]["token"], "********", "{config}");
        assert_eq!(config["values"]["smtp"]["password"], "********", "{config}");
        assert!(!config.to_string().contains("hunter2"));
    }
    let (status, config) = acme.get("/api/v1/configs/swap?show_secrets=true").await;
    assert_eq!(status, 200);
    assert_eq!(config["values"]["token"], "hunter2");
    let (status, _) = viewer.get("/api/v1/configs/swap?show_secrets=true").await;
    assert_eq!(status, 403);
    let (status, _) = viewer.put("/api/v1/configs/swap", &given).await;
    assert_eq!(status, 403);

    // Refused whole, naming the property; the config in force stays.
    let (status, body) = acme
        .put("/api/v1/configs/swap", &json!({"version": 5}))
        .await;
    assert_eq!(status, 400, "{body}");
    let fault = body["faultstring"].as_str().unwrap_or_default();
    assert!(
        fault.contains("configs/swap") && fault.contains("version"),
        "{fault}"
    );
    assert!(
        !fault.contains(&data.path().display().to_string()),
        "{fault}"
    );
    let (status, body) = acme.put("/api/v1/configs/swap", &json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = acme.put("/api/v1/configs/swap", &json!([1])).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(swap_version(&acme).await, "from-api");
    let (status, _) = acme.put("/api/v1/configs/nopack", &given).await;
    assert_eq!(status, 404);
    // Another tenant sees neither the pack nor its config.
    let (status, _) = s.get("/api/v1/configs/swap").await;
    assert_eq!(status, 404);

    // A new version of the pack keeps the config set through the API.
    let (status, body) = acme.upload(with_secret("v2")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(swap_version(&acme).await, "from-api");

    // Dropped: the pack's own config.yaml again.
    let (status, _) = acme.delete("/api/v1/configs/swap").await;
    assert_eq!(status, 204);
    assert_eq!(swap_version(&acme).await, "v2");
    let (status, _) = acme.delete("/api/v1/configs/swap").await;
    assert_eq!(status, 404);

    // Removing the pack removes its config.
    let (status, _) = acme.put("/api/v1/configs/swap", &given).await;
    assert_eq!(status, 200);
    let (status, _) = acme.delete("/api/v1/packs/swap").await;
    assert_eq!(status, 204);
    let acme_tenant = squall_core::TenantId::new("acme").expect("tenant");
    assert!(
        s.store()
            .pack_config(&acme_tenant, "swap")
            .expect("read")
            .is_none()
    );
}

/// What `swap.go` says its config's version is, run now.
async fn swap_version(c: &Client) -> Value {
    let (status, e) = c
        .post("/api/v1/executions", &json!({"action": "swap.go"}))
        .await;
    assert_eq!(status, 201, "{e}");
    c.finished(e["id"].as_str().expect("id")).await["result"]["version"].clone()
}
