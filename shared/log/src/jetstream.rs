//! The event log on NATS JetStream: the cluster's source of truth.

use std::time::Duration;

use std::sync::Arc;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::{
    AckFuture, Acker, Board, BoardEntry, BoardSpec, Delivered, Deliveries, EventLog, LogError,
    Outgoing, StartAt, StreamSpec,
};

/// Most bytes one pull asks for. The server drops messages (publish
/// acks among them) for a client with more than 64 MiB pending, as a slow consumer: 1,000 beat
/// batches of a few hundred kilobytes each used to get there. Two pulls in flight stay well
/// under it.
const PULL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How often the server tells a reader it is alive while there is nothing to deliver; two
/// missed in a row end the subscription, and the reader resubscribes.
const LIVENESS_HEARTBEAT: Duration = Duration::from_secs(1);
/// A message of a shared subscription not acknowledged this long after delivery (its reader
/// died or stalled) is delivered again.
const SHARED_ACK_WAIT: Duration = Duration::from_secs(10);

/// The event log on a NATS JetStream server (or cluster).
#[derive(Clone)]
pub struct JetStreamLog {
    context: jetstream::Context,
}

impl JetStreamLog {
    /// Connects to the NATS servers at `url` (one URL, or several separated by commas: the
    /// nodes of a cluster, any of which will do), naming the connection `client_name`. The
    /// connection moves to another node when its node goes away.
    pub async fn connect(url: &str, client_name: &str) -> Result<Self, LogError> {
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(5))
            // At most half a second between attempts (the client's default grows to 4 s): a
            // cluster back from an outage is used again at once.
            .reconnect_delay_callback(|attempts| {
                let exp = u32::try_from(attempts.min(10)).unwrap_or(10);
                Duration::from_millis(25 * 2_u64.pow(exp)).min(Duration::from_millis(500))
            })
            .connect(servers.as_slice())
            .await
            .map_err(|e| LogError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        // A publish not acknowledged within 3 s is retried (with its message id, so it is
        // stored once): a publish sent to a stream leader that just died is never answered,
        // and heartbeats waiting 10 s on it would be swept.
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .max_ack_inflight(10_000)
            .backpressure_on_inflight(true)
            .build(client);
        Ok(Self { context })
    }

    /// Whether the connection to the server is up.
    pub fn is_connected(&self) -> bool {
        self.context.client().connection_state() == async_nats::connection::State::Connected
    }

    /// What `name` holds now (fresh from the server).
    async fn state(&self, name: &str) -> Result<stream::State, LogError> {
        let mut stream = self.stream(name).await?;
        let info = stream.info().await.map_err(|e| LogError::Stream {
            stream: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(info.state.clone())
    }

    async fn stream(&self, name: &str) -> Result<stream::Stream, LogError> {
        self.context
            .get_stream(name)
            .await
            .map_err(|e| LogError::Stream {
                stream: name.to_owned(),
                reason: e.to_string(),
            })
    }
}

fn deliver_policy(start: StartAt) -> consumer::DeliverPolicy {
    match start {
        StartAt::Sequence(seq) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq.max(1),
        },
        StartAt::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
        StartAt::New => consumer::DeliverPolicy::New,
    }
}

/// Setting up a subscription takes at most this long: while a stream elects a new leader (or
/// a cluster comes back from an outage) its requests go unanswered, and the reader does
/// better to retry soon than to wait out the client's 10 s request timeout. A setup that
/// answers after all leaves an idle consumer, removed by the server after its inactive
/// threshold.
const SETUP_TIMEOUT: Duration = Duration::from_secs(1);

async fn within_setup(
    stream: &str,
    setup: impl std::future::Future<Output = Result<Deliveries, LogError>>,
) -> Result<Deliveries, LogError> {
    tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .unwrap_or_else(|_| {
            Err(LogError::Consume {
                stream: stream.to_owned(),
                reason: format!("no answer within {SETUP_TIMEOUT:?}"),
            })
        })
}

fn consume_error(stream: &str, e: &dyn std::fmt::Display) -> LogError {
    LogError::Consume {
        stream: stream.to_owned(),
        reason: e.to_string(),
    }
}

/// Pulls `consumer`'s messages (in batches under the slow-consumer limit, with the server's
/// liveness heartbeats) as [`Deliveries`].
async fn pulled(
    stream_name: &str,
    consumer: consumer::Consumer<consumer::pull::Config>,
    acked: bool,
) -> Result<Deliveries, LogError> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .max_bytes_per_batch(PULL_MAX_BYTES)
        .heartbeat(LIVENESS_HEARTBEAT)
        .expires(LIVENESS_HEARTBEAT * 5)
        .messages()
        .await
        .map_err(|e| consume_error(stream_name, &e))?;
    Ok(deliveries(
        stream_name,
        Box::pin(messages.map_err(|e| e.to_string())),
        acked,
    ))
}

