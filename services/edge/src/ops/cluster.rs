//! The cluster figures this edge serves at `/api/health`: each partition's owner publishes
//! its partition's figures on every sweep tick; the stream keeps the last of each, so a new
//! edge has them at once.

use std::collections::BTreeMap;
use std::sync::RwLock;

use presence_events::{ClusterStats, Partition};

/// The newest figures of every partition.
#[derive(Default)]
pub(crate) struct ClusterFigures {
    latest: RwLock<BTreeMap<Partition, ClusterStats>>,
}

impl ClusterFigures {
    /// The newest figures of each partition that has published any.
    pub(crate) fn partitions(&self) -> BTreeMap<Partition, ClusterStats> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps `stats` if they are newer than what is known of their partition (a
    /// resubscription redelivers).
    pub(super) fn update(&self, stats: ClusterStats) {
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        let known = latest.get(&stats.partition);
        if known.is_none_or(|known| known.seq < stats.seq) {
            latest.insert(stats.partition, stats);
        }
    }
}
