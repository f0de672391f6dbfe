//! The automaton pack end to end, with one local HTTP server standing in for
//! Elasticsearch, Rocket.Chat and AWX: the sensor's query hits, the rule
//! posts to Rocket.Chat, its completion launches the AWX job, and a second
//! hit within the throttle window is suppressed and recorded.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use squall_core::TenantId;
use squall_core::kv::{KvEntry, KvStore};
use squall_sandbox::Egress;
use squall_store::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::{Server, test_secret_key};

/// One recorded request: (request line, lowercase headers, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// Elasticsearch (`POST /_search`), Rocket.Chat (`POST /hooks/abc`) and AWX
/// (`POST /api/v2/job_templates/1/launch/`), recording what they receive.
async fn stand_ins() -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break (
                            head,
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned(),
                        );
                    }
                };
                let line = head.lines().next().unwrap_or_default().to_owned();
                let headers = head
                    .lines()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .to_ascii_lowercase();
                let (status, answer) = if line.starts_with("POST /_search") {
                    (
                        "200 OK",
                        json!({"took": 3, "aggregations": {"bad_actors": {"buckets": [
                            {"key": "orders", "doc_count": 1200}
                        ]}}}),
                    )
                } else if line.starts_with("POST /hooks/abc") {
                    ("200 OK", json!({"success": true}))
                } else if line.starts_with("POST /api/v2/job_templates/1/launch/") {
                    ("201 Created", json!({"job": 7}))
                } else {
                    ("404 Not Found", json!({}))
                };
                record.lock().expect("lock").push((line, headers, body));
                let answer = answer.to_string();
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                            answer.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, seen)
}

fn requests_to(seen: &Seen, prefix: &str) -> Vec<(String, String, String)> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|(line, _, _)| line.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn query_hits_notify_then_launch_and_repeats_are_throttled() {
    let (port, seen) = stand_ins().await;
    let base = format!("http://127.0.0.1:{port}");
    let pack = squall_tests::pack_copy(
        "automaton",
        &[
            ("sensors/query_sensor.wasm", squall_tests::AUTOMATON_SENSOR),
            (
                "actions/automaton_actions.wasm",
                squall_tests::AUTOMATON_ACTIONS,
            ),
        ],
    );
    // The seed's configuration, pointed at the stand-ins.
    let manifest = pack.path().join("pack.yaml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    let start = text.find("allowed_hosts:").expect("allowed_hosts");
    let end = text.find("build:").expect("build");
    std::fs::write(
        &manifest,
        format!(
            "{}allowed_hosts: [\"{base}\"]\n{}",
            &text[..start],
            &text[end..]
        ),
    )
    .expect("write");
    std::fs::write(
        pack.path().join("config.yaml"),
        format!(
            r#"elasticsearch_url: {base}
elasticsearch_timeout: 20
elasticsearch_username: es_user
query_name: my_automaton_query
query_interval: 1
query_endpoint: /_search
query_payload:
  size: 0
  query: {{range: {{"@timestamp": {{gte: now-1m}}}}}}
  aggregations:
    bad_actors: {{terms: {{field: my_automaton_query.keyword, min_doc_count: 1000}}}}
query_response_mapping:
  key: go_automaton_go
  doc_count: hits
"#
        ),
    )
    .expect("write config");
    let core = squall_tests::core_pack();

    // What an operator stores first: the passwords encrypted, the URLs plain.
    let data = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(&data.path().join("db"), &StoreConfig::default())
            .expect("store")
            .with_secret_key(test_secret_key());
        let t = TenantId::default_tenant();
        for (key, value, secret) in [
            ("automaton.es_password", "es_pass", true),
            ("automaton.awx_password", "awx_pass", true),
            (
                "automaton.rocketchat_webhook",
                &*format!("{base}/hooks/abc"),
                true,
            ),
            ("automaton_awx_url", &*base, false),
        ] {
            let entry = KvEntry {
                key: key.into(),
                value: value.into(),
                expires_at: None,
                secret,
            };
            store.set(&t, entry).await.expect("set");
        }
    }
    let egress = Egress {
        allow_private: true,
        ..Egress::default()
    };
    let s = Server::start_setup(
        data.path(),
        &[core.path().to_owned(), pack.path().to_owned()],
        crate::server::Setup {
            egress,
            ..Default::default()
        },
    )
    .await
    .expect("server starts");

    // The whole chain: query -> hit -> Rocket.Chat -> AWX.
    crate::util::eventually("the AWX launch", || async {
        if requests_to(&seen, "POST /api/v2/job_templates/1/launch/").is_empty() {
            Err(format!(
                "{} requests seen",
                seen.lock().expect("lock").len()
            ))
        } else {
            Ok(())
        }
    })
    .await;
    let (_, es_headers, es_body) = requests_to(&seen, "POST /_search")[0].clone();
    // es_user:es_pass, read decrypted from the datastore.
    assert!(
        es_headers.contains("authorization: basic zxnfdxnlcjplc19wyxnz"),
        "{es_headers}"
    );
    let query: Value = serde_json::from_str(&es_body).expect("json");
    assert_eq!(
        query["aggregations"]["bad_actors"]["terms"]["min_doc_count"],
        1000
    );
    let chat = requests_to(&seen, "POST /hooks/abc");
    assert_eq!(chat.len(), 1, "{chat:?}");
    let posted: Value = serde_json::from_str(&chat[0].2).expect("json");
    assert_eq!(
        posted["text"],
        "@here Things are happening, Imma do stuff! 1200 hits for orders"
    );
    let awx = requests_to(&seen, "POST /api/v2/job_templates/1/launch/");
    assert_eq!(awx.len(), 1, "{awx:?}");
    // automaton:awx_pass
    assert!(
        awx[0]
            .1
            .contains("authorization: basic yxv0b21hdg9uomf3ef9wyxnz"),
        "{}",
        awx[0].1
    );
    let launched: Value = serde_json::from_str(&awx[0].2).expect("json");
    assert_eq!(launched["extra_vars"]["reason"], posted["text"]);

    // The next hits within the window are suppressed, and recorded so.
    let suppressed = s
        .wait_for(
            "/api/v1/ruleenforcements?rule_ref=automaton.notify_on_hit",
            |l| {
                l.as_array().is_some_and(|a| {
                    a.iter().any(|e| {
                        e["failure_reason"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("suppressed by throttle"))
                    })
                })
            },
        )
        .await;
    let reason = suppressed
        .as_array()
        .expect("list")
        .iter()
        .find_map(|e| e["failure_reason"].as_str())
        .expect("a reason");
    assert!(reason.contains("60 s for key 'orders'"), "{reason}");
    assert_eq!(
        requests_to(&seen, "POST /hooks/abc").len(),
        1,
        "still one notification"
    );
    assert!(
        requests_to(&seen, "POST /_search").len() >= 2,
        "the sensor kept querying"
    );
    s.stop().await;
}
