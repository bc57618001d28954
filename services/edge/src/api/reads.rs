//! Reads: one user's presence, many at once, and a paged list of who is online, all as the
//! caller may see them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use presence_events::UserId;
use presence_events::api_input::parse_batch;
use serde::{Deserialize, Serialize};

use super::{ApiContext, MAX_USERS, api_body, user_id};
use crate::http_error::{ApiError, ApiResult};
use crate::openapi::{ApiErrorBody, UserIdText};
use crate::wire::PresenceUpdate;
use utoipa::{IntoParams, ToSchema};

/// `GET /api/presence/{userId}`.
#[utoipa::path(
    get,
    path = "/api/presence/{userId}",
    tag = "presence",
    summary = "One user's presence, as the caller may see it",
    description = "A user the caller may not see, or never seen, reads as offline with \
        `lastSeen: null`: the answer cannot tell the two apart.",
    params(("userId" = UserIdText, Path, description = "The user")),
    responses(
        (status = 200, description = "The presence", body = PresenceUpdate),
        (status = 400, description = "Not a user id", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_presence(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> ApiResult<PresenceUpdate> {
    let caller = cx.auth.caller(&headers)?;
    let user = user_id(user, "userId")?;
    let mut answer = cx.presence_of(&caller, vec![user]).await;
    answer
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no answer"))
}

/// Users to read at once, as described to integrators; parsed by
/// `presence_events::api_input::parse_batch`, which says what was wrong.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"userIds": ["ayse", "mehmet"]}))]
#[allow(dead_code)]
pub(crate) struct BatchRequest {
    /// At most 500.
    #[serde(rename = "userIds")]
    #[schema(max_items = 500, value_type = Vec<UserIdText>)]
    user_ids: Vec<String>,
}

/// Presences, in the order asked.
#[derive(Serialize, ToSchema)]
pub(crate) struct Presences {
    presence: Vec<PresenceUpdate>,
}

/// `POST /api/presence/batch {userIds}`.
#[utoipa::path(
    post,
    path = "/api/presence/batch",
    tag = "presence",
    summary = "Many users' presence at once (at most 500)",
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Their presence, in the order asked", body = Presences),
        (status = 400, description = "Not `{userIds: [...]}`, over 500, or an id that is not a user id", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn batch(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Presences> {
    let caller = cx.auth.caller(&headers)?;
    let users = api_body(body, r#"{"userIds": [...]}"#, |v| {
        parse_batch(v, cx.max_batch)
    })?;
    Ok(Json(Presences {
        presence: cx.presence_of(&caller, users).await,
    }))
}

/// A page of `GET /api/presence/online`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Users per page, 1 to 500 (50 if not given).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[param(value_type = Option<UserIdText>)]
    after: Option<String>,
}

/// Online users, by user id.
#[derive(Serialize, ToSchema)]
pub(crate) struct OnlinePage {
    users: Vec<PresenceUpdate>,
    /// Pass as `after` for the next page; `null` on the last one.
    #[schema(value_type = Option<String>, required = true)]
    next: Option<UserId>,
}

/// `GET /api/presence/online?limit=&after=`: online users the caller may see, by user id.
#[utoipa::path(
    get,
    path = "/api/presence/online",
    tag = "presence",
    summary = "Who is online, as the caller may see it, a page at a time by user id",
    params(PageQuery),
    responses(
        (status = 200, description = "A page", body = OnlinePage),
        (status = 400, description = "`limit` out of range or `after` not a user id", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn online(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<OnlinePage> {
    let caller = cx.auth.caller(&headers)?;
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=MAX_USERS).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_USERS}"
        )));
    }
    let after = page.after.map(|a| user_id(a, "after")).transpose()?;
    let (policy, viewer) = cx.sight(&caller);
    let users = cx
        .view
        .online_visible(&policy, &viewer, &caller.tenant, after.as_ref(), limit + 1);
    let (users, next) = if users.len() > limit {
        let page: Vec<PresenceUpdate> = users.into_iter().take(limit).collect();
        let next = page.last().map(|p| p.user_id.clone());
        (page, next)
    } else {
        (users, None)
    };
    Ok(Json(OnlinePage { users, next }))
}