/// A subscription's messages as [`Deliveries`]. The first failure (a missed heartbeat: the
/// consumer or its server is gone) is delivered and ends them, so the reader resubscribes
/// rather than waiting on a consumer that no longer exists.
fn deliveries(
    stream: &str,
    messages: BoxStream<'static, Result<jetstream::Message, String>>,
    acked: bool,
) -> Deliveries {
    let name = stream.to_owned();
    let mapped = messages.map(move |m| {
        m.map_err(|reason| LogError::Consume {
            stream: name.clone(),
            reason,
        })
        .and_then(|m| into_delivered(&name, m, acked))
    });
    Box::pin(futures::stream::unfold(
        Some(Box::pin(mapped)),
        |state| async move {
            let mut messages = state?;
            match messages.next().await? {
                Ok(delivered) => Some((Ok(delivered), Some(messages))),
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

/// A JetStream key-value bucket.
struct JetStreamBoard {
    name: String,
    store: kv::Store,
}

impl JetStreamBoard {
    fn error(&self, e: &dyn std::fmt::Display) -> LogError {
        LogError::Board {
            board: self.name.clone(),
            reason: e.to_string(),
        }
    }
}

impl Board for JetStreamBoard {
    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
    ) -> BoxFuture<'a, Result<Option<u64>, LogError>> {
        Box::pin(async move {
            match self.store.create(key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(self.error(&e)),
            }
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, LogError>> {
        Box::pin(async move {
            match self.store.update(key, value, revision).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(self.error(&e)),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(async move { self.store.put(key, value).await.map_err(|e| self.error(&e)) })
    }

    fn delete<'a>(&'a self, key: &'a str, revision: u64) -> BoxFuture<'a, Result<bool, LogError>> {
        Box::pin(async move {
            match self.store.delete_expect_revision(key, Some(revision)).await {
                Ok(()) => Ok(true),
                Err(e) if e.to_string().contains("wrong last sequence") => Ok(false),
                Err(e) => Err(self.error(&e)),
            }
        })
    }

    fn entries(&self) -> BoxFuture<'_, Result<Vec<BoardEntry>, LogError>> {
        Box::pin(async move {
            let keys: Vec<String> = self
                .store
                .keys()
                .await
                .map_err(|e| self.error(&e))?
                .try_collect()
                .await
                .map_err(|e| self.error(&e))?;
            let mut entries = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(entry) = self.store.entry(key).await.map_err(|e| self.error(&e))?
                    && entry.operation == kv::Operation::Put
                {
                    entries.push(BoardEntry {
                        key: entry.key,
                        value: entry.value,
                        revision: entry.revision,
                    });
                }
            }
            Ok(entries)
        })
    }
}

fn into_delivered(
    stream: &str,
    message: jetstream::Message,
    acked: bool,
) -> Result<Delivered, LogError> {
    let (seq, pending, stored_ms) = message
        .info()
        .map(|info| {
            let stored_ms = info.published.unix_timestamp_nanos() / 1_000_000;
            (info.stream_sequence, info.pending, stored_ms.max(0) as u64)
        })
        .map_err(|e| LogError::Consume {
            stream: stream.to_owned(),
            reason: format!("delivery without stream metadata: {e}"),
        })?;
    let (message, acker) = message.split();
    Ok(Delivered {
        seq,
        subject: message.subject.to_string(),
        payload: message.payload,
        pending,
        stored_ms,
        ack: if acked {
            Acker::JetStream(Box::new(acker))
        } else {
            Acker::None
        },
    })
}

impl EventLog for JetStreamLog {
    fn ensure_stream(&self, spec: StreamSpec) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let config = stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects,
                max_messages_per_subject: spec.max_msgs_per_subject,
                max_age: spec.max_age,
                max_bytes: if spec.max_bytes > 0 {
                    spec.max_bytes
                } else {
                    -1
                },
                duplicate_window: spec.duplicate_window,
                num_replicas: spec.replicas.max(1),
                allow_message_ttl: spec.allow_message_ttl,
                retention: stream::RetentionPolicy::Limits,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            };
            self.context
                .create_or_update_stream(config)
                .await
                .map(|_| ())
                .map_err(|e| LogError::Stream {
                    stream: spec.name,
                    reason: e.to_string(),
                })
        })
    }

    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<AckFuture, LogError>> {
        Box::pin(async move {
            let subject = msg.subject;
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(msg.payload)
                .message_id(msg.msg_id);
            if let Some(ttl) = msg.ttl {
                // Whole seconds, at least one: the server's unit.
                publish = publish.header("Nats-TTL", format!("{}s", ttl.as_secs().max(1)));
            }
            let pending = self
                .context
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| LogError::Publish {
                    subject: subject.clone(),
                    reason: e.to_string(),
                })?;
            let ack: AckFuture = Box::pin(async move {
                pending
                    .await
                    .map(|ack| ack.sequence)
                    .map_err(|e| LogError::Publish {
                        subject,
                        reason: e.to_string(),
                    })
            });
            Ok(ack)
        })
    }

    fn subscribe<'a>(
        &'a self,
        stream_name: &'a str,
        filter: Option<&'a str>,
        start: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>> {
        Box::pin(within_setup(stream_name, async move {
            let stream = self.stream(stream_name).await?;
            // "Last per subject" needs a filter; the stream's own subjects select everything.
            let filter_subject = match (filter, start) {
                (Some(filter), _) => filter.to_owned(),
                (None, StartAt::LastPerSubject) => stream
                    .cached_info()
                    .config
                    .subjects
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                (None, _) => String::new(),
            };
            // An ephemeral pull consumer of its own (one replica, in memory, gone once
            // unused), not the client's "ordered" one: that one notices a lost consumer (its
            // stream leader's node died) only after two 15 s heartbeats. This one's server
            // heartbeats every second; a missed one ends the deliveries, and the reader
            // subscribes again from where it got to.
            let consumer = stream
                .create_consumer(consumer::pull::Config {
                    deliver_policy: deliver_policy(start),
                    filter_subject,
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(10),
                    num_replicas: 1,
                    memory_storage: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| consume_error(stream_name, &e))?;
            pulled(stream_name, consumer, false).await
        }))
    }

    fn subscribe_shared<'a>(
        &'a self,
        stream_name: &'a str,
        durable: &'a str,
        start_if_new: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>> {
        Box::pin(within_setup(stream_name, async move {
            let stream = self.stream(stream_name).await?;
            // Never replaced: every reader of the name shares it, and it keeps its place.
            let consumer = stream
                .get_or_create_consumer(
                    durable,
                    consumer::pull::Config {
                        durable_name: Some(durable.to_owned()),
                        deliver_policy: deliver_policy(start_if_new),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: SHARED_ACK_WAIT,
                        max_ack_pending: 100_000,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| consume_error(stream_name, &e))?;
            pulled(stream_name, consumer, true).await
        }))
    }

    fn board(&self, spec: BoardSpec) -> BoxFuture<'_, Result<Arc<dyn Board>, LogError>> {
        Box::pin(async move {
            let board_error = |e: &dyn std::fmt::Display| LogError::Board {
                board: spec.name.clone(),
                reason: e.to_string(),
            };
            let store = match self.context.get_key_value(&spec.name).await {
                Ok(store) => store,
                Err(_) => self
                    .context
                    .create_key_value(kv::Config {
                        bucket: spec.name.clone(),
                        history: 1,
                        max_age: spec.max_age,
                        num_replicas: spec.replicas.max(1),
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| board_error(&e))?,
            };
            let board: Arc<dyn Board> = Arc::new(JetStreamBoard {
                name: spec.name,
                store,
            });
            Ok(board)
        })
    }

    fn last_sequence<'a>(&'a self, stream_name: &'a str) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(async move { Ok(self.state(stream_name).await?.last_sequence) })
    }

    fn first_sequence<'a>(&'a self, stream_name: &'a str) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(async move {
            let state = self.state(stream_name).await?;
            Ok(if state.messages == 0 {
                state.last_sequence + 1
            } else {
                state.first_sequence
            })
        })
    }

    fn reachable(&self) -> bool {
        self.is_connected()
    }
}
