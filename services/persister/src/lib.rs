//! The persister: reads the presence changes through a shared durable subscription and
//! writes each user's current presence to PostgreSQL, debounced ([`debounce`]), batched (one
//! statement per flush) and idempotent (a row never goes back to an older sequence).
//!
//! Any number of persisters may run: the subscription hands each a share of the changes,
//! and each change is acknowledged only once its row is written, so the changes a killed
//! persister held are delivered again to another. Rows are guarded by sequence, so a change
//! written twice, or late, never undoes a newer one. While the database is down a persister
//! keeps its changes, retries with backoff and reports not ready.

pub mod debounce;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use presence_events::{EpochFence, Millis, Partitions, PresenceChange, Subjects};
use presence_log::{Delivered, EventLog, StartAt};
use presence_store::Store;
use presence_telemetry::Readiness;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::debounce::{Debouncer, Due};

const CONSUMER: &str = "persister";
/// How often due writes are flushed.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// An offset-only write (no rows) at most this often.
const OFFSET_EVERY: Duration = Duration::from_secs(1);

/// Settings of the persister.
#[derive(Debug, Clone, clap::Args)]
pub struct PersisterConfig {
    /// Online transitions are written after this delay so rapid flaps coalesce (ms); offline
    /// is written at once.
    #[arg(long, env = "PRESENCE_ONLINE_DEBOUNCE_MS", default_value_t = 2_000)]
    pub online_debounce_ms: u64,
}

/// The persister role.
pub struct Persister {
    config: PersisterConfig,
    log: Arc<dyn EventLog>,
    subjects: Subjects,
    store: Store,
    namespace: String,
}

impl Persister {
    /// A persister of the changes under `subjects` into `store`; `namespace` keys its offset.
    pub fn new(
        config: PersisterConfig,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        store: Store,
        namespace: String,
    ) -> Self {
        Self {
            config,
            log,
            subjects,
            store,
            namespace,
        }
    }

    /// Starts persisting on `tasks` until `shutdown`, when everything pending is flushed.
    pub fn start(self, tasks: &TaskTracker, shutdown: CancellationToken, readiness: Readiness) {
        register_metric_families();
        tasks.spawn(self.run(shutdown, readiness));
    }

