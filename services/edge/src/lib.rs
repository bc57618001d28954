//! The edge: terminates client connections (Socket.io, the active-users WebSocket and its
//! HTTP fallback) and turns them into events in the log; reads the presence changes and
//! customer metrics back and pushes them to the sockets allowed to see them. Edges hold connections only: any edge may take any client, and killing one loses no
//! state.

mod active_http;
mod active_protocol;
mod active_users;
mod active_ws;
mod api;
mod beats;
mod cluster;
mod dashboard;
mod directory;
mod fanout;
mod metrics_hub;
mod publisher;
mod rate_limit;
mod socket;
mod view;
pub mod visibility;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use presence_auth::{KeyError, Verifier};
use presence_config::{Environment, Secret};
use presence_events::{NodeId, Subjects};
use presence_log::EventLog;
use presence_store::Store;
use presence_telemetry::Readiness;
use serde::Serialize;
use socketioxide::SocketIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::active_users::ActiveUsersContext;
use crate::api::ApiContext;
use crate::beats::BeatBatcher;
use crate::cluster::ClusterFigures;
use crate::dashboard::{DashboardContext, DashboardFeed};
use crate::directory::Directory;
use crate::metrics_hub::MetricsHub;
use crate::publisher::EventPublisher;
pub use crate::rate_limit::RateLimitConfig;
use crate::rate_limit::RateLimits;
use crate::socket::{Authenticator, LocalConnections, SocketContext};
use crate::view::PresenceView;
use crate::visibility::VisibilityPolicy;

/// JWT signature algorithms accepted (one is pinned per deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC with `JWT_SECRET`.
    #[value(name = "HS256")]
    Hs256,
    /// RSA with the public key in `JWT_PUBLIC_KEY_FILE`.
    #[value(name = "RS256")]
    Rs256,
}

/// Settings of an edge.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeConfig {
    /// Public listener: Socket.io, WebSocket and HTTP.
    #[arg(long, env = "PRESENCE_HTTP_ADDR", default_value = "127.0.0.1:3000")]
    pub http_addr: String,
    /// Shared secret of HS256 tokens.
    #[arg(long, env = "JWT_SECRET", default_value = "", hide_env_values = true)]
    pub jwt_secret: Secret,
    /// Token signature algorithm.
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// PEM file with the RSA public key of RS256 tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Accept `auth: { userId, gender }` without a token (only with PRESENCE_ENV=development).
    #[arg(long, env = "SOCKET_ALLOW_INSECURE_USERID", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_insecure_userid: bool,
    /// How often the edge appends the heartbeats it received, as one batched message (ms).
    #[arg(long, env = "PRESENCE_BEAT_FLUSH_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub beat_flush_ms: u64,
    /// Visibility rules: `viewer=seen,seen;viewer=*`.
    #[arg(long, env = "PRESENCE_VISIBILITY_RULES", default_value = visibility::DEFAULT_RULES, value_parser = VisibilityPolicy::parse)]
    pub visibility_rules: VisibilityPolicy,
    /// Time an active-users WebSocket has to send `auth` before it is closed (ms).
    #[arg(long, env = "PRESENCE_WS_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_auth_timeout_ms: u64,
    /// Packets queued per Socket.io connection before updates to it are dropped (a burst of
    /// changes, such as a mass disconnect, queues one packet per change on every viewer).
    /// Slots are allocated as they fill: an idle connection costs the same at any size.
    #[arg(long, env = "PRESENCE_SOCKET_BUFFER", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub socket_buffer: u64,
    /// Rate limits of the active-users endpoints.
    #[command(flatten)]
    pub rate_limits: RateLimitConfig,
}

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The token key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// RS256 without a key file.
    #[error("JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY_FILE")]
    NoPublicKey,
    /// The key file could not be read.
    #[error("cannot read JWT public key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The public listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The edge role.
pub struct Edge {
    config: EdgeConfig,
    environment: Environment,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
    store: Option<Store>,
}

#[derive(Clone)]
struct HttpState {
    cluster: Arc<ClusterFigures>,
    local: Arc<LocalConnections>,
}

impl Edge {
    /// An edge appending to and reading from `log` under `subjects`, as node `node`.
    pub fn new(
        config: EdgeConfig,
        environment: Environment,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        node: NodeId,
    ) -> Self {
        Self {
            config,
            environment,
            log,
            subjects,
            node,
            store: None,
        }
    }

