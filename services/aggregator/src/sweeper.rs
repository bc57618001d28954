//! The aggregator's clocks: every sweep interval it appends a `tick` event, every metrics
//! interval a `metrics_tick`. The fold sweeps (or computes the metrics) when it reads the
//! tick, at the tick's time, so a replay of the log does so exactly where the live system did.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use presence_events::{Event, EventBody, Millis, NodeId, Subjects};
use presence_log::{EventLog, Outgoing, publish_durable};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub(crate) async fn publish_ticks(
    tick: EventBody,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    node: NodeId,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let subject = subjects.event(tick.kind());
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {}
        }
        let event = Event::new(node.clone(), Millis::now(), tick.clone());
        let msg = Outgoing {
            subject: subject.clone(),
            msg_id: event.id.to_string(),
            payload: Bytes::from(event.encode()),
        };
        // A lost tick only delays the sweep to the next one.
        if let Err(e) = publish_durable(log.as_ref(), msg).await {
            metrics::counter!("presence_ticks_failed_total", "kind" => tick.kind()).increment(1);
            tracing::warn!(error = %e, kind = tick.kind(), "could not append a clock tick");
        }
    }
}
