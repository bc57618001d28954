//! The roles: one function each to start a role inside a running process ([`RoleContext`]),
//! and one per subcommand that connects what the role needs and serves it. `standalone` is
//! the sum of the roles' start functions around an in-memory log; the roles never know which
//! mode they run in.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use presence_aggregator::{Aggregator, AggregatorConfig};
use presence_config::{DbArgs, Environment, LogArgs, NodeArgs};
use presence_edge::{Edge, EdgeConfig};
use presence_events::{NodeId, Subjects};
use presence_log::{EventLog, JetStreamLog, MemoryLog};
use presence_persister::{Persister, PersisterConfig};
use presence_store::Store;
use presence_telemetry::Readiness;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::streams::{ensure_streams, pin_partitions, retrying};

/// What a started role reports: its listeners.
type Listeners = Vec<(&'static str, SocketAddr)>;

/// What a role needs to start inside a running process.
struct RoleContext {
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    namespace: String,
    /// Copies of the streams and buckets (`PRESENCE_STREAM_REPLICAS`).
    replicas: usize,
    node: NodeId,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    readiness: Readiness,
}

/// Starts an edge; returns its public listener.
async fn start_edge(
    cx: &RoleContext,
    config: EdgeConfig,
    environment: Environment,
    store: Option<Store>,
) -> anyhow::Result<Listeners> {
    let mut edge = Edge::new(
        config,
        environment,
        cx.log.clone(),
        cx.subjects.clone(),
        cx.node.clone(),
    );
    if let Some(store) = store {
        edge = edge.with_store(store);
    }
    let public = edge
        .start(&cx.tasks, cx.shutdown.clone(), cx.readiness.clone())
        .await?;
    Ok(vec![("public", public)])
}

/// Starts an aggregator, snapshotting to `snapshots` if given; `readiness` turns true once
/// it owns partitions or stands by.
async fn start_aggregator(
    cx: &RoleContext,
    config: AggregatorConfig,
    snapshots: Option<Store>,
    readiness: Readiness,
) -> anyhow::Result<()> {
    let mut aggregator =
        Aggregator::new(config, cx.log.clone(), cx.subjects.clone(), cx.node.clone())
            .with_replicas(cx.replicas);
    if let Some(store) = snapshots {
        aggregator = aggregator.with_snapshots(store, cx.namespace.clone());
    }
    aggregator
        .start(&cx.tasks, cx.shutdown.clone(), readiness)
        .await
        .context("joining the partitions' lease board")
}

/// Starts a persister writing to `store`.
fn start_persister(cx: &RoleContext, config: PersisterConfig, store: Store, readiness: Readiness) {
    Persister::new(
        config,
        cx.log.clone(),
        cx.subjects.clone(),
        store,
        cx.namespace.clone(),
    )
    .start(&cx.tasks, cx.shutdown.clone(), readiness);
}

/// `presence standalone`: every role in one process around an in-memory log; persistence
/// only with a database.
pub(crate) async fn standalone(
    node: NodeArgs,
    log: LogArgs,
    edge: EdgeConfig,
    aggregator: AggregatorConfig,
    db: DbArgs,
    persister: PersisterConfig,
) -> anyhow::Result<()> {
    let store = optional_store(&db).await?;
    // The in-memory log starts empty; with a database kept from an earlier run its sequences
    // continue after everything that run wrote.
    let first = match &store {
        Some(store) => store
            .highest_sequence()
            .await
            .context("reading the highest stored sequence")?,
        None => 0,
    };
    let event_log: Arc<dyn EventLog> = Arc::new(MemoryLog::starting_after(first));
    let environment = node.environment;
    serve("standalone", &node, &log, event_log, |cx| async move {
        // The in-memory log restarts empty, so there is no snapshot to restart from. In one
        // process, readiness is the edge's.
        start_aggregator(&cx, aggregator, None, Readiness::default()).await?;
        if let Some(store) = &store {
            // In one process, readiness is the edge's.
            start_persister(&cx, persister, store.clone(), Readiness::default());
        }
        start_edge(&cx, edge, environment, store).await
    })
    .await
}

/// `presence edge`.
pub(crate) async fn edge(
    node: NodeArgs,
    log: LogArgs,
    edge: EdgeConfig,
    db: DbArgs,
) -> anyhow::Result<()> {
    let store = optional_store(&db).await?;
    let event_log = connect(&log, "edge").await?;
    let environment = node.environment;
    serve("edge", &node, &log, event_log, |cx| async move {
        start_edge(&cx, edge, environment, store).await
    })
    .await
}

/// `presence aggregator`.
pub(crate) async fn aggregator(
    node: NodeArgs,
    log: LogArgs,
    aggregator: AggregatorConfig,
    db: DbArgs,
) -> anyhow::Result<()> {
    let store = optional_store(&db).await?;
    let event_log = connect(&log, "aggregator").await?;
    serve("aggregator", &node, &log, event_log, |cx| async move {
        start_aggregator(&cx, aggregator, store, cx.readiness.clone()).await?;
        Ok(vec![])
    })
    .await
}

/// `presence persister` (needs a database).
pub(crate) async fn persister(
    node: NodeArgs,
    log: LogArgs,
    db: DbArgs,
    persister: PersisterConfig,
) -> anyhow::Result<()> {
    let url = db
        .database_url
        .as_ref()
        .context("the persister needs DATABASE_URL")?;
    let store = connect_db(url.expose()).await?;
    let event_log = connect(&log, "persister").await?;
    serve("persister", &node, &log, event_log, |cx| async move {
        start_persister(&cx, persister, store, cx.readiness.clone());
        Ok(vec![])
    })
    .await
}

async fn connect(log: &LogArgs, role: &str) -> anyhow::Result<Arc<dyn EventLog>> {
    let event_log = JetStreamLog::connect(&log.nats_url, &format!("presence-{role}"))
        .await
        .with_context(|| format!("connecting the {role} to NATS (set NATS_URL)"))?;
    Ok(Arc::new(event_log))
}

/// The database, when `DATABASE_URL` is set.
async fn optional_store(db: &DbArgs) -> anyhow::Result<Option<Store>> {
    match &db.database_url {
        Some(url) => Ok(Some(connect_db(url.expose()).await?)),
        None => Ok(None),
    }
}

async fn connect_db(url: &str) -> anyhow::Result<Store> {
    Store::connect(url)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL) and applying migrations")
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
    let partitions = pin_partitions(log.as_ref(), &subjects, log_args).await?;
    let subjects = subjects.with_partitions(partitions);
    retrying("creating the event streams", || {
        ensure_streams(log.as_ref(), &subjects, log_args)
    })
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
        namespace: log_args.namespace.clone(),
        replicas: log_args.stream_replicas as usize,
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
