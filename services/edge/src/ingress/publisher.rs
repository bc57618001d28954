//! Appends this edge's events to the log, stamped with the node id and the time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use presence_events::{
    EncodeError, Event, EventBody, Millis, NodeId, Partition, Partitions, Subjects,
};
use presence_log::{EventLog, LogError, Outgoing, publish_durable, publish_retrying};

use super::availability::Availability;

/// How long a departure (a leave) is retried while the log is away. After the heartbeat
/// timeout the sweep would close the connection anyway; a leave stored later than that is
/// of a connection already closed, and changes nothing.
pub(crate) const DEPARTURE_RETRY: Duration = Duration::from_secs(30);

/// Why an event was not appended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The log did not take it (unreachable, or no acknowledgement in time).
    #[error(transparent)]
    Log(#[from] LogError),
    /// It could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// It spans partitions (a batch) or is not an edge's to write (a clock tick).
    #[error("a {0} event has no partition of its own")]
    NoPartition(&'static str),
    /// Not tried: the log is away (no connection, or the last appends failed).
    #[error("the event log is unavailable: not connected, or its last appends failed")]
    Unavailable,
}

/// Appends events of this edge.
#[derive(Clone)]
pub(crate) struct EventPublisher {
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
    availability: Arc<Availability>,
}

impl EventPublisher {
    pub(crate) fn new(log: Arc<dyn EventLog>, subjects: Subjects, node: NodeId) -> Self {
        Self {
            log,
            subjects,
            node,
            availability: Arc::default(),
        }
    }

    /// Whether an admission (a connect, a status, an HTTP write) should be tried now; when
    /// `false`, refuse it at once: the log is away.
    pub(crate) fn admit(&self) -> bool {
        self.availability
            .admit(self.log.reachable(), Instant::now())
    }

    /// Records that appends succeed again (a batch of heartbeats landed).
    pub(crate) fn appended(&self) {
        self.availability.record(true, Instant::now());
    }

    /// `available` while appends succeed; `disconnected` while the connection to the log is
    /// down; `unavailable` while connected but the last append failed.
    pub(crate) fn log_state(&self) -> &'static str {
        match (self.log.reachable(), self.availability.is_up()) {
            (false, _) => "disconnected",
            (true, false) => "unavailable",
            (true, true) => "available",
        }
    }

    pub(crate) fn log(&self) -> &dyn EventLog {
        self.log.as_ref()
    }

    /// How the log is partitioned.
    pub(crate) fn partitions(&self) -> Partitions {
        self.subjects.partitions()
    }

    /// The log message for an event of one user or customer happening now, in its partition.
    /// An event that cannot be encoded (a bug: events hold only strings and numbers) is
    /// counted and logged, and never appended.
    pub(crate) fn message(&self, body: EventBody) -> Result<Outgoing, PublishError> {
        let partition = self
            .subjects
            .partitions()
            .of_event(&body)
            .ok_or(PublishError::NoPartition(body.kind()))?;
        self.message_in(partition, body)
    }

    /// The log message for an event happening now in `partition` (a batch of beats, all of
    /// that partition).
    pub(crate) fn message_in(
        &self,
        partition: Partition,
        body: EventBody,
    ) -> Result<Outgoing, PublishError> {
        let event = Event::new(self.node.clone(), Millis::now(), body);
        let payload = event.encode().inspect_err(|e| {
            metrics::counter!("presence_encode_failures_total", "what" => e.what).increment(1);
            tracing::error!(error = %e, kind = event.kind(), "cannot encode an event");
        })?;
        Ok(Outgoing {
            subject: self.subjects.event(partition, event.kind()),
            msg_id: event.id.to_string(),
            payload: Bytes::from(payload),
            ttl: None,
        })
    }

    /// Appends an event of an admission (a join, a status) happening now, once; resolves
    /// once it is durable. Refused at once, without trying, while the log is away.
    pub(crate) async fn publish(&self, body: EventBody) -> Result<u64, PublishError> {
        let kind = body.kind();
        if !self.admit() {
            metrics::counter!("presence_events_published_total", "kind" => kind, "outcome" => "refused")
                .increment(1);
            return Err(PublishError::Unavailable);
        }
        let message = self.message(body)?;
        self.finish(kind, publish_durable(self.log.as_ref(), message).await)
    }

    /// Appends a departure (a leave) happening now, sending it again with the same message
    /// id (stored once) until it is durable or [`DEPARTURE_RETRY`] has passed. Never refused
    /// for the log being away: a leave lost would keep the user online until the sweep.
    pub(crate) async fn publish_departure(&self, body: EventBody) -> Result<u64, PublishError> {
        let kind = body.kind();
        let message = self.message(body)?;
        let result = publish_retrying(self.log.as_ref(), message, DEPARTURE_RETRY).await;
        self.finish(kind, result)
    }

    fn finish(
        &self,
        kind: &'static str,
        result: Result<u64, LogError>,
    ) -> Result<u64, PublishError> {
        self.availability.record(result.is_ok(), Instant::now());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("presence_events_published_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        Ok(result?)
    }
}
