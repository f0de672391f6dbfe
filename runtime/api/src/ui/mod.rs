//! The web UI: pages rendered on the server under `/ui`, on the API's port.
//!
//! Pages are minijinja templates compiled into the binary
//! (`runtime/api/ui/templates`), with one stylesheet and one small ES
//! module (`runtime/api/ui/static`) for the live parts; nothing is loaded
//! from elsewhere. Handlers read through the store and the reactor as the
//! `/api/v1` handlers do, and change things through the same reactor calls
//! and checks, so the API, the CLI and the UI cannot disagree.
//!
//! A page accepts the API's credentials (an `St2-Api-Key` or
//! `X-Auth-Token` header) or the session cookie that signing in sets: a
//! token, revoked at sign-out. A request authenticated by the cookie that
//! changes anything must carry the session's CSRF token ([`csrf`]).

mod actions;
mod admin;
mod configs;
mod executions;
mod graph;
mod html;
mod inquiries;
mod keys;
mod packs;
mod rules;
mod sensors;
mod triggers;

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Deserialize;
use squall_core::auth::{Principal, Role};

use crate::AppState;
use crate::error::ApiError;

/// The session cookie: a token from the store, as `/auth/v1/tokens` makes.
pub(crate) const COOKIE: &str = "squall_session";
/// How long a session lasts.
const SESSION_SECONDS: u64 = 12 * 3600;
/// The field, header and query parameter that carry the CSRF token.
const CSRF_FIELD: &str = "csrf";
const CSRF_HEADER: &str = "x-csrf-token";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/executions") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/static/{file}", get(asset))
        .route("/ui/stream", get(crate::stream::stream))
        .merge(executions::routes())
        .merge(actions::routes())
        .merge(rules::routes())
        .merge(packs::routes())
        .merge(configs::routes())
        .merge(inquiries::routes())
        .merge(sensors::routes())
        .merge(keys::routes())
        .merge(triggers::routes())
        .merge(admin::routes())
        .route_layer(axum::middleware::from_fn(csrf))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Whether `path` is the UI's.
pub(crate) fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// UI paths anyone may fetch.
pub(crate) fn is_open(path: &str) -> bool {
    path == "/ui/login" || path.starts_with("/ui/static/")
}

/// How a UI request was authenticated: by the session cookie, whose token
/// this is. (A request with a header carries none.)
#[derive(Debug, Clone)]
pub(crate) struct CookieSession(pub(crate) String);

/// The session token the request's cookie carries, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

/// The CSRF token of a session: derived from its token, which only the
/// browser holding the cookie knows.
fn csrf_token(session: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"squall-ui-csrf\0")
        .chain_update(session.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// Compare in constant time.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Requests authenticated by the cookie that change anything carry the
/// session's CSRF token: as the `csrf` field of a form (the first field
/// of a file upload's), or the `X-CSRF-Token` header.
///
/// Before that, a browser's own word on where any request that changes
/// something came from is heeded, cookie or not: one sent from another
/// site is refused. This guards the sign-in form too, which has no
/// session yet (a cross-site page could otherwise sign its victim in to
/// the attacker's tenant).
async fn csrf(mut req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe {
        return next.run(req).await;
    }
    if let Some(origin) = cross_site(req.headers()) {
        return UiError::new(
            StatusCode::FORBIDDEN,
            format!("this form was sent from another site ({origin}); open the page here and send it again"),
        )
        .into_response();
    }
    let Some(CookieSession(session)) = req.extensions().get::<CookieSession>().cloned() else {
        return next.run(req).await;
    };
    let expected = csrf_token(&session);
    let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| same(g, &expected)) {
        return next.run(req).await;
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // A file upload's token is its form's first field, read by the one
    // handler that takes files before it reads the file.
    if content_type.starts_with("multipart/form-data") && req.uri().path() == UPLOAD_PATH {
        req.extensions_mut().insert(UploadCsrf(expected));
        return next.run(req).await;
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")
                .into_response();
        };
        let found = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .is_some_and(|(_, v)| same(&v, &expected));
        if found {
            return next
                .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await;
        }
    }
    csrf_refused().into_response()
}