    /// Uses `store` for the user directory, search and `check-online-status`.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    fn verifier(&self) -> Result<Option<Verifier>, EdgeError> {
        match self.config.jwt_algorithm {
            JwtAlgorithm::Hs256 if !self.config.jwt_secret.is_set() && self.insecure() => Ok(None),
            JwtAlgorithm::Hs256 => Ok(Some(Verifier::hs256(
                self.config.jwt_secret.expose().as_bytes(),
            )?)),
            JwtAlgorithm::Rs256 => {
                let path = self
                    .config
                    .jwt_public_key_file
                    .clone()
                    .ok_or(EdgeError::NoPublicKey)?;
                let pem =
                    std::fs::read(&path).map_err(|source| EdgeError::KeyFile { path, source })?;
                Ok(Some(Verifier::rs256_pem(&pem)?))
            }
        }
    }

    fn insecure(&self) -> bool {
        self.environment == Environment::Development && self.config.allow_insecure_userid
    }

    /// Binds the public listener and starts serving on `tasks`; returns the bound address.
    /// Everything stops when `shutdown` is cancelled: sockets are closed (their leaves
    /// appended) and pending heartbeats flushed.
    pub async fn start(
        self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        readiness: Readiness,
    ) -> Result<SocketAddr, EdgeError> {
        let verifier = self.verifier()?;
        if self.config.allow_insecure_userid && !self.insecure() {
            tracing::warn!(
                "SOCKET_ALLOW_INSECURE_USERID is ignored outside PRESENCE_ENV=development"
            );
        }
        let publisher =
            EventPublisher::new(self.log.clone(), self.subjects.clone(), self.node.clone());
        // The batcher outlives the sockets: leaves appended while closing still order after beats.
        let beats_shutdown = CancellationToken::new();
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let beats = BeatBatcher::start(
            publisher.clone(),
            Duration::from_millis(self.config.beat_flush_ms),
            tasks,
            beats_shutdown.clone(),
        );
        let dashboard = Arc::new(DashboardFeed::default());
        let hub = Arc::new(MetricsHub::new(dashboard.clone()));
        tasks.spawn(
            hub.clone()
                .follow(self.log.clone(), self.subjects.clone(), shutdown.clone()),
        );
        let active = Arc::new(ActiveUsersContext {
            publisher: publisher.clone(),
            beats: beats.clone(),
            beat_flush: Duration::from_millis(self.config.beat_flush_ms),
            hub: hub.clone(),
            limits: RateLimits::new(&self.config.rate_limits),
            auth_timeout: Duration::from_millis(self.config.ws_auth_timeout_ms),
            shutdown: shutdown.clone(),
        });
        tasks.spawn(forget_idle_clients(active.clone(), shutdown.clone()));
        let view = Arc::new(PresenceView::default());
        let cluster = Arc::new(ClusterFigures::default());
        tasks.spawn(cluster.clone().follow(
            self.log.clone(),
            self.subjects.clone(),
            shutdown.clone(),
        ));
        let local = Arc::new(LocalConnections::default());
        let (layer, io) = SocketIo::builder()
            .max_payload(64 * 1024)
            .max_buffer_size(self.config.socket_buffer as usize)
            // Client frames are heartbeats, statuses and queries: a few hundred bytes. A
            // larger frame grows the buffer as it is read; 4 KiB (the default) idles per socket.
            .ws_read_buffer_size(1024)
            .build_layer();
        let directory = self
            .store
            .clone()
            .map(|store| Directory::start(store, tasks, shutdown.clone()));
        let api = Arc::new(ApiContext {
            node: self.node.clone(),
            local: local.clone(),
            cluster: cluster.clone(),
            verifier: verifier.clone(),
            environment: self.environment,
            view: view.clone(),
            policy: self.config.visibility_rules.clone(),
            publisher: publisher.clone(),
            store: self.store.clone(),
        });
        socket::register(
            &io,
            Arc::new(SocketContext {
                auth: Authenticator {
                    verifier,
                    insecure: self.insecure(),
                },
                directory,
                publisher,
                beats,
                view: view.clone(),
                policy: self.config.visibility_rules.clone(),
                local: local.clone(),
                draining: draining.clone(),
                rooms: Default::default(),
            }),
        );
        tasks.spawn(
            fanout::FanOut {
                log: self.log.clone(),
                subjects: self.subjects.clone(),
                view: view.clone(),
                io: io.clone(),
                readiness: readiness.clone(),
                local: local.clone(),
                dashboard: dashboard.clone(),
                last_full_warning: Default::default(),
            }
            .run(shutdown.clone()),
        );

        let app = Router::new()
            .route("/api/health", get(health))
            .with_state(HttpState { cluster, local })
            .merge(active_users::routes(active))
            .merge(dashboard_routes(DashboardContext {
                api: api.clone(),
                hub,
                feed: dashboard,
                shutdown: shutdown.clone(),
            }))
            .merge(api_routes(api))
            .layer(layer)
            .layer(axum::middleware::map_request(socket::detach_request_head));
        let listener = tokio::net::TcpListener::bind(&self.config.http_addr)
            .await
            .map_err(|source| EdgeError::Bind {
                addr: self.config.http_addr.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| EdgeError::Bind {
            addr: self.config.http_addr.clone(),
            source,
        })?;
        tasks.spawn(async move {
            let stop = shutdown.clone();
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                stop.cancelled().await;
                // Drain: out of the balancer's rotation, then close the sockets without
                // appending their leaves. Clients reconnect through the balancer to another
                // edge within the heartbeat timeout and their users never go offline; the
                // closed connections are swept, and only users who do not come back go
                // offline, after timeout + sweep. Pending heartbeats are still flushed.
                readiness.set(false);
                draining.store(true, std::sync::atomic::Ordering::Release);
                io.close().await;
            })
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "public listener failed");
            }
            beats_shutdown.cancel();
        });
        Ok(local_addr)
    }
}

