//! The web UI over HTTP: sign-in and sessions, CSRF, escaping, tenant
//! isolation, roles, and each screen rendering from a real server.

use reqwest::redirect::Policy;
use serde_json::json;

use crate::server::Server;

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
    // The token is revoked: the old cookie leads to the sign-in page.
    let (status, _) = get(&s, &me.cookie, "/ui/executions").await;
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
