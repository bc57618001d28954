//! The Socket.io connections of this edge: how many sockets, which users (with how many
//! connections each) and how many sockets sit in each audience room, for `/api/health`, the
//! debug endpoints and the fan-out's delivery count.

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
    pub(super) fn opened(&self, key: UserKey, joined: &[String]) {
        self.sockets.fetch_add(1, Ordering::Relaxed);
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            for room in joined {
                *rooms.entry(room.clone()).or_default() += 1;
            }
        }
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *users.entry(key).or_default() += 1;
        metrics::gauge!("presence_connections", "transport" => "socketio").increment(1.0);
    }

    pub(super) fn closed(&self, key: &UserKey, joined: &[String]) {
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
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = users.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                users.remove(key);
            }
        }
        metrics::gauge!("presence_connections", "transport" => "socketio").decrement(1.0);
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
