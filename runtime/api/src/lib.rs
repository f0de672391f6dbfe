//! Squall's HTTP API: StackStorm's `/api/v1` resource names, shapes, status
//! codes and error bodies (`faultstring`), and the webhook endpoint that
//! turns HTTP requests into trigger instances.
//!
//! The API sees the engine only through `squall_reactor::Reactor` and the
//! database only through `squall_store::Store`; it never names a wasmtime
//! type. Every request but `/health`, `/auth/v1/tokens` and some webhooks
//! carries an API key or token ([`auth`]); it names the tenant the request
//! acts in and the role that bounds what it may do.

#![forbid(unsafe_code)]

mod accounts;
mod auth;
mod configs;
mod error;
mod executions;
mod inquiries;
mod keys;
mod openapi;
mod packs;
mod sensors;
mod shapes;
mod stream;
mod ui;
mod v1;
mod workflows;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use squall_reactor::Reactor;
use tokio::net::TcpListener;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub reactor: Reactor,
    pub(crate) auth: std::sync::Arc<auth::AuthCache>,
    /// Largest pack upload accepted, in bytes.
    pub upload_limit: usize,
    /// What an uploaded archive may unpack to.
    pub archive_limits: squall_reactor::ArchiveLimits,
    /// Uploads unpacked at once.
    pub(crate) uploads: std::sync::Arc<tokio::sync::Semaphore>,
    /// Password checks (Argon2, slow on purpose) at once.
    pub(crate) password_checks: std::sync::Arc<tokio::sync::Semaphore>,
    /// The directories of the server's own packs (`squall serve --packs`),
    /// read again by `POST /api/v1/packs/register`; `None` when the server
    /// has none to read.
    pub pack_paths: Option<Vec<std::path::PathBuf>>,
    /// Mark the UI's session cookie `Secure` always (`squall serve
    /// --secure-cookies`), not only when a proxy says the request came over
    /// TLS.
    pub secure_cookies: bool,
    /// Set once the server begins to stop: streams end then, as a graceful
    /// stop waits for every response to finish.
    pub(crate) stopping: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// On PostgreSQL, a pool of its own for the streams' reads of the event
    /// log, so open streams never take the reactor's connections; `None`:
    /// the reactor's store.
    pub event_log: Option<squall_store::pg::PgStore>,
}

impl AppState {
    /// Default upload limit: 64 MiB.
    pub const DEFAULT_UPLOAD_LIMIT: usize = 64 << 20;

    pub fn new(reactor: Reactor) -> Self {
        Self {
            reactor,
            auth: Default::default(),
            upload_limit: Self::DEFAULT_UPLOAD_LIMIT,
            archive_limits: squall_reactor::ArchiveLimits::default(),
            uploads: std::sync::Arc::new(tokio::sync::Semaphore::new(2)),
            password_checks: std::sync::Arc::new(tokio::sync::Semaphore::new(2)),
            pack_paths: None,
            secure_cookies: false,
            stopping: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)),
            event_log: None,
        }
    }
}

/// The whole HTTP surface, for `serve` and for tests (`oneshot`).
pub fn router(state: AppState) -> Router {
    v1::routes()
        .merge(ui::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(refuse_nul_in_path))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// A path naming something with a NUL character in it (`%00`), or a form
/// (the UI's) holding one, is refused whatever it is for: no engine stores
/// one (PostgreSQL cannot). JSON bodies and queries are checked as they
/// are read ([`error::ApiJson`], [`error::ApiQuery`]).
async fn refuse_nul_in_path(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let refuse = |what: &str| {
        error::ApiError::BadRequest(format!(
            "the {what} holds a NUL character (%00), which Squall does not store"
        ))
        .into_response()
    };
    if error::has_encoded_nul(req.uri().path()) {
        return refuse("path");
    }
    if req.uri().query().is_some_and(error::has_encoded_nul) {
        return refuse("query");
    }
    let is_form = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return next.run(req).await;
    }
    // Forms are small; axum's own limit for them.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 2 << 20).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return error::ApiError::BadRequest(format!(
                "the form could not be read (at most 2 MiB are): {e}"
            ))
            .into_response();
        }
    };
    if error::has_encoded_nul(&String::from_utf8_lossy(&bytes)) {
        return refuse("form");
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Serve until `shutdown` resolves, then stop accepting and let requests in
/// flight finish.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "squall API listening");
    let stopping = state.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    // StackStorm's clients ask for `/api/v1/keys/` as often as for
    // `/api/v1/keys`: trim the slash before routing.
    let app = tower::Layer::layer(
        &tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash(),
        router(state),
    );
    axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
