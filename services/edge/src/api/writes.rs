//! Service-role writes: a connected user's status (`live` with details, `in_call`, `online`)
//! and a user's directory entry.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use presence_events::EventBody;
use presence_events::api_input::{StatusWrite, parse_directory_entry, parse_status_write};
use presence_store::UserRecord;
use serde::{Deserialize, Serialize};

use super::{ApiContext, api_body, user_id};
use crate::http_error::{ApiError, ApiResult};
use crate::openapi::{ApiErrorBody, SettableStatus, UserIdText};
use utoipa::ToSchema;

/// A status to set, as described to integrators; parsed by
/// `presence_events::api_input::parse_status_write`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"status": "live", "details": {"title": "Evening stream"}}))]
#[allow(dead_code)]
pub(crate) struct StatusRequest {
    #[schema(value_type = SettableStatus)]
    status: String,
    /// Forwarded as given with the status (a JSON object, at most 4 KiB encoded).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
}

/// The write was taken.
#[derive(Serialize, ToSchema)]
pub(crate) struct Saved {
    /// Always `true`.
    ok: bool,
}

/// `PUT /api/presence/{userId}/status` (service role): sets a connected user's status.
#[utoipa::path(
    put,
    path = "/api/presence/{userId}/status",
    tag = "presence",
    summary = "Sets a connected user's status (service role)",
    description = "`live` or `in_call` (with details) or back to `online`; the change reaches \
        everyone allowed to see the user. A user goes offline by disconnecting, never by a call.",
    params(("userId" = UserIdText, Path, description = "The user")),
    request_body(content = StatusRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Appended to the log", body = Saved),
        (status = 400, description = "Not a status a service may set, or details that are not an object within 4 KiB", body = ApiErrorBody),
        (status = 403, description = "Not a service-role token", body = ApiErrorBody),
        (status = 409, description = "The user is offline", body = ApiErrorBody),
        (status = 503, description = "The log did not take it: retry", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_status(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Saved> {
    let caller = cx.auth.service(&headers)?;
    let user = user_id(user, "userId")?;
    let StatusWrite { status, details } = api_body(
        body,
        r#"{"status": "live" | "in_call" | "online", "details"?: {...}}"#,
        parse_status_write,
    )?;
    if !cx.view.is_online(&caller.tenant, &user) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{user} is offline: a status applies to connected users"),
        ));
    }
    cx.publisher
        .publish(EventBody::ServiceStatus {
            tenant: caller.tenant,
            user,
            status,
            details,
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not append a service status");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "status not saved: presence is unavailable right now; retry",
            )
        })?;
    Ok(Json(Saved { ok: true }))
}

/// A directory entry, as described to integrators; parsed by
/// `presence_events::api_input::parse_directory_entry`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"username": "ayse", "gender": "female"}))]
#[allow(dead_code)]
pub(crate) struct UserRequest {
    /// What search finds: at most 100 characters, no NUL.
    #[schema(max_length = 100, pattern = r"^[^\u0000]*$")]
    username: Option<String>,
    /// Decides the user's visibility class (`male`, `female`; anything else is `other`).
    gender: Option<String>,
}

/// `PUT /api/users/{userId}` (service role): creates or updates a directory entry.
#[utoipa::path(
    put,
    path = "/api/users/{userId}",
    tag = "directory",
    summary = "Creates or updates a user's directory entry (service role)",
    description = "Needs the database (`DATABASE_URL` on the edge).",
    params(("userId" = UserIdText, Path, description = "The user")),
    request_body(content = UserRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = Saved),
        (status = 400, description = "Not `{username?, gender?}`, or a username over 100 characters or with NUL", body = ApiErrorBody),
        (status = 403, description = "Not a service-role token", body = ApiErrorBody),
        (status = 503, description = "No database, or it did not answer: retry", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_user(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Saved> {
    let caller = cx.auth.service(&headers)?;
    let user = user_id(user, "userId")?;
    let entry = api_body(body, r#"{"username"?, "gender"?}"#, parse_directory_entry)?;
    let record = UserRecord {
        tenant: caller.tenant,
        user,
        username: entry.username,
        class: entry.class.to_string(),
    };
    cx.store()?.upsert_users(&[record]).await.map_err(|e| {
        tracing::warn!(error = %e, "directory write failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "directory unavailable right now; retry",
        )
    })?;
    Ok(Json(Saved { ok: true }))
}
