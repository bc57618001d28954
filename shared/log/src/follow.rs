//! Following a "latest value per subject" stream: the changes (one message per user), the
//! metrics (one per customer) and the cluster figures (one in all). Each of them is both a
//! feed of updates and everyone's current value, so a reader starts with the last message of
//! every subject and then takes each new one as it is appended.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{Delivered, EventLog, StartAt};

/// One decoded message of a followed stream.
#[derive(Debug)]
pub struct Latest<T> {
    /// Stream sequence.
    pub seq: u64,
    /// Messages still waiting behind this one (how far the reader is behind).
    pub pending: u64,
    /// The decoded value.
    pub value: T,
}

/// Follows the last-per-subject stream `stream` until `shutdown`: the last message of every
/// subject first, then every new one, each decoded with `decode` and handed to `apply` in
/// stream order. A message that does not decode is logged, counted in
/// `presence_feed_rejected_total{feed}` and skipped.
///
/// When the subscription fails or ends it resubscribes with backoff, from the last message of
/// every subject again: `apply` sees values it already has and must keep the newer one (each
/// value carries the sequence it was derived at). `on_subscribed` runs each time a
/// subscription is in place, so a reader can report itself ready.
pub async fn follow_latest<T, E, D, H, Fut>(
    log: &dyn EventLog,
    stream: &str,
    feed: &'static str,
    shutdown: &CancellationToken,
    decode: D,
    mut on_subscribed: impl FnMut(),
    mut apply: H,
) where
    E: Display,
    D: Fn(&[u8]) -> Result<T, E>,
    H: FnMut(Latest<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match log.subscribe(stream, StartAt::LastPerSubject, None).await {
            Ok(mut deliveries) => {
                backoff = Duration::from_millis(100);
                on_subscribed();
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = deliveries.next() => next,
                    };
                    match next {
                        Some(Ok(delivered)) => {
                            if let Some(latest) = decoded(&decode, delivered, stream, feed) {
                                apply(latest).await;
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, stream, "delivery failed"),
                        None => {
                            tracing::warn!(stream, "subscription ended; resubscribing");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, stream, retry_in = ?backoff, "cannot read the stream")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn decoded<T, E: Display>(
    decode: impl Fn(&[u8]) -> Result<T, E>,
    delivered: Delivered,
    stream: &str,
    feed: &'static str,
) -> Option<Latest<T>> {
    match decode(&delivered.payload) {
        Ok(value) => Some(Latest {
            seq: delivered.seq,
            pending: delivered.pending,
            value,
        }),
        Err(e) => {
            metrics::counter!("presence_feed_rejected_total", "feed" => feed).increment(1);
            tracing::error!(stream, seq = delivered.seq, error = %e, "skipping an undecodable message");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;
    use crate::{MemoryLog, Outgoing, StreamSpec, publish_durable};

    #[tokio::test]
    async fn a_follower_gets_every_subjects_latest_value_then_new_ones_and_skips_garbage() {
        let log = MemoryLog::new();
        log.ensure_stream(StreamSpec {
            name: "LATEST".into(),
            subjects: vec!["latest.>".into()],
            max_msgs_per_subject: 1,
            max_age: Duration::ZERO,
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
        })
        .await
        .unwrap();
        let append = |subject: &str, body: &str, id: &str| Outgoing {
            subject: format!("latest.{subject}"),
            msg_id: id.into(),
            payload: Bytes::from(body.to_owned()),
        };
        for (subject, body, id) in [("a", "1", "m1"), ("b", "2", "m2"), ("a", "3", "m3")] {
            publish_durable(&log, append(subject, body, id))
                .await
                .unwrap();
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let follower = {
            let (seen, shutdown) = (seen.clone(), shutdown.clone());
            let log = log.clone();
            tokio::spawn(async move {
                follow_latest(
                    &log,
                    "LATEST",
                    "test",
                    &shutdown,
                    |bytes| {
                        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                        text.parse::<u32>().map_err(|e| e.to_string())
                    },
                    || {},
                    |latest| {
                        seen.lock().unwrap().push(latest.value);
                        std::future::ready(())
                    },
                )
                .await
            })
        };
        let seen_at_least = |n: usize| {
            let seen = seen.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while seen.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        // The latest values are read first: a newer append would replace one not yet read.
        seen_at_least(2).await;
        for (subject, body, id) in [("c", "not a number", "m4"), ("b", "5", "m5")] {
            publish_durable(&log, append(subject, body, id))
                .await
                .unwrap();
        }
        seen_at_least(3).await;
        shutdown.cancel();
        follower.await.unwrap();
        // Subject a's first value was replaced before the follower started; c never decoded.
        assert_eq!(*seen.lock().unwrap(), [2, 3, 5]);
    }
}
