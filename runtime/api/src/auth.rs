//! Who is calling: API keys (`St2-Api-Key`), tokens (`X-Auth-Token`), either
//! as `Authorization: Bearer`, and `POST /auth/v1/tokens` with Basic auth.
//!
//! [`authenticate`] runs before every route: it resolves the credentials
//! (through a short-lived cache), refuses anonymous callers except on
//! `/health`, `/auth/v1/tokens` and webhooks (whose handler decides), and
//! applies the roles: a viewer only reads, only an admin manages tenants.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use squall_core::TenantId;
use squall_core::auth::{Principal, Role};

use crate::AppState;
use crate::error::ApiError;

/// How long a resolved credential is trusted without asking the store.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries kept before the cache starts over.
const CACHE_CAP: usize = 10_000;

/// The longest credential looked at; Squall's keys and tokens are about 50
/// characters.
const MAX_CREDENTIAL: usize = 256;

/// Credentials resolved recently: SHA-256 of the credential -> (principal,
/// when).
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    entries: Mutex<HashMap<[u8; 32], Resolved>>,
}

/// Who a credential was found to be (nobody: `None`), and when.
type Resolved = (Option<Principal>, Instant);

fn cache_key(credential: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(credential.as_bytes()).into()
}

impl AuthCache {
    /// Forget everything: after a key is disabled or deleted.
    pub(crate) fn clear(&self) {
        self.entries.lock().expect("auth cache lock").clear();
    }

    /// Forget one credential: a token revoked.
    pub(crate) fn forget(&self, credential: &str) {
        self.entries
            .lock()
            .expect("auth cache lock")
            .remove(&cache_key(credential));
    }

    fn get(&self, credential: &str) -> Option<Option<Principal>> {
        let entries = self.entries.lock().expect("auth cache lock");
        entries
            .get(&cache_key(credential))
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, credential: &str, principal: Option<Principal>) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        if entries.len() >= CACHE_CAP {
            entries.clear();
        }
        entries.insert(cache_key(credential), (principal, Instant::now()));
    }
}

/// The authenticated caller of a request; refuses anonymous ones (401).
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Principal);

impl Caller {
    pub(crate) fn tenant(&self) -> TenantId {
        self.0.tenant.clone()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(unauthenticated)
    }
}

/// The caller if there is one (webhooks accept some anonymous requests).
#[derive(Debug, Clone)]
pub(crate) struct MaybeCaller(pub(crate) Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(MaybeCaller(parts.extensions.get::<Principal>().cloned()))
    }
}

fn unauthenticated() -> ApiError {
    ApiError::Unauthorized(
        "authentication required: send an API key (St2-Api-Key header) or a token (X-Auth-Token header, from POST /auth/v1/tokens)".into(),
    )
}

/// The credential a request carries, if any.
pub(crate) fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(v) = header("st2-api-key").or_else(|| header("x-auth-token")) {
        return Some(v);
    }
    if let Some(v) =
        header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
    {
        return Some(v);
    }
    // StackStorm also takes them as query parameters (the stream API).
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        matches!(k, "st2-api-key" | "x-auth-token")
            .then(|| v.to_owned())
            .filter(|v| !v.is_empty())
    })
}

pub(crate) async fn resolve(
    state: &AppState,
    credential: String,
) -> Result<Option<Principal>, ApiError> {
    if credential.len() > MAX_CREDENTIAL {
        return Ok(None);
    }
    if let Some(hit) = state.auth.get(&credential) {
        return Ok(hit);
    }
    let store = state.reactor.store().clone();
    let key = credential.clone();
    let principal = tokio::task::spawn_blocking(move || match store.api_key_principal(&key)? {
        Some(p) => Ok(Some(p)),
        None => store.token_principal(&key),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("auth task failed: {e}")))??;
    state.auth.put(&credential, principal.clone());
    Ok(principal)
}

/// Paths anyone may call.
fn is_open(path: &str) -> bool {
    path == "/health" || path == "/auth/v1/tokens"
}

fn is_webhook(method: &Method, path: &str) -> bool {
    method == Method::POST && path.starts_with("/api/v1/webhooks/")
}

