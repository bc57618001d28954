//! Fan-out: every edge reads the whole changes stream, keeps its [`PresenceView`] current and
//! emits each change as `presence-update` to the viewer-class rooms allowed to see it. The
//! payload is encoded once per change by the Socket.io layer, whatever the number of sockets.

use presence_events::{PresenceChange, Subjects};
use presence_log::{EventLog, StartAt};
use presence_telemetry::Readiness;
use socketioxide::SocketIo;
use socketioxide::{BroadcastError, SocketError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::dashboard::DashboardFeed;
use crate::socket::LocalConnections;
use crate::view::{PresenceUpdate, PresenceView};
use crate::visibility::VisibilityPolicy;

pub(crate) struct FanOut {
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) subjects: Subjects,
    pub(crate) view: Arc<PresenceView>,
    pub(crate) policy: VisibilityPolicy,
    pub(crate) io: SocketIo,
    pub(crate) readiness: Readiness,
    pub(crate) local: Arc<LocalConnections>,
    pub(crate) dashboard: Arc<DashboardFeed>,
    /// When viewers with a full buffer were last logged.
    pub(crate) last_full_warning: Mutex<Option<Instant>>,
}

/// Viewers with a full buffer are logged at most this often.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

impl FanOut {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let stream = self.subjects.changes_stream();
        let this = &self;
        // The last change of every user first (the view's starting point), then live ones;
        // after a resubscription the view skips what it already has.
        presence_log::follow_stream(
            self.log.as_ref(),
            &stream,
            StartAt::LastPerSubject,
            &shutdown,
            || self.readiness.set(true),
            |delivered| async move {
                metrics::gauge!("presence_consumer_lag_messages", "consumer" => "fanout")
                    .set(delivered.pending as f64);
                match PresenceChange::decode(&delivered.payload) {
                    Ok(change) => {
                        if this.view.apply(&change) {
                            this.dashboard.presence(&change);
                            this.emit(&change).await;
                        }
                    }
                    Err(e) => {
                        metrics::counter!("presence_changes_rejected_total").increment(1);
                        tracing::error!(seq = delivered.seq, error = %e, "skipping an undecodable change");
                    }
                }
            },
        )
        .await;
    }

    async fn emit(&self, change: &PresenceChange) {
        let rooms = self.policy.rooms_seeing(&change.tenant, &change.class);
        let update = PresenceUpdate::from_change(change);
        let deliveries = self.local.sockets_in(&rooms);
        metrics::counter!("presence_fanout_changes_total").increment(1);
        let (full, closed) = match self.io.to(rooms).emit("presence-update", &update).await {
            Ok(()) => (0, 0),
            Err(BroadcastError::Socket(errors)) => {
                let full = errors
                    .iter()
                    .filter(|e| matches!(e, SocketError::InternalChannelFull))
                    .count() as u64;
                (full, errors.len() as u64 - full)
            }
            Err(e) => {
                metrics::counter!("presence_fanout_send_failures_total", "reason" => "other")
                    .increment(1);
                tracing::error!(error = %e, "a presence update could not be sent");
                return;
            }
        };
        metrics::counter!("presence_fanout_deliveries_total")
            .increment(deliveries.saturating_sub(full + closed));
        // Closing sockets are gone: nobody is left to tell.
        if closed > 0 {
            metrics::counter!("presence_fanout_send_failures_total", "reason" => "closed")
                .increment(closed);
        }
        // A viewer this far behind misses the update: counted, and logged at most every 10 s
        // (bursts are when it happens), never silent.
        if full > 0 {
            metrics::counter!("presence_fanout_send_failures_total", "reason" => "full")
                .increment(full);
            let now = Instant::now();
            let mut last = self
                .last_full_warning
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|at| now.duration_since(at) >= FULL_WARNING_EVERY) {
                *last = Some(now);
                tracing::warn!(
                    sockets = full,
                    user = %change.user,
                    "viewers whose send buffer is full missed a presence update (PRESENCE_SOCKET_BUFFER; see presence_fanout_send_failures_total)"
                );
            }
        }
    }
}
