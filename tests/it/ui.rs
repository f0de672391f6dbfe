//! The web UI over HTTP: sign-in and sessions, CSRF, escaping, tenant
//! isolation, roles, and each screen rendering from a real server.

use reqwest::redirect::Policy;
use serde_json::json;

use super::server::Server;

/// A browser-like client: no redirects followed, cookies sent by hand.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// A page fetched with an API key header.
async fn page_with_key(s: &Server, key: &str, path: &str) -> (u16, String) {
    let r = browser()
        .get(format!("{}{path}", s.base))
        .header("St2-Api-Key", key)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// A form posted with an API key header.
async fn post_with_key(
    s: &Server,
    key: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser()
        .post(format!("{}{path}", s.base))
        .header("St2-Api-Key", key)
        .form(form)
        .send()
        .await
        .expect("request")
}

/// A signed-in browser session: its cookie header and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in(s: &Server, form: &[(&str, &str)]) -> reqwest::Response {
    browser()
        .post(format!("{}/ui/login", s.base))
        .form(form)
        .send()
        .await
        .expect("request")
}

async fn session(s: &Server, key: &str) -> Session {
    let r = sign_in(s, &[("api_key", key), ("next", "/ui/actions")]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/actions");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    let cookie = set.split(';').next().expect("pair").to_owned();
    let (status, html) = get(s, &cookie, "/ui/actions").await;
    assert_eq!(status, 200, "{html}");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_owned();
    Session { cookie, csrf }
}

async fn get(s: &Server, cookie: &str, path: &str) -> (u16, String) {
    let r = browser()
        .get(format!("{}{path}", s.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn post_form(
    s: &Server,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser()
        .post(format!("{}{path}", s.base))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn pages_need_a_session_and_signing_out_ends_it() {
    let s = Server::start().await;
    let r = browser()
        .get(format!("{}/ui/executions?status=failed", s.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(
        r.headers()["location"],
        "/ui/login?next=%2Fui%2Fexecutions%3Fstatus%3Dfailed"
    );
    let (status, html) = get(&s, "", "/ui/login").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<label for=\"api_key\">API key</label>"),
        "{html}"
    );

    // Wrong credentials: the form again, saying so.
    let r = sign_in(&s, &[("api_key", "sq_not-a-key")]).await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("invalid or disabled API key")
    );
    let r = sign_in(&s, &[("username", "nobody"), ("password", "x")]).await;
    assert_eq!(r.status().as_u16(), 401);
    // Sent from another site (a page signing its visitor in to the
    // attacker's tenant): refused, and no session is made.
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "http://evil.example"),
    ] {
        let r = browser()
            .post(format!("{}/ui/login", s.base))
            .header(name, value)
            .form(&[("api_key", s.key.as_str())])
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 403, "{name}");
        assert!(r.headers().get("set-cookie").is_none());
        assert!(r.text().await.expect("body").contains("another site"));
    }
    // From the UI's own page, as a browser sends it: signed in.
    let origin = s.base.trim_end_matches('/').to_owned();
    let r = browser()
        .post(format!("{}/ui/login", s.base))
        .header("sec-fetch-site", "same-origin")
        .header("origin", origin)
        .form(&[("api_key", s.key.as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 303);
    assert!(
        !r.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Secure")
    );
    // Behind a TLS proxy, the cookie is Secure.
    let r = browser()
        .post(format!("{}/ui/login", s.base))
        .header("forwarded", "for=192.0.2.60;proto=https")
        .form(&[("api_key", s.key.as_str())])
        .send()
        .await
        .expect("request");
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("; Secure")
    );

    // A user and password, as /auth/v1/tokens takes them.
    s.store()
        .put_user(
            &squall_core::TenantId::default_tenant(),
            "ops",
            squall_core::auth::Role::Viewer,
            Some("correct horse"),
        )
        .await
        .expect("user");
    let r = sign_in(&s, &[("username", "ops"), ("password", "correct horse")]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/executions");
    let ops_cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    // `next` never leads off the UI.
    let r = sign_in(
        &s,
        &[
            ("username", "ops"),
            ("password", "correct horse"),
            ("next", "https://evil.example/"),
        ],
    )
    .await;
    assert_eq!(r.headers()["location"], "/ui/executions");

    let me = session(&s, &s.key).await;
    let r = browser()
        .get(format!("{}/ui/executions", s.base))
        .header("cookie", &me.cookie)
        .send()
        .await
        .expect("request");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = r.text().await.expect("body");
    assert!(
        html.contains("Sign out") && html.contains("tester"),
        "{html}"
    );

    // A session signed in with a key ends when the key is disabled.
    let viewer_key = s.key_in("default", "viewer").await;
    let theirs = session(&s, &viewer_key).await;
    let (_, keys) = s.get("/api/v1/apikeys?user=viewer-of-default").await;
    let id = keys[0]["id"].as_str().expect("id").to_owned();
    let (status, _) = s
        .as_key(&s.key)
        .put(&format!("/api/v1/apikeys/{id}"), &json!({"enabled": false}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = get(&s, &theirs.cookie, "/ui/executions").await;
    assert_eq!(status, 303, "back to the sign-in page");

    // The cookie is not a credential for the API.
    let r = browser()
        .get(format!("{}/api/v1/executions", s.base))
        .header("cookie", &me.cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);

    let r = post_form(&s, &me.cookie, "/ui/logout", &[("csrf", &me.csrf)]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    // A password's session is a token, revoked at sign-out: the old
    // cookie leads to the sign-in page. (A key's session is the key.)
    let (status, html) = get(&s, &ops_cookie, "/ui/executions").await;
    assert_eq!(status, 200);
    let ops_csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_owned();
    let r = post_form(&s, &ops_cookie, "/ui/logout", &[("csrf", &ops_csrf)]).await;
    assert_eq!(r.status().as_u16(), 303);
    let (status, _) = get(&s, &ops_cookie, "/ui/executions").await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn forms_sent_with_the_cookie_need_the_csrf_token() {
    let s = Server::start().await;
    let me = session(&s, &s.key).await;
    let form = [("message", "from the form")];
    let r = post_form(&s, &me.cookie, "/ui/actions/core.echo", &form).await;
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.expect("body").contains("CSRF"));
    let r = post_form(
        &s,
        &me.cookie,
        "/ui/actions/core.echo",
        &[
            ("message", "from the form"),
            ("csrf", "0123456789abcdef0123456789abcdef"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);
    let (_, executions) = s.get("/api/v1/executions").await;
    assert_eq!(executions.as_array().map(Vec::len), Some(0), "nothing ran");

    let r = post_form(
        &s,
        &me.cookie,
        "/ui/actions/core.echo",
        &[("message", "from the form"), ("csrf", &me.csrf)],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let id = location
        .strip_prefix("/ui/executions/")
        .expect("to the execution");
    let done = s.finished(&json!(id)).await;
    assert_eq!(done["parameters"]["message"], "from the form");
    assert_eq!(done["context"]["user"], "tester");

    // A request with the API's header carries no cookie to ride on: no
    // token needed.
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/actions/core.echo",
        &[("message", "by script")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
}

#[tokio::test]
async fn markup_from_payloads_results_and_output_is_escaped() {
    let s = Server::start().await;
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    // Through a trigger payload: the rule renders it into the parameters.
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "critical", "host": hostile}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let executions = s
        .wait_for("/api/v1/executions?action=core.echo", |b| {
            b.as_array().is_some_and(|a| {
                a.iter().any(|e| {
                    e["status"] == "succeeded" && e["result"].to_string().contains("script")
                })
            })
        })
        .await;
    let id = executions[0]["id"].as_str().expect("id").to_owned();
    // And straight into a result.
    let direct = s.run("core.echo", json!({"message": hostile})).await;
    s.finished(&direct["id"]).await;
    for path in [
        format!("/ui/executions/{id}"),
        format!("/ui/executions/{}", direct["id"].as_str().expect("id")),
        "/ui/executions".to_owned(),
        "/ui/executions?partial=rows".to_owned(),
        format!("/ui/actions?q={}", "%3Cscript%3E"),
        format!("/ui/executions?action={}", "%3Cscript%3E"),
    ] {
        let (status, html) = page_with_key(&s, &s.key, &path).await;
        assert!(status == 200 || status == 400, "{path}: {status}");
        assert!(!html.contains("<script>alert"), "{path}: {html}");
        assert!(!html.contains("<img src=x"), "{path}: {html}");
    }
    let (_, html) = page_with_key(&s, &s.key, &format!("/ui/executions/{id}")).await;
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
}

#[tokio::test]
async fn a_tenants_pages_show_only_its_own() {
    let s = Server::start().await;
    let e = s
        .run("core.echo", json!({"message": "tenant a only"}))
        .await;
    let id = e["id"].as_str().expect("id").to_owned();
    s.finished(&e["id"]).await;
    let b = s.tenant_with_key("b", "operator").await;
    let (status, html) = page_with_key(&s, &b, "/ui/executions").await;
    assert_eq!(status, 200);
    assert!(
        !html.contains(&id) && html.contains("No executions match"),
        "{html}"
    );
    let (status, html) = page_with_key(&s, &b, &format!("/ui/executions/{id}")).await;
    assert_eq!(status, 404);
    assert!(!html.contains("tenant a only"), "{html}");
    let (status, _) = page_with_key(&s, &b, &format!("/ui/actions/core.echo?rerun={id}")).await;
    assert_eq!(status, 404, "tenant b has no core pack");
    let r = post_with_key(&s, &b, &format!("/ui/executions/{id}/cancel"), &[]).await;
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn run_forms_are_generated_and_refusals_sit_beside_their_field() {
    let s = Server::start().await;
    let (status, html) = page_with_key(&s, &s.key, "/ui/actions").await;
    assert_eq!(status, 200);
    assert!(html.contains("href=\"/ui/actions/core.echo\""), "{html}");
    let (_, html) = page_with_key(&s, &s.key, "/ui/actions?q=ECHO").await;
    assert!(
        html.contains("core.echo") && !html.contains("core.noop"),
        "{html}"
    );

    let (status, html) = page_with_key(&s, &s.key, "/ui/actions/core.echo").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(
            "<label for=\"p-message\">message <span class=\"required\">(required)</span></label>"
        ),
        "{html}"
    );

    // Refused by the action's schema, as the API refuses it: the message
    // is beside the field.
    let r = post_with_key(&s, &s.key, "/ui/actions/core.echo", &[("message", "")]).await;
    assert_eq!(r.status().as_u16(), 400);
    let html = r.text().await.expect("body");
    assert!(
        html.contains("<p class=\"error\" id=\"p-message-error\" role=\"alert\">required</p>"),
        "{html}"
    );

    // Re-run: the form starts with the execution's parameters.
    let e = s.run("core.echo", json!({"message": "first"})).await;
    s.finished(&e["id"]).await;
    let id = e["id"].as_str().expect("id");
    let (_, html) = page_with_key(&s, &s.key, &format!("/ui/actions/core.echo?rerun={id}")).await;
    assert!(html.contains("value=\"first\""), "{html}");
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/actions/core.echo",
        &[("message", "second"), ("__rerun", id)],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let rerun = location.strip_prefix("/ui/executions/").expect("to it");
    let done = s.finished(&json!(rerun)).await;
    assert_eq!(done["parameters"]["message"], "second");
    assert_eq!(done["context"]["re-run"]["ref"], id);
    let (status, html) = page_with_key(&s, &s.key, &location).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("href=\"/ui/executions/{id}\"")),
        "re-run of: {html}"
    );

    // A viewer sees no buttons, and may not press them anyway.
    let viewer = s.key_in("default", "viewer").await;
    let (_, html) = page_with_key(&s, &viewer, "/ui/actions/core.echo").await;
    assert!(!html.contains("<form class=\"run\""), "{html}");
    let (_, html) = page_with_key(&s, &viewer, &location).await;
    assert!(
        !html.contains("?rerun=") && !html.contains("/cancel"),
        "{html}"
    );
    let r = post_with_key(&s, &viewer, "/ui/actions/core.echo", &[("message", "no")]).await;
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn the_history_filters_and_pages() {
    let s = Server::start().await;
    let mut ids = Vec::new();
    for i in 0..55 {
        let e = s
            .run("core.echo", json!({"message": format!("n{i}")}))
            .await;
        ids.push(e["id"].as_str().expect("id").to_owned());
    }
    let noop = s.run("core.noop", json!({})).await;
    for id in &ids {
        s.finished(&json!(id)).await;
    }
    s.finished(&noop["id"]).await;
    let (_, html) = page_with_key(&s, &s.key, "/ui/executions?action=core.echo").await;
    assert_eq!(
        html.matches("<tr class=\"\" data-id=").count(),
        50,
        "{html}"
    );
    assert!(!html.contains(noop["id"].as_str().expect("id")));
    // Newest first; the next page starts below the last row.
    assert!(html.contains(&ids[54]) && !html.contains(&format!("data-id=\"{}\"", ids[4])));
    let older = html
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an older page")
        .replace("&amp;", "&");
    let (_, html) = page_with_key(&s, &s.key, &format!("/ui/executions{older}")).await;
    assert_eq!(html.matches("<tr class=\"\" data-id=").count(), 5, "{html}");
    assert!(html.contains(&ids[0]) && !html.contains("rel=\"next\""));

    let (status, html) = page_with_key(&s, &s.key, "/ui/executions?status=bogus").await;
    assert_eq!(status, 400);
    assert!(html.contains("status: unknown"), "{html}");
    let (status, html) =
        page_with_key(&s, &s.key, "/ui/executions?range=1h&status=succeeded").await;
    assert_eq!(status, 200);
    assert_eq!(
        html.matches("<tr class=\"\" data-id=").count(),
        50,
        "{html}"
    );
    let (_, html) = page_with_key(&s, &s.key, "/ui/executions?rule=hooks.echo_critical").await;
    assert!(html.contains("No executions match"), "{html}");
    // By trigger type: what a webhook's rules started, and nothing else.
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "critical", "host": "db2"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let started = s
        .wait_for("/api/v1/executions?trigger_type=core.st2.webhook", |b| {
            b.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let first = &started[0];
    assert_eq!(first["trigger_type"]["ref"], "core.st2.webhook", "{first}");
    let id = first["id"].as_str().expect("id");
    let (_, html) = page_with_key(&s, &s.key, "/ui/executions?trigger_type=core.st2.webhook").await;
    assert!(html.contains(&format!("data-id=\"{id}\"")), "{html}");
    assert!(!html.contains(&ids[54]), "{html}");
    assert!(
        html.contains("<option value=\"core.st2.webhook\">"),
        "{html}"
    );
    let (_, html) = page_with_key(
        &s,
        &s.key,
        "/ui/executions?trigger_type=core.st2.IntervalTimer",
    )
    .await;
    assert!(html.contains("No executions match"), "{html}");
    let (_, html) = page_with_key(&s, &s.key, "/ui/executions?user=tester").await;
    assert_eq!(
        html.matches("<tr class=\"\" data-id=").count(),
        50,
        "{html}"
    );
    let (_, html) = page_with_key(&s, &s.key, "/ui/executions?user=someone-else").await;
    assert!(html.contains("No executions match"), "{html}");

    // The assets the pages use are served from the binary.
    for (path, kind) in [
        ("/ui/static/squall.js", "text/javascript"),
        ("/ui/static/squall.css", "text/css"),
    ] {
        let r = browser()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(kind)
        );
    }
}

#[tokio::test]
async fn rules_are_tested_edited_and_disabled_from_their_pages() {
    let s = Server::start().await;
    let (status, html) = page_with_key(&s, &s.key, "/ui/rules").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("href=\"/ui/rules/hooks.echo_critical\""),
        "{html}"
    );

    // The tester: a match with its rendered parameters, and a miss.
    let payload = r#"{"body": {"severity": "CRITICAL", "host": "db1"}}"#;
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/rules/hooks.echo_critical/test",
        &[("payload", payload)],
    )
    .await;
    let html = r.text().await.expect("body");
    assert!(html.contains("<strong>Match</strong>"), "{html}");
    assert!(
        html.contains("db1 is critical (hooks.echo_critical)"),
        "{html}"
    );
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/rules/hooks.echo_critical/test",
        &[("payload", r#"{"body": {"severity": "low", "host": "db1"}}"#)],
    )
    .await;
    let html = r.text().await.expect("body");
    assert!(
        html.contains(
            "<strong>No match</strong>: criterion &#x27;trigger.body.severity&#x27; does not hold"
        ),
        "{html}"
    );

    // YAML the server refuses: the message names the line.
    let bad = "name: broken\npack: default\ntrigger:\n  type: core.st2.webhook\n  parameters: {url: x}\naction:\n  ref: core.nothing_here\n";
    let r = post_with_key(&s, &s.key, "/ui/rules", &[("yaml", bad)]).await;
    assert_eq!(r.status().as_u16(), 400);
    let html = r.text().await.expect("body");
    assert!(html.contains("Line 7:"), "{html}");
    let r = post_with_key(&s, &s.key, "/ui/rules", &[("yaml", "name: [unclosed\n")]).await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.expect("body").contains("Line "));
    let good = "name: ui_made\npack: default\ntrigger:\n  type: core.st2.webhook\n  parameters: {url: ui}\naction:\n  ref: core.noop\n";
    let r = post_with_key(&s, &s.key, "/ui/rules", &[("yaml", good)]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/rules/default.ui_made");
    let (status, rule) = s.get("/api/v1/rules/default.ui_made").await;
    assert_eq!(status, 200, "{rule}");

    // Disabled, the rule no longer runs its action: the backstop rule
    // handles the event instead.
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/rules/hooks.echo_critical/enabled",
        &[("enabled", "false")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, html) = page_with_key(&s, &s.key, "/ui/rules/hooks.echo_critical").await;
    assert!(html.contains(">disabled</span>"), "{html}");
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "critical", "host": "db2"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    s.wait_for("/api/v1/executions?action=core.noop", |b| {
        b.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let (_, echoes) = s.get("/api/v1/executions?action=core.echo").await;
    assert_eq!(echoes.as_array().map(Vec::len), Some(0), "{echoes}");

    // The tester on an event that happened, picked from the rule's page.
    let (_, html) = page_with_key(&s, &s.key, "/ui/rules/hooks.echo_critical").await;
    let picked = html
        .split("<option value=\"")
        .nth(2)
        .and_then(|rest| rest.split('"').next())
        .expect("a recent instance to pick")
        .to_owned();
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/rules/hooks.echo_critical/test",
        &[("instance", &picked), ("payload", "")],
    )
    .await;
    let html = r.text().await.expect("body");
    assert!(
        html.contains("db2 is critical (hooks.echo_critical)"),
        "{html}"
    );
}

/// A multipart form with the file `archive`, as a browser sends it.
async fn upload_form(s: &Server, cookie: &str, csrf: &str, archive: Vec<u8>) -> reqwest::Response {
    let boundary = "squall-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"pack.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&archive);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    browser()
        .post(format!("{}/ui/packs", s.base))
        .header("cookie", cookie)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn packs_are_uploaded_and_removed_from_their_page() {
    let s = Server::start().await;
    let me = session(&s, &s.key).await;
    let pack = squall_tests::pack_of(
        "uipack",
        &[(
            "hello",
            squall_tests::VERSIONED,
            "parameters:\n  seconds: {type: number, default: 0}\n  hold: {type: string}\n",
        )],
    );
    let archive = squall_reactor::install::archive_pack(pack.path()).expect("archive");
    // Without the token the upload is refused, and nothing is installed.
    let r = upload_form(&s, &me.cookie, "wrong", archive.clone()).await;
    assert_eq!(r.status().as_u16(), 403);
    let r = upload_form(&s, &me.cookie, &me.csrf, archive).await;
    assert_eq!(r.status().as_u16(), 201);
    let html = r.text().await.expect("body");
    assert!(html.contains("Installed pack uipack"), "{html}");
    let (_, html) = get(&s, &me.cookie, "/ui/packs").await;
    assert!(
        html.contains("action=\"/ui/packs/uipack/remove\""),
        "{html}"
    );
    // A pack of the server's own cannot be removed here.
    assert!(!html.contains("/ui/packs/core/remove"), "{html}");

    // Not a pack: refused, saying why.
    let r = upload_form(&s, &me.cookie, &me.csrf, b"not gzip at all".to_vec()).await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.expect("body").contains("class=\"error\""));

    let r = post_form(
        &s,
        &me.cookie,
        "/ui/packs/uipack/remove",
        &[("csrf", &me.csrf)],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, packs) = s.get("/api/v1/packs").await;
    assert!(!packs.to_string().contains("uipack"), "{packs}");
}

/// The config form of pack `conf`, sent with the session's CSRF token.
async fn save(s: &Server, me: &Session, form: &[(&str, &str)]) -> reqwest::Response {
    let mut form = form.to_vec();
    form.push(("csrf", &me.csrf));
    post_form(s, &me.cookie, "/ui/packs/conf/config", &form).await
}

#[tokio::test]
async fn a_packs_config_is_set_from_its_generated_form() {
    let s = Server::start().await;
    let me = session(&s, &s.key).await;
    let pack = squall_tests::pack_of(
        "conf",
        &[("go", squall_tests::VERSIONED, "parameters: {}\n")],
    );
    std::fs::write(
        pack.path().join("config.schema.yaml"),
        "version: {type: string, required: true, description: What go reports}\nregion: {type: string, enum: [eu, us], default: eu}\ntoken: {type: string, secret: true}\n",
    )
    .expect("schema");
    std::fs::write(pack.path().join("config.yaml"), "version: shipped\n").expect("config");
    let archive = squall_reactor::install::archive_pack(pack.path()).expect("archive");
    let (status, body) = s.as_key(&s.key).upload(archive).await;
    assert_eq!(status, 201, "{body}");

    let (_, html) = get(&s, &me.cookie, "/ui/packs").await;
    assert!(html.contains("href=\"/ui/packs/conf/config\""), "{html}");
    let (status, html) = get(&s, &me.cookie, "/ui/packs/conf/config").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("name=\"version\" value=\"shipped\""),
        "{html}"
    );
    assert!(
        html.contains("<select id=\"p-region\" name=\"region\""),
        "{html}"
    );
    assert!(
        html.contains("name=\"token\" value=\"\" type=\"password\""),
        "{html}"
    );
    assert!(html.contains("What go reports"), "{html}");

    let r = save(
        &s,
        &me,
        &[
            ("version", "from-the-form"),
            ("region", "us"),
            ("token", "hunter2"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, config) = s.get("/api/v1/configs/conf?show_secrets=true").await;
    assert_eq!(config["source"], "api");
    assert_eq!(config["values"]["version"], "from-the-form");
    assert_eq!(config["values"]["region"], "us");
    assert_eq!(config["values"]["token"], "hunter2");
    let done = s.run("conf.go", json!({})).await;
    let done = s.finished(&done["id"]).await;
    assert_eq!(done["result"]["version"], "from-the-form", "{done}");
    // The page never holds the secret; left empty, it keeps its value.
    let (_, html) = get(&s, &me.cookie, "/ui/packs/conf/config").await;
    assert!(!html.contains("hunter2"), "{html}");
    let r = save(&s, &me, &[("version", "again"), ("token", "")]).await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, config) = s.get("/api/v1/configs/conf?show_secrets=true").await;
    assert_eq!(config["values"]["token"], "hunter2");
    assert_eq!(config["values"]["region"], "eu", "left empty: the default");

    // A required field left empty: refused on the page, nothing changed.
    let r = save(&s, &me, &[("version", "")]).await;
    assert_eq!(r.status().as_u16(), 400);
    let html = r.text().await.expect("body");
    assert!(
        html.contains("class=\"error\"") && html.contains("version"),
        "{html}"
    );
    let (_, config) = s.get("/api/v1/configs/conf").await;
    assert_eq!(config["values"]["version"], "again");

    // Back to the pack's own config.yaml.
    let r = post_form(
        &s,
        &me.cookie,
        "/ui/packs/conf/config/reset",
        &[("csrf", &me.csrf)],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, config) = s.get("/api/v1/configs/conf").await;
    assert_eq!(config["source"], "pack");
    assert_eq!(config["values"]["version"], "shipped");
}

#[tokio::test]
async fn inquiries_are_answered_with_their_generated_form() {
    let s = Server::start_with(
        vec![squall_tests::core_pack(), super::inquiries::ask_pack()],
        squall_reactor::ReactorConfig::default(),
    )
    .await;
    let workflow = s.run("ask.approve", json!({})).await;
    let workflow_id = workflow["id"].as_str().expect("id").to_owned();
    let waiting = s
        .wait_for("/api/v1/inquiries", |b| {
            b.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let inquiry = waiting[0]["id"].as_str().expect("id").to_owned();
    let (status, html) = page_with_key(&s, &s.key, "/ui/inquiries").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("href=\"/ui/inquiries/{inquiry}\"")),
        "{html}"
    );
    assert!(
        html.contains(&format!("href=\"/ui/executions/{workflow_id}\"")),
        "{html}"
    );
    let (status, html) = page_with_key(&s, &s.key, &format!("/ui/inquiries/{inquiry}")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<input id=\"p-approved\" name=\"approved\" type=\"checkbox\""),
        "{html}"
    );
    let r = post_with_key(
        &s,
        &s.key,
        &format!("/ui/inquiries/{inquiry}"),
        &[("approved", "on")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(
        r.headers()["location"].to_str().expect("ascii"),
        format!("/ui/executions/{workflow_id}")
    );
    let done = s.finished(&json!(workflow_id)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["output"]["approved"], true, "{done}");
    // Answered, it no longer waits.
    let (status, _) = page_with_key(&s, &s.key, &format!("/ui/inquiries/{inquiry}")).await;
    assert_eq!(status, 400);
    // The workflow's page shows its tasks.
    let (_, html) = page_with_key(&s, &s.key, &format!("/ui/executions/{workflow_id}")).await;
    assert!(
        html.contains("get_approval") && html.contains("finish"),
        "{html}"
    );
    // Its graph, each task coloured by its execution and a link to it.
    assert!(html.contains("<svg class=\"graph\""), "{html}");
    assert!(
        html.contains("aria-label=\"task get_approval: succeeded\""),
        "{html}"
    );
    assert!(
        html.contains("aria-label=\"task finish: succeeded\""),
        "{html}"
    );
    // The branch not taken was not run.
    assert!(html.contains("<g class=\"node not-run\">"), "{html}");
}

#[tokio::test]
async fn a_sensors_failure_shows_with_its_panic_message() {
    let flaky = squall_tests::sensor_pack("flaky", "panic", 0.1, "[]", &[]);
    let s = Server::start_with(
        vec![squall_tests::core_pack(), flaky],
        squall_reactor::ReactorConfig::default(),
    )
    .await;
    let seen = s
        .wait_for("/api/v1/sensortypes/flaky.TestSensor", |b| {
            b["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("panicked"))
        })
        .await;
    let (status, html) = page_with_key(&s, &s.key, "/ui/sensors").await;
    assert_eq!(status, 200);
    // Its state as text (it restarts with a back-off, then is marked failed).
    let state = seen["state"].as_str().expect("state");
    assert!(
        ["backing_off", "failed", "starting", "running"]
            .iter()
            .any(|s| html.contains(&format!(">{s}</span>"))),
        "{state}: {html}"
    );
    assert!(
        html.contains("guest panicked: sensor broke on purpose"),
        "{html}"
    );
    let (status, html) = page_with_key(&s, &s.key, "/ui/sensors/flaky.TestSensor").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"last-error\""), "{html}");
    assert!(
        html.contains("[stderr] sensor broke on purpose"),
        "the log: {html}"
    );
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/sensors/flaky.TestSensor/enabled",
        &[("enabled", "false")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, sensor) = s.get("/api/v1/sensortypes/flaky.TestSensor").await;
    assert_eq!(sensor["enabled"], false, "{sensor}");
}

#[tokio::test]
async fn the_datastore_page_sets_masks_and_deletes_keys() {
    let s = Server::start().await;
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/keys",
        &[
            ("name", "db_password"),
            ("value", "hunter2"),
            ("secret", "true"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/keys",
        &[("name", "region"), ("value", "<b>eu</b>"), ("ttl", "600")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, html) = page_with_key(&s, &s.key, "/ui/keys").await;
    assert!(
        html.contains("db_password") && html.contains("********"),
        "{html}"
    );
    assert!(
        !html.contains("hunter2") && !html.contains("<b>eu</b>"),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;eu&lt;&#x2f;b&gt;"), "{html}");
    let (_, html) = page_with_key(&s, &s.key, "/ui/keys?decrypt=true").await;
    assert!(html.contains("hunter2"), "an admin may decrypt: {html}");
    // A viewer may not.
    let viewer = s.key_in("default", "viewer").await;
    let (_, html) = page_with_key(&s, &viewer, "/ui/keys?decrypt=true").await;
    assert!(
        !html.contains("hunter2") && html.contains("operator or admin role"),
        "{html}"
    );
    // The API's own checks, beside the form.
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/keys",
        &[("name", "bad\u{1}name"), ("value", "x")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 400);
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/keys/delete",
        &[("name", "region"), ("scope", "st2kv.system")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (status, _) = s.get("/api/v1/keys/region").await;
    assert_eq!(status, 404);
    // Names that are not path segments: each form deletes its own key.
    for name in ["a/b", "..", "x/../keep"] {
        let r = post_with_key(&s, &s.key, "/ui/keys", &[("name", name), ("value", "v")]).await;
        assert_eq!(r.status().as_u16(), 303, "{name}");
    }
    let (_, html) = page_with_key(&s, &s.key, "/ui/keys").await;
    assert!(
        html.contains(r#"name="name" value="x&#x2f;..&#x2f;keep""#),
        "{html}"
    );
    for name in ["a/b", ".."] {
        let r = post_with_key(&s, &s.key, "/ui/keys/delete", &[("name", name)]).await;
        assert_eq!(r.status().as_u16(), 303, "{name}");
    }
    let (_, body) = s.get("/api/v1/keys").await;
    let names: Vec<&str> = body
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(
        names.contains(&"x/../keep") && !names.contains(&"a/b") && !names.contains(&".."),
        "{names:?}"
    );
}

#[tokio::test]
async fn trigger_instances_show_what_they_set_off_and_re_emit() {
    let s = Server::start().await;
    let r = s
        .post(
            "/api/v1/webhooks/alerts",
            &json!({"severity": "critical", "host": "<i>web-1</i>"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let instance = r.headers()["St2-Trigger-Instance-Id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    s.wait_for(
        &format!("/api/v1/ruleenforcements?trigger_instance={instance}"),
        |b| b.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let (status, html) = page_with_key(&s, &s.key, "/ui/triggers").await;
    assert_eq!(status, 200);
    assert!(html.contains("core.st2.webhook"), "{html}");
    let (status, html) =
        page_with_key(&s, &s.key, "/ui/trigger-instances?trigger=core.st2.webhook").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("href=\"/ui/trigger-instances/{instance}\"")),
        "{html}"
    );
    assert!(!html.contains("<i>web-1</i>"), "{html}");
    let (status, html) =
        page_with_key(&s, &s.key, &format!("/ui/trigger-instances/{instance}")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("href=\"/ui/rules/hooks.echo_critical\""),
        "{html}"
    );
    assert!(html.contains("href=\"/ui/executions/"), "{html}");
    assert!(
        !html.contains("<i>web-1</i>") && html.contains("&lt;i&gt;web-1"),
        "{html}"
    );
    // An execution it set off lists its whole trace, each step a link.
    let (_, enforcements) = s
        .get(&format!(
            "/api/v1/ruleenforcements?trigger_instance={instance}&rule_ref=hooks.echo_critical"
        ))
        .await;
    let execution = enforcements[0]["execution_id"]
        .as_str()
        .expect("an execution")
        .to_owned();
    let (_, html) = page_with_key(&s, &s.key, &format!("/ui/executions/{execution}")).await;
    for link in [
        format!("href=\"/ui/trigger-instances/{instance}\""),
        "href=\"/ui/rules/hooks.echo_critical\"".to_owned(),
        format!("href=\"/ui/executions/{execution}\""),
    ] {
        assert!(html.contains(&link), "{link}: {html}");
    }
    assert!(html.contains("<td>rule enforcement</td>"), "{html}");
    let r = post_with_key(
        &s,
        &s.key,
        &format!("/ui/trigger-instances/{instance}/re-emit"),
        &[],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    assert!(
        location.starts_with("/ui/trigger-instances/") && !location.ends_with(&instance),
        "{location}"
    );
    let (_, all) = s
        .get("/api/v1/triggerinstances?trigger=core.st2.webhook")
        .await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
}

#[tokio::test]
async fn admins_manage_tenants_and_keys_and_nobody_else_does() {
    let s = Server::start().await;
    let (status, html) = page_with_key(&s, &s.key, "/ui/admin").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<title>Administration · Squall</title>"),
        "{html}"
    );
    assert!(
        html.contains("href=\"/ui/admin\""),
        "the admin's navigation: {html}"
    );
    let r = post_with_key(&s, &s.key, "/ui/admin/tenants", &[("name", "acme")]).await;
    assert_eq!(r.status().as_u16(), 303);
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/admin/keys",
        &[("tenant", "acme"), ("user", "ci"), ("role", "viewer")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 201);
    let html = r.text().await.expect("body");
    let key = html
        .split("id=\"new-key\" readonly size=\"60\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the new key, shown once")
        .to_owned();
    let (status, _) = page_with_key(&s, &key, "/ui/executions").await;
    assert_eq!(status, 200, "the new key works");
    let (_, html) = page_with_key(&s, &s.key, "/ui/admin?tenant=acme").await;
    assert!(!html.contains(&key), "shown once only");
    let id = html
        .split("action=\"/ui/admin/keys/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the key's row")
        .to_owned();
    let r = post_with_key(
        &s,
        &s.key,
        &format!("/ui/admin/keys/{id}/enabled"),
        &[("tenant", "acme"), ("enabled", "false")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (status, _) = page_with_key(&s, &key, "/ui/executions").await;
    assert_eq!(status, 401, "a disabled key is refused");
    let r = post_with_key(
        &s,
        &s.key,
        &format!("/ui/admin/keys/{id}/revoke"),
        &[("tenant", "acme")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, keys) = s.get("/api/v1/apikeys?tenant=acme").await;
    assert_eq!(keys.as_array().map(Vec::len), Some(0), "{keys}");

    // A user with a password, who then signs in with it.
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/admin/users",
        &[
            ("tenant", "acme"),
            ("name", "ann"),
            ("role", "viewer"),
            ("password", "a long secret"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (_, html) = page_with_key(&s, &s.key, "/ui/admin?tenant=acme").await;
    assert!(
        html.contains("<td>ann</td><td>viewer</td><td>yes</td>"),
        "{html}"
    );
    let r = sign_in(&s, &[("username", "ann"), ("password", "a long secret")]).await;
    assert_eq!(r.status().as_u16(), 303);
    let r = post_with_key(
        &s,
        &s.key,
        "/ui/admin/users",
        &[
            ("tenant", "acme"),
            ("name", "bad name!"),
            ("role", "viewer"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 400);

    let operator = s.key_in("default", "operator").await;
    let (status, _) = page_with_key(&s, &operator, "/ui/admin").await;
    assert_eq!(status, 403);
    let (_, html) = page_with_key(&s, &operator, "/ui/executions").await;
    assert!(!html.contains("href=\"/ui/admin\""), "{html}");
    let r = post_with_key(&s, &operator, "/ui/admin/tenants", &[("name", "sneaky")]).await;
    assert_eq!(r.status().as_u16(), 403);
}
