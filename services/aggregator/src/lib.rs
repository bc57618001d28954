//! The aggregator: folds the event log into presence state ([`state`]) and active-user
//! metrics ([`sessions`]), appends the clock ticks that sweep the silent and compute the
//! metrics ([`sweeper`]), and publishes every resulting change ([`consumer`]).
//!
//! One aggregator runs per cluster. It knows nothing of the mode it runs in: the binary hands
//! it an [`EventLog`] (JetStream in a cluster, in-memory in `presence standalone`).

mod consumer;
mod event_time;
mod metric_families;
mod pairs;
pub mod sessions;
pub mod state;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use presence_events::{EventBody, NodeId, Subjects};
use presence_log::EventLog;
use presence_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use event_time::in_log_time;
pub use sessions::ActiveUsers;
pub use state::PresenceState;

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
    /// How often the fold state is saved to PostgreSQL, when DATABASE_URL is set (ms).
    #[arg(long, env = "PRESENCE_SNAPSHOT_INTERVAL_MS", default_value_t = 30_000)]
    pub snapshot_interval_ms: u64,
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
        }
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

    /// Starts folding and sweeping on `tasks`; both stop when `shutdown` is cancelled.
    pub fn start(self, tasks: &TaskTracker, shutdown: CancellationToken) {
        metric_families::register();
        let fold = consumer::Fold {
            presence: PresenceState::new(self.config.heartbeat_timeout_ms),
            active: ActiveUsers::new(self.config.session_ttl_ms, self.config.ema_alpha),
        };
        let (sweep_due, due) = tokio::sync::watch::channel(None);
        tasks.spawn(consumer::fold_events(
            fold,
            self.snapshots,
            self.log.clone(),
            self.subjects.clone(),
            self.node.clone(),
            sweep_due,
            shutdown.clone(),
        ));
        tasks.spawn(sweeper::publish_ticks(
            EventBody::Tick,
            self.log.clone(),
            self.subjects.clone(),
            self.node.clone(),
            Duration::from_millis(self.config.sweep_interval_ms),
            Some(due),
            shutdown.clone(),
        ));
        tasks.spawn(sweeper::publish_ticks(
            EventBody::MetricsTick,
            self.log,
            self.subjects,
            self.node,
            Duration::from_millis(self.config.metrics_tick_ms),
            None,
            shutdown,
        ));
    }
}
