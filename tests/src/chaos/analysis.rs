//! From what the workload did (its journal) and what an observer received to the chaos
//! suite's figures: ghost-seconds, false offlines, duplicates, and the final state each
//! user must be in. Pure: the times are in the inputs.
//!
//! A user's connections give its *sessions*, from the connect (acknowledged: the join is
//! durable) to the leave it sent or the drop it noticed. Its *departures* are the ends of
//! sessions after which it is expected offline: every leave, and every drop not followed by a
//! new connection within the heartbeat timeout (a user that reconnects in time never went
//! offline). Each departure allows an `offline` update, once.

use std::collections::{BTreeMap, BTreeSet};

use crate::observer::Seen;

/// What the workload recorded, at a time in ms since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// A connection was admitted (its join acknowledged).
    Connected,
    /// The user disconnected on purpose (a leave was sent).
    Left,
    /// The connection was lost without a goodbye (its edge died).
    Dropped,
    /// A `user:status` was acknowledged `ok: true`.
    Status(String),
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When, in ms since the epoch.
    pub at: u64,
    /// Who.
    pub user: String,
    /// What.
    pub act: Act,
}

/// The server's timings and the allowances the figures use.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `PRESENCE_HEARTBEAT_TIMEOUT_MS`.
    pub timeout_ms: u64,
    /// `PRESENCE_SWEEP_INTERVAL_MS`.
    pub sweep_ms: u64,
    /// Slack on top of each expected time (delivery, debounce).
    pub slack_ms: u64,
}

impl Timing {
    /// How long after a leave the user may still be shown online.
    pub fn after_leave(&self) -> u64 {
        self.slack_ms
    }

    /// How long after a lost connection the user may still be shown online.
    pub fn after_drop(&self) -> u64 {
        self.timeout_ms + self.sweep_ms + self.slack_ms
    }
}

#[derive(Debug, Clone)]
struct Session {
    from: u64,
    /// When it ended, and how (`None`: still open).
    end: Option<(u64, bool)>,
}

/// Every user's sessions, in order; `true` in `end` is a leave, `false` a drop.
fn sessions(journal: &[Entry]) -> BTreeMap<&str, Vec<Session>> {
    let mut out: BTreeMap<&str, Vec<Session>> = BTreeMap::new();
    let mut sorted: Vec<&Entry> = journal.iter().collect();
    sorted.sort_by_key(|e| e.at);
    for e in sorted {
        let list = out.entry(e.user.as_str()).or_default();
        match e.act {
            Act::Connected => list.push(Session {
                from: e.at,
                end: None,
            }),
            Act::Left | Act::Dropped => {
                if let Some(open) = list.last_mut().filter(|s| s.end.is_none()) {
                    open.end = Some((e.at, e.act == Act::Left));
                }
            }
            Act::Status(_) => {}
        }
    }
    out
}

/// A departure: when, how long the user may still show online after it, and when the user
/// came back (if it did).
#[derive(Debug, Clone, Copy)]
struct Departure {
    at: u64,
    allowed: u64,
    back_at: Option<u64>,
}

fn departures(sessions: &[Session], timing: &Timing) -> Vec<Departure> {
    let mut out = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let Some((at, leave)) = s.end else { continue };
        let back_at = sessions.get(i + 1).map(|n| n.from);
        if !leave && back_at.is_some_and(|b| b < at + timing.timeout_ms) {
            continue; // reconnected in time: never offline
        }
        let allowed = if leave {
            timing.after_leave()
        } else {
            timing.after_drop()
        };
        out.push(Departure {
            at,
            allowed,
            back_at,
        });
    }
    out
}