/// Whether a browser says the request came from another site, and from
/// where. `Sec-Fetch-Site` is every current browser's answer; a browser
/// without it still sends `Origin` on a POST, compared with the host the
/// request was sent to. A request with neither is not a browser's (a
/// script's), and passes.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        // `none`: the user's own doing (typed, bookmarked).
        return (!matches!(site, "same-origin" | "none"))
            .then(|| format!("Sec-Fetch-Site: {site}"));
    }
    let origin = text(header::ORIGIN.as_str())?;
    let host = text("x-forwarded-host").or_else(|| text(header::HOST.as_str()));
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    (origin_host.is_none() || origin_host != host).then(|| format!("Origin: {origin}"))
}

/// The largest form body read.
const FORM_LIMIT: usize = 1 << 20;

/// The path of the UI's one file upload (a pack's `.tar.gz`).
pub(crate) const UPLOAD_PATH: &str = "/ui/packs";

/// The CSRF token a cookie session's file upload must carry as its form's
/// first field, `csrf`, before the file.
#[derive(Debug, Clone)]
pub(crate) struct UploadCsrf(String);

impl UploadCsrf {
    /// Whether `given` is the session's token.
    pub(crate) fn accepts(&self, given: &str) -> bool {
        same(given, &self.0)
    }
}

/// What a refused CSRF check says.
pub(crate) fn csrf_refused() -> UiError {
    UiError::new(
        StatusCode::FORBIDDEN,
        "this form has no valid CSRF token (it is older than your session, or it was sent from another site); reload the page and send it again",
    )
}

/// Headers every UI response carries: a Content-Security-Policy that runs
/// only the UI's own script and allows no framing; and `Server-Timing`,
/// the time the server took, as a browser's tools and `squall bench ui`
/// read it.
async fn security_headers(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let headers = response.headers_mut();
    if let Ok(timing) = HeaderValue::from_str(&format!("app;dur={took:.3}")) {
        headers.insert("server-timing", timing);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The signed-in caller of a page, and what its forms need.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) principal: Principal,
    /// The session's CSRF token; empty for a request with a header.
    pub(crate) csrf: String,
}

impl Viewer {
    pub(crate) fn tenant(&self) -> squall_core::TenantId {
        self.principal.tenant.clone()
    }

    /// The viewer as the API's handlers take their caller.
    pub(crate) fn caller(&self) -> crate::auth::Caller {
        crate::auth::Caller(self.principal.clone())
    }

    /// What every page's layout shows of the viewer.
    fn context(&self) -> minijinja::Value {
        minijinja::context! {
            user => self.principal.user.clone(),
            tenant => self.principal.tenant.as_str(),
            role => self.principal.role.as_str(),
            can_write => self.principal.role.can_write(),
            is_admin => self.principal.role == Role::Admin,
            csrf => self.csrf.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, UiError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| UiError::new(StatusCode::UNAUTHORIZED, "sign in first"))?;
        let csrf = parts
            .extensions
            .get::<CookieSession>()
            .map(|s| csrf_token(&s.0))
            .unwrap_or_default();
        Ok(Self { principal, csrf })
    }
}

