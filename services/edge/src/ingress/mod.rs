//! The edge's way into the log. Every event this edge writes goes through the
//! [`EventPublisher`], stamped with the node and the time; heartbeats (of sockets and of
//! active-users tabs) go through the [`BeatBatcher`], which appends the latest beat of every
//! connection once per flush interval.

mod availability;
mod beats;
mod publisher;

use std::sync::Arc;
use std::time::Duration;

use presence_events::{NodeId, Subjects};
use presence_log::EventLog;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use beats::BeatBatcher;
pub(crate) use publisher::EventPublisher;

/// The publisher and the beat batcher of one edge.
pub(crate) struct Ingress {
    pub(crate) publisher: EventPublisher,
    pub(crate) beats: BeatBatcher,
    /// How often the beat batch is appended.
    pub(crate) beat_flush: Duration,
    stop_beats: CancellationToken,
}

impl Ingress {
    /// Starts the beat batcher on `tasks`.
    pub(crate) fn start(
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        node: NodeId,
        beat_flush: Duration,
        tasks: &TaskTracker,
    ) -> Self {
        let publisher = EventPublisher::new(log, subjects, node);
        // The batcher has a token of its own: it outlives the sockets (see `stop`).
        let stop_beats = CancellationToken::new();
        let beats = BeatBatcher::start(publisher.clone(), beat_flush, tasks, stop_beats.clone());
        Self {
            publisher,
            beats,
            beat_flush,
            stop_beats,
        }
    }

    /// Appends the last pending heartbeats and stops the batcher. Called once the sockets are
    /// closed, so that leaves appended while closing still come after their beats in the log.
    pub(crate) fn stop(&self) {
        self.stop_beats.cancel();
    }
}
