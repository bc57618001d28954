//! The aggregator: folds each partition of the event log into presence state and
//! active-user metrics ([`presence_fold`]), appends the clock ticks that sweep the silent and
//! compute the metrics ([`sweeper`]), and publishes every resulting change ([`consumer`]).
//!
//! Any number of aggregators run per cluster: each partition is folded by exactly one of
//! them at a time, chosen by leases on a key-value board ([`leases`], [`coordinator`]). It
//! knows nothing of the mode it runs in: the binary hands it an [`EventLog`] (JetStream in a
//! cluster, in-memory in `presence standalone`, where it takes every partition).

mod consumer;
mod coordinator;
mod leases;
mod metric_families;
#[cfg(test)]
mod partitioned_tests;
mod release;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use presence_events::{NodeId, Subjects};
use presence_log::EventLog;
use presence_store::Store;
use presence_telemetry::Readiness;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of the aggregator.
#[derive(Debug, Clone, clap::Args)]
pub struct AggregatorConfig {
    /// A connection with no heartbeat for this long is swept offline (ms).
    #[arg(long, env = "PRESENCE_HEARTBEAT_TIMEOUT_MS", default_value_t = 15_000)]
    pub heartbeat_timeout_ms: u64,
    /// Longest time between sweeps (ms); a sweep also runs when a connection's heartbeat
    /// timeout runs out.
    #[arg(long, env = "PRESENCE_SWEEP_INTERVAL_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub sweep_interval_ms: u64,
    /// An active-users session with no beat for this long stops counting (ms).
    #[arg(long, env = "PRESENCE_SESSION_TTL_MS", default_value_t = 180_000)]
    pub session_ttl_ms: u64,
    /// How often every customer's count and EMA are computed and pushed (ms).
    #[arg(long, env = "PRESENCE_METRICS_TICK_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub metrics_tick_ms: u64,
    /// Weight of the newest count in the EMA.
    #[arg(long, env = "PRESENCE_EMA_ALPHA", default_value_t = 0.2, value_parser = parse_alpha)]
    pub ema_alpha: f64,
    /// Sessions a customer's count takes from any one client source (an address, or an IPv6
    /// /64), across every edge; 0: no limit. Edges name a session's source only while their
    /// own per-address cap (PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER) is on.
    #[arg(long, env = "PRESENCE_MAX_SESSIONS_PER_SOURCE", default_value_t = 50)]
    pub max_sessions_per_source: u32,
    /// How often the fold state is saved to PostgreSQL, when DATABASE_URL is set (ms).
    #[arg(long, env = "PRESENCE_SNAPSHOT_INTERVAL_MS", default_value_t = 30_000)]
    pub snapshot_interval_ms: u64,
    /// A partition's lease runs out this long after its owner last renewed it (ms); another
    /// aggregator takes the partition over then. Renewed every sixth of it.
    #[arg(long, env = "PRESENCE_LEASE_TTL_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ttl_ms: u64,
    /// A user offline for this long leaves the fold's memory and its snapshot (event time;
    /// `24h`, `90m`, `3600s`): the fold holds the online and the recently gone. Its last
    /// presence stays in PostgreSQL (`lastSeen`).
    #[arg(long, env = "PRESENCE_OFFLINE_RETENTION", default_value = "24h", value_parser = parse_retention)]
    pub offline_retention: Duration,
    /// How long an offline change stays in the online stream that edges start their view
    /// from (`60s`; whole seconds, at least 1): an edge starting later answers such a user
    /// from PostgreSQL.
    #[arg(long, env = "PRESENCE_OFFLINE_FEED_TTL", default_value = "60s", value_parser = parse_feed_ttl)]
    pub offline_feed_ttl: Duration,
}

impl AggregatorConfig {
    /// A silence of a whole partition's log longer than this is taken for an outage of the
    /// log, during which nobody's silence counts: four sweep intervals (the owner ticks at
    /// least every interval) and at least half the heartbeat timeout.
    pub fn outage_after_ms(&self) -> u64 {
        (self.sweep_interval_ms * 4).max(self.heartbeat_timeout_ms / 2)
    }

    /// [`AggregatorConfig::offline_retention`] in ms.
    pub fn offline_retention_ms(&self) -> u64 {
        u64::try_from(self.offline_retention.as_millis()).unwrap_or(u64::MAX)
    }

    /// The settings a partition's fold runs with.
    pub fn fold_settings(&self) -> presence_fold::Settings {
        presence_fold::Settings {
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            outage_after_ms: Some(self.outage_after_ms()),
            offline_retention_ms: Some(self.offline_retention_ms()),
            session_ttl_ms: self.session_ttl_ms,
            ema_alpha: self.ema_alpha,
            sessions_per_source: self.max_sessions_per_source,
            offline_feed_ttl: self.offline_feed_ttl,
        }
    }
}

fn parse_feed_ttl(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| format!("{raw:?}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{raw:?}: at least 1s"));
    }
    Ok(d)
}

/// At least a second. Keep it well above the time the persister may be behind: the offline
/// change is in the changes stream (and written to PostgreSQL from there) whatever the fold
/// forgets, but an operator reading the fold's figures expects the recently gone in them.
fn parse_retention(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| format!("{raw:?}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{raw:?}: the retention must be at least 1s"));
    }
    Ok(d)
}

fn parse_alpha(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(a) if a > 0.0 && a <= 1.0 => Ok(a),
        _ => Err("alpha must be a number in (0, 1]".into()),
    }
}

/// The aggregator role.
pub struct Aggregator {
    config: AggregatorConfig,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
    snapshots: Option<consumer::Snapshots>,
    replicas: usize,
}

impl Aggregator {
    /// An aggregator reading and writing `log` under `subjects`, stamping its ticks with `node`.
    pub fn new(
        config: AggregatorConfig,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        node: NodeId,
    ) -> Self {
        Self {
            config,
            log,
            subjects,
            node,
            snapshots: None,
            replicas: 1,
        }
    }

    /// Keeps the lease board on `replicas` nodes of the JetStream cluster.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Saves the fold state to `store` (under `namespace`) and restores it on start.
    pub fn with_snapshots(mut self, store: Store, namespace: String) -> Self {
        self.snapshots = Some(consumer::Snapshots {
            store,
            namespace,
            every: Duration::from_millis(self.config.snapshot_interval_ms),
        });
        self
    }

    /// Joins the partitions' lease board and starts folding what it takes, on `tasks`, until
    /// `shutdown`, when it hands its partitions over. `readiness` turns true once the board
    /// has been read (owning partitions or standing by).
    pub async fn start(
        self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        readiness: Readiness,
    ) -> Result<(), presence_log::LogError> {
        metric_families::register(self.subjects.partitions());
        release::tune_allocator();
        // A cluster still electing its leaders answers after a while: wait up to 30 s.
        let started = std::time::Instant::now();
        let board = loop {
            match coordinator::open_board(
                self.log.as_ref(),
                &self.subjects,
                Duration::from_millis(self.config.lease_ttl_ms),
                self.replicas,
            )
            .await
            {
                Ok(board) => break board,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    tracing::warn!(error = %e, "cannot open the lease board yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let settings = coordinator::FoldSettings {
            config: self.config,
            log: self.log,
            subjects: self.subjects,
            node: self.node,
            snapshots: self.snapshots,
            started_at: presence_events::Millis::now(),
        };
        tasks.spawn(coordinator::Coordinator::new(settings, board).run(shutdown, readiness));
        Ok(())
    }
}
