//! From the workers' connection records and the observers' updates to the figures.
//!
//! A user's successful connections, merged where they overlap, give its *sessions*: it
//! comes online when the first connection of a session starts connecting (the action that
//! causes the `online: true` update) and goes offline when the last one closes (a churn
//! leave, the final close, or a drop noticed by the client), or, for silent users, once the
//! server sweeps it: the expected time of that is the last sign of life (its last connect)
//! plus timeout and sweep interval.
//!
//! Each observer's updates about a user are matched in order to those expected transitions:
//! an expected transition is matched by the first later update with the same `online` value
//! that arrives before its deadline (action time + timeout + sweep interval + slack);
//! otherwise it is missed. Unmatched `online: false` updates that arrive while the user had a
//! connection up and heartbeating are false offlines.

use std::collections::HashMap;

use super::common::{ConnRecord, End, Population};

/// One `presence-update` an observer received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed {
    pub(crate) user: u32,
    pub(crate) online: bool,
    /// `status` agrees with `online` (`offline` exactly when not online).
    pub(crate) consistent: bool,
    pub(crate) at_us: u64,
}

pub(crate) struct Inputs<'a> {
    pub(crate) pop: &'a Population,
    pub(crate) conns: Vec<ConnRecord>,
    /// Per observer, its updates in arrival order.
    pub(crate) observers: &'a [Vec<Observed>],
    pub(crate) timeout_us: u64,
    pub(crate) sweep_us: u64,
    /// Added to timeout + sweep for an update's deadline.
    pub(crate) slack_us: u64,
    /// When observation stopped.
    pub(crate) end_us: u64,
}

/// The measured figures (latencies in ms, unsorted).
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// TCP start to Socket.IO CONNECT, every successful connection.
    pub(crate) connect_ms: Vec<f64>,
    /// Connect → `online: true` and churn leave → `online: false`, per (observer, action).
    pub(crate) propagation_ms: Vec<f64>,
    /// The `online: true` part of `propagation_ms`.
    pub(crate) online_ms: Vec<f64>,
    /// The churn-leave part of `propagation_ms`.
    pub(crate) leave_ms: Vec<f64>,
    /// A silent user's last sign of life → its `online: false`.
    pub(crate) sweep_ms: Vec<f64>,
    /// Final close → `online: false`.
    pub(crate) shutdown_ms: Vec<f64>,
    /// (observer, transition) pairs expected.
    pub(crate) expected: u64,
    /// Expected and missed pairs by the action that caused the transition, indexed like
    /// [`CAUSES`].
    pub(crate) expected_by: [u64; 5],
    pub(crate) missed_by: [u64; 5],
    /// Users' departures (leave, close, drop, silence).
    pub(crate) departures: u64,
    /// Σ over departures of the longest time any observer still showed the user online
    /// past action time + timeout + sweep interval.
    pub(crate) ghost_seconds: f64,
    /// Departures with any ghost time.
    pub(crate) ghost_departures: u64,
    pub(crate) false_offlines: u64,
    /// Updates matching no action and not false offlines (e.g. the `online: true` after a
    /// false offline, or late duplicates).
    pub(crate) unexpected: u64,
    /// Updates whose `status` contradicts `online`.
    pub(crate) inconsistent: u64,
}

impl Outcome {
    pub(crate) fn missed(&self) -> u64 {
        self.missed_by.iter().sum()
    }
}

/// What caused a transition: a connect (online), a churn leave, the final close, a drop
/// noticed by the client, a silent user's sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Online = 0,
    Leave = 1,
    Close = 2,
    Drop = 3,
    Silent = 4,
}

/// Names of [`Transition`]s, by index.
pub(crate) const CAUSES: [&str; 5] = ["connect", "leave", "close", "drop", "silent"];

#[derive(Debug)]
struct Session {
    /// Connect start of its first connection.
    online_at: u64,
    /// While a connection is up: first CONNECT to last close (`u64::MAX`: never closed).
    up_from: u64,
    up_to: u64,
    /// How its last connection ended.
    end: End,
    last_connected: u64,
}

fn sessions(conns: &[ConnRecord]) -> Vec<Session> {
    let mut out: Vec<Session> = Vec::new();
    for c in conns.iter().filter(|c| c.ok()) {
        let end = if c.end == End::Open || c.end_us == 0 {
            u64::MAX
        } else {
            c.end_us
        };
        match out.last_mut() {
            Some(s) if c.connected_us < s.up_to => {
                s.online_at = s.online_at.min(c.start_us);
                s.last_connected = s.last_connected.max(c.connected_us);
                if end >= s.up_to {
                    s.up_to = end;
                    s.end = c.end;
                }
            }
            _ => out.push(Session {
                online_at: c.start_us,
                up_from: c.connected_us,
                up_to: end,
                end: c.end,
                last_connected: c.connected_us,
            }),
        }
    }
    out
}