/// The figures of one window of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Departures in the window.
    pub departures: u64,
    /// Σ over them of the time the observer still showed the user online past the allowance.
    pub ghost_seconds: f64,
    /// `offline` updates no departure allows, received while the user had a connection up
    /// for at least the slack.
    pub false_offlines: u64,
    /// The same status received twice in a row for a user who did nothing in between.
    pub duplicates: u64,
    /// The same status received twice in a row for a user who left (or changed status) in
    /// between: the transitions between were superseded before this observer read them.
    pub superseded: u64,
    /// The first few of them: `user status at`.
    pub duplicate_samples: Vec<String>,
}

/// The figures of `[from, to)`: departures in it, and the observer's updates in it.
pub fn figures(journal: &[Entry], seen: &[Seen], from: u64, to: u64, timing: &Timing) -> Figures {
    let mut by_user: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        by_user.entry(s.user.as_str()).or_default().push(s);
    }
    let mut out = Figures::default();
    // Duplicates: over everything received, counted in the window.
    for (user, updates) in &by_user {
        for (i, pair) in updates.windows(2).enumerate() {
            if pair[0].status != pair[1].status || !(from..to).contains(&pair[1].at) {
                continue;
            }
            // What the user did since the update before these two (a late delivery of the
            // first may come after the acts that superseded what lay between).
            let since = if i > 0 { updates[i - 1].at } else { 0 };
            let acted = journal.iter().any(|e| {
                e.user == *user && e.act != Act::Connected && (since..pair[1].at).contains(&e.at)
            });
            if acted {
                out.superseded += 1;
            } else {
                out.duplicates += 1;
                if out.duplicate_samples.len() < 5 {
                    out.duplicate_samples.push(format!(
                        "{} {} at {} and {}",
                        pair[1].user, pair[1].status, pair[0].at, pair[1].at
                    ));
                }
            }
        }
    }
    for (user, sessions) in sessions(journal) {
        let updates = by_user.get(user).map(Vec::as_slice).unwrap_or_default();
        let offlines: Vec<u64> = updates
            .iter()
            .filter(|s| s.status == "offline")
            .map(|s| s.at)
            .collect();
        let deps = departures(&sessions, timing);
        for d in deps.iter().filter(|d| (from..to).contains(&d.at)) {
            out.departures += 1;
            let due = d.at + d.allowed;
            let shown_until = offlines
                .iter()
                .copied()
                .find(|&t| t >= d.at)
                .unwrap_or(u64::MAX)
                .min(d.back_at.unwrap_or(u64::MAX))
                .min(to);
            out.ghost_seconds += shown_until.saturating_sub(due) as f64 / 1000.0;
        }
        // Each departure allows one offline after it.
        let mut credits: Vec<u64> = deps.iter().map(|d| d.at).collect();
        for &t in offlines.iter().filter(|t| (from..to).contains(*t)) {
            if let Some(i) = credits.iter().position(|&c| c <= t) {
                credits.remove(i);
                continue;
            }
            let up = sessions
                .iter()
                .any(|s| s.from + timing.slack_ms <= t && s.end.is_none_or(|(end, _)| end > t));
            if up {
                out.false_offlines += 1;
            }
        }
    }
    out
}

/// What each user must show at `at`, from the journal: the users whose state is settled by
/// then (nothing happened to them within the allowances before `at`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Connected (their join acknowledged), with the status acknowledged last in this
    /// session, if any.
    pub online: BTreeMap<String, Option<String>>,
    /// Left, or lost without coming back.
    pub offline: BTreeSet<String>,
}

