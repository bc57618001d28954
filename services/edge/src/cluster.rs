//! The cluster figures this edge serves at `/api/health`: the aggregator publishes them on
//! every sweep tick; the stream keeps the last, so a new edge has them at once.

use std::sync::{Arc, RwLock};

use presence_events::{ClusterStats, Subjects};
use presence_log::{EventLog, StartAt};
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

    pub(crate) async fn follow(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        shutdown: CancellationToken,
    ) {
        let stream = subjects.stats_stream();
        presence_log::follow_stream(
            log.as_ref(),
            &stream,
            StartAt::LastPerSubject,
            &shutdown,
            || {},
            |delivered| {
                match ClusterStats::decode(&delivered.payload) {
                    Ok(stats) => {
                        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
                        if latest.as_ref().is_none_or(|known| known.seq < stats.seq) {
                            *latest = Some(stats);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "skipping undecodable cluster figures"),
                }
                std::future::ready(())
            },
        )
        .await;
    }
}
