//! Reads: one user's presence, many at once, and a paged list of who is online, all as the
//! caller may see them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use presence_events::UserId;
use serde::{Deserialize, Serialize};

use super::{ApiContext, MAX_USERS, user_id};
use crate::http_error::{ApiError, ApiResult};
use crate::wire::PresenceUpdate;

/// `GET /api/presence/{userId}`.
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

#[derive(Deserialize)]
pub(crate) struct BatchRequest {
    #[serde(rename = "userIds")]
    user_ids: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct Presences {
    presence: Vec<PresenceUpdate>,
}

/// `POST /api/presence/batch {userIds}`.
pub(crate) async fn batch(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    body: Result<Json<BatchRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Presences> {
    let caller = cx.auth.caller(&headers)?;
    let Json(request) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"userIds\": [...]}}: {}",
            e.body_text()
        ))
    })?;
    if request.user_ids.len() > MAX_USERS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_USERS} userIds per call, got {}",
            request.user_ids.len()
        )));
    }
    let users = request
        .user_ids
        .into_iter()
        .enumerate()
        .map(|(i, raw)| user_id(raw, &format!("userIds[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Presences {
        presence: cx.presence_of(&caller, users).await,
    }))
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct OnlinePage {
    users: Vec<PresenceUpdate>,
    /// Pass as `after` for the next page; `null` on the last one.
    next: Option<UserId>,
}

/// `GET /api/presence/online?limit=&after=`: online users the caller may see, by user id.
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
