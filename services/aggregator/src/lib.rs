//! The aggregator: folds the event log into presence state ([`state`]), sweeps the silent
//! ([`sweeper`]), and publishes every resulting presence change ([`consumer`]).
//!
//! One aggregator runs per cluster. It knows nothing of the mode it runs in: the binary hands
//! it an [`EventLog`] (JetStream in a cluster, in-memory in `presence standalone`).

mod consumer;
pub mod state;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use presence_events::{NodeId, Subjects};
use presence_log::EventLog;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use state::{PresenceState, Stats};

/// Settings of the aggregator.
#[derive(Debug, Clone, clap::Args)]
pub struct AggregatorConfig {
    /// A connection with no heartbeat for this long is swept offline (ms).
    #[arg(long, env = "PRESENCE_HEARTBEAT_TIMEOUT_MS", default_value_t = 15_000)]
    pub heartbeat_timeout_ms: u64,
    /// How often the sweep runs (ms).
    #[arg(long, env = "PRESENCE_SWEEP_INTERVAL_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub sweep_interval_ms: u64,
}

/// The aggregator role.
pub struct Aggregator {
    config: AggregatorConfig,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
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
        }
    }

    /// Starts folding and sweeping on `tasks`; both stop when `shutdown` is cancelled.
    pub fn start(self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let state = PresenceState::new(self.config.heartbeat_timeout_ms);
        tasks.spawn(consumer::fold_events(
            state,
            self.log.clone(),
            self.subjects.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(sweeper::publish_ticks(
            self.log,
            self.subjects,
            self.node,
            Duration::from_millis(self.config.sweep_interval_ms),
            shutdown,
        ));
    }
}
