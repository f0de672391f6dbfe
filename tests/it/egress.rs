//! Outbound HTTP from guests: core.http against a local server, and every
//! way a request is refused — not in allowed_hosts, resolving to loopback
//! or cloud metadata, too large, never answered — each with a clear
//! message, the host unaffected.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use squall_core::{ExecutionStatus, TenantId};
use squall_reactor::{PackSet, RunRequest, Runner};
use squall_sandbox::Egress;
use squall_store::{Store, StoreConfig};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{error_of, sandbox, test_limits};

/// A tiny HTTP/1.1 server on 127.0.0.1: `/ok` reads the request's body and
/// answers JSON echoing the request line and headers, `/big` answers 10
/// KiB, `/deny` answers 401 at once without reading the body (then closes
/// its side, still not reading; 64 KiB of `n`), `/never` never answers.
pub(crate) async fn local_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let mut n = 0;
                let (head, mut body_read) = loop {
                    let Ok(read) = socket.read(&mut buf[n..]).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    n += read;
                    if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
                        break (
                            String::from_utf8_lossy(&buf[..end]).into_owned(),
                            n - end - 4,
                        );
                    }
                };
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = if path.starts_with("/never") {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                } else if path.starts_with("/deny") {
                    // More than one read's worth, so the client reads it
                    // while its request body is still open.
                    ("401 Unauthorized", "n".repeat(64 << 10))
                } else if path.starts_with("/big") {
                    ("200 OK", "x".repeat(10 << 10))
                } else {
                    let length: usize = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0);
                    while body_read < length {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => body_read += read,
                        }
                    }
                    let headers: Vec<&str> = head.lines().skip(1).collect();
                    let answer =
                        json!({"request": request_line, "headers": headers, "body_bytes": length});
                    ("200 OK", answer.to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                if status.starts_with("401") {
                    // Closing a socket with unread bytes resets the
                    // connection; a server that does not read the body
                    // ends its side and lets the client hang up.
                    let _ = socket.shutdown().await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    port
}

/// A copy of the core pack whose guests may reach `allowed_hosts`.
pub(crate) fn core_pack_allowing(allowed_hosts: &[String]) -> TempDir {
    let pack = squall_tests::core_pack();
    let manifest = pack.path().join("pack.yaml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    let text = text.replace(
        "allowed_hosts: [\"*\"]",
        &format!("allowed_hosts: {}", json!(allowed_hosts)),
    );
    std::fs::write(&manifest, text).expect("write");
    pack
}

struct Harness {
    runner: Runner,
    _dirs: Vec<TempDir>,
}

fn harness(allowed_hosts: &[String], egress: Egress) -> Harness {
    let pack = core_pack_allowing(allowed_hosts);
    let data = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&data.path().join("db"), &StoreConfig::default()).expect("store");
    let packs = PackSet::load(&[pack.path().to_owned()]).expect("packs");
    let runner = Runner::new(sandbox(), store, Arc::new(packs), test_limits()).with_egress(egress);
    Harness {
        runner,
        _dirs: vec![pack, data],
    }
}

async fn http(h: &Harness, params: Value) -> squall_core::Execution {
    let Value::Object(parameters) = params else {
        panic!("object")
    };
    h.runner
        .run(RunRequest::new(
            TenantId::default_tenant(),
            "core.http".parse().expect("ref"),
            parameters,
        ))
        .await
        .expect("runs")
}

