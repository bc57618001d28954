//! What operators read from an edge: `/api/health` ([`health`], with the cluster figures the
//! aggregator publishes, [`cluster`]), the debug views and the consistency check ([`debug`]),
//! and the live [`dashboard`]. Everything but the health and the dashboard page is open in
//! development only, service role otherwise.

mod cluster;
mod dashboard;
mod debug;
mod health;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use presence_events::{ClusterStats, NodeId, Subjects};
use presence_log::{EventLog, LatestFeed};
use presence_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::active_users::MetricsHub;
use crate::http_auth::HttpAuth;
use crate::ingress::EventPublisher;
use crate::presence::Presence;
use crate::wire::Announcements;
use cluster::ClusterFigures;

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    health::health,
    debug::check_online_status,
    debug::debug_presence,
    debug::debug_socket_status,
    dashboard::page,
    dashboard::stream
))]
struct Described;

/// The description of the operators' endpoints in `environment` (who may call them): all
/// but the health and the dashboard page need a service token outside development.
pub(crate) fn openapi(environment: presence_config::Environment) -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = Described::openapi();
    for (path, item) in doc.paths.paths.iter_mut() {
        if path == "/api/health" || path == "/dashboard" {
            continue;
        }
        if let Some(op) = item.get.as_mut() {
            op.security = Some(crate::openapi::operator_security(environment));
            crate::openapi::refusal(op, "403", "Not a service-role token (outside development)");
        }
    }
    doc
}

/// What the operators' handlers read.
struct OpsContext {
    node: NodeId,
    auth: Arc<HttpAuth>,
    presence: Arc<Presence>,
    hub: Arc<MetricsHub>,
    announcements: Announcements,
    cluster: Arc<ClusterFigures>,
    /// How the log is partitioned: every partition should have figures.
    partitions: presence_events::Partitions,
    store: Option<Store>,
    /// Whether the log takes this edge's appends.
    publisher: EventPublisher,
    /// Ends the dashboard streams when the edge shuts down.
    shutdown: CancellationToken,
}

/// What the operators' endpoints are built from.
pub(crate) struct OpsSources {
    pub(crate) node: NodeId,
    pub(crate) auth: Arc<HttpAuth>,
    pub(crate) presence: Arc<Presence>,
    pub(crate) hub: Arc<MetricsHub>,
    /// What the dashboard streams.
    pub(crate) announcements: Announcements,
    pub(crate) store: Option<Store>,
    pub(crate) publisher: EventPublisher,
}

/// Starts following the cluster figures of `log` on `tasks`; returns the operators' routes.
pub(crate) fn start(
    sources: OpsSources,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Router {
    let cluster = Arc::new(ClusterFigures::default());
    let stats = LatestFeed::new("stats", subjects.stats_stream(), ClusterStats::decode);
    let taker = cluster.clone();
    tasks.spawn(stats.keep(log, shutdown.clone(), move |s| taker.update(s.value)));
    let cx = OpsContext {
        node: sources.node,
        auth: sources.auth,
        presence: sources.presence,
        hub: sources.hub,
        announcements: sources.announcements,
        cluster,
        partitions: subjects.partitions(),
        store: sources.store,
        publisher: sources.publisher,
        shutdown,
    };
    Router::new()
        .route("/api/health", get(health::health))
        .route("/api/check-online-status", get(debug::check_online_status))
        .route("/api/debug/presence", get(debug::debug_presence))
        .route("/api/debug/socket-status", get(debug::debug_socket_status))
        .route("/dashboard", get(dashboard::page))
        .route("/api/dashboard/stream", get(dashboard::stream))
        .with_state(Arc::new(cx))
}
