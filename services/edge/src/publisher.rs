//! Appends this edge's events to the log, stamped with the node id and the time.

use std::sync::Arc;

use bytes::Bytes;
use presence_events::{Event, EventBody, Millis, NodeId, Subjects};
use presence_log::{EventLog, LogError, Outgoing, publish_durable};

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

    /// The log message for an event happening now.
    pub(crate) fn message(&self, body: EventBody) -> Outgoing {
        let event = Event::new(self.node.clone(), Millis::now(), body);
        Outgoing {
            subject: self.subjects.event(event.kind()),
            msg_id: event.id.to_string(),
            payload: Bytes::from(event.encode()),
        }
    }

    /// Appends an event happening now; resolves once it is durable.
    pub(crate) async fn publish(&self, body: EventBody) -> Result<u64, LogError> {
        let kind = body.kind();
        let result = publish_durable(self.log.as_ref(), self.message(body)).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("presence_events_published_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        result
    }
}