/// The settled expectations at `at`.
pub fn expected(journal: &[Entry], at: u64, timing: &Timing) -> Expected {
    let mut out = Expected::default();
    let statuses: Vec<&Entry> = journal
        .iter()
        .filter(|e| matches!(e.act, Act::Status(_)))
        .collect();
    for (user, sessions) in sessions(journal) {
        let Some(last) = sessions.last() else {
            continue;
        };
        match last.end {
            None if last.from + timing.slack_ms <= at => {
                let status = statuses
                    .iter()
                    .filter(|e| e.user == user && e.at >= last.from && e.at <= at)
                    .max_by_key(|e| e.at)
                    .and_then(|e| match &e.act {
                        Act::Status(s) => Some(s.clone()),
                        _ => None,
                    });
                // A status acknowledged within the slack may not be folded yet.
                let settled = statuses
                    .iter()
                    .filter(|e| e.user == user && e.at >= last.from)
                    .all(|e| e.at + timing.slack_ms <= at);
                if settled {
                    out.online.insert(user.to_owned(), status);
                }
            }
            Some((end, leave)) => {
                let allowed = if leave {
                    timing.after_leave()
                } else {
                    timing.after_drop()
                };
                if end + allowed <= at {
                    out.offline.insert(user.to_owned());
                }
            }
            None => {}
        }
    }
    out
}

/// How the final state differs from the expectations: accepted events lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lost {
    /// Connected users not online.
    pub joins: Vec<String>,
    /// Users who left (or were lost) still online.
    pub leaves: Vec<String>,
    /// Acknowledged statuses not shown.
    pub statuses: Vec<String>,
}

impl Lost {
    /// Everything lost.
    pub fn total(&self) -> usize {
        self.joins.len() + self.leaves.len() + self.statuses.len()
    }
}

