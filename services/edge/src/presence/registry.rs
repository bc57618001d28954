//! The Socket.io connections of this edge: how many sockets, which users (with how many
//! connections each, bounded by `PRESENCE_MAX_CONNECTIONS_PER_USER`) and how many sockets sit
//! in each audience room, for `/api/health`, the debug endpoints and the fan-out's delivery
//! count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use presence_events::UserKey;

/// Sockets and users connected to this edge.
#[derive(Default)]
pub(crate) struct LocalConnections {
    sockets: AtomicUsize,
    users: Mutex<HashMap<UserKey, u32>>,
    /// Sockets per audience room: how many deliveries an emit to a room makes.
    rooms: Mutex<HashMap<String, u32>>,
}

impl LocalConnections {
    pub(super) fn opened(&self, joined: &[String]) {
        self.sockets.fetch_add(1, Ordering::Relaxed);
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            for room in joined {
                *rooms.entry(room.clone()).or_default() += 1;
            }
        }
        metrics::gauge!("presence_connections", "transport" => "socketio").increment(1.0);
    }

    pub(super) fn closed(&self, joined: &[String]) {
        self.sockets.fetch_sub(1, Ordering::Relaxed);
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            for room in joined {
                if let Some(count) = rooms.get_mut(room) {
                    *count -= 1;
                    if *count == 0 {
                        rooms.remove(room);
                    }
                }
            }
        }
        metrics::gauge!("presence_connections", "transport" => "socketio").decrement(1.0);
    }

    /// Counts one more connection of `key` unless it has `limit` on this edge already
    /// (`false`: refused, nothing counted). Checked and counted under one lock, so parallel
    /// handshakes of one user cannot pass the limit together.
    pub(super) fn admit_user(&self, key: UserKey, limit: u32) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let count = users.entry(key).or_default();
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    /// One admitted connection of `key` is gone (or its admission failed after all).
    pub(super) fn release_user(&self, key: &UserKey) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = users.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                users.remove(key);
            }
        }
    }

    /// Sockets of this edge in `room`.
    pub(crate) fn sockets_in(&self, room: &str) -> u64 {
        let counts = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(room).map_or(0, |c| u64::from(*c))
    }

    /// Connections per user on this edge.
    pub(crate) fn users(&self) -> Vec<(UserKey, u32)> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// (sockets, distinct users) connected here.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner()).len();
        (self.sockets.load(Ordering::Relaxed), users)
    }
}

#[cfg(test)]
mod tests {
    use presence_events::{TenantId, UserId};

    use super::*;

    fn key(user: &str) -> UserKey {
        UserKey {
            tenant: TenantId::default_tenant(),
            user: UserId::parse(user).unwrap(),
        }
    }

    #[test]
    fn a_user_gets_at_most_the_limit_and_a_closed_connection_frees_its_place() {
        let local = LocalConnections::default();
        assert!(local.admit_user(key("ayse"), 2));
        assert!(local.admit_user(key("ayse"), 2));
        assert!(
            !local.admit_user(key("ayse"), 2),
            "the third of a limit of 2"
        );
        assert!(
            local.admit_user(key("ali"), 2),
            "other users are not affected"
        );
        local.release_user(&key("ayse"));
        assert!(local.admit_user(key("ayse"), 2));
        assert_eq!(local.counts().1, 2);
        for _ in 0..3 {
            local.release_user(&key("ayse"));
        }
        local.release_user(&key("ali"));
        assert_eq!(local.counts().1, 0, "nobody left, nothing kept");
    }
}
