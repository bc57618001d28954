//! The edge: terminates client connections and turns them into events in the log; reads the
//! presence changes and customer metrics back and pushes them to the sockets allowed to see
//! them. Edges hold connections only: any edge may take any client, and killing one loses no
//! state.
//!
//! Each concern is a folder that starts itself and hands back its routes:
//! - [`presence`]: Socket.io presence (handshake, handlers, local connections, the view,
//!   visibility, fan-out, the user directory);
//! - [`active_users`]: the "N people are viewing" WebSocket and HTTP fallback;
//! - [`api`]: the presence API for application backends;
//! - [`ops`]: health, debug views and the live dashboard;
//! - [`ingress`]: the edge's way into the log (publisher, heartbeat batching).
//!
//! What clients receive is defined once in [`wire`]; who may call an HTTP endpoint is decided
//! in [`http_auth`].

mod active_users;
mod api;
mod config;
mod http_auth;
mod http_error;
mod ingress;
mod keys;
mod metric_families;
mod openapi;
mod ops;
mod presence;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use presence_config::Environment;
use presence_events::{NodeId, Subjects};
use presence_log::EventLog;
use presence_store::Store;
use presence_telemetry::Readiness;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::active_users::RateLimitConfig;
pub use crate::config::{EdgeConfig, EdgeError, JwtAlgorithm, Liveness};
pub use crate::presence::VisibilityPolicy;

use crate::active_users::{ActiveUsers, ActiveUsersSettings};
use crate::http_auth::HttpAuth;
use crate::ingress::Ingress;
use crate::presence::{Authenticator, Presence, PresenceSettings};
use crate::wire::Announcements;

/// Under transport liveness, how often the edge beats for each open socket: as often as a
/// client beats, well within the heartbeat timeout.
const TRANSPORT_BEATS: Duration = Duration::from_secs(5);

/// The edge role.
pub struct Edge {
    config: EdgeConfig,
    environment: Environment,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
    store: Option<Store>,
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

    /// Binds the public listener and starts serving on `tasks`; returns the bound address.
    /// Everything stops when `shutdown` is cancelled: the edge leaves the balancer's rotation,
    /// closes its sockets without appending their leaves (see [`Presence::drain`]) and
    /// flushes the pending heartbeats.
    pub async fn start(
        self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        readiness: Readiness,
    ) -> Result<SocketAddr, EdgeError> {
        let Self {
            config,
            environment,
            log,
            subjects,
            node,
            store,
        } = self;
        metric_families::register();
        let verifier = config.verifier(environment)?;
        if let (Some(path), Some(verifier)) = (&config.jwt_keys_file, &verifier) {
            tasks.spawn(keys::watch(
                path.clone(),
                verifier.clone(),
                shutdown.clone(),
            ));
        }
        if config.allow_insecure_userid && !config.insecure(environment) {
            tracing::warn!(
                "SOCKET_ALLOW_INSECURE_USERID is ignored outside PRESENCE_ENV=development"
            );
        }
        let beat_flush = Duration::from_millis(config.beat_flush_ms);
        let transport_liveness = config.liveness == Liveness::Transport;
        let announcements = Announcements::default();
        let ingress = Ingress::start(
            log.clone(),
            subjects.clone(),
            node.clone(),
            beat_flush,
            transport_liveness.then_some(TRANSPORT_BEATS),
            Duration::from_millis(config.edge_lease_ms),
            tasks,
        )
        .await;
        let settings = PresenceSettings {
            authenticator: Authenticator {
                verifier: verifier.clone(),
                insecure: config.insecure(environment),
            },
            policy: config.visibility_rules.clone(),
            socket_buffer: config.socket_buffer as usize,
            max_connections_per_user: config.max_connections_per_user,
            max_subscriptions: config.max_subscriptions as usize,
            batch_window: std::time::Duration::from_millis(config.batch_ms),
            transport_liveness,
            ping: (
                Duration::from_millis(config.ping_interval_ms),
                Duration::from_millis(config.ping_timeout_ms),
            ),
            store: store.clone(),
            announcements: announcements.clone(),
        };
        let (presence, socket_io) = Presence::start(
            settings,
            &ingress,
            log.clone(),
            subjects.clone(),
            readiness.clone(),
            tasks,
            shutdown.clone(),
        );
        let presence = Arc::new(presence);
        let active_users = ActiveUsers::start(
            ActiveUsersSettings {
                limits: &config.rate_limits,
                auth_timeout: Duration::from_millis(config.ws_auth_timeout_ms),
                announcements: announcements.clone(),
            },
            &ingress,
            log.clone(),
            subjects.clone(),
            tasks,
            shutdown.clone(),
        );
        let described = openapi::Served::new(environment)?;
        let auth = Arc::new(HttpAuth::new(verifier, environment));
        let api = api::routes(api::ApiContext {
            auth: auth.clone(),
            view: presence.view.clone(),
            policy: presence.policy.clone(),
            publisher: ingress.publisher.clone(),
            store: store.clone(),
        });
        let ops = ops::start(
            ops::OpsSources {
                node,
                auth,
                presence: presence.clone(),
                hub: active_users.hub.clone(),
                announcements,
                store,
                publisher: ingress.publisher.clone(),
            },
            log,
            subjects,
            tasks,
            shutdown.clone(),
        );
        let app = Router::new()
            .merge(active_users.routes())
            .merge(api)
            .merge(ops)
            .merge(
                Router::new()
                    .route(
                        "/api/openapi.json",
                        axum::routing::get(openapi::openapi_json),
                    )
                    .with_state(described),
            )
            .layer(socket_io)
            .layer(axum::middleware::map_request(presence::detach_request_head));
        serve(
            &config.http_addr,
            app,
            presence,
            ingress,
            readiness,
            tasks,
            shutdown,
        )
        .await
    }
}

/// Serves `app` on `addr` until `shutdown`, then drains: out of the balancer's rotation,
/// sockets closed without leaves, the last heartbeats flushed.
async fn serve(
    addr: &str,
    app: Router,
    presence: Arc<Presence>,
    ingress: Ingress,
    readiness: Readiness,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SocketAddr, EdgeError> {
    let bind_error = |source| EdgeError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    tasks.spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            readiness.set(false);
            presence.drain().await;
        })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "public listener failed");
        }
        ingress.stop();
    });
    Ok(local_addr)
}
