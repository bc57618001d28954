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
mod listener;
mod metric_families;
mod openapi;
mod ops;
mod presence;
mod reload;
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
        config.check()?;
        let verifier = config.verifier(environment)?;
        if let (Some(path), Some(verifier)) = (&config.jwt_keys_file, &verifier) {
            let verifier = verifier.clone();
            tasks.spawn(reload::watch(
                reload::Watched {
                    path: path.clone(),
                    holds: "verification keys",
                    counter: "presence_key_reloads_total",
                    apply: move |jwks: &[u8]| {
                        verifier
                            .replace_keys(jwks)
                            .map(|keys| format!("{keys} keys"))
                            .map_err(|e| e.to_string())
                    },
                },
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
            max_packet_bytes: config.max_packet_bytes as usize,
            max_connections_per_user: config.max_connections_per_user,
            max_subscriptions: config.max_subscriptions as usize,
            max_query_ids: config.max_query_ids as usize,
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
        let origins = config.origins()?;
        if let Some(path) = &config.customer_origins_file {
            let origins = origins.clone();
            tasks.spawn(reload::watch(
                reload::Watched {
                    path: path.clone(),
                    holds: "customers' origins",
                    counter: "presence_origin_reloads_total",
                    apply: move |file: &[u8]| {
                        let text = std::str::from_utf8(file).map_err(|e| e.to_string())?;
                        origins
                            .replace_file(text)
                            .map(|customers| format!("{customers} customers listed"))
                    },
                },
                shutdown.clone(),
            ));
        }
        let active_users = ActiveUsers::start(
            ActiveUsersSettings {
                limits: &config.rate_limits,
                origins,
                sessions_per_address: config.max_sessions_per_ip_per_customer,
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
            max_batch: config.max_query_ids as usize,
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
            .layer(axum::middleware::map_request(presence::detach_request_head))
            .layer(axum::middleware::from_fn_with_state(
                config.max_packet_bytes,
                presence::refuse_oversized_polls,
            ));
        serve(
            ListenerSettings::of(&config),
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

/// How the public listener treats connections.
struct ListenerSettings {
    addr: String,
    door: listener::DoorLimits,
    header_timeout: Duration,
    body_timeout: Duration,
}

impl ListenerSettings {
    fn of(config: &EdgeConfig) -> Self {
        Self {
            addr: config.http_addr.clone(),
            door: listener::DoorLimits {
                connections_per_ip: config.max_connections_per_ip,
                connects_per_ip_per_min: config.connects_per_ip_per_min,
                exempt: active_users::Proxies::new(&config.rate_limits.trusted_proxies),
            },
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            body_timeout: Duration::from_millis(config.http_body_timeout_ms),
        }
    }
}

/// Serves `app` on the listener's address until `shutdown`, then drains: out of the balancer's rotation,
/// sockets closed without leaves, the last heartbeats flushed. Each connection passes the
/// door first ([`listener`]); HTTP/1.1 with upgrades, a deadline for each request's headers
/// and for each request with a body.
async fn serve(
    settings: ListenerSettings,
    app: Router,
    presence: Arc<Presence>,
    ingress: Ingress,
    readiness: Readiness,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SocketAddr, EdgeError> {
    let bind_error = |source| EdgeError::Bind {
        addr: settings.addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&settings.addr)
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let door = listener::Door::new(settings.door.clone());
    let forgetting = door.clone();
    let stop_forgetting = shutdown.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every.tick() => forgetting.forget_idle(),
                () = stop_forgetting.cancelled() => return,
            }
        }
    });
    tasks.spawn(async move {
        let connections = TaskTracker::new();
        let (closing, closed) = tokio::sync::watch::channel(false);
        let stop = async {
            shutdown.cancelled().await;
            readiness.set(false);
            presence.drain().await;
        };
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most often: wait rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let ticket = match door.admit(peer.ip()) {
                Ok(ticket) => ticket,
                Err(refusal) => {
                    metrics::counter!("presence_connections_refused_total", "reason" => refusal.reason())
                        .increment(1);
                    connections.spawn(refuse(stream, refusal));
                    continue;
                }
            };
            connections.spawn(serve_connection(
                listener::Admitted::new(stream, ticket),
                peer,
                app.clone(),
                settings.header_timeout,
                settings.body_timeout,
                closed.clone(),
            ));
        }
        drop(listener);
        let _ = closing.send(true);
        connections.close();
        connections.wait().await;
        ingress.stop();
    });
    Ok(local_addr)
}

/// Writes the refusal to a connection turned away at the door, and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, refusal: listener::Refusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = refusal.answer();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // What the client sent meanwhile is read and dropped: closing with unread bytes
        // would reset the connection, and some clients would see the reset, not the 429.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// One HTTP/1.1 connection (and what it upgrades to), until it closes or the edge stops.
async fn serve_connection(
    stream: listener::Admitted<tokio::net::TcpStream>,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    body_timeout: Duration,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    use axum::extract::ConnectInfo;
    use hyper::body::Incoming;
    use tower::ServiceExt;
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let with_body = matches!(
            *request.method(),
            axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::PATCH
        );
        let answer = app.clone().oneshot(request);
        async move {
            if !with_body {
                return answer.await;
            }
            match tokio::time::timeout(body_timeout, answer).await {
                Ok(answered) => answered,
                Err(_) => Ok(request_timeout(body_timeout)),
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = http
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served
                    && e.is_timeout()
                {
                    metrics::counter!("presence_connections_refused_total", "reason" => "header_timeout")
                        .increment(1);
                }
                return;
            }
            changed = closed.changed(), if !closing => {
                closing = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The answer to a request with a body that was not sent (and answered) in time.
fn request_timeout(within: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    metrics::counter!("presence_connections_refused_total", "reason" => "body_timeout")
        .increment(1);
    let body = axum::Json(serde_json::json!({
        "error": "Request Timeout",
        "code": "request_timeout",
        "message": format!(
            "the request was not sent and answered within {} ms",
            within.as_millis()
        ),
    }));
    (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [(axum::http::header::CONNECTION, "close")],
        body,
    )
        .into_response()
}
