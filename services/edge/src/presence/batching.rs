//! Batched delivery: a socket connected with `auth: {batch: true}` receives `presence-updates`
//! frames, each an array of the latest presence of every user that changed in a window,
//! instead of one `presence-update` per change. A window opens with the first change for its
//! audience and closes [`Coalescer::window`] later; ten changes of one user within it are one
//! entry, with the last state. The time is passed in, so the windows are tested without
//! sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use presence_events::UserId;

use crate::wire::PresenceUpdate;

/// One open window: the users changed in it, in the order they first changed, each with its
/// latest presence.
#[derive(Debug)]
struct Window {
    opened: Instant,
    order: Vec<UserId>,
    latest: HashMap<UserId, PresenceUpdate>,
}

/// Open windows by audience (a room of batch sockets, or one subscriptions socket).
#[derive(Debug)]
pub(crate) struct Coalescer<K> {
    window: Duration,
    open: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Coalescer<K> {
    /// Windows of `window` each.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
        }
    }

    /// Takes in `update` for `audience` at `now`: it replaces what the window held for the
    /// same user, or opens a window if none is open.
    pub(crate) fn push(&mut self, audience: K, update: PresenceUpdate, now: Instant) {
        let window = self.open.entry(audience).or_insert_with(|| Window {
            opened: now,
            order: Vec::new(),
            latest: HashMap::new(),
        });
        if !window.latest.contains_key(&update.user_id) {
            window.order.push(update.user_id.clone());
        }
        window.latest.insert(update.user_id.clone(), update);
    }

    /// The windows closed by `now`, each with its entries; they are removed.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(K, Vec<PresenceUpdate>)> {
        let due: Vec<K> = self
            .open
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.opened) >= self.window)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| {
                let mut w = self.open.remove(&k)?;
                let entries = w.order.iter().filter_map(|u| w.latest.remove(u)).collect();
                Some((k, entries))
            })
            .collect()
    }

    /// Whether no window is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use presence_events::Status;

    use super::*;

    fn update(user: &str, status: Status) -> PresenceUpdate {
        PresenceUpdate {
            user_id: UserId::parse(user).unwrap(),
            status,
            online: status != Status::Offline,
            last_seen: None,
            details: None,
        }
    }

    #[test]
    fn ten_changes_of_one_user_within_a_window_are_one_entry_with_the_last_state() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_millis(50));
        for i in 0..10 {
            let status = if i % 2 == 0 {
                Status::Live
            } else {
                Status::InCall
            };
            c.push("room", update("ayse", status), ms(i));
        }
        c.push("room", update("ali", Status::Online), ms(20));
        assert!(c.take_due(ms(49)).is_empty(), "the window is still open");
        let due = c.take_due(ms(50));
        assert_eq!(due.len(), 1);
        let (audience, entries) = &due[0];
        assert_eq!(*audience, "room");
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.user_id.as_str(), e.status))
                .collect::<Vec<_>>(),
            [("ayse", Status::InCall), ("ali", Status::Online)],
            "in the order they first changed, the latest state of each"
        );
        assert!(c.is_empty());
        assert!(
            c.take_due(ms(1_000)).is_empty(),
            "nothing changed since: no frame"
        );
    }

    #[test]
    fn each_audience_has_its_own_window_opened_by_its_first_change() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_millis(50));
        c.push(1, update("a", Status::Online), ms(0));
        c.push(2, update("b", Status::Online), ms(30));
        let first = c.take_due(ms(60));
        assert_eq!(first.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1]);
        // A change after the flush opens a new window: frames are a window apart at least.
        c.push(1, update("a", Status::Offline), ms(61));
        let second = c.take_due(ms(100));
        assert_eq!(second.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [2]);
        assert_eq!(c.take_due(ms(111)).len(), 1);
        assert!(c.is_empty());
    }
}
