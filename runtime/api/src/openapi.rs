//! The OpenAPI 3 document of the HTTP API, at `/api/v1/openapi.json`,
//! generated from the handlers' `#[utoipa::path]` attributes (their doc
//! comments become the descriptions).

use axum::Json;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Squall",
        description = "Event-driven automation with every action a WebAssembly component. StackStorm's /api/v1 dialect: lists are JSON arrays with X-Total-Count, errors are {\"faultstring\": ...}.",
    ),
    paths(
        crate::executions::list_executions,
        crate::executions::create_execution,
        crate::executions::get_execution,
        crate::executions::cancel_execution,
        crate::executions::re_run,
        crate::executions::output,
        crate::executions::list_policies,
        crate::executions::create_policy,
        crate::executions::get_policy,
        crate::executions::update_policy,
        crate::executions::delete_policy,
        crate::executions::list_actions,
        crate::executions::get_action,
        crate::executions::list_overview,
        crate::executions::get_overview,
        crate::executions::get_parameters,
        crate::executions::list_policy_types,
        crate::executions::get_policy_type,
        crate::keys::list_keys,
        crate::keys::get_key,
        crate::keys::put_key,
        crate::keys::delete_key,
        crate::packs::list_packs,
        crate::packs::upload,
        crate::packs::register,
        crate::packs::get_pack,
        crate::packs::uninstall,
        crate::packs::list_runners,
        crate::packs::get_runner,
        crate::configs::list_configs,
        crate::configs::get_config,
        crate::configs::put_config,
        crate::configs::delete_config,
        crate::configs::list_schemas,
        crate::configs::get_schema,
        crate::accounts::list_tenants,
        crate::accounts::create_tenant,
        crate::accounts::list_keys,
        crate::accounts::create_key,
        crate::accounts::get_key,
        crate::accounts::update_key,
        crate::accounts::delete_key,
        crate::sensors::list,
        crate::sensors::get_one,
        crate::sensors::update,
        crate::stream::stream,
        crate::stream::metrics,
        crate::v1::health,
        crate::auth::create_token,
        crate::v1::list_webhooks,
        crate::v1::webhook,
        crate::v1::get_webhook,
        crate::workflows::inspect,
        crate::inquiries::list_inquiries,
        crate::inquiries::get_inquiry,
        crate::inquiries::respond,
        crate::v1::list_rule_types,
        crate::v1::get_rule_type,
        crate::v1::list_trigger_types,
        crate::v1::get_trigger_type,
        crate::v1::list_triggers,
        crate::v1::list_trigger_instances,
        crate::v1::get_trigger_instance,
        crate::v1::re_emit,
        crate::v1::list_enforcements,
        crate::v1::get_enforcement,
        crate::v1::list_rules,
        crate::v1::create_rule,
        crate::v1::get_rule,
        crate::v1::update_rule,
        crate::v1::delete_rule,
        crate::v1::list_traces,
        crate::v1::get_trace
    ),
    modifiers(&Security),
    security(("api_key" = []), ("auth_token" = []), ("bearer" = []))
)]
pub(crate) struct ApiDoc;

/// What every endpoint may answer instead, each with StackStorm's error
/// body `{"faultstring": "..."}` naming the problem.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only documents responses; never built.
pub(crate) enum Faults {
    /// Bad request: the faultstring names the field and value.
    #[response(status = 400)]
    BadRequest,
    /// No valid API key or token.
    #[response(status = 401)]
    Unauthorized,
    /// The caller's role may not do this.
    #[response(status = 403)]
    Forbidden,
    /// Not found, or another tenant's.
    #[response(status = 404)]
    NotFound,
    /// Over a quota of the tenant.
    #[response(status = 429)]
    TooManyRequests,
}

/// How callers prove who they are.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("St2-Api-Key"))),
        );
        components.add_security_scheme(
            "auth_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        let doc = ApiDoc::openapi();
        let operations: usize = doc
            .paths
            .paths
            .values()
            .map(|item| {
                [&item.get, &item.post, &item.put, &item.delete]
                    .iter()
                    .filter(|o| o.is_some())
                    .count()
            })
            .sum();
        assert_eq!(operations, 73, "one operation per route");
        assert!(doc.paths.paths.contains_key("/api/v1/inquiries/{id}"));
        assert!(doc.paths.paths.contains_key("/api/v1/packs/register"));
        assert!(doc.paths.paths.contains_key("/api/v1/configs/{pack}"));
        assert!(doc.paths.paths.contains_key("/api/v1/workflows/inspect"));
        let upload = doc
            .paths
            .paths
            .get("/api/v1/packs/upload")
            .expect("documented");
        assert!(upload.post.is_some());
        let json = serde_json::to_value(&doc).expect("serializes");
        assert!(
            json["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3."))
        );
        assert!(json["components"]["securitySchemes"]["api_key"].is_object());
        let rules = &json["paths"]["/api/v1/rules/{ref}"]["put"];
        assert!(rules["responses"]["200"].is_object(), "{rules}");
        assert!(rules["responses"]["404"].is_object(), "{rules}");
        assert_eq!(rules["parameters"][0]["name"], "ref");
    }
}