impl Session {
    /// When and how the user went offline (`None`: still connected at the end). A silent
    /// user is swept once its last sign of life is `timeout` old, unless its sockets closed
    /// before that.
    fn departure(&self, silent: bool, timeout_us: u64) -> Option<(u64, Transition)> {
        if silent && self.up_to >= self.last_connected + timeout_us {
            return Some((self.last_connected, Transition::Silent));
        }
        if self.up_to == u64::MAX {
            return None;
        }
        let kind = match self.end {
            End::Leave => Transition::Leave,
            End::Close => Transition::Close,
            End::Drop | End::Open => Transition::Drop,
        };
        Some((self.up_to, kind))
    }
}

/// The transitions observers should see, with the time of the action causing each.
fn transitions(
    sessions: &[Session],
    silent: bool,
    timeout_us: u64,
) -> Vec<(bool, u64, Transition)> {
    let mut out = Vec::with_capacity(sessions.len() * 2);
    for s in sessions {
        out.push((true, s.online_at, Transition::Online));
        if let Some((t, kind)) = s.departure(silent, timeout_us) {
            out.push((false, t, kind));
        }
    }
    out
}

fn ms(from_us: u64, to_us: u64) -> f64 {
    (to_us as f64 - from_us as f64) / 1000.0
}

/// Time within `[from, to)` that `seen` (one observer's updates about one user) shows the
/// user online, µs.
fn shown_online(seen: &[(u64, bool)], from: u64, to: u64) -> u64 {
    let mut online = seen
        .iter()
        .take_while(|(at, _)| *at <= from)
        .last()
        .is_some_and(|(_, online)| *online);
    let mut cursor = from;
    let mut total = 0;
    for &(at, now_online) in seen.iter().filter(|(at, _)| *at > from && *at < to) {
        if online {
            total += at - cursor;
        }
        cursor = at;
        online = now_online;
    }
    if online {
        total += to.saturating_sub(cursor);
    }
    total
}

