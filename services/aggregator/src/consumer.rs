//! The fold loop: reads the event log with a durable consumer, applies each event to the
//! [`PresenceState`] and the [`ActiveUsers`], and appends the resulting presence changes and
//! customer metrics to their streams before acknowledging the events they came from.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use presence_events::{Event, Subjects};
use presence_log::{EventLog, Outgoing, StartAt, publish_all_durable};
use tokio_util::sync::CancellationToken;

use crate::sessions::ActiveUsers;
use crate::state::PresenceState;

/// Everything the aggregator folds the log into.
pub(crate) struct Fold {
    pub(crate) presence: PresenceState,
    pub(crate) active: ActiveUsers,
}

const CONSUMER_NAME: &str = "aggregator";
const BATCH: usize = 512;

pub(crate) async fn fold_events(
    mut state: Fold,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    shutdown: CancellationToken,
) {
    let stream = subjects.events_stream();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let start = StartAt::Sequence(state.presence.last_seq() + 1);
        match log.subscribe(&stream, start, Some(CONSUMER_NAME)).await {
            Ok(deliveries) => {
                tracing::info!(
                    from = state.presence.last_seq() + 1,
                    "folding the event stream"
                );
                backoff = Duration::from_millis(100);
                fold_until_interrupted(&mut state, deliveries, log.as_ref(), &subjects, &shutdown)
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot read the event stream")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Folds deliveries until the subscription ends or shutdown.
async fn fold_until_interrupted(
    state: &mut Fold,
    deliveries: presence_log::Deliveries,
    log: &dyn EventLog,
    subjects: &Subjects,
    shutdown: &CancellationToken,
) {
    let mut batches = deliveries.ready_chunks(BATCH);
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            batch = batches.next() => batch,
        };
        let Some(batch) = batch else {
            tracing::warn!("event subscription ended; resubscribing");
            return;
        };
        let mut changes = Vec::new();
        let mut newest = None;
        for delivered in batch {
            let delivered = match delivered {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "event delivery failed");
                    continue;
                }
            };
            match Event::decode(&delivered.payload) {
                Ok(event) => {
                    metrics::counter!("presence_events_consumed_total", "kind" => event.kind())
                        .increment(1);
                    for metrics in state.active.apply(delivered.seq, &event) {
                        changes.push(Outgoing {
                            subject: subjects.metrics(&metrics.tenant),
                            msg_id: metrics.msg_id(),
                            payload: Bytes::from(metrics.encode()),
                        });
                    }
                    for change in state.presence.apply(delivered.seq, &event) {
                        metrics::counter!("presence_changes_total", "cause" => change.cause.as_str())
                            .increment(1);
                        changes.push(Outgoing {
                            subject: subjects.change(&change.tenant, &change.user),
                            msg_id: change.msg_id(),
                            payload: Bytes::from(change.encode()),
                        });
                    }
                }
                Err(e) => {
                    // Nothing to fold; skipping it loses nothing that was understood.
                    metrics::counter!("presence_events_rejected_total", "reason" => "undecodable")
                        .increment(1);
                    tracing::error!(seq = delivered.seq, error = %e, "skipping an undecodable event");
                }
            }
            metrics::gauge!("presence_consumer_lag_messages", "consumer" => CONSUMER_NAME)
                .set(delivered.pending as f64);
            newest = Some(delivered);
        }
        record_stats(&state.presence);
        if !changes.is_empty() && !publish_all_durable(log, &changes, shutdown).await {
            return;
        }
        if let Some(newest) = newest
            && let Err(e) = newest.ack().await
        {
            tracing::warn!(error = %e, "acknowledging folded events failed");
        }
    }
}

fn record_stats(state: &PresenceState) {
    let stats = state.stats();
    metrics::gauge!("presence_online_users").set(stats.online_users as f64);
    metrics::gauge!("presence_peak_online_users").set(stats.peak_online as f64);
    metrics::gauge!("presence_folded_sequence").set(state.last_seq() as f64);
}
