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
//!
//! Each change goes, by the delivery mode of the sockets (chosen at the handshake), to the
//! audience room of the user's class (broadcast sockets, one `presence-update` encoded once),
//! into the window of that room's batch sockets (one `presence-updates` frame per room and
//! window), and to the sockets that subscribed to the user (looked up in the
//! [`SubscriptionIndex`], one emit to all of them, or into each one's window). Every frame
//! carries the cursor of the newest change it includes as its second argument.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presence_events::{EpochFence, PresenceChange, SequenceMark, Subjects, UserId, UserKey};
use presence_log::{EventLog, LatestFeed};
use presence_telemetry::Readiness;
use serde::Serialize;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, SocketError, SocketIo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batching::Coalescer;
use super::cursor::Cursor;
use super::subscriptions::SubscriptionIndex;
use super::visibility::{audience_room, batch_room};
use super::{LocalConnections, PresenceView, VisibilityPolicy};
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
    /// Who subscribed to whom (subscriptions sockets).
    pub(super) subscriptions: Arc<Mutex<SubscriptionIndex>>,
    pub(super) policy: VisibilityPolicy,
    /// How long a batch socket's window stays open (`PRESENCE_BATCH_MS`).
    pub(super) batch_window: Duration,
}

/// The open windows of the batch sockets: per batch room (broadcast), per socket
/// (subscriptions).
struct Windows {
    rooms: Coalescer<String>,
    sockets: Coalescer<Sid>,
    /// The newest change delivered or put into a window.
    emitted: Cursor,
}

/// What one batch's delivery did.
#[derive(Debug, Default)]
struct Sent {
    /// Updates that reached a socket (an entry of a `presence-updates` frame is one).
    delivered: u64,
    /// Frames that reached a socket.
    frames: u64,
    full: u64,
    closed: u64,
    other: u64,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.delivered += other.delivered;
        self.frames += other.frames;
        self.full += other.full;
        self.closed += other.closed;
        self.other += other.other;
    }

    /// A `presence-updates` frame of `entries` updates.
    fn add_frames(&mut self, frame: Sent, entries: u64) {
        self.add(Sent {
            delivered: frame.frames * entries,
            ..frame
        });
    }
}

