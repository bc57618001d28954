//! The cluster figures this edge serves at `/api/health`: the aggregator publishes them on
//! every sweep tick; the stream keeps the last, so a new edge has them at once.

use std::sync::RwLock;

use presence_events::ClusterStats;

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
    pub(super) fn update(&self, stats: ClusterStats) {
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        if latest.as_ref().is_none_or(|known| known.seq < stats.seq) {
            *latest = Some(stats);
        }
    }
}