fn quick() -> Egress {
    Egress {
        allow_private: true,
        // Roomy: the other tests share the machine (and a test of the
        // timeout sets a short one of its own).
        connect_timeout: Duration::from_secs(30),
        total_timeout: Duration::from_secs(60),
        max_response_bytes: 4096,
        ..Egress::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn core_http_reaches_an_allowed_local_server() {
    let port = local_server().await;
    let h = harness(&[format!("http://127.0.0.1:{port}")], quick());
    let e = http(
        &h,
        json!({"url": format!("http://127.0.0.1:{port}/ok"), "method": "POST",
               "headers": {"X-Test": "yes"}, "params": {"q": "a b"}, "body": "{}",
               "username": "bot", "password": "s3cret"}),
    )
    .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.result);
    let r = e.result.expect("result");
    assert_eq!(r["status_code"], 200);
    assert_eq!(r["parsed"], true);
    assert_eq!(r["body"]["request"], "POST /ok?q=a%20b HTTP/1.1");
    let headers = r["body"]["headers"].to_string().to_ascii_lowercase();
    assert!(headers.contains("x-test: yes"), "{headers}");
    assert!(
        headers.contains("authorization: basic ym90onmzy3jlda=="),
        "{headers}"
    );
    // The secret parameter is masked in the record.
    assert_eq!(e.parameters["password"], "********");
    assert_eq!(r["body"]["body_bytes"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn an_answer_before_the_whole_body_is_sent_is_the_result() {
    let port = local_server().await;
    let roomy = Egress {
        max_response_bytes: 1 << 20,
        ..quick()
    };
    let h = harness(&[format!("http://127.0.0.1:{port}")], roomy);
    let body = "x".repeat(1 << 20);
    let e = http(
        &h,
        json!({"url": format!("http://127.0.0.1:{port}/deny"), "method": "POST", "body": body}),
    )
    .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.result);
    let r = e.result.expect("result");
    assert_eq!(r["status_code"], 401);
    assert_eq!(
        r["body"].as_str().map(str::len),
        Some(64 << 10),
        "the whole answer"
    );
    // The same server takes a whole 1 MiB body where it reads it.
    let e = http(
        &h,
        json!({"url": format!("http://127.0.0.1:{port}/ok"), "method": "POST", "body": body}),
    )
    .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.result);
    assert_eq!(e.result.expect("result")["body"]["body_bytes"], 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn refused_requests_fail_clearly_and_the_host_goes_on() {
    let port = local_server().await;
    let allowed = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        "http://169.254.169.254".to_owned(),
    ];
    // Not in allowed_hosts (another port on the same host).
    let h = harness(&allowed, quick());
    let e = http(
        &h,
        json!({"url": format!("http://127.0.0.1:{}/ok", port + 1)}),
    )
    .await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    let error = error_of(&e);
    assert!(
        error.contains("denied by allowed_hosts") && error.contains("core"),
        "{error}"
    );
    assert!(
        e.output
            .log
            .iter()
            .any(|l| l.message.contains("not in pack 'core''s allowed_hosts")),
        "logged on the execution: {:?}",
        e.output.log
    );

    // Allowed names that resolve to loopback or the metadata address, with
    // private networks not allowed.
    let strict = harness(
        &allowed,
        Egress {
            allow_private: false,
            ..quick()
        },
    );
    let e = http(
        &strict,
        json!({"url": format!("http://localhost:{port}/ok")}),
    )
    .await;
    let error = error_of(&e);
    assert!(error.contains("a loopback address"), "{error}");
    let e = http(
        &strict,
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    let error = error_of(&e);
    assert!(
        error.contains("169.254.169.254") && error.contains("link-local"),
        "{error}"
    );

    // A response over the size limit.
    let e = http(&h, json!({"url": format!("http://127.0.0.1:{port}/big")})).await;
    let error = error_of(&e);
    assert!(error.contains("over the limit of 4096 bytes"), "{error}");

    // A server that never answers.
    let impatient = harness(
        &allowed,
        Egress {
            total_timeout: Duration::from_secs(1),
            ..quick()
        },
    );
    let e = http(
        &impatient,
        json!({"url": format!("http://127.0.0.1:{port}/never")}),
    )
    .await;
    let error = error_of(&e);
    assert!(error.contains("did not come in time"), "{error}");
    // The 1 s limit is what ended it (not the default 60 s one).
    assert!(
        e.output
            .log
            .iter()
            .any(|l| l.message.contains("no complete response within 1s")),
        "{:?}",
        e.output.log
    );

    // Credentials in a URL are refused; logs never carry a query.
    let e = http(
        &h,
        json!({"url": format!("http://bot:pw@127.0.0.1:{port}/ok")}),
    )
    .await;
    assert!(
        error_of(&e).contains("credentials in the URL"),
        "{}",
        error_of(&e)
    );
    let e = http(
        &h,
        json!({"url": format!("http://127.0.0.1:{}/x?token=s3cret", port + 1)}),
    )
    .await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    let logged = format!("{:?}", e.output.log);
    assert!(
        logged.contains("/x") && !logged.contains("s3cret"),
        "{logged}"
    );

    // And the host goes on.
    let e = http(&h, json!({"url": format!("http://127.0.0.1:{port}/ok")})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn star_means_any_host_only_when_the_server_says_so() {
    let port = local_server().await;
    let h = harness(&["*".to_owned()], quick());
    let e = http(&h, json!({"url": format!("http://127.0.0.1:{port}/ok")})).await;
    let error = error_of(&e);
    assert!(error.contains("denied by allowed_hosts"), "{error}");
    let h = harness(
        &["*".to_owned()],
        Egress {
            allow_any_host: true,
            ..quick()
        },
    );
    let e = http(&h, json!({"url": format!("http://127.0.0.1:{port}/ok")})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.result);
}
