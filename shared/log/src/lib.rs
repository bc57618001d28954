//! The event log: an append-only, sequenced log of messages with de-duplication, behind one
//! small trait with two implementations: [`JetStreamLog`] (NATS JetStream, the cluster's
//! source of truth) and [`MemoryLog`] (in-process, for `presence standalone`).
//!
//! Everything else in the system is written against [`EventLog`] and never knows which one
//! it talks to. NATS types stay inside this crate.

mod follow;
mod jetstream;
mod memory;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use follow::{Latest, LatestFeed};
pub use jetstream::JetStreamLog;
pub use memory::{MemoryBoard, MemoryLog};

/// Why the log refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log server could not be reached.
    #[error("cannot connect to the event log at {url}: {reason}")]
    Connect {
        /// Where it was looked for.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A stream could not be created or read.
    #[error("stream {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// What failed.
        reason: String,
    },
    /// A message could not be appended durably.
    #[error("publish to {subject} failed: {reason}")]
    Publish {
        /// Its subject.
        subject: String,
        /// What failed.
        reason: String,
    },
    /// A key-value board could not be opened, read or written.
    #[error("board {board}: {reason}")]
    Board {
        /// The board.
        board: String,
        /// What failed.
        reason: String,
    },
    /// Reading deliveries failed.
    #[error("consuming {stream} failed: {reason}")]
    Consume {
        /// The stream.
        stream: String,
        /// What failed.
        reason: String,
    },
}

/// A stream to create (idempotently) at start-up.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Stream name.
    pub name: String,
    /// Subjects it captures (wildcards allowed).
    pub subjects: Vec<String>,
    /// Messages kept per subject (0: unlimited). `1` turns a stream into "latest value per key".
    pub max_msgs_per_subject: i64,
    /// Oldest message kept (zero: forever).
    pub max_age: Duration,
    /// Total size kept, in bytes (0: unlimited); the oldest messages go first.
    pub max_bytes: i64,
    /// Window in which a repeated message id is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// Copies kept, on as many servers of a JetStream cluster (1 on a single server).
    pub replicas: usize,
    /// Whether a message may carry its own time to live ([`Outgoing::ttl`]; NATS 2.11+).
    pub allow_message_ttl: bool,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Subject.
    pub subject: String,
    /// De-duplication id: a second message with the same id within the window is dropped.
    pub msg_id: String,
    /// Body.
    pub payload: Bytes,
    /// Removed from the stream this long after it is stored (`None`: kept by the stream's
    /// limits); the stream must allow it ([`StreamSpec::allow_message_ttl`]). Whole seconds.
    pub ttl: Option<Duration>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At this stream sequence (1 is the first message ever).
    Sequence(u64),
    /// The last message of every subject, then everything new.
    LastPerSubject,
    /// Only messages appended from now on.
    New,
}

/// Resolves to the stream sequence once the message is durably in the log.
pub type AckFuture = BoxFuture<'static, Result<u64, LogError>>;

/// Messages of a subscription, in stream order.
pub type Deliveries = BoxStream<'static, Result<Delivered, LogError>>;

/// One message read from the log.
pub struct Delivered {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was appended on.
    pub subject: String,
    /// Body.
    pub payload: Bytes,
    /// Messages still waiting behind this one for the subscription (consumer lag).
    pub pending: u64,
    /// When the log stored the message, in ms since the epoch, by the log's own clock: the
    /// one clock every reader of the log agrees on, whatever the writers' clocks say.
    pub stored_ms: u64,
    ack: Acker,
}

enum Acker {
    None,
    JetStream(Box<async_nats::jetstream::message::Acker>),
}

impl Delivered {
    /// Confirms processing to a durable subscription: it resumes after this message (and,
    /// as acknowledgements are cumulative, everything before it). A no-op otherwise.
    pub async fn ack(self) -> Result<(), LogError> {
        match self.ack {
            Acker::None => Ok(()),
            Acker::JetStream(acker) => acker.ack().await.map_err(|e| LogError::Consume {
                stream: String::new(),
                reason: format!("ack of sequence {} failed: {e}", self.seq),
            }),
        }
    }
}

/// An append-only, sequenced, de-duplicating log of messages.
pub trait EventLog: Send + Sync + 'static {
    /// Creates the stream, or brings an existing one to `spec`.
    fn ensure_stream(&self, spec: StreamSpec) -> BoxFuture<'_, Result<(), LogError>>;

    /// Sends a message. Messages sent one after another are appended in that order; the
    /// returned future resolves once this one is durable.
    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<AckFuture, LogError>>;

    /// Reads the messages of `stream` (only those on subjects matching `filter`, if given)
    /// from `start`, in order. Nothing is tracked by the log: a reader that restarts says
    /// again where to start.
    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
        filter: Option<&'a str>,
        start: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>>;

    /// Joins the shared subscription `durable` of `stream`, created at `start_if_new` if it
    /// does not exist yet. Every process that joins it gets a share of the messages; each
    /// message is acknowledged on its own with [`Delivered::ack`], and one not acknowledged in
    /// time (its reader died) is delivered again, to whoever reads next.
    fn subscribe_shared<'a>(
        &'a self,
        stream: &'a str,
        durable: &'a str,
        start_if_new: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>>;

    /// Opens (creating if needed) a key-value board.
    fn board(&self, spec: BoardSpec) -> BoxFuture<'_, Result<Arc<dyn Board>, LogError>>;

    /// Sequence of the newest message of `stream` (0 when empty).
    fn last_sequence<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, LogError>>;

    /// Sequence of the oldest message `stream` still keeps (its limits discard older ones);
    /// the next sequence to be written when it keeps none.
    fn first_sequence<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, LogError>>;

    /// Whether the connection to the log is up right now (`false` while the client is
    /// reconnecting: an append would only wait). An in-process log is always reachable.
    fn reachable(&self) -> bool {
        true
    }
}