pub(crate) fn analyse(mut input: Inputs<'_>) -> Outcome {
    let mut out = Outcome::default();
    input
        .conns
        .sort_unstable_by_key(|c| (c.user, c.connected_us, c.start_us));
    out.connect_ms = input
        .conns
        .iter()
        .filter(|c| c.ok())
        .map(|c| ms(c.start_us, c.connected_us))
        .collect();

    // Per observer, per user: (arrival, online).
    let mut by_user: Vec<HashMap<u32, Vec<(u64, bool)>>> = Vec::new();
    for updates in input.observers {
        let mut map: HashMap<u32, Vec<(u64, bool)>> = HashMap::new();
        for o in updates {
            if !o.consistent {
                out.inconsistent += 1;
            }
            map.entry(o.user).or_default().push((o.at_us, o.online));
        }
        by_user.push(map);
    }
    let grace = input.timeout_us + input.sweep_us;
    let deadline = grace + input.slack_us;

    for user_conns in input.conns.chunk_by(|a, b| a.user == b.user) {
        let u = user_conns[0].user;
        let silent = input.pop.silent(u);
        let sessions = sessions(user_conns);
        let expected = transitions(&sessions, silent, input.timeout_us);

        for map in &by_user {
            let seen: &[(u64, bool)] = map.get(&u).map_or(&[], Vec::as_slice);
            let mut matched = vec![false; seen.len()];
            let mut next = 0;
            for &(online, t, kind) in &expected {
                out.expected += 1;
                out.expected_by[kind as usize] += 1;
                let found = (next..seen.len())
                    .take_while(|&x| seen[x].0 <= t + deadline)
                    .find(|&x| seen[x].1 == online && seen[x].0 >= t);
                let Some(x) = found else {
                    out.missed_by[kind as usize] += 1;
                    continue;
                };
                matched[x] = true;
                next = x + 1;
                let latency = ms(t, seen[x].0);
                match kind {
                    Transition::Online => {
                        out.online_ms.push(latency);
                        out.propagation_ms.push(latency);
                    }
                    Transition::Leave => {
                        out.leave_ms.push(latency);
                        out.propagation_ms.push(latency);
                    }
                    Transition::Silent => out.sweep_ms.push(latency),
                    Transition::Close => out.shutdown_ms.push(latency),
                    Transition::Drop => {}
                }
            }
            for (x, &(at, online)) in seen.iter().enumerate() {
                if matched[x] {
                    continue;
                }
                let heartbeating =
                    !silent && sessions.iter().any(|s| s.up_from <= at && at < s.up_to);
                if !online && heartbeating {
                    out.false_offlines += 1;
                } else {
                    out.unexpected += 1;
                }
            }
        }

        // Ghost time of each departure: the longest any observer kept showing the user.
        for (i, s) in sessions.iter().enumerate() {
            let Some((t, _)) = s.departure(silent, input.timeout_us) else {
                continue;
            };
            out.departures += 1;
            let from = t + grace;
            let to = sessions
                .get(i + 1)
                .map_or(input.end_us, |next| next.online_at);
            if to <= from {
                continue;
            }
            let worst = by_user
                .iter()
                .map(|map| shown_online(map.get(&u).map_or(&[], Vec::as_slice), from, to))
                .max()
                .unwrap_or(0);
            if worst > 0 {
                out.ghost_departures += 1;
                out.ghost_seconds += worst as f64 / 1e6;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn conn(user: u32, start: u64, connected: u64, end_us: u64, end: End) -> ConnRecord {
        ConnRecord {
            user,
            start_us: start,
            connected_us: connected,
            end_us,
            end,
        }
    }

    fn seen(user: u32, at: u64, online: bool) -> Observed {
        Observed {
            user,
            online,
            consistent: true,
            at_us: at,
        }
    }

    fn run(conns: Vec<ConnRecord>, observers: &[Vec<Observed>], silent: f64) -> Outcome {
        let pop = Population::new("bx", 10, 0.0, silent);
        analyse(Inputs {
            pop: &pop,
            conns,
            observers,
            timeout_us: 15 * S,
            sweep_us: 3 * S,
            slack_us: 2 * S,
            end_us: 100 * S,
        })
    }

    #[test]
    fn a_clean_churn_is_two_sessions_matched_in_order() {
        let conns = vec![
            conn(1, 10 * S, 10 * S + 2_000, 20 * S, End::Leave),
            conn(1, 22 * S, 22 * S + 2_000, 40 * S, End::Close),
        ];
        let observed = vec![vec![
            seen(1, 10 * S + 3_000, true),
            seen(1, 20 * S + 5_000, false),
            seen(1, 22 * S + 4_000, true),
            seen(1, 40 * S + 1_000, false),
        ]];
        let out = run(conns, &observed, 0.0);
        assert_eq!(out.expected, 4);
        assert_eq!(out.missed(), 0);
        assert_eq!(out.propagation_ms, vec![3.0, 5.0, 4.0]);
        assert_eq!(out.shutdown_ms, vec![1.0]);
        assert_eq!((out.false_offlines, out.unexpected), (0, 0));
        assert_eq!(out.ghost_seconds, 0.0);
        assert_eq!(out.departures, 2);
    }

    #[test]
    fn overlapping_connections_are_one_session() {
        let conns = vec![
            conn(2, 10 * S, 11 * S, 30 * S, End::Close),
            conn(2, 12 * S, 13 * S, 31 * S, End::Close),
        ];
        let observed = vec![vec![seen(2, 11 * S, true), seen(2, 31 * S + 500, false)]];
        let out = run(conns, &observed, 0.0);
        assert_eq!(out.expected, 2);
        assert_eq!(out.missed(), 0);
        assert_eq!(out.shutdown_ms, vec![0.5]);
    }

    #[test]
    fn a_missed_offline_is_ghost_time_and_a_false_offline_is_counted() {
        let conns = vec![conn(3, 10 * S, 10 * S, 20 * S, End::Leave)];
        // Swept by mistake at 15 s, back at 16 s, the leave's offline never came.
        let observed = vec![vec![
            seen(3, 10 * S + 1_000, true),
            seen(3, 15 * S, false),
            seen(3, 16 * S, true),
        ]];
        let out = run(conns, &observed, 0.0);
        assert_eq!(out.missed_by[Transition::Leave as usize], 1);
        assert_eq!(out.false_offlines, 1);
        assert_eq!(out.unexpected, 1);
        // Shown online from 20 + 18 s to the end of observation at 100 s.
        assert!((out.ghost_seconds - 62.0).abs() < 1e-9);
    }

    #[test]
    fn silent_users_are_expected_offline_after_the_sweep() {
        let pop = Population::new("bx", 100, 0.0, 100.0);
        assert!(pop.silent(4));
        let conns = vec![conn(4, 10 * S, 10 * S, 90 * S, End::Close)];
        let observed = vec![vec![seen(4, 10 * S + 1, true), seen(4, 29 * S, false)]];
        let out = run(conns, &observed, 100.0);
        assert_eq!(out.missed(), 0);
        assert_eq!(out.sweep_ms, vec![19_000.0]);
        // Expected by 10 + 18 s; shown online until 29 s.
        assert!((out.ghost_seconds - 1.0).abs() < 1e-9);
        assert_eq!(out.false_offlines, 0);
    }

    #[test]
    fn a_silent_user_closed_before_its_sweep_goes_offline_by_its_leave() {
        let conns = vec![conn(5, 10 * S, 10 * S, 14 * S, End::Close)];
        let observed = vec![vec![
            seen(5, 10 * S + 1, true),
            seen(5, 14 * S + 2_000, false),
        ]];
        let out = run(conns, &observed, 100.0);
        assert_eq!(out.missed(), 0);
        assert!(out.sweep_ms.is_empty());
        assert_eq!(out.shutdown_ms, vec![2.0]);
    }

    #[test]
    fn shown_online_integrates_the_observed_state() {
        let seen = [(5, true), (10, false), (12, true)];
        assert_eq!(shown_online(&seen, 0, 20), 5 + 8);
        assert_eq!(shown_online(&seen, 6, 11), 4);
        assert_eq!(shown_online(&[], 0, 20), 0);
    }
}
