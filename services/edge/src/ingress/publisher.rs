//! Appends this edge's events to the log, stamped with the node id and the time.

use std::sync::Arc;

use bytes::Bytes;
use presence_events::{
    EncodeError, Event, EventBody, Millis, NodeId, Partition, Partitions, Subjects,
};
use presence_log::{EventLog, LogError, Outgoing, publish_durable};

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
}

/// Appends events of this edge.
#[derive(Clone)]
pub(crate) struct EventPublisher {
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
}

impl EventPublisher {
    pub(crate) fn new(log: Arc<dyn EventLog>, subjects: Subjects, node: NodeId) -> Self {
        Self {
            log,
            subjects,
            node,
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
        })
    }

    /// Appends an event happening now; resolves once it is durable.
    pub(crate) async fn publish(&self, body: EventBody) -> Result<u64, PublishError> {
        let kind = body.kind();
        let result = match self.message(body) {
            Ok(message) => publish_durable(self.log.as_ref(), message)
                .await
                .map_err(PublishError::from),
            Err(e) => Err(e),
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("presence_events_published_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        result
    }
}