impl FanOut {
    pub(super) async fn run(self, shutdown: CancellationToken) {
        // The online stream: everyone online, and the recently gone; not everyone ever seen.
        let changes = LatestFeed::new(
            "changes",
            self.subjects.online_stream(),
            PresenceChange::decode,
        );
        let (tx, rx) = mpsc::channel::<(PresenceChange, u64)>(PENDING_CHANGES);
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
                        this.view.complete();
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
                        let (change, feed) = (latest.value, latest.seq);
                        if !admitted {
                            metrics::counter!("presence_feed_fenced_total", "feed" => "changes")
                                .increment(1);
                        } else if !fresh {
                            metrics::counter!("presence_feed_stale_total", "feed" => "changes")
                                .increment(1);
                        } else if this.view.apply(&change, feed) {
                            let (online, gone) = this.view.held();
                            metrics::gauge!("presence_view_users", "kind" => "online").set(online as f64);
                            metrics::gauge!("presence_view_users", "kind" => "gone").set(gone as f64);
                            this.announcements.presence(&change);
                            // The emitter only stops once this side has.
                            let _ = tx.send((change, feed)).await;
                        }
                        }
                    },
                )
                .await;
            drop(sender);
        };
        tokio::join!(read, self.emit_batches(rx));
    }

    async fn emit_batches(&self, mut rx: mpsc::Receiver<(PresenceChange, u64)>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut windows = Windows {
            rooms: Coalescer::new(self.batch_window),
            sockets: Coalescer::new(self.batch_window),
            emitted: Cursor::default(),
        };
        // Windows are looked at a few times per window: a frame leaves at most a quarter of
        // a window after it closes.
        let mut flush =
            tokio::time::interval((self.batch_window / 4).max(Duration::from_millis(1)));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                taken = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if taken == 0 {
                        return;
                    }
                    metrics::counter!("presence_fanout_changes_total").increment(batch.len() as u64);
                    metrics::counter!("presence_fanout_batches_total").increment(1);
                    let sent = self.emit(&batch, &mut windows).await;
                    self.count(&sent, batch.len());
                    batch.clear();
                }
                _ = flush.tick(), if !(windows.rooms.is_empty() && windows.sockets.is_empty()) => {
                    let sent = self.flush(&mut windows, Instant::now()).await;
                    self.count(&sent, 0);
                }
            }
        }
    }

    /// Emits a batch's changes back to back, each to its audience room, encoded once per
    /// change, and to its subscribers; batch sockets' shares go into their windows. Nothing
    /// yields between them, so a socket's writer finds every update of the batch queued when
    /// it runs.
    async fn emit(&self, changes: &[(PresenceChange, u64)], windows: &mut Windows) -> Sent {
        let mut sent = Sent::default();
        let now = Instant::now();
        for (change, feed) in changes {
            let cursor = Cursor(*feed);
            let room = audience_room(&change.tenant, &change.class);
            let sockets = self.local.sockets_in(&room);
            let update = PresenceUpdate::from_change(change);
            let frame = (&update, cursor);
            sent.add(
                self.send(vec![room.clone()], "presence-update", &frame, sockets)
                    .await,
            );
            let batched = batch_room(&room);
            if self.local.sockets_in(&batched) > 0 {
                windows.rooms.push(batched, update.clone(), now);
            }
            let key = UserKey {
                tenant: change.tenant.clone(),
                user: change.user.clone(),
            };
            let audience = self
                .subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .audience(&key, &change.class, &self.policy);
            if !audience.each.is_empty() {
                let n = audience.each.len() as u64;
                let rooms: Vec<String> = audience.each.iter().map(Sid::to_string).collect();
                sent.add(self.send(rooms, "presence-update", &frame, n).await);
            }
            for sid in audience.batched {
                windows.sockets.push(sid, update.clone(), now);
            }
            windows.emitted = windows.emitted.max(cursor);
        }
        sent
    }

    /// Sends the windows closed by `now`: one `presence-updates` frame per batch room, and
    /// per group of subscriptions sockets whose windows hold the same entries.
    async fn flush(&self, windows: &mut Windows, now: Instant) -> Sent {
        let mut sent = Sent::default();
        let cursor = windows.emitted;
        for (room, entries) in windows.rooms.take_due(now) {
            let sockets = self.local.sockets_in(&room);
            let n = entries.len() as u64;
            let result = self
                .send(vec![room], "presence-updates", &(&entries, cursor), sockets)
                .await;
            sent.add_frames(result, n);
        }
        // Sockets subscribed to the same users share their frame: encoded once per group.
        let mut groups: HashMap<Vec<UserId>, (Vec<PresenceUpdate>, Vec<Sid>)> = HashMap::new();
        for (sid, mut entries) in windows.sockets.take_due(now) {
            entries.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
            let users = entries.iter().map(|e| e.user_id.clone()).collect();
            groups
                .entry(users)
                .or_insert_with(|| (entries, Vec::new()))
                .1
                .push(sid);
        }
        for (entries, sids) in groups.into_values() {
            let n = entries.len() as u64;
            let count = sids.len() as u64;
            let rooms: Vec<String> = sids.iter().map(Sid::to_string).collect();
            let result = self
                .send(rooms, "presence-updates", &(&entries, cursor), count)
                .await;
            sent.add_frames(result, n);
        }
        sent
    }

    /// One frame to every socket in `rooms` (`sockets` of them), encoded once.
    async fn send<T: Serialize + ?Sized>(
        &self,
        rooms: Vec<String>,
        event: &'static str,
        data: &T,
        sockets: u64,
    ) -> Sent {
        let mut sent = Sent::default();
        match self.io.to(rooms).emit(event, data).await {
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
                tracing::error!(error = %e, event, "a presence frame could not be sent");
            }
        }
        sent.frames = sent.delivered;
        sent
    }

    fn count(&self, sent: &Sent, changes: usize) {
        metrics::counter!("presence_fanout_deliveries_total").increment(sent.delivered);
        metrics::counter!("presence_fanout_frames_total").increment(sent.frames);
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
                    changes,
                    "viewers whose send buffer is full missed presence updates (PRESENCE_SOCKET_BUFFER; see presence_fanout_send_failures_total)"
                );
            }
        }
    }
}
