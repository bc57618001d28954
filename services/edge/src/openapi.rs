//! The OpenAPI 3.1 description of an edge's HTTP endpoints, served at `GET /api/openapi.json`.
//! Each concern describes its own handlers (`active_users::openapi`, `api::openapi`,
//! `ops::openapi`) from the handlers' request and answer types; this module joins them, adds
//! the auth scheme and the shapes they share, and marks the operators' endpoints as open or
//! not depending on the environment (open in development, service role otherwise).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use presence_config::Environment;
use presence_events::UserId;

pub(crate) use crate::http_error::ErrorBody as ApiErrorBody;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, ObjectBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder,
    Schema, Type,
};
use utoipa::{OpenApi, ToSchema};

/// The name of the auth scheme in the description: `Authorization: Bearer <JWT>`.
pub(crate) const BEARER: &str = "bearer";

/// A user's presence status as answered (`status` of a presence).
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // described (and checked against the wire names), never built
pub(crate) enum StatusName {
    Online,
    Offline,
    Live,
    InCall,
}

/// A status a service may set: a user goes `offline` by disconnecting, never by a call.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // described (and checked against the parser), never built
pub(crate) enum SettableStatus {
    Online,
    Live,
    InCall,
}

/// A user id as described: the JWT's `sub`, 1 to 128 bytes of UTF-8, no control characters
/// (`presence_events::UserId`).
pub(crate) struct UserIdText;

impl utoipa::PartialSchema for UserIdText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A user: the `sub` of its JWT; 1 to 128 bytes of UTF-8, no control characters",
            ))
            .min_length(Some(1))
            .max_length(Some(UserId::MAX_LEN))
            .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]+$"))
            .into()
    }
}

impl ToSchema for UserIdText {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Presence",
        description = "Who is online (and whether live or in a call) and how many people are on \
            each customer's site. Socket.io (`/socket.io/`) and the active-users WebSocket carry \
            the realtime side, see docs/socketio.md and docs/active-users.md; this describes the \
            HTTP endpoints of an edge. Tokens are JWTs (HS256 or RS256, `sub` the user, `role: \
            \"service\"` for application backends).",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(openapi_json),
    components(schemas(StatusName, SettableStatus, UserIdText)),
    tags(
        (name = "active-users", description = "The \"N people are viewing\" widget's HTTP fallback and WebSocket"),
        (name = "presence", description = "Presence for application backends, as the caller may see it"),
        (name = "directory", description = "Usernames: search with presence, service writes"),
        (name = "operations", description = "Health, consistency check, debug views, dashboard"),
    )
)]
struct Root;

/// The description, for `environment`: the operators' endpoints need a service token unless
/// it is development.
pub(crate) fn document(environment: Environment) -> Document {
    let mut doc = Root::openapi();
    doc.merge(crate::active_users::openapi());
    doc.merge(crate::api::openapi());
    doc.merge(crate::ops::openapi(environment));
    // Every call that takes a token may be refused for it.
    for item in doc.paths.paths.values_mut() {
        for op in [item.get.as_mut(), item.post.as_mut(), item.put.as_mut()]
            .into_iter()
            .flatten()
        {
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                refusal(
                    op,
                    "401",
                    "No valid token (missing, expired, wrong signature, issuer or audience)",
                );
                refusal(
                    op,
                    "503",
                    "Token authentication is not configured on this edge",
                );
            }
        }
    }
    let components = doc.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT signed with the configured key (JWT_SECRET or JWT_PUBLIC_KEY_FILE / \
                     JWT_KEYS_FILE): `sub` the user, `role: \"service\"` for calls that need a \
                     service",
                ))
                .build(),
        ),
    );
    doc
}

/// Adds the answer `status` (an [`ApiErrorBody`]) to `op`, unless it already has one.
pub(crate) fn refusal(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ApiErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        });
}

/// Who may call an operator's endpoint in `environment`: anyone in development (the empty
/// requirement), a service token otherwise.
pub(crate) fn operator_security(environment: Environment) -> Vec<SecurityRequirement> {
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    if environment == Environment::Development {
        vec![SecurityRequirement::default(), bearer]
    } else {
        vec![bearer]
    }
}

/// The encoded description, built once at start.
#[derive(Clone)]
pub(crate) struct Served(Arc<str>);

impl Served {
    pub(crate) fn new(environment: Environment) -> Result<Self, serde_json::Error> {
        Ok(Self(document(environment).to_json()?.into()))
    }
}

/// This description.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 description", body = Object))
)]
pub(crate) async fn openapi_json(State(served): State<Served>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        served.0.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use presence_events::Status;

    use super::*;

    #[test]
    fn the_status_names_are_the_wire_names() {
        fn described<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).expect("a unit variant encodes")
        }
        for (status, name) in [
            (Status::Online, StatusName::Online),
            (Status::Offline, StatusName::Offline),
            (Status::Live, StatusName::Live),
            (Status::InCall, StatusName::InCall),
        ] {
            assert_eq!(described(&name), format!("\"{}\"", status.as_str()));
        }
        for (status, name) in [
            ("online", SettableStatus::Online),
            ("live", SettableStatus::Live),
            ("in_call", SettableStatus::InCall),
        ] {
            assert!(presence_events::SetStatus::parse(status).is_ok());
            assert_eq!(described(&name), format!("\"{status}\""));
        }
    }

    #[test]
    fn every_route_of_the_edge_is_described_and_the_operators_need_a_token_in_production() {
        let doc = document(Environment::Production);
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        for path in [
            "/presence/{action}",
            "/metrics",
            "/ws/active-users",
            "/api/presence/online",
            "/api/presence/batch",
            "/api/presence/{userId}",
            "/api/presence/{userId}/status",
            "/api/users/search",
            "/api/users/{userId}",
            "/api/health",
            "/api/check-online-status",
            "/api/debug/presence",
            "/api/debug/socket-status",
            "/dashboard",
            "/api/dashboard/stream",
            "/api/openapi.json",
        ] {
            assert!(paths.contains(&path), "{path} is not described: {paths:?}");
        }
        let json = serde_json::to_value(&doc).expect("encodes");
        assert_eq!(json["openapi"], "3.1.0");
        let security = |env, path: &str| {
            let doc = serde_json::to_value(document(env)).expect("encodes");
            doc["paths"][path]["get"]["security"].clone()
        };
        assert_eq!(
            security(Environment::Production, "/api/debug/presence"),
            serde_json::json!([{ "bearer": [] }])
        );
        assert_eq!(
            security(Environment::Development, "/api/debug/presence"),
            serde_json::json!([{}, { "bearer": [] }])
        );
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
        // Every call that takes a token says how it is refused for it; the open ones do not.
        for (path, method) in [
            ("/api/presence/{userId}", "get"),
            ("/api/users/{userId}", "put"),
            ("/api/debug/presence", "get"),
        ] {
            let answers = &json["paths"][path][method]["responses"];
            assert!(
                answers["401"].is_object() && answers["503"].is_object(),
                "{path}"
            );
        }
        assert!(json["paths"]["/api/debug/presence"]["get"]["responses"]["403"].is_object());
        assert!(json["paths"]["/api/health"]["get"]["responses"]["401"].is_null());
    }
}
