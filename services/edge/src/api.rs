//! The presence API for application backends (Bearer JWT, visibility applied to the caller):
//! one user's presence, many at once, a paged list of who is online, username search with
//! presence, and service-role calls that set a user's status or directory entry. Also the
//! operators' `check-online-status`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use presence_auth::{AuthError, Identity, Verifier};
use presence_config::Environment;
use presence_events::{Details, EventBody, SetStatus, UserId, ViewerClass};
use presence_store::{Store, UserRecord};
use serde::{Deserialize, Serialize};

use crate::publisher::EventPublisher;
use crate::view::{PresenceUpdate, PresenceView};
use crate::visibility::VisibilityPolicy;

/// Most users one batch or page may hold.
const MAX_USERS: usize = 500;
/// Longest search query, in characters.
const MAX_QUERY_CHARS: usize = 100;

/// What the API handlers share.
pub(crate) struct ApiContext {
    pub(crate) node: presence_events::NodeId,
    pub(crate) local: Arc<crate::socket::LocalConnections>,
    pub(crate) cluster: Arc<crate::cluster::ClusterFigures>,
    pub(crate) verifier: Option<Verifier>,
    pub(crate) environment: Environment,
    pub(crate) view: Arc<PresenceView>,
    pub(crate) policy: VisibilityPolicy,
    pub(crate) publisher: EventPublisher,
    pub(crate) store: Option<Store>,
}

/// An error answer: status and `{error, message}`.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        metrics::counter!("presence_api_rejected_total", "status" => status.as_str().to_owned())
            .increment(1);
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.status.canonical_reason().unwrap_or("Error");
        let body = Json(ErrorBody {
            error,
            message: &self.message,
        });
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

impl ApiContext {
    /// The caller named by the `Authorization: Bearer` token.
    fn caller(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    AuthError::Missing.to_string().replace(
                        "send auth { token: \"<JWT>\" }",
                        "send Authorization: Bearer <JWT>",
                    ),
                )
            })?;
        let verifier = self.verifier.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token authentication is not configured on this server",
            )
        })?;
        verifier
            .verify(token)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
    }

    fn service(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let caller = self.caller(headers)?;
        if !caller.service {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this call needs a service-role token (role: \"service\")",
            ));
        }
        Ok(caller)
    }

    /// Operators' endpoints: open in development, service role otherwise.
    pub(crate) fn operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.environment != Environment::Development {
            self.service(headers)?;
        }
        Ok(())
    }

    fn store(&self) -> Result<&Store, ApiError> {
        self.store.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this call needs the database: set DATABASE_URL on the edge",
            )
        })
    }

    /// What the caller may see: a service sees everyone, a person what its class may.
    fn sight(&self, caller: &Identity) -> (VisibilityPolicy, ViewerClass) {
        if caller.service {
            (VisibilityPolicy::everyone(), ViewerClass::other())
        } else {
            (self.policy.clone(), caller.class.clone())
        }
    }

    fn presence_of(&self, caller: &Identity, users: Vec<UserId>) -> Vec<PresenceUpdate> {
        let (policy, viewer) = self.sight(caller);
        self.view
            .presence_for(&policy, &viewer, &caller.tenant, users)
    }
}

