//! Active users ("N people are viewing"): the WebSocket endpoint and its HTTP fallback.
//! Tabs become `session_*` events in the log ([`protocol`] parses what they send, [`websocket`]
//! and [`http`] serve them, [`rate_limit`] keeps them in bounds); the aggregator counts
//! sessions per customer and ticks the EMA; the [`metrics_hub`] brings the ticks back to the
//! customers' sockets and to `GET /metrics`.

mod address_sessions;
mod http;
mod metrics_hub;
mod origins;
mod protocol;
mod rate_limit;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, header};
use axum::routing::{get, post};
use presence_events::EpochFence;
use presence_events::{Subjects, TenantMetrics};
use presence_log::{EventLog, LatestFeed};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;

use crate::ingress::{BeatBatcher, EventPublisher, Ingress};
use crate::wire::Announcements;

pub(crate) use metrics_hub::{CustomerHistory, MetricsHub};
pub use origins::{OriginPolicy, UnlistedOrigins};
pub(crate) use rate_limit::Proxies;
pub use rate_limit::RateLimitConfig;
use rate_limit::RateLimits;

/// How long an address holds a session it no longer shows (ms).
const ADDRESS_SESSION_TTL_MS: u64 = 180_000;

/// What the active-users handlers share.
struct ActiveUsersContext {
    publisher: EventPublisher,
    beats: BeatBatcher,
    /// How often the beat batch is appended.
    beat_flush: Duration,
    hub: Arc<MetricsHub>,
    limits: RateLimits,
    /// Which sites may call for which customer.
    origins: OriginPolicy,
    /// Sessions each address counts per customer.
    sessions: address_sessions::AddressSessions,
    /// Time a WebSocket has to authenticate.
    auth_timeout: Duration,
    /// Closes the WebSockets (with 1001) when the edge shuts down.
    shutdown: CancellationToken,
}

/// How active users are set up on this edge.
pub(crate) struct ActiveUsersSettings<'a> {
    pub(crate) limits: &'a RateLimitConfig,
    pub(crate) origins: OriginPolicy,
    /// Sessions one address may count per customer (0: no limit).
    pub(crate) sessions_per_address: u32,
    /// Time a WebSocket has to authenticate.
    pub(crate) auth_timeout: Duration,
    /// Told of every metrics tick.
    pub(crate) announcements: Announcements,
}

/// Active users, started: their routes, and the hub the operators' dashboard reads.
pub(crate) struct ActiveUsers {
    pub(crate) hub: Arc<MetricsHub>,
    cx: Arc<ActiveUsersContext>,
}

impl ActiveUsers {
    /// Starts following the metrics stream of `log`, and forgetting idle clients, on `tasks`.
    pub(crate) fn start(
        settings: ActiveUsersSettings<'_>,
        ingress: &Ingress,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let hub = Arc::new(MetricsHub::new(settings.announcements));
        let ticks = LatestFeed::new("metrics", subjects.metrics_stream(), TenantMetrics::decode);
        let taker = hub.clone();
        let partitions = subjects.partitions();
        let mut fence = EpochFence::default();
        tasks.spawn(ticks.keep(log, shutdown.clone(), move |t| {
            // A deposed aggregator's late figures are refused (see `EpochFence`).
            if fence.admit(partitions.of_tenant(&t.value.tenant), t.value.epoch) {
                taker.update(&t.value);
            } else {
                metrics::counter!("presence_feed_fenced_total", "feed" => "metrics").increment(1);
            }
        }));
        let cx = Arc::new(ActiveUsersContext {
            publisher: ingress.publisher.clone(),
            beats: ingress.beats.clone(),
            beat_flush: ingress.beat_flush,
            hub: hub.clone(),
            limits: RateLimits::new(settings.limits),
            origins: settings.origins,
            sessions: address_sessions::AddressSessions::new(
                settings.sessions_per_address,
                ADDRESS_SESSION_TTL_MS,
            ),
            auth_timeout: settings.auth_timeout,
            shutdown: shutdown.clone(),
        });
        tasks.spawn(forget_idle_clients(cx.clone(), shutdown));
        Self { hub, cx }
    }

    /// `GET /ws/active-users`, `POST /presence/{join,beat,leave}`, `GET /metrics`.
    ///
    /// The widget runs on customers' own sites, so the HTTP endpoints answer cross-origin
    /// requests, naming the asking origin (never `*`) when it may call for some customer
    /// (`PRESENCE_CUSTOMER_ORIGINS`; the handlers check it against the request's customer).
    /// No credentials are involved; the rate-limit headers are readable by the page.
    pub(crate) fn routes(&self) -> Router {
        let policy = self.cx.origins.clone();
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                origin.to_str().is_ok_and(|o| policy.may_ask(o))
            }))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE])
            .expose_headers([
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderName::from_static("x-ratelimit-reset"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(3_600));
        let fallback = Router::new()
            .route("/presence/{action}", post(http::tab_event))
            .route("/metrics", get(http::metrics))
            .layer(cors);
        Router::new()
            .route("/ws/active-users", get(websocket::upgrade))
            .merge(fallback)
            .layer(DefaultBodyLimit::max(64 * 1024))
            .with_state(self.cx.clone())
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(http::tab_event, http::metrics, websocket::upgrade))]
struct Described;

/// The description of the active-users endpoints, with the rate-limit headers of every
/// answer that went through the limiter.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{Object, RefOr, Type};
    let integer = |description: &str| {
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::Integer)))
                .description(Some(description))
                .build(),
        )
    };
    let mut doc = Described::openapi();
    for item in doc.paths.paths.values_mut() {
        for op in [item.get.as_mut(), item.post.as_mut()]
            .into_iter()
            .flatten()
        {
            for (status, answer) in &mut op.responses.responses {
                let RefOr::T(answer) = answer else { continue };
                // The upgrade, and an unknown action, are answered before the limiter.
                if matches!(status.as_str(), "101" | "404" | "426")
                    || op.operation_id.as_deref() == Some("upgrade")
                {
                    continue;
                }
                let headers = &mut answer.headers;
                headers.insert(
                    "X-RateLimit-Limit".into(),
                    integer("Requests allowed per minute to this client (IP address or customer, whichever blocks first)"),
                );
                headers.insert(
                    "X-RateLimit-Remaining".into(),
                    integer("Requests left in the current minute"),
                );
                headers.insert(
                    "X-RateLimit-Reset".into(),
                    integer("Seconds until the budget is full again"),
                );
                if matches!(status.as_str(), "429" | "503") {
                    headers.insert(
                        "Retry-After".into(),
                        integer("Seconds to wait before retrying"),
                    );
                }
            }
        }
    }
    doc
}

/// Keeps per-client and per-customer memory bounded: rate-limit keys idle for a full window
/// and customers nobody listens to (for ten minutes) are dropped.
async fn forget_idle_clients(cx: Arc<ActiveUsersContext>, shutdown: CancellationToken) {
    let mut timer = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {
                cx.limits.forget_idle();
                cx.sessions.forget_idle(presence_events::Millis::now());
                cx.hub.forget_idle(presence_events::Millis::now(), 600_000);
            }
        }
    }
}
