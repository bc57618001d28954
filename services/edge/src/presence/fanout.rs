//! Fan-out: every edge reads the whole changes stream, keeps its [`PresenceView`] current and
//! emits each change as `presence-update` to the audience room of the user's class, encoded
//! once per change whatever the number of sockets.
//!
//! Delivery is batched. The reader hands changes to an emitter task, which takes every change
//! waiting (up to [`MAX_BATCH`]) and emits them back to back without yielding. A socket's
//! writer that wakes after the batch finds all of its updates queued and writes them with one
//! system call, instead of waking and writing once per change (the wake and the write are
//! most of what a delivery costs). Nothing waits for a batch to fill: a lone change goes out
//! at once, and batches grow only while the emitter is busy with the previous one, i.e. when
//! there is load to absorb.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presence_events::{EpochFence, PresenceChange, SequenceMark, Subjects};
use presence_log::{EventLog, LatestFeed};
use presence_telemetry::Readiness;
use socketioxide::{BroadcastError, SocketError, SocketIo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::visibility::audience_room;
use super::{LocalConnections, PresenceView};
use crate::wire::{Announcements, PresenceUpdate};

/// Most changes emitted as one batch: it bounds how long the emitter runs without yielding.
const MAX_BATCH: usize = 32;
/// Changes read from the stream and not yet taken by the emitter.
const PENDING_CHANGES: usize = 4096;
/// Viewers with a full buffer are logged at most this often.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

pub(super) struct FanOut {
    pub(super) log: Arc<dyn EventLog>,
    pub(super) subjects: Subjects,
    pub(super) view: Arc<PresenceView>,
    pub(super) io: SocketIo,
    pub(super) readiness: Readiness,
    pub(super) local: Arc<LocalConnections>,
    /// Told of every change the view takes in (the dashboard).
    pub(super) announcements: Announcements,
    /// When viewers with a full buffer were last logged.
    pub(super) last_full_warning: Mutex<Option<Instant>>,
}

/// What one batch's delivery did.
#[derive(Debug, Default)]
struct Sent {
    delivered: u64,
    full: u64,
    closed: u64,
    other: u64,
}

impl FanOut {
    pub(super) async fn run(self, shutdown: CancellationToken) {
        // The online stream: everyone online, and the recently gone; not everyone ever seen.
        let changes = LatestFeed::new(
            "changes",
            self.subjects.online_stream(),
            PresenceChange::decode,
        );
        let (tx, rx) = mpsc::channel(PENDING_CHANGES);
        let this = &self;
        let partitions = self.subjects.partitions();
        let mut fence = EpochFence::default();
        let mut mark = SequenceMark::default();
        // Until the view is complete the feed is the stream's last message per user, which a
        // refold in progress may have reordered: the mark is only raised then, not enforced.
        let caught_up = std::sync::atomic::AtomicBool::new(false);
        let caught_up = &caught_up;
        let read = async {
            let sender = tx;
            let tx = &sender;
            // The last change of every user first (the view's starting point), then live
            // ones; after a resubscription the view skips what it already has. Ready once
            // the view is complete: a query right after answers every online user online.
            changes
                .follow(
                    self.log.as_ref(),
                    &shutdown,
                    || {
                        caught_up.store(true, std::sync::atomic::Ordering::Relaxed);
                        self.readiness.set(true);
                    },
                    |latest| {
                        // A deposed aggregator's late changes are refused (see `EpochFence`).
                        let change = &latest.value;
                        let partition = partitions.of_user(&change.tenant, &change.user);
                        let admitted = fence.admit(partition, change.epoch);
                        // A refold re-deriving old changes (of users long forgotten too).
                        let fresh = mark.admit(partition, change.seq)
                            || !caught_up.load(std::sync::atomic::Ordering::Relaxed);
                        async move {
                        metrics::gauge!("presence_consumer_lag_messages", "consumer" => "fanout")
                            .set(latest.pending as f64);
                        let change = latest.value;
                        if !admitted {
                            metrics::counter!("presence_feed_fenced_total", "feed" => "changes")
                                .increment(1);
                        } else if !fresh {
                            metrics::counter!("presence_feed_stale_total", "feed" => "changes")
                                .increment(1);
                        } else if this.view.apply(&change) {
                            let (online, gone) = this.view.held();
                            metrics::gauge!("presence_view_users", "kind" => "online").set(online as f64);
                            metrics::gauge!("presence_view_users", "kind" => "gone").set(gone as f64);
                            this.announcements.presence(&change);
                            // The emitter only stops once this side has.
                            let _ = tx.send(change).await;
                        }
                        }
                    },
                )
                .await;
            drop(sender);
        };
        tokio::join!(read, self.emit_batches(rx));
    }

    async fn emit_batches(&self, mut rx: mpsc::Receiver<PresenceChange>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            metrics::counter!("presence_fanout_changes_total").increment(batch.len() as u64);
            metrics::counter!("presence_fanout_batches_total").increment(1);
            let sent = self.emit(&batch).await;
            self.count(&sent, &batch);
            batch.clear();
        }
    }

    /// Emits a batch's changes back to back, each to its audience room, encoded once per
    /// change. Nothing yields between them, so a socket's writer finds every update of the
    /// batch queued when it runs.
    async fn emit(&self, changes: &[PresenceChange]) -> Sent {
        let mut sent = Sent::default();
        for change in changes {
            let room = audience_room(&change.tenant, &change.class);
            let sockets = self.local.sockets_in(&room);
            let update = PresenceUpdate::from_change(change);
            match self.io.to(room).emit("presence-update", &update).await {
                Ok(()) => sent.delivered += sockets,
                Err(BroadcastError::Socket(errors)) => {
                    let full = errors
                        .iter()
                        .filter(|e| matches!(e, SocketError::InternalChannelFull))
                        .count() as u64;
                    let failed = errors.len() as u64;
                    sent.full += full;
                    // Closing sockets are gone: nobody is left to tell.
                    sent.closed += failed - full;
                    sent.delivered += sockets.saturating_sub(failed);
                }
                Err(e) => {
                    sent.other += 1;
                    tracing::error!(error = %e, "a presence update could not be sent");
                }
            }
        }
        sent
    }

    fn count(&self, sent: &Sent, changes: &[PresenceChange]) {
        metrics::counter!("presence_fanout_deliveries_total").increment(sent.delivered);
        for (reason, n) in [
            ("closed", sent.closed),
            ("full", sent.full),
            ("other", sent.other),
        ] {
            if n > 0 {
                metrics::counter!("presence_fanout_send_failures_total", "reason" => reason)
                    .increment(n);
            }
        }
        // A viewer this far behind misses updates: counted, and logged at most every 10 s
        // (bursts are when it happens), never silent.
        if sent.full > 0 {
            let now = Instant::now();
            let mut last = self
                .last_full_warning
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|at| now.duration_since(at) >= FULL_WARNING_EVERY) {
                *last = Some(now);
                tracing::warn!(
                    updates = sent.full,
                    changes = changes.len(),
                    "viewers whose send buffer is full missed presence updates (PRESENCE_SOCKET_BUFFER; see presence_fanout_send_failures_total)"
                );
            }
        }
    }
}
