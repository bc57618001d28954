//! One authenticated Socket.io connection: who it is, which connection id its events carry,
//! the audience rooms it joined, and where it is in its life (the connect and disconnect
//! handlers run as separate tasks, in either order).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use presence_auth::Identity;
use presence_events::{ConnId, UserKey};
use socketioxide::socket::Sid;

use super::handshake::Delivery;

/// One authenticated socket, kept in the socket's extensions and in each of its handlers.
#[derive(Clone)]
pub(super) struct Connection {
    /// The socket.
    pub(super) sid: Sid,
    pub(super) identity: Arc<Identity>,
    pub(super) conn: ConnId,
    /// The audience rooms the socket joined (one per class of users it may see).
    pub(super) rooms: Arc<[String]>,
    /// How it receives presence.
    pub(super) delivery: Delivery,
    lifecycle: Arc<AtomicU8>,
}

/// Admitted, not yet counted as connected here.
const NEW: u8 = 0;
/// Counted in the edge's registry.
const OPENED: u8 = 1;
/// Disconnected.
const CLOSED: u8 = 2;

impl Connection {
    /// A new connection of `identity` on socket `sid` that joins `rooms`.
    pub(super) fn new(
        sid: Sid,
        identity: Identity,
        rooms: Arc<[String]>,
        delivery: Delivery,
    ) -> Self {
        Self {
            sid,
            identity: Arc::new(identity),
            conn: ConnId::new(),
            rooms,
            delivery,
            lifecycle: Arc::new(AtomicU8::new(NEW)),
        }
    }

    pub(super) fn key(&self) -> UserKey {
        UserKey {
            tenant: self.identity.tenant.clone(),
            user: self.identity.user.clone(),
        }
    }

    /// Marks the connection open; `true` if it was new (not yet closed), so it is counted.
    pub(super) fn open(&self) -> bool {
        self.lifecycle
            .compare_exchange(NEW, OPENED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks the connection closed; `true` if it had been counted as open.
    pub(super) fn close(&self) -> bool {
        self.lifecycle.swap(CLOSED, Ordering::AcqRel) == OPENED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        let identity = Identity::from_claims("ayse", Some("female"), None).unwrap();
        Connection::new(
            Sid::new(),
            identity,
            Arc::from(Vec::new()),
            Delivery::default(),
        )
    }

    #[test]
    fn a_connection_closed_before_it_opened_is_never_counted() {
        let c = connection();
        assert!(!c.close(), "closed before opening: nothing to uncount");
        assert!(!c.open(), "opening after the close must not count it");
    }

    #[test]
    fn an_opened_connection_is_uncounted_once() {
        let c = connection();
        assert!(c.open());
        assert!(c.close());
        assert!(!c.close());
    }
}
