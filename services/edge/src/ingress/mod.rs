//! The edge's way into the log. Every event this edge writes goes through the
//! [`EventPublisher`], stamped with the node and the time; heartbeats (of sockets and of
//! active-users tabs) go through the [`BeatBatcher`], which appends the latest beat of every
//! connection once per flush interval; the [`EdgeLease`] tells the aggregator this edge is
//! alive.

mod availability;
mod beats;
mod lease;
mod publisher;

use std::sync::Arc;
use std::time::Duration;

use presence_events::{NodeId, Subjects};
use presence_log::EventLog;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use beats::BeatBatcher;
pub(crate) use lease::EdgeLease;
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
    /// Starts the beat batcher on `tasks` (beating the sockets itself every `transport_beats`
    /// under transport liveness); with a `lease` (not zero), takes the edge's lease
    /// first (waiting a few seconds at most) and keeps it renewed.
    pub(crate) async fn start(
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        node: NodeId,
        beat_flush: Duration,
        transport_beats: Option<Duration>,
        lease: Duration,
        tasks: &TaskTracker,
    ) -> Self {
        let publisher = EventPublisher::new(log, subjects, node);
        // The batcher and the lease have a token of their own: they outlive the sockets (see
        // `stop`).
        let stop_beats = CancellationToken::new();
        let beats = BeatBatcher::start(
            publisher.clone(),
            beat_flush,
            transport_beats,
            tasks,
            stop_beats.clone(),
        );
        let lease = (!lease.is_zero()).then(|| EdgeLease::new(publisher.clone(), lease));
        if let Some(lease) = &lease {
            if !lease.take(Duration::from_secs(5)).await {
                tracing::warn!("could not take the edge lease yet; renewing it in the background");
            }
            tasks.spawn(lease.clone().hold(stop_beats.clone()));
        }
        Self {
            publisher,
            beats,
            beat_flush,
            stop_beats,
        }
    }

    /// Appends the last pending heartbeats, stops the batcher and releases the lease. Called
    /// once the sockets are closed, so that leaves appended while closing still come after
    /// their beats in the log.
    pub(crate) fn stop(&self) {
        self.stop_beats.cancel();
    }
}