fn user_id(raw: String, what: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

/// `GET /api/presence/{userId}`.
pub(crate) async fn get_presence(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> ApiResult<PresenceUpdate> {
    let caller = cx.caller(&headers)?;
    let user = user_id(user, "userId")?;
    let mut answer = cx.presence_of(&caller, vec![user]);
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
    let caller = cx.caller(&headers)?;
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
        presence: cx.presence_of(&caller, users),
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
    let caller = cx.caller(&headers)?;
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

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Found {
    user_id: UserId,
    username: Option<String>,
    presence: PresenceUpdate,
}

#[derive(Serialize)]
pub(crate) struct SearchResults {
    users: Vec<Found>,
}

/// `GET /api/users/search?q=`: users whose username contains `q`, literally.
pub(crate) async fn search(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<SearchResults> {
    let caller = cx.caller(&headers)?;
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
    let presence = cx.presence_of(&caller, visible.iter().map(|u| u.user.clone()).collect());
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
    let caller = cx.service(&headers)?;
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
    let caller = cx.service(&headers)?;
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Difference {
    tenant: String,
    user_id: String,
    live: Option<String>,
    database: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OnlineCheck {
    live_online: usize,
    database_online: usize,
    consistent: bool,
    differences: Vec<Difference>,
}

/// `GET /api/check-online-status`: the database projection against the live state. Open in
/// development, service role otherwise.
pub(crate) async fn check_online_status(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
) -> ApiResult<OnlineCheck> {
    cx.operator(&headers)?;
    let rows = cx.store()?.online_rows().await.map_err(|e| {
        tracing::warn!(error = %e, "reading the projection failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable right now; retry",
        )
    })?;
    let live: std::collections::BTreeMap<(String, String), String> = cx
        .view
        .online_users_with_status()
        .into_iter()
        .map(|(k, status)| {
            (
                (k.tenant.to_string(), k.user.to_string()),
                status.to_string(),
            )
        })
        .collect();
    let database: std::collections::BTreeMap<(String, String), String> = rows
        .into_iter()
        .map(|r| ((r.tenant.to_string(), r.user.to_string()), r.status))
        .collect();
    let keys: std::collections::BTreeSet<&(String, String)> =
        live.keys().chain(database.keys()).collect();
    let differences: Vec<Difference> = keys
        .into_iter()
        .filter(|k| live.get(*k) != database.get(*k))
        .map(|k| Difference {
            tenant: k.0.clone(),
            user_id: k.1.clone(),
            live: live.get(k).cloned(),
            database: database.get(k).cloned(),
        })
        .collect();
    Ok(Json(OnlineCheck {
        live_online: live.len(),
        database_online: database.len(),
        consistent: differences.is_empty(),
        differences,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DebugUser {
    tenant: String,
    user_id: String,
    status: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DebugPresence {
    cluster: Option<presence_events::ClusterStats>,
    online_count: usize,
    /// The first 1,000 online users, by tenant and id.
    online: Vec<DebugUser>,
}

/// `GET /api/debug/presence`: the cluster figures and who is online (operators).
pub(crate) async fn debug_presence(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
) -> ApiResult<DebugPresence> {
    cx.operator(&headers)?;
    let mut online = cx.view.online_users_with_status();
    online.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(DebugPresence {
        cluster: cx.cluster.latest(),
        online_count: online.len(),
        online: online
            .into_iter()
            .take(1_000)
            .map(|(k, status)| DebugUser {
                tenant: k.tenant.to_string(),
                user_id: k.user.to_string(),
                status: status.to_string(),
            })
            .collect(),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DebugSocket {
    tenant: String,
    user_id: String,
    connections: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DebugSockets {
    node: String,
    connected: usize,
    connected_users: usize,
    /// The first 1,000 users connected to this edge.
    users: Vec<DebugSocket>,
}

/// `GET /api/debug/socket-status`: the Socket.io connections of this edge (operators).
pub(crate) async fn debug_socket_status(
    State(cx): State<Arc<ApiContext>>,
    headers: HeaderMap,
) -> ApiResult<DebugSockets> {
    cx.operator(&headers)?;
    let (connected, connected_users) = cx.local.counts();
    let mut users = cx.local.users();
    users.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(DebugSockets {
        node: cx.node.to_string(),
        connected,
        connected_users,
        users: users
            .into_iter()
            .take(1_000)
            .map(|(k, n)| DebugSocket {
                tenant: k.tenant.to_string(),
                user_id: k.user.to_string(),
                connections: n,
            })
            .collect(),
    }))
}