/// Compares `expected` with `actual`: user → (online, status); a user missing from `actual`
/// reads as offline.
pub fn lost(expected: &Expected, actual: &BTreeMap<String, (bool, String)>) -> Lost {
    let mut out = Lost::default();
    for (user, status) in &expected.online {
        match actual.get(user) {
            Some((true, shown)) => {
                if let Some(status) = status
                    && shown != status
                {
                    out.statuses.push(format!("{user}: {status} shown {shown}"));
                }
            }
            _ => out.joins.push(user.clone()),
        }
    }
    for user in &expected.offline {
        if actual.get(user).is_some_and(|(online, _)| *online) {
            out.leaves.push(user.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        timeout_ms: 10_000,
        sweep_ms: 1_000,
        slack_ms: 2_000,
    };

    fn e(at: u64, user: &str, act: Act) -> Entry {
        Entry {
            at,
            user: user.into(),
            act,
        }
    }

    fn s(at: u64, user: &str, status: &str) -> Seen {
        Seen {
            at,
            user: user.into(),
            status: status.into(),
        }
    }

    #[test]
    fn a_clean_run_has_no_ghosts_no_false_offlines_and_no_duplicates() {
        let journal = [
            e(1_000, "a", Act::Connected),
            e(5_000, "a", Act::Left),
            e(6_000, "a", Act::Connected),
        ];
        let seen = [
            s(1_050, "a", "online"),
            s(5_050, "a", "offline"),
            s(6_050, "a", "online"),
        ];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        assert_eq!(
            f,
            Figures {
                departures: 1,
                ..Figures::default()
            }
        );
    }

    #[test]
    fn an_offline_shown_late_is_ghost_time_past_the_allowance() {
        let journal = [e(1_000, "a", Act::Connected), e(5_000, "a", Act::Left)];
        let seen = [s(1_050, "a", "online"), s(12_000, "a", "offline")];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        // Allowed until 7 s; shown until 12 s.
        assert!((f.ghost_seconds - 5.0).abs() < 1e-9, "{f:?}");
        // A departure never shown offline counts until the end of the window.
        let f = figures(&journal, &seen[..1], 0, 20_000, &T);
        assert!((f.ghost_seconds - 13.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn a_drop_reconnected_in_time_is_no_departure_and_its_offline_is_false() {
        // The edge died at 5 s, the user was back on another edge at 5.3 s; an offline at
        // 16 s (the old connection swept) is false: the user had a connection up.
        let journal = [
            e(1_000, "a", Act::Connected),
            e(5_000, "a", Act::Dropped),
            e(5_300, "a", Act::Connected),
        ];
        let seen = [s(1_050, "a", "online"), s(16_000, "a", "offline")];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        assert_eq!((f.departures, f.false_offlines), (0, 1), "{f:?}");
    }

    #[test]
    fn a_drop_not_reconnected_is_allowed_the_timeout_and_the_sweep() {
        let journal = [e(1_000, "a", Act::Connected), e(5_000, "a", Act::Dropped)];
        let seen = [s(1_050, "a", "online"), s(16_500, "a", "offline")];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        assert_eq!((f.departures, f.false_offlines), (1, 0));
        assert_eq!(f.ghost_seconds, 0.0, "allowed until 18 s");
    }

    #[test]
    fn repeated_statuses_are_duplicates_and_an_offline_while_connected_is_false() {
        let journal = [e(1_000, "a", Act::Connected)];
        let seen = [
            s(1_050, "a", "online"),
            s(1_060, "a", "online"),
            s(9_000, "a", "offline"),
        ];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        assert_eq!((f.duplicates, f.false_offlines), (1, 1));
        assert_eq!(f.duplicate_samples, ["a online at 1050 and 1060"]);
        // Outside the window, neither counts.
        let f = figures(&journal, &seen, 10_000, 60_000, &T);
        assert_eq!((f.duplicates, f.false_offlines), (0, 0));
    }

    #[test]
    fn a_churn_whose_offline_never_arrived_is_superseded_not_a_duplicate() {
        let journal = [
            e(1_000, "a", Act::Connected),
            e(5_000, "a", Act::Left),
            e(6_000, "a", Act::Connected),
        ];
        let seen = [s(1_050, "a", "online"), s(8_000, "a", "online")];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        assert_eq!((f.duplicates, f.superseded), (0, 1));
        // Both onlines delivered late, together, after the leave between them.
        let seen = [
            s(500, "a", "offline"),
            s(8_000, "a", "online"),
            s(8_010, "a", "online"),
        ];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        assert_eq!((f.duplicates, f.superseded), (0, 1));
    }

    #[test]
    fn a_late_offline_of_a_churn_is_allowed_by_its_leave() {
        // Left at 5 s, back at 6 s, the offline delivered late at 9 s: allowed by the leave.
        let journal = [
            e(1_000, "a", Act::Connected),
            e(5_000, "a", Act::Left),
            e(6_000, "a", Act::Connected),
        ];
        let seen = [
            s(1_050, "a", "online"),
            s(9_000, "a", "offline"),
            s(9_010, "a", "online"),
        ];
        let f = figures(&journal, &seen, 0, 60_000, &T);
        assert_eq!(f.false_offlines, 0);
    }

    #[test]
    fn the_expected_state_is_what_settled_and_differences_are_losses() {
        let journal = [
            e(1_000, "on", Act::Connected),
            e(2_000, "on", Act::Status("live".into())),
            e(1_000, "left", Act::Connected),
            e(3_000, "left", Act::Left),
            e(1_000, "lost", Act::Connected),
            e(3_000, "lost", Act::Dropped),
            e(1_000, "recent", Act::Connected),
            e(19_500, "recent", Act::Left),
            e(19_000, "new", Act::Connected),
        ];
        let ex = expected(&journal, 20_000, &T);
        assert_eq!(
            ex.online,
            BTreeMap::from([("on".to_owned(), Some("live".to_owned()))])
        );
        assert_eq!(
            ex.offline,
            BTreeSet::from(["left".to_owned(), "lost".to_owned()])
        );
        let actual = BTreeMap::from([
            ("on".to_owned(), (true, "online".to_owned())),
            ("left".to_owned(), (true, "online".to_owned())),
        ]);
        let l = lost(&ex, &actual);
        assert_eq!(l.statuses, ["on: live shown online"]);
        assert_eq!(l.leaves, ["left"]);
        assert!(l.joins.is_empty());
        assert_eq!(l.total(), 2);
        let right = BTreeMap::from([("on".to_owned(), (true, "live".to_owned()))]);
        assert_eq!(lost(&ex, &right).total(), 0);
    }
}
