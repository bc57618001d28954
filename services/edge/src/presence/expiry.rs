//! Token lifetime on live connections: a socket is closed when its token's `exp` passes,
//! unless the client sends a fresh token first (`auth:refresh`). One task for the whole edge
//! walks the sockets in expiry order once a second; nothing is kept or run per socket beyond
//! its entry here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use tokio_util::sync::CancellationToken;

/// When each socket's token expires.
#[derive(Default)]
pub(crate) struct TokenExpiry {
    inner: Mutex<Expiries>,
}

#[derive(Default)]
struct Expiries {
    /// (exp, socket), soonest first.
    by_time: BTreeSet<(u64, Sid)>,
    by_socket: HashMap<Sid, u64>,
}

/// What a socket whose token expired is told before it is closed.
#[derive(Serialize)]
struct Expired {
    reason: &'static str,
    message: &'static str,
}

impl TokenExpiry {
    /// `socket`'s token expires at `exp` (seconds since the epoch); replaces an earlier one.
    pub(crate) fn track(&self, socket: Sid, exp: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_socket.insert(socket, exp) {
            inner.by_time.remove(&(old, socket));
        }
        inner.by_time.insert((exp, socket));
    }

    /// `socket` is gone.
    pub(crate) fn forget(&self, socket: Sid) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(exp) = inner.by_socket.remove(&socket) {
            inner.by_time.remove(&(exp, socket));
        }
    }

    /// The sockets whose token expired by `now` (seconds since the epoch), no longer tracked.
    pub(crate) fn take_expired(&self, now: u64) -> Vec<Sid> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut expired = Vec::new();
        while let Some(&(exp, socket)) = inner.by_time.first() {
            if exp > now {
                break;
            }
            inner.by_time.pop_first();
            inner.by_socket.remove(&socket);
            expired.push(socket);
        }
        expired
    }

    /// Closes the sockets whose token expired, once a second, until `shutdown`. Each is told
    /// `auth:expired` first; its `leave` is appended as for any disconnect.
    pub(crate) async fn close_expired(&self, io: SocketIo, shutdown: CancellationToken) {
        let mut timer = tokio::time::interval(Duration::from_secs(1));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = timer.tick() => {}
            }
            let now = presence_events::Millis::now().0 / 1_000;
            let expired = self.take_expired(now);
            let Some(namespace) = io.of("/").filter(|_| !expired.is_empty()) else {
                continue;
            };
            for sid in expired {
                let Some(socket) = namespace.get_socket(sid) else {
                    continue;
                };
                metrics::counter!("presence_connections_expired_total").increment(1);
                let notice = Expired {
                    reason: "token_expired",
                    message: "the token expired: reconnect with a new one, or send auth:refresh before exp",
                };
                if let Err(e) = socket.emit("auth:expired", &notice) {
                    tracing::debug!(error = %e, "could not tell a socket its token expired");
                }
                if let Err(e) = socket.disconnect() {
                    tracing::debug!(error = %e, "could not close a socket whose token expired");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_expire_in_order_and_a_refresh_moves_one_later() {
        let expiry = TokenExpiry::default();
        let (a, b, c) = (Sid::new(), Sid::new(), Sid::new());
        expiry.track(a, 100);
        expiry.track(b, 50);
        expiry.track(c, 200);
        assert_eq!(expiry.take_expired(49), []);
        assert_eq!(expiry.take_expired(100), [b, a]);
        // Refreshed before it expired: only the new time counts.
        expiry.track(c, 500);
        assert_eq!(expiry.take_expired(300), []);
        assert_eq!(expiry.take_expired(500), [c]);
        assert_eq!(expiry.take_expired(u64::MAX), []);
    }

    #[test]
    fn a_closed_socket_is_forgotten() {
        let expiry = TokenExpiry::default();
        let a = Sid::new();
        expiry.track(a, 10);
        expiry.forget(a);
        assert_eq!(expiry.take_expired(u64::MAX), []);
    }
}