fn dashboard_routes(cx: DashboardContext) -> Router {
    Router::new()
        .route("/dashboard", get(dashboard::page))
        .route("/api/dashboard/stream", get(dashboard::stream))
        .with_state(Arc::new(cx))
}

fn api_routes(api: Arc<ApiContext>) -> Router {
    use axum::routing::{post, put};
    Router::new()
        .route("/api/presence/online", get(api::online))
        .route("/api/presence/batch", post(api::batch))
        .route("/api/presence/{user}", get(api::get_presence))
        .route("/api/presence/{user}/status", put(api::set_status))
        .route("/api/users/search", get(api::search))
        .route("/api/users/{user}", put(api::put_user))
        .route("/api/check-online-status", get(api::check_online_status))
        .route("/api/debug/presence", get(api::debug_presence))
        .route("/api/debug/socket-status", get(api::debug_socket_status))
        .with_state(api)
}

/// Keeps per-client and per-customer memory bounded: rate-limit keys idle for a full window
/// and customers nobody listens to (for ten minutes) are dropped.
async fn forget_idle_clients(active: Arc<ActiveUsersContext>, shutdown: CancellationToken) {
    let mut timer = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {
                active.limits.forget_idle();
                active.hub.forget_idle(presence_events::Millis::now(), 600_000);
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// `ok`, or `degraded` when the aggregator's figures are missing or older than 30 s.
    status: &'static str,
    presence: PresenceFigures,
    sockets: SocketFigures,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct PresenceFigures {
    online_users: u64,
    peak_online: u64,
    total_connections: u64,
    total_disconnections: u64,
    total_swepts: u64,
    last_sweep_at: Option<String>,
    uptime_ms: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SocketFigures {
    connected: usize,
    connected_users: usize,
}

/// Cluster figures from the aggregator; socket figures of this edge.
async fn health(State(state): State<HttpState>) -> Json<Health> {
    let (connected, connected_users) = state.local.counts();
    let now = presence_events::Millis::now();
    let (status, presence) = match state.cluster.latest() {
        Some(cluster) => {
            let s = &cluster.presence;
            let fresh = s.last_sweep_at.is_some_and(|at| now.since(at) < 30_000);
            (
                if fresh { "ok" } else { "degraded" },
                PresenceFigures {
                    online_users: s.online_users,
                    peak_online: s.peak_online,
                    total_connections: s.total_connections,
                    total_disconnections: s.total_disconnections,
                    total_swepts: s.total_swepts,
                    last_sweep_at: s.last_sweep_at.map(presence_events::format_rfc3339),
                    uptime_ms: now.since(cluster.started_at),
                },
            )
        }
        None => ("degraded", PresenceFigures::default()),
    };
    Json(Health {
        status,
        presence,
        sockets: SocketFigures {
            connected,
            connected_users,
        },
    })
}
