//! Username search: users whose username contains `q`, matched literally (never as a
//! pattern), each with its presence; users the caller may not see are left out.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use presence_events::{UserId, ViewerClass};
use presence_store::UserRecord;
use serde::{Deserialize, Serialize};

use super::ApiContext;
use crate::http_error::{ApiError, ApiResult};
use crate::openapi::{ApiErrorBody, UserIdText};
use crate::wire::PresenceUpdate;
use utoipa::{IntoParams, ToSchema};

/// Longest search query, in characters.
const MAX_QUERY_CHARS: usize = 100;

/// The query of a search.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchQuery {
    /// Text to look for in usernames, matched literally (not as a pattern): 1 to 100
    /// characters, not only white space, no NUL.
    #[param(
        required = true,
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    q: Option<String>,
    /// Most users answered, 1 to 100 (20 if not given).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A user found, with its presence.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Found {
    #[schema(value_type = UserIdText)]
    user_id: UserId,
    /// `null` when the directory has none.
    #[schema(required = true)]
    username: Option<String>,
    presence: PresenceUpdate,
}

/// Users found, by username.
#[derive(Serialize, ToSchema)]
pub(crate) struct SearchResults {
    users: Vec<Found>,
}

/// `GET /api/users/search?q=`: users whose username contains `q`, literally.
#[utoipa::path(
    get,
    path = "/api/users/search",
    tag = "directory",
    summary = "Users whose username contains a text, with their presence",
    description = "Users the caller may not see are left out. Needs the database \
        (`DATABASE_URL` on the edge).",
    params(SearchQuery),
    responses(
        (status = 200, description = "The users found", body = SearchResults),
        (status = 400, description = "`q` missing, blank, too long or with NUL; `limit` out of range", body = ApiErrorBody),
        (status = 503, description = "No database, or it did not answer: retry", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<SearchResults> {
    let caller = cx.auth.caller(&headers)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let q = query.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(ApiError::bad_request(
            "q is required: the text to look for in usernames",
        ));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(format!(
            "q is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    if q.contains('\0') {
        return Err(ApiError::bad_request("q may not contain NUL characters"));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 100"));
    }
    let found = cx
        .store()?
        .search_users(&caller.tenant, &q, limit)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "user search failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "search is unavailable right now; retry",
            )
        })?;
    let (policy, viewer) = cx.sight(&caller);
    // Users the caller may not see are left out of the results altogether.
    let visible: Vec<UserRecord> = found
        .into_iter()
        .filter(|u| {
            ViewerClass::parse(u.class.clone()).is_ok_and(|class| policy.can_see(&viewer, &class))
        })
        .collect();
    let presence = cx
        .presence_of(&caller, visible.iter().map(|u| u.user.clone()).collect())
        .await;
    Ok(Json(SearchResults {
        users: visible
            .into_iter()
            .zip(presence)
            .map(|(u, presence)| Found {
                user_id: u.user,
                username: u.username,
                presence,
            })
            .collect(),
    }))
}
