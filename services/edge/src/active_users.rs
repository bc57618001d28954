//! Active users ("N people are viewing"): the routes of the WebSocket endpoint and the HTTP
//! fallback, and what they share. Tabs become `session_*` events in the log; the aggregator
//! counts sessions per customer and ticks the EMA; the [`MetricsHub`] brings the ticks back.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, header};
use axum::routing::{get, post};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{Any, CorsLayer};

use crate::beats::BeatBatcher;
use crate::metrics_hub::MetricsHub;
use crate::publisher::EventPublisher;
use crate::rate_limit::RateLimits;
use crate::{active_http, active_ws};

/// What the active-users handlers share.
pub(crate) struct ActiveUsersContext {
    pub(crate) publisher: EventPublisher,
    pub(crate) beats: BeatBatcher,
    /// How often the beat batch is appended.
    pub(crate) beat_flush: std::time::Duration,
    pub(crate) hub: Arc<MetricsHub>,
    pub(crate) limits: RateLimits,
    /// Time a WebSocket has to authenticate.
    pub(crate) auth_timeout: std::time::Duration,
    /// Closes the WebSockets (with 1001) when the edge shuts down.
    pub(crate) shutdown: CancellationToken,
}

/// `GET /ws/active-users`, `POST /presence/{join,beat,leave}`, `GET /metrics`.
///
/// The widget runs on customers' own sites, so the HTTP endpoints answer cross-origin
/// requests from any origin (no credentials are involved); the rate-limit headers are
/// readable by the page.
pub(crate) fn routes(cx: Arc<ActiveUsersContext>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .expose_headers([
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(3_600));
    let http = Router::new()
        .route("/presence/{action}", post(active_http::tab_event))
        .route("/metrics", get(active_http::metrics))
        .layer(cors);
    Router::new()
        .route("/ws/active-users", get(active_ws::upgrade))
        .merge(http)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(cx)
}
