//! Whether the log is taking appends, as this edge last saw it: a circuit breaker over the
//! outcomes of its appends, next to the connection state the NATS client reports.
//!
//! While the log is away (no connection, or appends failing: a JetStream cluster without
//! quorum, a stream without a leader), clients are refused at once instead of each waiting
//! for an append to time out: after a failed append, admissions are refused for
//! [`RETRY_AFTER`]; then one is let through as a probe, and its outcome decides (after a
//! disconnection, the first admission once connected again is such a probe). A probe
//! whose outcome is never recorded (its caller went away) is replaced after
//! [`PROBE_TIMEOUT`]. Departures (leaves) are never refused: they are retried.
//!
//! Pure: the caller passes the time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Admissions refused at once for this long after a failed append.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A probe not heard of for this long (an append waits at most 3 s) is replaced.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Appends succeed.
    Up,
    /// The last append failed: the next probe may go at `probe_at`.
    Down { probe_at: Instant },
}

/// The breaker.
#[derive(Debug)]
pub(crate) struct Availability {
    state: Mutex<State>,
}

impl Default for Availability {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Up),
        }
    }
}

impl Availability {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether to try an admission's append at `now`, the connection to the log being
    /// `connected`: `false` means refuse it at once.
    pub(crate) fn admit(&self, connected: bool, now: Instant) -> bool {
        let mut state = self.lock();
        if !connected {
            // Once the connection is back, the log may still be unable to store (no quorum
            // on the node reached): the first admission then probes it, the others wait.
            set(&mut state, State::Down { probe_at: now });
            return false;
        }
        match *state {
            State::Up => true,
            State::Down { probe_at } if now >= probe_at => {
                *state = State::Down {
                    probe_at: now + PROBE_TIMEOUT,
                };
                true
            }
            State::Down { .. } => false,
        }
    }

    /// Records the outcome of an append finished at `now`.
    pub(crate) fn record(&self, ok: bool, now: Instant) {
        let next = if ok {
            State::Up
        } else {
            State::Down {
                probe_at: now + RETRY_AFTER,
            }
        };
        set(&mut self.lock(), next);
    }

    /// Whether appends were succeeding when last heard of.
    pub(crate) fn is_up(&self) -> bool {
        *self.lock() == State::Up
    }
}

fn set(state: &mut State, next: State) {
    if (*state == State::Up) != (next == State::Up) {
        metrics::gauge!("presence_log_available").set(if next == State::Up { 1.0 } else { 0.0 });
    }
    *state = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_admits_everything_while_connected_and_nothing_while_disconnected() {
        let a = Availability::default();
        let t = Instant::now();
        assert!(a.admit(true, t));
        assert!(a.admit(true, t));
        assert!(
            !a.admit(false, t),
            "a client that is reconnecting would only wait"
        );
    }

    #[test]
    fn after_a_disconnection_the_first_admission_probes_and_the_others_wait() {
        let a = Availability::default();
        let t = Instant::now();
        assert!(!a.admit(false, t));
        assert!(!a.is_up());
        let back = t + Duration::from_secs(5);
        assert!(a.admit(true, back), "the probe");
        assert!(!a.admit(true, back + Duration::from_millis(1)));
        a.record(true, back + Duration::from_millis(3));
        assert!(a.admit(true, back + Duration::from_millis(4)));
    }

    #[test]
    fn after_a_failure_admissions_are_refused_then_one_probe_decides() {
        let a = Availability::default();
        let t = Instant::now();
        a.record(false, t);
        assert!(!a.is_up());
        assert!(!a.admit(true, t + Duration::from_millis(10)));
        assert!(!a.admit(true, t + RETRY_AFTER - Duration::from_millis(1)));
        // One probe goes; the others wait for its outcome.
        let probe = t + RETRY_AFTER;
        assert!(a.admit(true, probe));
        assert!(!a.admit(true, probe + Duration::from_millis(5)));
        // It failed too: refused again for RETRY_AFTER.
        let failed = probe + Duration::from_secs(3);
        a.record(false, failed);
        assert!(!a.admit(true, failed + RETRY_AFTER / 2));
        assert!(a.admit(true, failed + RETRY_AFTER));
        // This one succeeded: everything goes again.
        a.record(true, failed + RETRY_AFTER + Duration::from_millis(2));
        assert!(a.is_up());
        assert!(a.admit(true, failed + RETRY_AFTER + Duration::from_millis(3)));
        assert!(a.admit(true, failed + RETRY_AFTER + Duration::from_millis(3)));
    }

    #[test]
    fn a_probe_never_heard_of_is_replaced() {
        let a = Availability::default();
        let t = Instant::now();
        a.record(false, t);
        assert!(a.admit(true, t + RETRY_AFTER));
        assert!(!a.admit(true, t + RETRY_AFTER + PROBE_TIMEOUT / 2));
        assert!(a.admit(true, t + RETRY_AFTER + PROBE_TIMEOUT));
    }

    #[test]
    fn a_success_from_anywhere_closes_the_breaker() {
        // A batch of heartbeats that finally landed says the log is back.
        let a = Availability::default();
        let t = Instant::now();
        a.record(false, t);
        a.record(true, t + Duration::from_millis(100));
        assert!(a.admit(true, t + Duration::from_millis(101)));
    }
}
