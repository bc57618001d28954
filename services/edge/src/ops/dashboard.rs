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
use serde::Serialize;
use tokio::sync::broadcast;

use super::OpsContext;
use crate::active_users::CustomerHistory;
use crate::http_error::ApiError;
use crate::wire::TenantPresence;

/// Online users sent in a snapshot; the page says when there are more.
const SNAPSHOT_USERS: usize = 1_000;

static PAGE: &str = include_str!("dashboard.html");

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    node: String,
    customers: Vec<CustomerHistory>,
    online_count: usize,
    /// The first [`SNAPSHOT_USERS`] online users, by tenant and user id.
    users: Vec<TenantPresence>,
}

/// `GET /dashboard`.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "operations",
    summary = "The live dashboard page",
    description = "A self-contained page reading `/api/dashboard/stream` (it asks for a service \
        token outside development).",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
pub(super) async fn page() -> Response {
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
#[utoipa::path(
    get,
    path = "/api/dashboard/stream",
    tag = "operations",
    summary = "Server-Sent Events of this edge: a snapshot, then every tick and change (operators)",
    description = "Events: `snapshot` (every customer's recent counts and EMAs, the online \
        users), then `metrics` (a customer's tick, as `GET /metrics` answers it) and `presence` \
        (a user's change, with its tenant) as they reach this edge. The stream does not end \
        until the client or the edge closes it.",
    responses(
        (status = 200, description = "The stream", body = String, content_type = "text/event-stream"),
    )
)]
pub(super) async fn stream(
    State(cx): State<Arc<OpsContext>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    cx.auth.operator(&headers)?;
    metrics::counter!("presence_dashboard_streams_total").increment(1);
    // Subscribed before the snapshot is taken, so nothing falls between the two; what is in
    // both is applied twice, to the same effect.
    let announcements = cx.announcements.watch();
    let snapshot = snapshot(&cx);
    let first = futures::stream::once(async move { Ok(snapshot) });
    let live = futures::stream::unfold(announcements, |mut announcements| async move {
        let event = match announcements.recv().await {
            Ok(a) => Event::default().event(a.kind).data(&*a.json),
            // The page reconnects and starts over from a snapshot.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), announcements))
    });
    let stream = first
        .chain(live)
        .take_until(cx.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn snapshot(cx: &OpsContext) -> Event {
    let (online_count, users) = cx.presence.view.online_page(SNAPSHOT_USERS);
    let snapshot = Snapshot {
        node: cx.node.to_string(),
        customers: cx.hub.histories(),
        online_count,
        users,
    };
    match Event::default().event("snapshot").json_data(&snapshot) {
        Ok(event) => event,
        Err(e) => {
            metrics::counter!("presence_encode_failures_total", "what" => "dashboard").increment(1);
            tracing::error!(error = %e, "cannot encode a dashboard snapshot");
            Event::default().event("error").data("snapshot unavailable")
        }
    }
}
