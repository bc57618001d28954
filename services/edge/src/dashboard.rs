//! The live dashboard: `GET /dashboard`, one self-contained page, and the Server-Sent Events
//! stream it reads, `GET /api/dashboard/stream`: first a `snapshot` (every customer's recent
//! count and EMA, the online users with their statuses), then every `metrics` tick and
//! every `presence` change as they reach this edge. Nothing is encoded for the dashboard
//! while nobody watches.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures::{Stream, StreamExt};
use presence_events::{Details, PresenceChange, Status, TenantId, UserId, format_rfc3339};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::active_protocol::MetricsData;
use crate::api::{ApiContext, ApiError};
use crate::metrics_hub::{CustomerHistory, MetricsHub};

/// Online users sent in a snapshot; the page says when there are more.
const SNAPSHOT_USERS: usize = 1_000;

static PAGE: &str = include_str!("dashboard.html");

/// Everything a watching dashboard is told, encoded once for all of them.
pub(crate) struct DashboardFeed {
    tx: broadcast::Sender<(&'static str, Arc<str>)>,
}

impl Default for DashboardFeed {
    fn default() -> Self {
        // A dashboard that falls this far behind starts over from a snapshot.
        Self {
            tx: broadcast::channel(1_024).0,
        }
    }
}

impl DashboardFeed {
    fn send<T: Serialize>(&self, kind: &'static str, value: &T) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        match serde_json::to_string(value) {
            Ok(json) => {
                let _ = self.tx.send((kind, json.into()));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a dashboard event"),
        }
    }

    /// A customer's metrics ticked.
    pub(crate) fn metrics(&self, data: &MetricsData) {
        self.send("metrics", data);
    }

    /// A user's presence changed.
    pub(crate) fn presence(&self, change: &PresenceChange) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        self.send(
            "presence",
            &DashboardUser {
                tenant: change.tenant.clone(),
                user_id: change.user.clone(),
                status: change.status,
                online: change.online,
                last_seen: change.last_seen.map(format_rfc3339),
                details: change.details.clone(),
            },
        );
    }
}

/// One user as the dashboard lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DashboardUser {
    pub(crate) tenant: TenantId,
    pub(crate) user_id: UserId,
    pub(crate) status: Status,
    pub(crate) online: bool,
    pub(crate) last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) details: Option<Details>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    node: String,
    customers: Vec<CustomerHistory>,
    online_count: usize,
    /// The first [`SNAPSHOT_USERS`] online users, by tenant and user id.
    users: Vec<DashboardUser>,
}

/// What the dashboard stream needs.
pub(crate) struct DashboardContext {
    pub(crate) api: Arc<ApiContext>,
    pub(crate) hub: Arc<MetricsHub>,
    pub(crate) feed: Arc<DashboardFeed>,
    pub(crate) shutdown: CancellationToken,
}

/// `GET /dashboard`.
pub(crate) async fn page() -> Response {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
        )],
        Html(PAGE),
    )
        .into_response()
}

/// `GET /api/dashboard/stream`: operators only outside development (`Authorization: Bearer`
/// with a service-role token), like the debug endpoints.
pub(crate) async fn stream(
    State(cx): State<Arc<DashboardContext>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    cx.api.operator(&headers)?;
    metrics::counter!("presence_dashboard_streams_total").increment(1);
    // Subscribed before the snapshot is taken, so nothing falls between the two; what is in
    // both is applied twice, to the same effect.
    let updates = cx.feed.tx.subscribe();
    let snapshot = snapshot(&cx);
    let first = futures::stream::once(async move { Ok(snapshot) });
    let live = futures::stream::unfold(updates, |mut updates| async move {
        let event = match updates.recv().await {
            Ok((kind, data)) => Event::default().event(kind).data(&*data),
            // The page reconnects and starts over from a snapshot.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), updates))
    });
    let stream = first
        .chain(live)
        .take_until(cx.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn snapshot(cx: &DashboardContext) -> Event {
    let (online_count, users) = cx.api.view.online_page(SNAPSHOT_USERS);
    let snapshot = Snapshot {
        node: cx.api.node.to_string(),
        customers: cx.hub.histories(),
        online_count,
        users,
    };
    match serde_json::to_string(&snapshot) {
        Ok(json) => Event::default().event("snapshot").data(json),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a dashboard snapshot");
            Event::default().event("error").data("snapshot unavailable")
        }
    }
}
