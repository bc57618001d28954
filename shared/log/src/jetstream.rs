//! The event log on NATS JetStream: the cluster's source of truth.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::{
    AckFuture, Acker, Delivered, Deliveries, EventLog, LogError, Outgoing, StartAt, StreamSpec,
};

/// The event log on a NATS JetStream server.
/// Most bytes one pull of a durable consumer asks for. The server drops messages (publish
/// acks among them) for a client with more than 64 MiB pending, as a slow consumer: 1,000 beat
/// batches of a few hundred kilobytes each used to get there. Two pulls in flight stay well
/// under it.
const PULL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Most messages one pull of an ordered consumer asks for, for the same reason (100 beat
/// batches are about 25 MB; the client's default is 500).
const ORDERED_MAX_BATCH: i64 = 100;

#[derive(Clone)]
pub struct JetStreamLog {
    context: jetstream::Context,
}

impl JetStreamLog {
    /// Connects to the NATS server at `url`, naming the connection `client_name`.
    pub async fn connect(url: &str, client_name: &str) -> Result<Self, LogError> {
        let client = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| LogError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .max_ack_inflight(10_000)
            .backpressure_on_inflight(true)
            .build(client);
        Ok(Self { context })
    }

    /// Whether the connection to the server is up.
    pub fn is_connected(&self) -> bool {
        self.context.client().connection_state() == async_nats::connection::State::Connected
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
            let publish = jetstream::message::PublishMessage::build()
                .payload(msg.payload)
                .message_id(msg.msg_id);
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
        start: StartAt,
        durable: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>> {
        Box::pin(async move {
            let stream = self.stream(stream_name).await?;
            let consume_error = |e: &dyn std::fmt::Display| LogError::Consume {
                stream: stream_name.to_owned(),
                reason: e.to_string(),
            };
            // "Last per subject" needs a filter; the stream's own subjects select everything.
            let filter_subject = match start {
                StartAt::LastPerSubject => stream
                    .cached_info()
                    .config
                    .subjects
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let messages: BoxStream<'static, Result<jetstream::Message, String>> = match durable {
                Some(durable) => {
                    // Replace any earlier consumer of this name: the caller decides where to resume.
                    if let Err(e) = stream.delete_consumer(durable).await {
                        tracing::debug!(error = %e, durable, "no earlier consumer to replace");
                    }
                    let consumer = stream
                        .create_consumer(consumer::pull::Config {
                            durable_name: Some(durable.to_owned()),
                            deliver_policy: deliver_policy(start),
                            filter_subject: filter_subject.clone(),
                            ack_policy: consumer::AckPolicy::All,
                            max_ack_pending: 100_000,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| consume_error(&e))?;
                    let messages = consumer
                        .stream()
                        .max_messages_per_batch(1000)
                        .max_bytes_per_batch(PULL_MAX_BYTES)
                        .messages()
                        .await
                        .map_err(|e| consume_error(&e))?;
                    Box::pin(messages.map_err(|e| e.to_string()))
                }
                None => {
                    let consumer = stream
                        .create_consumer(consumer::pull::OrderedConfig {
                            deliver_policy: deliver_policy(start),
                            filter_subject,
                            // Ordered pulls have no byte limit: cap their count instead.
                            max_batch: ORDERED_MAX_BATCH,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| consume_error(&e))?;
                    let messages = consumer.messages().await.map_err(|e| consume_error(&e))?;
                    Box::pin(messages.map_err(|e| e.to_string()))
                }
            };
            let name = stream_name.to_owned();
            let acked = durable.is_some();
            let deliveries: Deliveries = Box::pin(messages.map(move |m| {
                m.map_err(|reason| LogError::Consume {
                    stream: name.clone(),
                    reason,
                })
                .and_then(|m| into_delivered(&name, m, acked))
            }));
            Ok(deliveries)
        })
    }

    fn last_sequence<'a>(&'a self, stream_name: &'a str) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(async move {
            let mut stream = self.stream(stream_name).await?;
            let info = stream.info().await.map_err(|e| LogError::Stream {
                stream: stream_name.to_owned(),
                reason: e.to_string(),
            })?;
            Ok(info.state.last_sequence)
        })
    }
}