/// Middleware: resolve the caller, refuse what its role may not do.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if is_open(&path) {
        return next.run(req).await;
    }
    if crate::ui::is_ui(&path) {
        return authenticate_page(state, req, next).await;
    }
    let given = credential(req.headers(), req.uri().query());
    if let Some(c) = &given {
        req.extensions_mut().insert(UsedCredential(c.clone()));
    }
    let principal = match given {
        Some(c) => match resolve(&state, c).await {
            Ok(Some(p)) => Some(p),
            Ok(None) => {
                return ApiError::Unauthorized("invalid or expired API key or token".into())
                    .into_response();
            }
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let method = req.method().clone();
    let Some(principal) = principal else {
        if is_webhook(&method, &path) {
            return next.run(req).await;
        }
        return unauthenticated().into_response();
    };
    if let Err(e) = allowed(&principal, &method, &path) {
        return e.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The credential that authenticated a request (an API key, a token, or a
/// UI session's cookie), for what must check it again later: a stream
/// that ends once it is no longer valid.
#[derive(Debug, Clone)]
pub(crate) struct UsedCredential(pub(crate) String);

/// [`authenticate`] for the UI's pages: the API's headers, else the
/// session cookie; a viewer not signed in is sent to the sign-in page, and
/// a refusal is a page.
async fn authenticate_page(state: AppState, mut req: Request, next: Next) -> Response {
    use crate::ui::{CookieSession, UiError};
    let path = req.uri().path().to_owned();
    if crate::ui::is_open(&path) {
        return next.run(req).await;
    }
    let from_header = credential(req.headers(), None);
    let cookie = match from_header {
        Some(_) => None,
        None => crate::ui::session_cookie(req.headers()),
    };
    let there = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    let Some(given) = from_header.clone().or_else(|| cookie.clone()) else {
        return crate::ui::to_login(&there);
    };
    req.extensions_mut().insert(UsedCredential(given.clone()));
    let principal = match resolve(&state, given).await {
        Ok(Some(p)) => p,
        // A session that ended (signed out elsewhere, expired): sign in again.
        Ok(None) if cookie.is_some() => return crate::ui::to_login(&there),
        Ok(None) => {
            return UiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid or expired API key or token",
            )
            .into_response();
        }
        Err(e) => return UiError::from(e).into_response(),
    };
    if let Err(e) = allowed(&principal, req.method(), &path) {
        return UiError::from(e).into_response();
    }
    if let Some(token) = cookie {
        req.extensions_mut().insert(CookieSession(token));
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// What a role may do, decided by method and path.
fn allowed(p: &Principal, method: &Method, path: &str) -> Result<(), ApiError> {
    // Inspecting a workflow changes nothing.
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || path == "/api/v1/workflows/inspect"
        || (path.starts_with("/ui/rules/") && path.ends_with("/test"));
    // Signing out changes only the caller's own session.
    if path == "/ui/logout" {
        return Ok(());
    }
    if path == "/api/v1/tenants"
        || path.starts_with("/api/v1/tenants/")
        || path == "/metrics"
        || path == "/api/v1/packs/register"
        || path.starts_with("/ui/admin")
    {
        if p.role != Role::Admin {
            return Err(ApiError::Forbidden(format!(
                "{path} is for the admin role; '{}' is {}",
                p.user, p.role
            )));
        }
        return Ok(());
    }
    if !reads && !p.role.can_write() {
        return Err(ApiError::Forbidden(format!(
            "'{}' has the viewer role, which cannot change anything ({method} {path})",
            p.user
        )));
    }
    Ok(())
}

/// Whether `given` (hex, optionally `sha256=`-prefixed) is the HMAC-SHA256
/// of `body` under `secret`; compared in constant time.
pub(crate) fn signature_matches(secret: &[u8], body: &[u8], given: &str) -> bool {
    use hmac::{Hmac, Mac};
    let hex = given.trim();
    let hex = hex.strip_prefix("sha256=").unwrap_or(hex);
    let Ok(bytes) = hex::decode(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenRequest {
    ttl: Option<u64>,
}

/// Longest token StackStorm hands out by default (a day).
const MAX_TOKEN_TTL: u64 = 24 * 3600;

/// `POST /auth/v1/tokens`: Basic auth in, `{user, token, expiry}` out.
#[utoipa::path(
    post,
    path = "/auth/v1/tokens",
    tag = "auth",
    responses((status = 201, description = "Created"), crate::openapi::Faults)
)]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
        .ok_or_else(|| {
            ApiError::Unauthorized("send the user name and password as HTTP Basic auth".into())
        })?;
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("token request body: {e}")))?
    };
    let ttl = request.ttl.unwrap_or(MAX_TOKEN_TTL);
    if !(1..=MAX_TOKEN_TTL).contains(&ttl) {
        return Err(ApiError::BadRequest(format!(
            "ttl must be between 1 and {MAX_TOKEN_TTL} seconds, got {ttl}"
        )));
    }
    let store = state.reactor.store().clone();
    let (user, password) = basic;
    // Argon2 is slow on purpose: a few checks at a time, the rest wait.
    let _permit = state
        .password_checks
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
    let principal = tokio::task::spawn_blocking(move || store.check_password(&user, &password))
        .await
        .map_err(|e| ApiError::Internal(format!("auth task failed: {e}")))??
        .ok_or_else(|| ApiError::Unauthorized("invalid user name or password".into()))?;
    let (token, expires) = state.reactor.store().create_token(&principal, ttl).await?;
    let expiry = squall_core::time::rfc3339_of_unix(expires);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": &token[..12],
            "user": principal.user,
            "token": token,
            "expiry": expiry,
            "metadata": {"tenant": principal.tenant, "role": principal.role},
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role) -> Principal {
        Principal {
            tenant: TenantId::default_tenant(),
            user: "u".into(),
            role,
        }
    }

    #[test]
    fn roles_decide_by_method_and_path() {
        let post = Method::POST;
        let get = Method::GET;
        assert!(allowed(&p(Role::Viewer), &get, "/api/v1/rules").is_ok());
        assert!(allowed(&p(Role::Viewer), &post, "/api/v1/rules").is_err());
        assert!(allowed(&p(Role::Operator), &post, "/api/v1/rules").is_ok());
        assert!(allowed(&p(Role::Operator), &get, "/api/v1/tenants").is_err());
        assert!(allowed(&p(Role::Operator), &post, "/api/v1/tenants/x").is_err());
        assert!(allowed(&p(Role::Admin), &post, "/api/v1/tenants").is_ok());
    }

    #[test]
    fn hmac_signatures() {
        // RFC 4231 test case 2.
        let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(signature_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            sig
        ));
        assert!(signature_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            &format!("sha256={sig}")
        ));
        assert!(!signature_matches(
            b"Jefe",
            b"what do ya want for nothing!",
            sig
        ));
        assert!(!signature_matches(b"Jefe", b"x", "zz"));
    }

    #[test]
    fn credentials_from_headers_and_query() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h, None), None);
        assert_eq!(
            credential(&h, Some("x-auth-token=t1&a=b")),
            Some("t1".into())
        );
        h.insert("authorization", "Bearer k2".parse().expect("header"));
        assert_eq!(credential(&h, None), Some("k2".into()));
        h.insert("st2-api-key", "k1".parse().expect("header"));
        assert_eq!(credential(&h, None), Some("k1".into()));
    }
}
