//! Errors as StackStorm's API reports them: a status and `{"faultstring"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use squall_reactor::{DispatchError, RuleChangeError};

/// An error for the HTTP client: a status and a message it can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal server error (see the server's log)".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (
            status,
            Json(json!({ "faultstring": self.public_message() })),
        )
            .into_response()
    }
}

impl From<squall_store::Error> for ApiError {
    fn from(e: squall_store::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<squall_store::AccountError> for ApiError {
    fn from(e: squall_store::AccountError) -> Self {
        use squall_store::AccountError as E;
        match e {
            E::Store(e) => e.into(),
            E::UnknownTenant(_) => Self::NotFound(e.to_string()),
            E::Exists { .. } | E::OtherTenant { .. } => Self::Conflict(e.to_string()),
        }
    }
}

impl From<squall_reactor::InstallError> for ApiError {
    fn from(e: squall_reactor::InstallError) -> Self {
        use squall_reactor::{BuildError, InstallError as E};
        match &e {
            E::TooLarge { .. } | E::TooManyEntries { .. } => Self::PayloadTooLarge(e.to_string()),
            E::Fixed(_) => Self::Conflict(e.to_string()),
            E::NotInstalled(_) => Self::NotFound(e.to_string()),
            E::Quota { .. } => Self::TooManyRequests(e.to_string()),
            E::NoPackDir => Self::Unavailable(e.to_string()),
            E::Io { .. } | E::Build(BuildError::Server(_)) => Self::Internal(e.to_string()),
            E::Build(BuildError::Cancelled) => Self::Unavailable(e.to_string()),
            E::Activation(RuleChangeError::Store(_)) => Self::Internal(e.to_string()),
            _ => Self::BadRequest(e.to_string()),
        }
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::UnknownTriggerType(_) => Self::NotFound(e.to_string()),
            DispatchError::Invalid { .. } => Self::BadRequest(e.to_string()),
            DispatchError::ShuttingDown => Self::Unavailable(e.to_string()),
            DispatchError::Store(e) => e.into(),
        }
    }
}

impl From<RuleChangeError> for ApiError {
    fn from(e: RuleChangeError) -> Self {
        match &e {
            RuleChangeError::Store(_) => Self::Internal(e.to_string()),
            RuleChangeError::Exists { .. } => Self::Conflict(e.to_string()),
            RuleChangeError::NotFound { .. } => Self::NotFound(e.to_string()),
            _ => Self::BadRequest(e.to_string()),
        }
    }
}

/// `Query` whose rejection is a StackStorm-style error body.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        if parts.uri.query().is_some_and(has_encoded_nul) {
            return Err(ApiError::BadRequest(
                "the query holds a NUL character (%00), which Squall does not store".into(),
            ));
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Whether URL-encoded `text` encodes a NUL character.
pub(crate) fn has_encoded_nul(text: &str) -> bool {
    text.as_bytes().windows(3).any(|w| w == b"%00")
}

/// `Json` whose rejection is a StackStorm-style error body.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        if let Some(at) = nul_in(&value) {
            return Err(ApiError::BadRequest(format!(
                "{at} holds a NUL character (\\u0000), which Squall does not store"
            )));
        }
        serde_json::from_value::<T>(value)
            .map(ApiJson)
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "Failed to deserialize the JSON body into the target type: {e}"
                ))
            })
    }
}

/// Where `value` holds a NUL character, in a string or a key, named by its
/// path (`parameters.message`, `items[2]`); `None` when it holds none.
/// PostgreSQL stores no NUL in text, and no engine is told one.
pub(crate) fn nul_in(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &mut String) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.replace('\0', "\\u0000"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then(|| {
        if path.is_empty() {
            "the body".to_owned()
        } else {
            format!("field '{path}'")
        }
    })
}
