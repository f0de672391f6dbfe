//! Administration (the admin role only; the middleware refuses others
//! `/ui/admin`): tenants, and each tenant's API keys (create, with the
//! new key shown once; disable, enable; revoke), through the
//! `/api/v1/tenants` and `/api/v1/apikeys` handlers themselves; and each
//! tenant's users (set a role and a password), as `squall user set` does.

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::{UiError, Viewer, json_of, page, v};
use crate::AppState;
use crate::accounts::{KeyQuery, KeyUpdate, NewKey, NewTenant, Paging};
use crate::error::{ApiJson, ApiQuery};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/admin", get(overview))
        .route("/ui/admin/tenants", post(create_tenant))
        .route("/ui/admin/keys", post(create_key))
        .route("/ui/admin/keys/{id}/enabled", post(set_key_enabled))
        .route("/ui/admin/keys/{id}/revoke", post(revoke_key))
        .route("/ui/admin/users", post(set_user))
}

#[derive(Debug, Default, Deserialize)]
struct AdminQuery {
    /// Whose keys are shown: the viewer's tenant by default.
    #[serde(default)]
    tenant: String,
}

fn tenant_or_own(viewer: &Viewer, named: &str) -> String {
    if named.trim().is_empty() {
        viewer.tenant().as_str().to_owned()
    } else {
        named.trim().to_owned()
    }
}

/// `GET /ui/admin`.
async fn overview(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AdminQuery>,
) -> Result<Response, UiError> {
    render(
        &state,
        &viewer,
        &tenant_or_own(&viewer, &q.tenant),
        None,
        None,
        StatusCode::OK,
    )
    .await
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    tenant: &str,
    new_key: Option<Value>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let tenants = crate::accounts::list_tenants(
        State(state.clone()),
        ApiQuery(Paging {
            limit: Some(1000),
            offset: None,
        }),
    )
    .await?;
    let keys = crate::accounts::list_keys(
        State(state.clone()),
        viewer.caller(),
        ApiQuery(KeyQuery {
            tenant: Some(tenant.to_owned()),
            user: None,
            limit: Some(1000),
            offset: None,
        }),
    )
    .await;
    let (keys, error) = match keys {
        Ok(keys) => (json_of(keys).await?, error),
        Err(e) => (Value::Array(Vec::new()), error.or(Some(e.public_message()))),
    };
    let users = match squall_core::TenantId::new(tenant) {
        Ok(id) => crate::v1::read(state, move |s| s.users(&id)).await?,
        Err(_) => Vec::new(),
    };
    let mut response = page(
        Some(viewer),
        "admin.html",
        minijinja::context! {
            tenants => v(json_of(tenants).await?),
            users => v(users),
            tenant,
            keys => v(keys),
            new_key => v(new_key),
            error,
        },
    )?;
    *response.status_mut() = status;
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct TenantForm {
    name: String,
}

async fn create_tenant(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<TenantForm>,
) -> Result<Response, UiError> {
    let name = form.name.trim().to_owned();
    match crate::accounts::create_tenant(
        State(state.clone()),
        ApiJson(NewTenant { name: name.clone() }),
    )
    .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/ui/admin?tenant={name}")).into_response()),
        Err(e) => {
            let (message, status) = super::refusal(e)?;
            let own = viewer.tenant();
            render(&state, &viewer, own.as_str(), None, Some(message), status).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct KeyForm {
    tenant: String,
    user: String,
    role: String,
}

async fn create_key(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<KeyForm>,
) -> Result<Response, UiError> {
    let tenant = tenant_or_own(&viewer, &form.tenant);
    let role = match form.role.parse() {
        Ok(role) => role,
        Err(e) => {
            let message = format!("role: {e}");
            return render(
                &state,
                &viewer,
                &tenant,
                None,
                Some(message),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let made = crate::accounts::create_key(
        State(state.clone()),
        viewer.caller(),
        ApiJson(NewKey {
            user: Some(form.user.trim().to_owned()).filter(|u| !u.is_empty()),
            role: Some(role),
            tenant: Some(tenant.clone()),
            metadata: None,
        }),
    )
    .await;
    match made {
        // Shown this once: only its hash is kept.
        Ok(response) => {
            let key = json_of(response).await?;
            render(
                &state,
                &viewer,
                &tenant,
                Some(key),
                None,
                StatusCode::CREATED,
            )
            .await
        }
        Err(e) => {
            let (message, status) = super::refusal(e)?;
            render(&state, &viewer, &tenant, None, Some(message), status).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct KeyToggle {
    tenant: String,
    enabled: String,
}

async fn set_key_enabled(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<KeyToggle>,
) -> Result<Response, UiError> {
    let tenant = tenant_or_own(&viewer, &form.tenant);
    // The key's new shape is not shown: the page lists them all again.
    let _key = crate::accounts::update_key(
        State(state.clone()),
        viewer.caller(),
        Path(id),
        ApiJson(KeyUpdate {
            enabled: form.enabled == "true",
            tenant: Some(tenant.clone()),
        }),
    )
    .await?;
    Ok(Redirect::to(&format!("/ui/admin?tenant={tenant}")).into_response())
}

#[derive(Debug, Deserialize)]
struct KeyTenant {
    tenant: String,
}

async fn revoke_key(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<KeyTenant>,
) -> Result<Response, UiError> {
    let tenant = tenant_or_own(&viewer, &form.tenant);
    crate::accounts::delete_key(
        State(state.clone()),
        viewer.caller(),
        Path(id),
        ApiQuery(KeyQuery {
            tenant: Some(tenant.clone()),
            user: None,
            limit: None,
            offset: None,
        }),
    )
    .await?;
    Ok(Redirect::to(&format!("/ui/admin?tenant={tenant}")).into_response())
}

#[derive(Debug, Deserialize)]
struct UserForm {
    tenant: String,
    name: String,
    role: String,
    #[serde(default)]
    password: String,
}

/// `POST /ui/admin/users`: create a user of the tenant, or change its role
/// and (when given) its password; its sessions end.
async fn set_user(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<UserForm>,
) -> Result<Response, UiError> {
    let tenant = tenant_or_own(&viewer, &form.tenant);
    let refuse = |message: String| {
        render(
            &state,
            &viewer,
            &tenant,
            None,
            Some(message),
            StatusCode::BAD_REQUEST,
        )
    };
    let name = form.name.trim();
    if let Err(e) = squall_core::auth::check_user_name(name) {
        return refuse(format!("user name: {e}")).await;
    }
    let role = match form.role.parse() {
        Ok(role) => role,
        Err(e) => return refuse(format!("role: {e}")).await,
    };
    let id = match squall_core::TenantId::new(&tenant) {
        Ok(id) => id,
        Err(e) => return refuse(e.to_string()).await,
    };
    let password = Some(form.password.as_str()).filter(|p| !p.is_empty());
    match state
        .reactor
        .store()
        .put_user(&id, name, role, password)
        .await
    {
        Ok(()) => {
            // Its sessions end now, not when the cache would let them.
            state.auth.clear();
            Ok(Redirect::to(&format!("/ui/admin?tenant={tenant}")).into_response())
        }
        Err(e) => refuse(super::refusal(e.into())?.0).await,
    }
}
