//! Following a "latest value per subject" stream: the changes (one message per user), the
//! metrics (one per customer) and the cluster figures (one in all). Each of them is both a
//! feed of updates and everyone's current value, so a reader starts with the last message of
//! every subject and then takes each new one as it is appended.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{Delivered, EventLog, StartAt};

/// One decoded message of a followed stream.
#[derive(Debug)]
pub struct Latest<T> {
    /// Messages still waiting behind this one (how far the reader is behind).
    pub pending: u64,
    /// Its sequence in the stream.
    pub seq: u64,
    /// The decoded value.
    pub value: T,
}

/// A "latest value per subject" stream, and how to read its messages.
pub struct LatestFeed<T, E> {
    /// Label of the feed in `presence_feed_rejected_total`.
    name: &'static str,
    stream: String,
    decode: fn(&[u8]) -> Result<T, E>,
}

impl<T, E: Display> LatestFeed<T, E> {
    /// The feed `name` of `stream`, whose messages `decode` reads.
    pub fn new(name: &'static str, stream: String, decode: fn(&[u8]) -> Result<T, E>) -> Self {
        Self {
            name,
            stream,
            decode,
        }
    }

    /// Follows the stream until `shutdown`: the last message of every subject first, then
    /// every new one, each decoded and handed to `apply` in stream order. A message that does
    /// not decode is logged, counted in `presence_feed_rejected_total{feed}` and skipped.
    ///
    /// When the subscription fails or ends (a missed heartbeat: the stream's leader moved) it
    /// resubscribes with backoff, right after the newest message taken in, so every value
    /// appended meanwhile comes through; `apply` may still see a value twice and must keep
    /// the newer one (each value carries the sequence it was derived at). `on_caught_up` runs
    /// once per subscription, when everything the stream held as it began has been handed
    /// to `apply` (at once if there was nothing to read), so a reader reports itself ready
    /// only with a complete view.
    pub async fn follow<H, Fut>(
        &self,
        log: &dyn EventLog,
        shutdown: &CancellationToken,
        mut on_caught_up: impl FnMut(),
        mut apply: H,
    ) where
        H: FnMut(Latest<T>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let stream = self.stream.as_str();
        let mut backoff = Duration::from_millis(100);
        // The newest sequence taken in: a resubscription resumes right after it, so nothing
        // appended meanwhile is skipped (the last value per subject alone would skip the
        // values in between).
        let mut taken = 0;
        while !shutdown.is_cancelled() {
            let start = match taken {
                0 => StartAt::LastPerSubject,
                seq => StartAt::Sequence(seq + 1),
            };
            match log.subscribe(stream, None, start).await {
                Ok(mut deliveries) => {
                    backoff = Duration::from_millis(100);
                    let mut caught_up = nothing_to_read(log, stream, start).await;
                    if caught_up {
                        on_caught_up();
                    }
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            next = deliveries.next() => next,
                        };
                        match next {
                            Some(Ok(delivered)) => {
                                taken = taken.max(delivered.seq);
                                let last = delivered.pending == 0;
                                if let Some(latest) = self.decoded(delivered) {
                                    apply(latest).await;
                                }
                                if last && !caught_up {
                                    caught_up = true;
                                    on_caught_up();
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
            // At most half a second apart (with the setup's own bound, a retry every 1.5 s):
            // a stream back from an election is read again at once.
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// As [`LatestFeed::follow`], for a reader that takes each value in at once; owns what
    /// it needs, so it can be spawned as it is.
    pub async fn keep(
        self,
        log: Arc<dyn EventLog>,
        shutdown: CancellationToken,
        mut apply: impl FnMut(Latest<T>),
    ) {
        let apply = |latest| {
            apply(latest);
            std::future::ready(())
        };
        self.follow(log.as_ref(), &shutdown, || {}, apply).await;
    }

    fn decoded(&self, delivered: Delivered) -> Option<Latest<T>> {
        match (self.decode)(&delivered.payload) {
            Ok(value) => Some(Latest {
                pending: delivered.pending,
                seq: delivered.seq,
                value,
            }),
            Err(e) => {
                metrics::counter!("presence_feed_rejected_total", "feed" => self.name).increment(1);
                tracing::error!(stream = self.stream, seq = delivered.seq, error = %e, "skipping an undecodable message");
                None
            }
        }
    }
}

/// Whether a subscription of `stream` from `start` has nothing to read yet: the stream holds
/// no message (from `start` on). Unknown (the stream cannot be asked) reads as `false`: the
/// first delivery with nothing behind it then tells.
async fn nothing_to_read(log: &dyn EventLog, stream: &str, start: StartAt) -> bool {
    let Ok(last) = log.last_sequence(stream).await else {
        return false;
    };
    match start {
        StartAt::Sequence(from) => last < from,
        StartAt::New => true,
        StartAt::LastPerSubject => log
            .first_sequence(stream)
            .await
            .is_ok_and(|first| first > last),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::{MemoryLog, Outgoing, StreamSpec, publish_durable};

    fn latest_stream(name: &str) -> StreamSpec {
        StreamSpec {
            name: name.into(),
            subjects: vec![format!("{}.>", name.to_lowercase())],
            max_msgs_per_subject: 1,
            max_age: Duration::ZERO,
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            allow_message_ttl: false,
        }
    }

    /// Follows `stream` until caught up; returns how many values had been applied then.
    async fn applied_when_caught_up(log: &MemoryLog, stream: &str) -> usize {
        let applied = Arc::new(Mutex::new(0usize));
        let at_catch_up = Arc::new(Mutex::new(None));
        let shutdown = CancellationToken::new();
        let feed = LatestFeed::new("test", stream.into(), |bytes: &[u8]| {
            Ok::<_, String>(bytes.len())
        });
        let (counter, mark, stop) = (applied.clone(), at_catch_up.clone(), shutdown.clone());
        let follow = feed.follow(
            log,
            &shutdown,
            move || {
                *mark.lock().unwrap() = Some(*counter.lock().unwrap());
                stop.cancel();
            },
            |_| {
                *applied.lock().unwrap() += 1;
                std::future::ready(())
            },
        );
        tokio::time::timeout(Duration::from_secs(5), follow)
            .await
            .expect("caught up");
        at_catch_up.lock().unwrap().expect("caught up once")
    }

    #[tokio::test]
    async fn a_follower_is_caught_up_only_once_the_latest_values_are_in_or_at_once_if_none() {
        let log = MemoryLog::new();
        log.ensure_stream(latest_stream("EMPTY")).await.unwrap();
        assert_eq!(applied_when_caught_up(&log, "EMPTY").await, 0);
        log.ensure_stream(latest_stream("FULL")).await.unwrap();
        for i in 0..50 {
            let msg = Outgoing {
                subject: format!("full.{}", i % 20),
                msg_id: format!("m{i}"),
                payload: Bytes::from(vec![b'x'; i + 1]),
                ttl: None,
            };
            publish_durable(&log, msg).await.unwrap();
        }
        assert_eq!(applied_when_caught_up(&log, "FULL").await, 20);
    }

    #[tokio::test]
    async fn a_follower_gets_every_subjects_latest_value_then_new_ones_and_skips_garbage() {
        let log = MemoryLog::new();
        log.ensure_stream(latest_stream("LATEST")).await.unwrap();
        let append = |subject: &str, body: &str, id: &str| Outgoing {
            subject: format!("latest.{subject}"),
            msg_id: id.into(),
            payload: Bytes::from(body.to_owned()),
            ttl: None,
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
            let feed = LatestFeed::new("test", "LATEST".into(), |bytes| {
                let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                text.parse::<u32>().map_err(|e| e.to_string())
            });
            let log: Arc<dyn EventLog> = Arc::new(log.clone());
            tokio::spawn(feed.keep(log, shutdown, move |latest| {
                seen.lock().unwrap().push(latest.value)
            }))
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
