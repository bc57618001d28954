//! The cluster figures this edge serves at `/api/health`: the aggregator publishes them on
//! every sweep tick; the stream keeps the last, so a new edge has them at once.

use std::sync::{Arc, RwLock};

use presence_events::{ClusterStats, Subjects};
use presence_log::EventLog;
use tokio_util::sync::CancellationToken;

/// The newest cluster figures.
#[derive(Default)]
pub(crate) struct ClusterFigures {
    latest: RwLock<Option<ClusterStats>>,
}

impl ClusterFigures {
    pub(crate) fn latest(&self) -> Option<ClusterStats> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps `stats` if they are newer than what is known (a resubscription redelivers).
    fn update(&self, stats: ClusterStats) {
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        if latest.as_ref().is_none_or(|known| known.seq < stats.seq) {
            *latest = Some(stats);
        }
    }

    /// Follows the stats stream until `shutdown`.
    pub(crate) async fn follow(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        shutdown: CancellationToken,
    ) {
        presence_log::follow_latest(
            log.as_ref(),
            &subjects.stats_stream(),
            "stats",
            &shutdown,
            ClusterStats::decode,
            || {},
            |latest| {
                self.update(latest.value);
                std::future::ready(())
            },
        )
        .await;
    }
}
