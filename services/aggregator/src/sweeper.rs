//! The aggregator's clocks: every sweep interval it appends a `tick` event, every metrics
//! interval a `metrics_tick`. The fold sweeps (or computes the metrics) when it reads the
//! tick, at the tick's time, so a replay of the log does so exactly where the live system did.
//!
//! Sweep ticks are also appended when a connection's heartbeat timeout runs out (the fold
//! says when: [`PresenceState::next_sweep_due`](crate::PresenceState::next_sweep_due)), at
//! most every [`MIN_TICK_SPACING`]. A silent connection then goes offline a fraction of a
//! second after the timeout rather than up to a whole sweep interval later; the interval is
//! the longest time between sweeps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use presence_events::{Event, EventBody, Millis, NodeId};
use presence_log::{EventLog, Outgoing, publish_durable};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::coordinator::Lease;

/// Deadline ticks come at most this often.
pub(crate) const MIN_TICK_SPACING: Duration = Duration::from_millis(250);
/// A deadline tick is sent this long after the deadline (converted to this machine's clock
/// by the fold, from the offsets of its own ticks), so the time the log stores it with is
/// past the deadline.
const DEADLINE_GRACE: Duration = Duration::from_millis(20);

/// A partition's clock, written under its owner's lease.
pub(crate) struct Clock {
    pub(crate) tick: EventBody,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) subject: String,
    pub(crate) node: NodeId,
    pub(crate) lease: Lease,
    pub(crate) interval: Duration,
}

pub(crate) async fn publish_ticks(
    clock: Clock,
    mut due: Option<watch::Receiver<Option<Millis>>>,
    shutdown: CancellationToken,
) {
    let Clock {
        tick,
        log,
        subject,
        node,
        lease,
        interval,
    } = clock;
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_tick: Option<Millis> = None;
    loop {
        let deadline = due.as_ref().and_then(|rx| *rx.borrow());
        let wake = deadline_tick_at(deadline, last_tick).map(|at| {
            let now = Millis::now();
            Instant::now() + Duration::from_millis(at.since(now))
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {}
            _ = sleep_until(wake), if wake.is_some() => timer.reset(),
            changed = changed(&mut due), if due.is_some() => {
                if !changed {
                    due = None;
                }
                continue;
            }
        }
        // Fencing: a clock whose lease may have passed to another owner stays silent.
        if !lease.is_valid() {
            continue;
        }
        let at = Millis::now();
        last_tick = Some(at);
        let mut event = Event::new(node.clone(), at, tick.clone());
        event.epoch = Some(lease.epoch());
        let payload = match event.encode() {
            Ok(payload) => Bytes::from(payload),
            Err(e) => {
                metrics::counter!("presence_encode_failures_total", "what" => e.what).increment(1);
                tracing::error!(error = %e, kind = tick.kind(), "cannot encode a clock tick");
                continue;
            }
        };
        let msg = Outgoing {
            subject: subject.clone(),
            msg_id: event.id.to_string(),
            payload,
            ttl: None,
        };
        // A lost tick only delays the sweep to the next one.
        if let Err(e) = publish_durable(log.as_ref(), msg).await {
            metrics::counter!("presence_ticks_failed_total", "kind" => tick.kind()).increment(1);
            tracing::warn!(error = %e, kind = tick.kind(), "could not append a clock tick");
        }
    }
}

/// When (wall clock) to append a tick for the sweep `due`: just past it, and not sooner than
/// [`MIN_TICK_SPACING`] after the last tick.
fn deadline_tick_at(due: Option<Millis>, last_tick: Option<Millis>) -> Option<Millis> {
    let at = due?.plus(DEADLINE_GRACE.as_millis() as u64);
    Some(match last_tick {
        Some(last) => at.max(last.plus(MIN_TICK_SPACING.as_millis() as u64)),
        None => at,
    })
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Waits for a new deadline; `false` once the fold is gone.
async fn changed(due: &mut Option<watch::Receiver<Option<Millis>>>) -> bool {
    match due {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_tick_comes_just_after_the_deadline_and_never_too_soon_after_another() {
        assert_eq!(deadline_tick_at(None, Some(Millis(1_000))), None);
        assert_eq!(
            deadline_tick_at(Some(Millis(16_000)), None),
            Some(Millis(16_020))
        );
        assert_eq!(
            deadline_tick_at(Some(Millis(16_000)), Some(Millis(10_000))),
            Some(Millis(16_020))
        );
        // Due again right after a tick (or already past): spaced out.
        assert_eq!(
            deadline_tick_at(Some(Millis(16_000)), Some(Millis(15_900))),
            Some(Millis(16_150))
        );
        assert_eq!(
            deadline_tick_at(Some(Millis(1_000)), Some(Millis(15_900))),
            Some(Millis(16_150))
        );
    }
}