/// The JSON body of one of the API's own answers (a handler the UI
/// calls as the API would).
pub(crate) async fn json_of(response: Response) -> Result<serde_json::Value, UiError> {
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `value` for a template.
pub(crate) fn v(value: impl serde::Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// An enable or disable button's form: `enabled` is what to set.
#[derive(Debug, Deserialize)]
pub(crate) struct Toggle {
    enabled: String,
}

impl Toggle {
    pub(crate) fn on(&self) -> bool {
        self.enabled == "true"
    }
}

/// The templates, compiled once.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    macro_rules! templates {
        ($($name:literal),* $(,)?) => {
            [$(($name, include_str!(concat!("../../ui/templates/", $name)))),*]
        };
    }
    for (name, source) in templates![
        "base.html",
        "login.html",
        "error.html",
        "executions.html",
        "execution_rows.html",
        "execution.html",
        "actions.html",
        "action.html",
        "field.html",
        "rules.html",
        "rule.html",
        "rule_edit.html",
        "rule_toggle.html",
        "packs.html",
        "pack_config.html",
        "inquiries.html",
        "inquiry.html",
        "sensors.html",
        "sensor.html",
        "sensor_log.html",
        "keys.html",
        "triggers.html",
        "trigger_instances.html",
        "trigger_instance.html",
        "admin.html",
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e:#}"));
    }
    env.add_filter("json_tree", |v: minijinja::Value| {
        let json = serde_json::to_value(&v).unwrap_or(serde_json::Value::Null);
        minijinja::Value::from_safe_string(html::json_tree(&json))
    });
    env.add_function("took", |start: String, end: Option<String>| {
        took(&start, end.as_deref())
    });
    env.add_filter("pretty_json", |v: minijinja::Value| {
        let json = serde_json::to_value(&v).unwrap_or(serde_json::Value::Null);
        serde_json::to_string_pretty(&json).unwrap_or_default()
    });
    env
});