    async fn run(self, shutdown: CancellationToken, readiness: Readiness) {
        let mut writer = Writer {
            debouncer: Debouncer::new(self.config.online_debounce_ms),
            unacked: VecDeque::new(),
            last_received: 0,
            committed: 0,
            last_commit: Instant::now(),
            retry_at: None,
            backoff: Duration::from_millis(100),
            store: self.store.clone(),
            namespace: self.namespace.clone(),
            readiness,
            partitions: self.subjects.partitions(),
            fence: EpochFence::default(),
        };
        let stream = self.subjects.changes_stream();
        while !shutdown.is_cancelled() {
            let offset = match self.store.consumer_offset(&self.namespace, CONSUMER).await {
                Ok(offset) => offset,
                Err(e) => {
                    writer.readiness.set(false);
                    tracing::warn!(error = %e, "cannot read the persister's offset; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            writer.committed = writer.committed.max(offset);
            writer.last_received = writer.last_received.max(offset);
            let from = writer.committed + 1;
            let mut deliveries = match self
                .log
                .subscribe_shared(&stream, CONSUMER, StartAt::Sequence(from))
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the changes stream; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            tracing::info!(from, "persisting presence changes");
            writer.readiness.set(true);
            let mut ticker = tokio::time::interval(FLUSH_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => writer.flush_due().await,
                    next = deliveries.next() => match next {
                        Some(Ok(delivered)) => writer.take(delivered),
                        Some(Err(e)) => tracing::warn!(error = %e, "change delivery failed"),
                        None => {
                            tracing::warn!("changes subscription ended; resubscribing");
                            break;
                        }
                    },
                }
            }
        }
        writer.flush_everything().await;
    }
}

struct Writer {
    debouncer: Debouncer,
    /// Deliveries not yet acknowledged (payloads dropped), in stream order.
    unacked: VecDeque<Delivered>,
    last_received: u64,
    /// The stream sequence durably written (with its offset) so far.
    committed: u64,
    last_commit: Instant,
    retry_at: Option<Instant>,
    backoff: Duration,
    store: Store,
    namespace: String,
    readiness: Readiness,
    partitions: Partitions,
    fence: EpochFence,
}

impl Writer {
    fn take(&mut self, mut delivered: Delivered) {
        // Everything delivered is offered, even below what was committed: with several
        // persisters sharing the subscription, a change delivered again is one another
        // persister held and never wrote. Rows are guarded by sequence.
        match PresenceChange::decode(&delivered.payload) {
            Ok(change) => {
                let partition = self.partitions.of_user(&change.tenant, &change.user);
                if self.fence.admit(partition, change.epoch) {
                    self.debouncer.offer(change, delivered.seq, Millis::now());
                } else {
                    metrics::counter!("presence_changes_fenced_total").increment(1);
                    tracing::warn!(seq = delivered.seq, epoch = change.epoch, %partition, "skipping a change of a deposed aggregator");
                }
            }
            Err(e) => {
                metrics::counter!("presence_changes_rejected_total").increment(1);
                tracing::error!(seq = delivered.seq, error = %e, "skipping an undecodable change");
            }
        }
        self.last_received = self.last_received.max(delivered.seq);
        metrics::gauge!("presence_consumer_lag_messages", "consumer" => CONSUMER)
            .set(delivered.pending as f64);
        delivered.payload = Default::default();
        self.unacked.push_back(delivered);
        metrics::gauge!("presence_persister_pending_users").set(self.debouncer.len() as f64);
    }

    async fn flush_due(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let due = self.debouncer.take_due(Millis::now());
        self.write(due).await;
    }

    /// Shutdown: everything pending, retried for a few seconds.
    async fn flush_everything(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.debouncer.take_all();
            self.retry_at = None;
            self.write(all).await;
            if self.debouncer.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !self.debouncer.is_empty() {
            tracing::error!(
                pending = self.debouncer.len(),
                "shut down with unwritten changes; they are written after the restart"
            );
        }
    }

    async fn write(&mut self, due: Vec<Due>) {
        // The consumer may move up to just before the oldest change still waiting.
        let offset = match self.debouncer.oldest_pending() {
            Some(oldest) => {
                let written_through = due
                    .iter()
                    .map(|d| d.first_stream_seq)
                    .min()
                    .unwrap_or(oldest);
                oldest
                    .min(written_through)
                    .saturating_sub(1)
                    .max(self.committed)
            }
            None => self.last_received,
        };
        let offset = if due.is_empty() {
            offset
        } else {
            offset.min(self.last_received)
        };
        let advanced = offset > self.committed;
        if due.is_empty() && !(advanced && self.last_commit.elapsed() >= OFFSET_EVERY) {
            return;
        }
        let changes: Vec<PresenceChange> = due.iter().map(|d| d.change.clone()).collect();
        let started = Instant::now();
        match self
            .store
            .write_presence(&changes, Some((&self.namespace, CONSUMER, offset)))
            .await
        {
            Ok(rows) => {
                metrics::histogram!("presence_persister_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("presence_persister_batch_rows").record(changes.len() as f64);
                metrics::counter!("presence_persister_rows_written_total").increment(rows);
                self.committed = self.committed.max(offset);
                self.last_commit = Instant::now();
                self.retry_at = None;
                self.backoff = Duration::from_millis(100);
                self.readiness.set(true);
                self.ack_through(self.committed).await;
            }
            Err(e) => {
                metrics::counter!("presence_persister_write_failures_total").increment(1);
                tracing::warn!(error = %e, rows = changes.len(), retry_in = ?self.backoff, "writing presence failed; keeping it pending");
                self.readiness.set(false);
                self.debouncer.restore(due, Millis::now());
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
            }
        }
        metrics::gauge!("presence_persister_pending_users").set(self.debouncer.len() as f64);
    }

    /// Acknowledges every delivery up to `seq`, each on its own (the subscription is shared:
    /// an acknowledgement covers only its own message).
    async fn ack_through(&mut self, seq: u64) {
        let mut done = Vec::new();
        while self.unacked.front().is_some_and(|d| d.seq <= seq) {
            if let Some(d) = self.unacked.pop_front() {
                done.push(d.ack());
            }
        }
        for result in futures::future::join_all(done).await {
            if let Err(e) = result {
                tracing::debug!(error = %e, "acknowledging persisted changes failed");
            }
        }
    }
}

/// Every family the persister exports, registered at start-up at zero, so a quiet persister
/// already shows them (write failures and rejections alert before the first change).
fn register_metric_families() {
    use presence_telemetry::{zero_counter, zero_gauge, zero_gauges};
    zero_counter(
        "presence_persister_rows_written_total",
        "Presence rows written to PostgreSQL",
    );
    zero_counter(
        "presence_persister_write_failures_total",
        "Writes to PostgreSQL that failed (retried)",
    );
    zero_counter(
        "presence_changes_rejected_total",
        "Changes that did not decode, skipped",
    );
    zero_counter(
        "presence_changes_fenced_total",
        "Changes of a deposed aggregator (an older lease epoch), skipped",
    );
    zero_gauge(
        "presence_persister_pending_users",
        "Users whose row waits for its debounce",
    );
    zero_gauges(
        "presence_consumer_lag_messages",
        "Messages a reader of the log is behind",
        "consumer",
        &[CONSUMER],
    );
    metrics::describe_histogram!(
        "presence_persister_batch_rows",
        "Rows in one write to PostgreSQL"
    );
    metrics::describe_histogram!(
        "presence_persister_write_seconds",
        "Time of one write to PostgreSQL"
    );
}