/// A key-value board to open with [`EventLog::board`].
#[derive(Debug, Clone)]
pub struct BoardSpec {
    /// Its name.
    pub name: String,
    /// An entry not written again for this long disappears (zero: never).
    pub max_age: Duration,
    /// Copies kept, as for streams.
    pub replicas: usize,
}

/// One key's current value on a [`Board`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardEntry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Bytes,
    /// The revision of this value: every write gets a higher one than any before it.
    pub revision: u64,
}

/// A small key-value store with compare-and-set on revisions (a JetStream key-value bucket
/// in a cluster), for leases and permanent settings.
pub trait Board: Send + Sync + 'static {
    /// Writes `value` under `key` if the key holds nothing; its revision, or `None` if it
    /// holds a value already.
    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
    ) -> BoxFuture<'a, Result<Option<u64>, LogError>>;

    /// Replaces the value of `key` if its revision is still `revision`; the new revision, or
    /// `None` if the key was written (or emptied) since.
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, LogError>>;

    /// Writes `value` under `key` whatever it holds; the new revision.
    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, LogError>>;

    /// Empties `key` if its revision is still `revision`; whether it did.
    fn delete<'a>(&'a self, key: &'a str, revision: u64) -> BoxFuture<'a, Result<bool, LogError>>;

    /// Every key that holds a value.
    fn entries(&self) -> BoxFuture<'_, Result<Vec<BoardEntry>, LogError>>;
}

/// Sends a message and waits until it is durable; returns its sequence.
pub async fn publish_durable(log: &dyn EventLog, msg: Outgoing) -> Result<u64, LogError> {
    log.publish(msg).await?.await
}

/// Appends `msg` and waits until it is durable, sending it again (the same message id, so the
/// log stores it once) after a failure, with backoff, until `within` has passed since the
/// first attempt; then returns the last error.
pub async fn publish_retrying(
    log: &dyn EventLog,
    msg: Outgoing,
    within: Duration,
) -> Result<u64, LogError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = Duration::from_millis(50);
    loop {
        let e = match publish_durable(log, msg.clone()).await {
            Ok(seq) => return Ok(seq),
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        if now + backoff >= deadline {
            return Err(e);
        }
        tracing::debug!(error = %e, retry_in = ?backoff, "publish failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// Appends `messages` in order and waits until all are durable, retrying with backoff until
/// it succeeds or `shutdown` is cancelled. Returns `false` only when cancelled before success.
///
/// Messages are pipelined in windows of [`PUBLISH_WINDOW`]: a window is sent, then all its
/// acks are awaited together. After a failure, the first message not known durable is sent
/// alone until it is, and pipelining resumes after it; so a retried message can only land
/// after later ones if those were already stored (and a retry of a stored message is dropped
/// as a duplicate by its id).
pub async fn publish_all_durable(
    log: &dyn EventLog,
    messages: &[Outgoing],
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    let mut from = 0;
    loop {
        match pipelined(log, &messages[from..]).await {
            Ok(()) => return true,
            Err((index, e)) => {
                from += index;
                tracing::warn!(error = %e, count = messages.len() - from, "publish failed; retrying");
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            match publish_durable(log, messages[from].clone()).await {
                Ok(_) => break,
                Err(e) => {
                    // At most a second apart: once the log is back, the heartbeats waiting
                    // here must land before anybody's timeout runs out.
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in = ?backoff, "publish failed; retrying");
                }
            }
        }
        from += 1;
    }
}

/// Messages in flight at once in [`publish_all_durable`].
pub const PUBLISH_WINDOW: usize = 1_000;

/// Sends and confirms `messages` window by window; on failure, the index of the first
/// message not known durable. Every ack of a window is awaited, together, before returning:
/// none is left pending behind the caller's back.
async fn pipelined(log: &dyn EventLog, messages: &[Outgoing]) -> Result<(), (usize, LogError)> {
    for (w, window) in messages.chunks(PUBLISH_WINDOW).enumerate() {
        let base = w * PUBLISH_WINDOW;
        let mut acks = Vec::with_capacity(window.len());
        let mut send_error = None;
        for (i, msg) in window.iter().enumerate() {
            match log.publish(msg.clone()).await {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    send_error = Some((base + i, e));
                    break;
                }
            }
        }
        let results = futures::future::join_all(acks).await;
        if let Some((i, e)) = results
            .into_iter()
            .enumerate()
            .find_map(|(i, r)| r.err().map(|e| (i, e)))
        {
            return Err((base + i, e));
        }
        if let Some(failed) = send_error {
            return Err(failed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod retry_tests;