/// How long from `start` to `end` (RFC 3339), as a person reads it; empty
/// while there is no end.
fn took(start: &str, end: Option<&str>) -> String {
    use squall_core::time::parse_rfc3339;
    let (Some(start), Some(end)) = (parse_rfc3339(start), end.and_then(parse_rfc3339)) else {
        return String::new();
    };
    let ms = (end - start).whole_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Render `template` with `context` and the viewer's layout context.
pub(crate) fn page(
    viewer: Option<&Viewer>,
    template: &str,
    context: minijinja::Value,
) -> Result<Response, UiError> {
    let html = render(viewer, template, context)?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// [`page`]'s HTML.
fn render(
    viewer: Option<&Viewer>,
    template: &str,
    context: minijinja::Value,
) -> Result<String, UiError> {
    let me = viewer.map(Viewer::context);
    // The navigation's current section: by the template's name.
    let section = [
        ("execution", "executions"),
        ("action", "actions"),
        ("rule", "rules"),
        ("pack", "packs"),
        ("inquir", "inquiries"),
        ("sensor", "sensors"),
        ("key", "keys"),
        ("trigger", "triggers"),
        ("admin", "admin"),
    ]
    .into_iter()
    .find(|(prefix, _)| template.starts_with(prefix))
    .map(|(_, section)| section);
    let context = minijinja::context! { me, section, ..context };
    TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(context))
        .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
}

/// An error as a page: its status, and a message the viewer can act on
/// (a server error's detail is logged, not shown).
#[derive(Debug)]
pub(crate) struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// A refusal from the API's own checks, as a form shows it beside its
/// fields: its message and status. A failure of the server's own stays an
/// error page (its detail logged).
pub(crate) fn refusal(e: ApiError) -> Result<(String, StatusCode), UiError> {
    if e.status().is_server_error() {
        Err(e.into())
    } else {
        Ok((e.public_message(), e.status()))
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        let response = e.status();
        Self::new(response, e.public_message())
    }
}

impl From<squall_store::Error> for UiError {
    fn from(e: squall_store::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(error = %self.message, "page failed");
        }
        let message = if self.status.is_server_error() {
            "internal server error (see the server's log)".to_owned()
        } else {
            self.message
        };
        let html = TEMPLATES
            .get_template("error.html")
            .and_then(|t| {
                t.render(minijinja::context! {
                    status => self.status.as_u16(),
                    reason => self.status.canonical_reason().unwrap_or(""),
                    message,
                })
            })
            .unwrap_or_else(|_| "error".to_owned());
        (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response()
    }
}

/// Where to send a viewer who is not signed in.
pub(crate) fn to_login(path_and_query: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    Redirect::to(&format!("/ui/login?next={next}")).into_response()
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only a path of the UI: never another site.
fn local_next(next: Option<&str>) -> String {
    next.filter(|n| is_ui(n.split('?').next().unwrap_or_default()) && !n.starts_with("//"))
        .unwrap_or("/ui/executions")
        .to_owned()
}

async fn login_page(
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Result<Response, UiError> {
    page(
        None,
        "login.html",
        minijinja::context! { next => local_next(q.next.as_deref()) },
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    api_key: String,
    next: Option<String>,
}

/// Sign in with a user name and password, or with an API key: either way
/// the session is a token for that principal, in an HttpOnly cookie.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<LoginForm>,
) -> Result<Response, UiError> {
    let next = local_next(form.next.as_deref());
    let refused = |message: &str| {
        let mut response = page(
            None,
            "login.html",
            minijinja::context! {
                next => next.clone(),
                username => form.username.clone(),
                error => message,
            },
        )?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Ok::<_, UiError>(response)
    };
    let store = state.reactor.store().clone();
    let principal = if !form.api_key.trim().is_empty() {
        let key = form.api_key.trim().to_owned();
        tokio::task::spawn_blocking(move || store.api_key_principal(&key))
            .await
            .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    } else if !form.username.is_empty() {
        let _permit = state
            .password_checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| UiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        let (user, password) = (form.username.clone(), form.password.clone());
        tokio::task::spawn_blocking(move || store.check_password(&user, &password))
            .await
            .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    } else {
        return refused("enter a user name and password, or an API key");
    };
    let Some(principal) = principal else {
        return refused(if form.api_key.trim().is_empty() {
            "invalid user name or password"
        } else {
            "invalid or disabled API key"
        });
    };
    // A key's session is the key itself: disabling or deleting the key
    // ends it at once (no token outlives it). A password's is a token,
    // revoked at sign-out.
    let token = if form.api_key.trim().is_empty() {
        state
            .reactor
            .store()
            .create_token(&principal, SESSION_SECONDS)
            .await?
            .0
    } else {
        form.api_key.trim().to_owned()
    };
    tracing::info!(tenant = %principal.tenant, user = %principal.user, "signed in to the UI");
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header(&state, &headers, &token, SESSION_SECONDS),
    );
    Ok(response)
}

/// `Set-Cookie` for the session: HttpOnly, SameSite=Strict, scoped to the
/// UI, and Secure when the server is told to (`--secure-cookies`) or the
/// request came over TLS (as a proxy in front says).
fn session_cookie_header(
    state: &AppState,
    request: &HeaderMap,
    token: &str,
    max_age: u64,
) -> HeaderValue {
    let secure = if state.secure_cookies || over_tls(request) {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a token is ASCII")
}

/// Whether a proxy in front says the request came over HTTPS: in
/// `X-Forwarded-Proto`, or in the standard `Forwarded` (RFC 7239).
fn over_tls(request: &HeaderMap) -> bool {
    let values = |name| {
        request
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    values("x-forwarded-proto")
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("https"))
        || values("forwarded")
            .flat_map(|v| v.split([',', ';']))
            .filter_map(|pair| pair.split_once('='))
            .any(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proto")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
}

/// Sign out: the session's token is revoked, the cookie dropped.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Option<axum::Extension<CookieSession>>,
) -> Result<Response, UiError> {
    if let Some(axum::Extension(CookieSession(token))) = session {
        state.reactor.store().revoke_token(&token).await?;
        state.auth.forget(&token);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header(&state, &headers, "", 0),
    );
    Ok(response)
}

/// The UI's stylesheet and script, from the binary.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "squall.css" => (
            include_str!("../../ui/static/squall.css"),
            "text/css; charset=utf-8",
        ),
        "squall.js" => (
            include_str!("../../ui/static/squall.js"),
            "text/javascript; charset=utf-8",
        ),
        "favicon.svg" => (include_str!("../../ui/static/favicon.svg"), "image/svg+xml"),
        _ => return UiError::new(StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(role: Role) -> Viewer {
        Viewer {
            principal: Principal {
                tenant: squall_core::TenantId::default_tenant(),
                user: "ann".into(),
                role,
            },
            csrf: "c5rf".into(),
        }
    }

    fn render(viewer: Option<&Viewer>, template: &str, context: minijinja::Value) -> String {
        let html = super::render(viewer, template, context)
            .unwrap_or_else(|e| panic!("{template}: {e:?}"));
        // The title is text only (a block that swallowed markup shows here).
        let title = html
            .split("<title>")
            .nth(1)
            .and_then(|rest| rest.split("</title>").next())
            .unwrap_or_else(|| panic!("{template}: no title"));
        assert!(!title.contains('<'), "{template}: {title}");
        html
    }

    fn row(id: &str, status: &str, children: bool) -> serde_json::Value {
        serde_json::json!({
            "id": id, "action": "core.echo", "status": status,
            "start_timestamp": "2026-12-05T10:00:00Z", "end_timestamp": null,
            "rule": "hooks.<b>r</b>", "trigger_instance": null, "parent": null,
            "user": "ann", "has_children": children,
        })
    }

    #[test]
    fn every_page_renders() {
        let me = viewer(Role::Operator);
        let html = render(
            None,
            "login.html",
            minijinja::context! { next => "/ui/actions" },
        );
        assert!(html.contains("value=\"&#x2f;ui&#x2f;actions\""), "{html}");
        let html = render(
            Some(&me),
            "executions.html",
            minijinja::context! {
                rows => v([row("01a1", "running", true), row("01a0", "failed", false)]),
                q => minijinja::context! { action => "core.echo", status => "", rule => "", user => "", range => "1h", before => "" },
                statuses => v(["running", "failed"]),
                ranges => v([("1h", "the last hour")]),
                older => "01a0",
            },
        );
        assert!(
            html.contains("data-tasks=\"/ui/executions/01a1/tasks\""),
            "{html}"
        );
        assert!(html.contains("hooks.&lt;b&gt;r&lt;&#x2f;b&gt;"), "{html}");
        assert!(html.contains("before=01a0"), "{html}");
        assert!(html.contains("<option value=\"1h\" selected>"), "{html}");
        assert!(html.contains("name=\"csrf\" value=\"c5rf\""), "{html}");
        // Status as text, not colour alone.
        assert!(
            html.contains(">running</span>") && html.contains(">failed</span>"),
            "{html}"
        );
        let html = render(
            Some(&me),
            "execution.html",
            minijinja::context! {
                e => v(serde_json::json!({
                    "id": "01a1", "status": "running", "action": {"ref": "core.echo"},
                    "parameters": {"message": "hi"}, "result": null, "log": [
                        {"status": "requested", "timestamp": "t0"}, {"status": "running", "timestamp": "t1"}],
                    "context": {"user": "ann", "rule": {"ref": "hooks.r"}, "trigger_instance": {"id": "ti1"}},
                    "trace_tag": "tag-1",
                })),
                completed => false,
                workflow => true,
                paused => false,
                parent => "01a0",
                children => v([serde_json::json!({"id": "01a2", "action": "core.noop", "status": "succeeded", "task": "t1", "start_timestamp": "t2"})]),
                output => v(serde_json::json!({"stdout": "out<", "stderr": "", "log": [{"level": "info", "message": "m"}], "truncated": false})),
            },
        );
        for expected in [
            "/ui/executions/01a1/cancel",
            "/ui/executions/01a1/pause",
            "?rerun=01a1",
            "href=\"/ui/executions/01a0\"",
            "href=\"/ui/executions/01a2\"",
            "out&lt;",
            "[info] m",
            "data-live-output=\"/ui/executions/01a1/output\"",
        ] {
            assert!(html.contains(expected), "{expected}: {html}");
        }
        let html = render(
            Some(&viewer(Role::Viewer)),
            "execution.html",
            minijinja::context! {
                e => v(serde_json::json!({"id": "01a1", "status": "running", "action": {"ref": "core.echo"}, "context": {}})),
                completed => false, workflow => true,
                output => v(serde_json::json!({"stdout": "", "stderr": "", "log": [], "truncated": false})),
            },
        );
        assert!(
            !html.contains("/cancel") && !html.contains("?rerun="),
            "{html}"
        );
        let html = render(
            Some(&me),
            "actions.html",
            minijinja::context! { packs => v(serde_json::json!({"core": [{"ref": "core.echo", "name": "echo", "runner": "wasm", "description": "Echo", "enabled": true}]})), q => "" },
        );
        assert!(html.contains("href=\"/ui/actions/core.echo\""), "{html}");
    }

    #[test]
    fn every_template_file_is_compiled_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/templates");
        for entry in std::fs::read_dir(dir).expect("templates") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            assert!(
                TEMPLATES.get_template(&name).is_ok(),
                "{name} is not registered"
            );
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let t0 = "2026-12-05T10:00:00Z";
        assert_eq!(took(t0, Some("2026-12-05T10:00:00.042Z")), "42 ms");
        assert_eq!(took(t0, Some("2026-12-05T10:00:02.5Z")), "2.5 s");
        assert_eq!(took(t0, Some("2026-12-05T10:03:07Z")), "3 min 7 s");
        assert_eq!(took(t0, None), "");
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        assert_eq!(csrf_token("sqt_a"), csrf_token("sqt_a"));
        assert_ne!(csrf_token("sqt_a"), csrf_token("sqt_b"));
        assert_eq!(csrf_token("sqt_a").len(), 32);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn sign_in_sends_only_to_the_ui() {
        assert_eq!(local_next(Some("/ui/rules?x=1")), "/ui/rules?x=1");
        assert_eq!(
            local_next(Some("https://evil.example/ui")),
            "/ui/executions"
        );
        assert_eq!(local_next(Some("//evil.example/ui")), "/ui/executions");
        assert_eq!(local_next(Some("/api/v1/keys")), "/ui/executions");
        assert_eq!(local_next(None), "/ui/executions");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn writes_from_another_site_are_known_by_what_browsers_say() {
        let from = |pairs| cross_site(&headers(pairs));
        // A script: neither header.
        assert_eq!(from(&[("host", "squall:9101")]), None);
        assert_eq!(from(&[("sec-fetch-site", "same-origin")]), None);
        assert_eq!(from(&[("sec-fetch-site", "none")]), None);
        assert_eq!(
            from(&[("sec-fetch-site", "cross-site")]).as_deref(),
            Some("Sec-Fetch-Site: cross-site")
        );
        // Same-site is not same-origin: another service on the domain.
        assert!(from(&[("sec-fetch-site", "same-site")]).is_some());
        // Sec-Fetch-Site wins over Origin.
        assert!(
            from(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://squall:9101"),
                ("host", "squall:9101")
            ])
            .is_some()
        );
        // A browser without it: Origin against the host.
        assert_eq!(
            from(&[("origin", "http://squall:9101"), ("host", "squall:9101")]),
            None
        );
        assert_eq!(
            from(&[
                ("origin", "https://squall.example"),
                ("host", "127.0.0.1:9101"),
                ("x-forwarded-host", "squall.example")
            ]),
            None
        );
        assert!(from(&[("origin", "http://evil.example"), ("host", "squall:9101")]).is_some());
        assert!(from(&[("origin", "null"), ("host", "squall:9101")]).is_some());
    }

    #[test]
    fn proxies_say_tls_either_way() {
        assert!(!over_tls(&headers(&[])));
        assert!(over_tls(&headers(&[("x-forwarded-proto", "https")])));
        assert!(over_tls(&headers(&[("x-forwarded-proto", "HTTPS")])));
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")])));
        assert!(over_tls(&headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=https;by=203.0.113.43"
        )])));
        assert!(over_tls(&headers(&[("forwarded", "proto=\"https\"")])));
        assert!(!over_tls(&headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http"
        )])));
    }

    #[test]
    fn session_cookies_are_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; squall_session=sqt_x; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("sqt_x"));
        headers.insert(header::COOKIE, HeaderValue::from_static("squall_session="));
        assert_eq!(session_cookie(&headers), None);
    }
}
