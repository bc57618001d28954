//! Command line: roles as subcommands, every setting from env vars with flags as overrides.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use presence_aggregator::{Aggregator, AggregatorConfig};
use presence_config::{DbArgs, LogArgs, NodeArgs, Secret};
use presence_edge::{Edge, EdgeConfig};
use presence_events::{NodeId, Subjects};
use presence_log::{EventLog, JetStreamLog, MemoryLog};
use presence_persister::{Persister, PersisterConfig};
use presence_store::Store;
use presence_telemetry::Readiness;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::streams::ensure_streams;

/// Real-time presence: who is online, pushed to who may see it.
#[derive(Debug, Parser)]
#[command(name = "presence", version, about, after_help = SETTINGS)]
pub(crate) struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Every role in one process with an in-memory event log: no external service needed.
    Standalone {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        edge: EdgeConfig,
        #[command(flatten)]
        aggregator: AggregatorConfig,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        persister: PersisterConfig,
    },
    /// An edge: Socket.io / WebSocket / HTTP in, events to JetStream, changes out to sockets.
    /// With DATABASE_URL it also records users and serves search and check-online-status.
    Edge {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        edge: EdgeConfig,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The aggregator: folds events into presence, sweeps, publishes changes; with
    /// DATABASE_URL it snapshots its state and restarts from the newest snapshot.
    Aggregator {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        aggregator: AggregatorConfig,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The persister: writes debounced presence snapshots to PostgreSQL (needs DATABASE_URL).
    Persister {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        persister: PersisterConfig,
    },
    /// Operator tools over the event stream: rebuild the projection, a user's timeline, a
    /// customer's metrics.
    Replay {
        #[command(flatten)]
        log: LogArgs,
        /// Fold settings (timeout, TTL, alpha) to replay with.
        #[command(flatten)]
        fold: AggregatorConfig,
        #[command(flatten)]
        range: crate::replay::Range,
        #[command(subcommand)]
        command: crate::replay::Replay,
    },
    /// Prints an HS256 token for development and testing.
    Token {
        /// Secret to sign with.
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        secret: Secret,
        /// User id.
        #[arg(long)]
        sub: String,
        /// Gender claim (visibility class).
        #[arg(long)]
        gender: Option<String>,
        /// Tenant claim.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

/// Every setting, for `presence --help`; each role's `--help` details its own.
const SETTINGS: &str = "\
Settings (env var, or the flag in `presence <role> --help`):
  PRESENCE_HTTP_ADDR             public listener (edge, standalone)      [127.0.0.1:3000]
  PRESENCE_ADMIN_ADDR            /metrics, /livez, /readyz               [127.0.0.1:9100]
  NATS_URL                       JetStream server (edge, aggregator)     [nats://127.0.0.1:4222]
  PRESENCE_NAMESPACE             prefix of streams and subjects          [presence]
  PRESENCE_EVENTS_MAX_AGE_HOURS  event stream retention                  [168]
  PRESENCE_EVENTS_MAX_BYTES      event stream size limit                 [1073741824]
  DATABASE_URL                   PostgreSQL (persister; optional for standalone)
  PRESENCE_ONLINE_DEBOUNCE_MS    online writes coalesce for              [2000]
  PRESENCE_SNAPSHOT_INTERVAL_MS  aggregator snapshot period (with DB)    [30000]
  JWT_SECRET                     HS256 secret (masked when printed)
  JWT_ALGORITHM                  HS256 | RS256                           [HS256]
  JWT_PUBLIC_KEY_FILE            RSA public key (PEM) for RS256
  PRESENCE_ENV                   development | production                [production]
  SOCKET_ALLOW_INSECURE_USERID   auth {userId} in development only       [false]
  PRESENCE_NODE_ID               node name on events                     [<role>-<pid>]
  PRESENCE_HEARTBEAT_TIMEOUT_MS  silent connections swept after          [15000]
  PRESENCE_SWEEP_INTERVAL_MS     longest time between sweeps             [3000]
  PRESENCE_BEAT_FLUSH_MS         heartbeat batch interval per edge       [1000]
  PRESENCE_VISIBILITY_RULES      viewer=seen,...;viewer=*                [male=female;female=*;other=*]
  PRESENCE_SESSION_TTL_MS        active-users session TTL                [180000]
  PRESENCE_METRICS_TICK_MS       active-users count + EMA tick           [5000]
  PRESENCE_EMA_ALPHA             EMA weight of the newest count          [0.2]
  PRESENCE_WS_AUTH_TIMEOUT_MS    /ws/active-users auth deadline          [10000]
  PRESENCE_RATE_LIMIT_IP_PER_MIN         per client IP                   [100]
  PRESENCE_RATE_LIMIT_CUSTOMER_PER_MIN   per customer                    [5000]
  PRESENCE_TRUSTED_PROXIES       proxies trusted for X-Forwarded-For
  RUST_LOG                       log filter                              [info]";

/// What a started role reports: its listeners.
type Listeners = Vec<(&'static str, SocketAddr)>;

impl Cli {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self.role {
            Role::Standalone {
                node,
                log,
                edge,
                aggregator,
                db,
                persister,
            } => {
                tracing::info!(?node, ?edge, ?aggregator, ?db, ?persister, namespace = %log.namespace, "effective configuration");
                let store = match &db.database_url {
                    Some(url) => Some(connect_db(url).await?),
                    None => None,
                };
                // The in-memory log starts empty; with a database kept from an earlier run its
                // sequences continue after everything that run wrote.
                let first = match &store {
                    Some(store) => store
                        .highest_sequence()
                        .await
                        .context("reading the highest stored sequence")?,
                    None => 0,
                };
                let event_log: Arc<dyn EventLog> = Arc::new(MemoryLog::starting_after(first));
                let namespace = log.namespace.clone();
                serve("standalone", &node, &log, event_log, |cx| async move {
                    Aggregator::new(
                        aggregator,
                        cx.log.clone(),
                        cx.subjects.clone(),
                        cx.node.clone(),
                    )
                    .start(&cx.tasks, cx.shutdown.clone());
                    let mut role = Edge::new(
                        edge,
                        node.environment,
                        cx.log.clone(),
                        cx.subjects.clone(),
                        cx.node,
                    );
                    if let Some(store) = store {
                        // In one process, readiness is the edge's.
                        Persister::new(persister, cx.log, cx.subjects, store.clone(), namespace)
                            .start(&cx.tasks, cx.shutdown.clone(), Readiness::default());
                        role = role.with_store(store);
                    }
                    let http = role.start(&cx.tasks, cx.shutdown, cx.readiness).await?;
                    Ok(vec![("public", http)])
                })
                .await
            }
            Role::Edge {
                node,
                log,
                edge,
                db,
            } => {
                tracing::info!(?node, ?log, ?edge, ?db, "effective configuration");
                let store = match &db.database_url {
                    Some(url) => Some(connect_db(url).await?),
                    None => None,
                };
                let event_log = connect(&log, "edge").await?;
                serve("edge", &node, &log, event_log, |cx| async move {
                    let mut role = Edge::new(edge, node.environment, cx.log, cx.subjects, cx.node);
                    if let Some(store) = store {
                        role = role.with_store(store);
                    }
                    let http = role.start(&cx.tasks, cx.shutdown, cx.readiness).await?;
                    Ok(vec![("public", http)])
                })
                .await
            }
            Role::Aggregator {
                node,
                log,
                aggregator,
                db,
            } => {
                tracing::info!(?node, ?log, ?aggregator, ?db, "effective configuration");
                let store = match &db.database_url {
                    Some(url) => Some(connect_db(url).await?),
                    None => None,
                };
                let event_log = connect(&log, "aggregator").await?;
                let namespace = log.namespace.clone();
                serve("aggregator", &node, &log, event_log, |cx| async move {
                    let mut role = Aggregator::new(aggregator, cx.log, cx.subjects, cx.node);
                    if let Some(store) = store {
                        role = role.with_snapshots(store, namespace);
                    }
                    role.start(&cx.tasks, cx.shutdown);
                    cx.readiness.set(true);
                    Ok(vec![])
                })
                .await
            }
            Role::Persister {
                node,
                log,
                db,
                persister,
            } => {
                tracing::info!(?node, ?log, ?db, ?persister, "effective configuration");
                let url = db
                    .database_url
                    .as_ref()
                    .context("the persister needs DATABASE_URL")?;
                let store = connect_db(url).await?;
                let event_log = connect(&log, "persister").await?;
                let namespace = log.namespace.clone();
                serve("persister", &node, &log, event_log, |cx| async move {
                    Persister::new(persister, cx.log, cx.subjects, store, namespace).start(
                        &cx.tasks,
                        cx.shutdown,
                        cx.readiness,
                    );
                    Ok(vec![])
                })
                .await
            }
            Role::Replay {
                log,
                fold,
                range,
                command,
            } => crate::replay::run(&log, &fold, range, command).await,
            Role::Token {
                secret,
                sub,
                gender,
                tenant,
                ttl_secs,
            } => {
                let claims = presence_auth::Claims {
                    sub,
                    exp: jsonwebtoken_now() + ttl_secs,
                    gender,
                    tenant,
                    ..Default::default()
                };
                let token = presence_auth::sign_hs256(&claims, secret.expose().as_bytes())
                    .context("signing the token")?;
                println!("{token}");
                Ok(())
            }
        }
    }
}

fn jsonwebtoken_now() -> u64 {
    presence_events::Millis::now().0 / 1000
}

async fn connect(log: &LogArgs, role: &str) -> anyhow::Result<Arc<dyn EventLog>> {
    let event_log = JetStreamLog::connect(&log.nats_url, &format!("presence-{role}"))
        .await
        .with_context(|| format!("connecting the {role} to NATS (set NATS_URL)"))?;
    Ok(Arc::new(event_log))
}

async fn connect_db(url: &Secret) -> anyhow::Result<Store> {
    Store::connect(url.expose())
        .await
        .context("connecting to PostgreSQL (DATABASE_URL) and applying migrations")
}

/// What a role needs to start.
struct RoleContext {
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    readiness: Readiness,
}

/// Runs one role: streams, admin listener, the role itself, then waits for SIGTERM / Ctrl-C
/// and shuts everything down in order.
async fn serve<F, Fut>(
    role: &str,
    node: &NodeArgs,
    log_args: &LogArgs,
    log: Arc<dyn EventLog>,
    start: F,
) -> anyhow::Result<()>
where
    F: FnOnce(RoleContext) -> Fut,
    Fut: Future<Output = anyhow::Result<Listeners>>,
{
    let subjects = Subjects::new(&log_args.namespace);
    ensure_streams(log.as_ref(), &subjects, log_args)
        .await
        .context("creating the event streams")?;
    let node_id = match &node.node_id {
        Some(id) => NodeId::parse(id.clone()).context("PRESENCE_NODE_ID")?,
        None => NodeId::parse(format!("{role}-{}", std::process::id())).context("node id")?,
    };
    let metrics = presence_telemetry::install_metrics()?;
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let readiness = Readiness::default();
    let admin = presence_telemetry::serve_admin(
        &node.admin_addr,
        metrics,
        readiness.clone(),
        &tasks,
        shutdown.clone(),
    )
    .await?;
    let listeners = start(RoleContext {
        log,
        subjects,
        node: node_id.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        readiness,
    })
    .await?;
    let mut banner = format!("presence {role} ready: node={node_id}");
    for (name, addr) in listeners {
        banner.push_str(&format!(" {name}={addr}"));
    }
    banner.push_str(&format!(" admin={admin}"));
    println!("{banner}");

    presence_telemetry::shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(20), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 20 s");
    }
    Ok(())
}
