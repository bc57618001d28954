//! Service-role writes: a connected user's status (`live` with details, `in_call`, `online`)
//! and a user's directory entry.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use presence_events::{Details, EventBody, SetStatus, ViewerClass};
use presence_store::UserRecord;
use serde::{Deserialize, Serialize};

use super::{ApiContext, user_id};
use crate::http_error::{ApiError, ApiResult};

#[derive(Deserialize)]
pub(crate) struct StatusRequest {
    status: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

#[derive(Serialize)]
pub(crate) struct Ok {
    ok: bool,
}

/// `PUT /api/presence/{userId}/status` (service role): sets a connected user's status.
pub(crate) async fn set_status(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Result<Json<StatusRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Ok> {
    let caller = cx.auth.service(&headers)?;
    let user = user_id(user, "userId")?;
    let Json(request) = body.map_err(|e| ApiError::bad_request(format!("expected {{\"status\": \"live\" | \"in_call\" | \"online\", \"details\"?: {{...}}}}: {}", e.body_text())))?;
    let status =
        SetStatus::parse(&request.status).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let details = match request.details {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            Some(Details::parse(v).map_err(|e| ApiError::bad_request(format!("details: {e}")))?)
        }
    };
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
    Ok(Json(Ok { ok: true }))
}

#[derive(Deserialize)]
pub(crate) struct UserRequest {
    username: Option<String>,
    gender: Option<String>,
}

/// `PUT /api/users/{userId}` (service role): creates or updates a directory entry.
pub(crate) async fn put_user(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Result<Json<UserRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Ok> {
    let caller = cx.auth.service(&headers)?;
    let user = user_id(user, "userId")?;
    let Json(request) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"username\"?, \"gender\"?}}: {}",
            e.body_text()
        ))
    })?;
    if request
        .username
        .as_ref()
        .is_some_and(|n| n.chars().count() > 100 || n.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "username: at most 100 characters, no NUL",
        ));
    }
    let record = UserRecord {
        tenant: caller.tenant,
        user,
        username: request.username,
        class: ViewerClass::from_gender(request.gender.as_deref()).to_string(),
    };
    cx.store()?.upsert_users(&[record]).await.map_err(|e| {
        tracing::warn!(error = %e, "directory write failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "directory unavailable right now; retry",
        )
    })?;
    Ok(Json(Ok { ok: true }))
}
