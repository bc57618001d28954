//! The write debounce of the presence projection, pure: changes in, rows due out, time passed in.
//!
//! Online transitions (and status changes while online) wait 2 s so that rapid flaps
//! coalesce into one write; an offline change is due at once, unless it ends a burst whose
//! first change is still waiting, in which case it joins that burst (the row never showed
//! the burst's online state, so it still shows the user offline). Each user has at most one
//! pending change: the newest.

use std::collections::HashMap;

use presence_events::{Millis, PresenceChange, UserKey};

/// A change due for writing, with the stream sequence its burst started at.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The newest change of the user.
    pub change: PresenceChange,
    /// The changes-stream sequence of the burst's first change: the consumer may not move
    /// past it before this is written.
    pub first_stream_seq: u64,
}

#[derive(Debug)]
struct Pending {
    change: PresenceChange,
    due: Millis,
    first_stream_seq: u64,
}

/// Pending writes per user.
#[derive(Debug)]
pub struct Debouncer {
    online_delay_ms: u64,
    pending: HashMap<UserKey, Pending>,
}

impl Debouncer {
    /// Online transitions wait `online_delay_ms`; offline ones do not.
    pub fn new(online_delay_ms: u64) -> Self {
        Self {
            online_delay_ms,
            pending: HashMap::new(),
        }
    }

    /// Takes in a change read at `stream_seq` at time `now`.
    pub fn offer(&mut self, change: PresenceChange, stream_seq: u64, now: Millis) {
        let key = UserKey {
            tenant: change.tenant.clone(),
            user: change.user.clone(),
        };
        match self.pending.get_mut(&key) {
            Some(pending) => {
                if pending.change.seq < change.seq {
                    pending.change = change;
                }
            }
            None => {
                let due = if change.online {
                    now.plus(self.online_delay_ms)
                } else {
                    now
                };
                self.pending.insert(
                    key,
                    Pending {
                        change,
                        due,
                        first_stream_seq: stream_seq,
                    },
                );
            }
        }
    }

    /// Removes and returns the changes due at `now`.
    pub fn take_due(&mut self, now: Millis) -> Vec<Due> {
        let keys: Vec<UserKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .map(|p| Due {
                change: p.change,
                first_stream_seq: p.first_stream_seq,
            })
            .collect()
    }

    /// Removes and returns everything pending (shutdown).
    pub fn take_all(&mut self) -> Vec<Due> {
        self.pending
            .drain()
            .map(|(_, p)| Due {
                change: p.change,
                first_stream_seq: p.first_stream_seq,
            })
            .collect()
    }

    /// Puts back changes whose write failed, due again at `now`; a newer pending change of
    /// the same user wins, keeping the older burst start.
    pub fn restore(&mut self, failed: Vec<Due>, now: Millis) {
        for due in failed {
            let key = UserKey {
                tenant: due.change.tenant.clone(),
                user: due.change.user.clone(),
            };
            match self.pending.get_mut(&key) {
                Some(newer) => {
                    newer.first_stream_seq = newer.first_stream_seq.min(due.first_stream_seq);
                    newer.due = newer.due.min(now);
                    if newer.change.seq < due.change.seq {
                        newer.change = due.change;
                    }
                }
                None => {
                    self.pending.insert(
                        key,
                        Pending {
                            change: due.change,
                            due: now,
                            first_stream_seq: due.first_stream_seq,
                        },
                    );
                }
            }
        }
    }

    /// The lowest stream sequence not yet written, if any change is pending.
    pub fn oldest_pending(&self) -> Option<u64> {
        self.pending.values().map(|p| p.first_stream_seq).min()
    }

    /// How many users have a pending write.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use presence_events::{Cause, SCHEMA_VERSION, Status, TenantId, UserId, ViewerClass};

    use super::*;

    fn change(user: &str, online: bool, seq: u64) -> PresenceChange {
        PresenceChange {
            v: SCHEMA_VERSION,
            tenant: TenantId::default_tenant(),
            user: UserId::parse(user).unwrap(),
            class: ViewerClass::other(),
            status: if online {
                Status::Online
            } else {
                Status::Offline
            },
            online,
            last_seen: Some(Millis(seq)),
            details: None,
            cause: if online { Cause::Join } else { Cause::Leave },
            at: Millis(seq),
            seq,
            epoch: 0,
        }
    }

    #[test]
    fn offline_is_due_at_once_and_online_after_two_seconds() {
        let mut d = Debouncer::new(2_000);
        d.offer(change("a", true, 1), 1, Millis(0));
        d.offer(change("b", false, 2), 2, Millis(0));
        let now: Vec<String> = d
            .take_due(Millis(0))
            .iter()
            .map(|d| d.change.user.to_string())
            .collect();
        assert_eq!(now, ["b"]);
        assert!(d.take_due(Millis(1_999)).is_empty());
        assert_eq!(d.take_due(Millis(2_000)).len(), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn twenty_flaps_in_two_seconds_become_one_write_of_the_final_state() {
        let mut d = Debouncer::new(2_000);
        let mut writes = Vec::new();
        for i in 0..40u64 {
            let t = i * 50;
            d.offer(change("a", i % 2 == 0, i + 1), i + 1, Millis(t));
            writes.extend(d.take_due(Millis(t)));
        }
        writes.extend(d.take_due(Millis(2_000)));
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert!(!writes[0].change.online);
        assert_eq!(writes[0].change.seq, 40);
        assert_eq!(writes[0].first_stream_seq, 1);
    }

    #[test]
    fn a_plain_disconnect_is_written_immediately() {
        let mut d = Debouncer::new(2_000);
        d.offer(change("a", true, 1), 1, Millis(0));
        assert_eq!(d.take_due(Millis(2_000)).len(), 1);
        d.offer(change("a", false, 2), 2, Millis(60_000));
        let due = d.take_due(Millis(60_000));
        assert_eq!(due.len(), 1);
        assert!(!due[0].change.online);
    }

    #[test]
    fn failed_writes_come_back_without_losing_newer_changes() {
        let mut d = Debouncer::new(2_000);
        d.offer(change("a", false, 1), 10, Millis(0));
        let failed = d.take_due(Millis(0));
        d.offer(change("a", true, 2), 11, Millis(5));
        d.restore(failed, Millis(100));
        assert_eq!(d.oldest_pending(), Some(10));
        let due = d.take_due(Millis(100));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].change.seq, 2);
    }

    #[test]
    fn older_changes_never_replace_newer_ones() {
        let mut d = Debouncer::new(2_000);
        d.offer(change("a", false, 5), 1, Millis(0));
        d.offer(change("a", true, 4), 2, Millis(0));
        assert_eq!(d.take_due(Millis(0))[0].change.seq, 5);
    }
}
