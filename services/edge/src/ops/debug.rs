//! The operators' views of the live state: the database projection against it
//! (`check-online-status`), who is online (`debug/presence`) and this edge's sockets
//! (`debug/socket-status`). Open in development, service role otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;

use super::OpsContext;
use crate::http_error::{ApiError, ApiResult};
use crate::openapi::ApiErrorBody;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Difference {
    tenant: String,
    user_id: String,
    /// The status in the live state (`null`: offline there).
    #[schema(required = true)]
    live: Option<String>,
    /// The status in the database projection (`null`: offline there).
    #[schema(required = true)]
    database: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct OnlineCheck {
    live_online: usize,
    database_online: usize,
    consistent: bool,
    differences: Vec<Difference>,
}

/// `GET /api/check-online-status`: the database projection against the live state. Open in
/// development, service role otherwise.
#[utoipa::path(
    get,
    path = "/api/check-online-status",
    tag = "operations",
    summary = "The database projection against the live state (operators)",
    responses(
        (status = 200, description = "Who is online in each, and where they differ", body = OnlineCheck),
        (status = 503, description = "No database, or it did not answer", body = ApiErrorBody),
    )
)]
pub(super) async fn check_online_status(
    State(cx): State<Arc<OpsContext>>,
    headers: HeaderMap,
) -> ApiResult<OnlineCheck> {
    cx.auth.operator(&headers)?;
    let store = cx.store.as_ref().ok_or_else(ApiError::needs_database)?;
    let rows = store.online_rows().await.map_err(|e| {
        tracing::warn!(error = %e, "reading the projection failed");
        ApiError::unavailable("database unavailable right now; retry")
    })?;
    let live: BTreeMap<(String, String), String> = cx
        .presence
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
    let database: BTreeMap<(String, String), String> = rows
        .into_iter()
        .map(|r| ((r.tenant.to_string(), r.user.to_string()), r.status))
        .collect();
    let keys: BTreeSet<&(String, String)> = live.keys().chain(database.keys()).collect();
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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DebugUser {
    tenant: String,
    user_id: String,
    status: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DebugPresence {
    /// The newest figures of each partition (as in the stats stream, docs/events.md).
    #[schema(value_type = Vec<Object>)]
    cluster: Vec<presence_events::ClusterStats>,
    online_count: usize,
    /// The first 1,000 online users, by tenant and id.
    online: Vec<DebugUser>,
}

/// `GET /api/debug/presence`: the cluster figures and who is online (operators).
#[utoipa::path(
    get,
    path = "/api/debug/presence",
    tag = "operations",
    summary = "The partitions' figures and the first 1,000 online users (operators)",
    responses(
        (status = 200, description = "The live state", body = DebugPresence),
    )
)]
pub(super) async fn debug_presence(
    State(cx): State<Arc<OpsContext>>,
    headers: HeaderMap,
) -> ApiResult<DebugPresence> {
    cx.auth.operator(&headers)?;
    let mut online = cx.presence.view.online_users_with_status();
    online.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(DebugPresence {
        cluster: cx.cluster.partitions().into_values().collect(),
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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DebugSocket {
    tenant: String,
    user_id: String,
    connections: u32,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DebugSockets {
    node: String,
    connected: usize,
    connected_users: usize,
    /// The first 1,000 users connected to this edge.
    users: Vec<DebugSocket>,
}

/// `GET /api/debug/socket-status`: the Socket.io connections of this edge (operators).
#[utoipa::path(
    get,
    path = "/api/debug/socket-status",
    tag = "operations",
    summary = "This edge's Socket.io connections, by user (operators)",
    responses(
        (status = 200, description = "This edge's sockets", body = DebugSockets),
    )
)]
pub(super) async fn debug_socket_status(
    State(cx): State<Arc<OpsContext>>,
    headers: HeaderMap,
) -> ApiResult<DebugSockets> {
    cx.auth.operator(&headers)?;
    let (connected, connected_users) = cx.presence.local.counts();
    let mut users = cx.presence.local.users();
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
