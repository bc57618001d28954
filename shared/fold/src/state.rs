//! The presence state machine: a pure fold of the event log into who is online.
//!
//! No I/O and no clock: every input carries its own time (event time), so folding the same
//! events gives the same state and the same changes, live or in a replay. The aggregator's
//! sweeps arrive as `tick` events in the log for the same reason.
//!
//! Invariants:
//! - a user is online exactly while it has at least one live connection;
//! - a connection closes once: a late `leave`, beat or status of a closed connection never
//!   touches the user's newer connections (closed connections are remembered for a while);
//! - a connection silent for the heartbeat timeout is swept at the next tick; a heartbeat of a
//!   swept but still open connection brings it back;
//! - [`PresenceState::next_sweep_due`] is never later than the earliest time a connection
//!   becomes silent for the timeout, so a tick appended then sweeps it on time;
//! - with a retention set, a user offline for that long (event time) is forgotten at the next
//!   tick: the fold's memory and its snapshot hold the online and the recently gone, not
//!   everyone ever seen. A forgotten user who comes back joins like a new one;
//! - every connection is known by the edge that opened it: when that edge's lease runs out
//!   (see [`crate::edges`]) all of them are swept at once, at the first event past the lease;
//!   like any swept connection, one whose edge was only cut off comes back with its next beat.

use std::collections::{HashMap, VecDeque};

use presence_events::{
    BeatEntry, Cause, ConnId, Details, Event, EventBody, Millis, NodeId, PresenceChange,
    PresenceStats, SCHEMA_VERSION, SetStatus, Status, TenantId, UserId, UserKey, ViewerClass,
};
use serde::{Deserialize, Serialize};

use crate::edges::{EdgeIndex, Edges, NO_EDGE};

/// A user's presence as the fold knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPresence {
    /// Visibility class (from the user's latest connection).
    pub class: ViewerClass,
    /// Chosen status while online (`online`, `live`, `in_call`); `offline` otherwise.
    pub status: Status,
    /// Details of the status.
    pub details: Option<Details>,
    /// Open connections.
    pub conns: Vec<ConnId>,
    /// When the user was last seen: join time while online, disconnect time once offline.
    pub last_seen: Option<Millis>,
}

impl UserPresence {
    /// Whether the user has a live connection.
    pub fn online(&self) -> bool {
        !self.conns.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Conn {
    key: UserKey,
    last_beat: Millis,
    /// The edge that opened it.
    #[serde(default = "no_edge")]
    edge: EdgeIndex,
}

fn no_edge() -> EdgeIndex {
    NO_EDGE
}

/// Presence of every user, folded from the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceState {
    heartbeat_timeout_ms: u64,
    #[serde(with = "crate::pairs")]
    users: HashMap<UserKey, UserPresence>,
    conns: HashMap<ConnId, Conn>,
    /// Recently closed connections and when they closed: late messages of theirs are ignored.
    closed: HashMap<ConnId, Millis>,
    last_seq: u64,
    /// The log's time of the newest event folded: event times never go backwards, even when
    /// the log's clock does (a new stream leader on a machine whose clock is behind).
    #[serde(default)]
    last_at: Millis,
    stats: PresenceStats,
    /// No connection goes silent for the timeout before this (event time); `None` without
    /// connections. It may be early (a beat or a leave since), never late.
    #[serde(default)]
    next_sweep_due: Option<Millis>,
    /// Event time of the previous event folded: a longer silence of the whole partition than
    /// half the heartbeat timeout is the log having been away (see [`PresenceState::apply`]).
    #[serde(default)]
    folded_at: Millis,
    /// A silence of the whole partition longer than this is an outage of the log (`None`:
    /// never assumed). Set by the aggregator from its settings; not part of the state.
    #[serde(skip)]
    outage_after_ms: Option<u64>,
    /// Users gone offline, in the order they went (event time): each is forgotten once it has
    /// been offline for the retention.
    #[serde(default)]
    gone: VecDeque<(Millis, UserKey)>,
    /// How long an offline user is kept (`None`: for ever). Set by the aggregator from its
    /// settings; not part of the state.
    #[serde(skip)]
    offline_retention_ms: Option<u64>,
    /// Set when a sweep forgot users or gave back the room of a table; the aggregator then
    /// hands the freed memory back to the system (see `release`). Not part of the state.
    #[serde(skip)]
    released: bool,
    /// The edges that opened the connections, and their leases.
    #[serde(default)]
    edges: Edges,
}

/// Builds the change for `key` in one place so every cause reports the same fields.
struct ChangeContext {
    seq: u64,
    at: Millis,
}

/// A sign of life of connection `conn`, written by `node`.
struct Opened<'a> {
    conn: &'a ConnId,
    node: &'a NodeId,
    at: Millis,
    cause: Cause,
}

impl ChangeContext {
    fn change(&self, key: &UserKey, user: &UserPresence, cause: Cause) -> PresenceChange {
        PresenceChange {
            v: SCHEMA_VERSION,
            tenant: key.tenant.clone(),
            user: key.user.clone(),
            class: user.class.clone(),
            status: user.status,
            online: user.online(),
            last_seen: user.last_seen,
            details: user.details.clone(),
            cause,
            at: self.at,
            seq: self.seq,
            // Stamped by the owner that publishes it.
            epoch: 0,
        }
    }
}

impl PresenceState {
    /// An empty state sweeping connections silent for `heartbeat_timeout_ms`.
    pub fn new(heartbeat_timeout_ms: u64) -> Self {
        Self {
            heartbeat_timeout_ms,
            users: HashMap::new(),
            conns: HashMap::new(),
            closed: HashMap::new(),
            last_seq: 0,
            last_at: Millis(0),
            stats: PresenceStats::default(),
            next_sweep_due: None,
            folded_at: Millis(0),
            outage_after_ms: None,
            gone: VecDeque::new(),
            offline_retention_ms: None,
            released: false,
            edges: Edges::default(),
        }
    }

    /// Forgets users offline for longer than `ms` (event time) at each tick; `None` keeps
    /// everyone.
    pub fn set_offline_retention(&mut self, ms: Option<u64>) {
        self.offline_retention_ms = ms;
    }

    /// The offline retention in force.
    pub fn offline_retention(&self) -> Option<u64> {
        self.offline_retention_ms
    }

    /// Users the fold holds (online, or offline within the retention).
    pub fn users_held(&self) -> usize {
        self.users.len()
    }

    /// Closed connections the fold still remembers (for twice the heartbeat timeout).
    pub fn closed_held(&self) -> usize {
        self.closed.len()
    }

    /// Whether a sweep since the last call forgot users or shrank a table (and clears it).
    pub fn take_released(&mut self) -> bool {
        std::mem::take(&mut self.released)
    }

    /// Treats a silence of the whole partition longer than `ms` as the log having been away
    /// (see [`PresenceState::apply`]); it must be well above the longest time between two
    /// clock ticks of the partition's owner.
    pub fn set_outage_after(&mut self, ms: Option<u64>) {
        self.outage_after_ms = ms;
    }

    /// The outage threshold in force.
    pub fn outage_after(&self) -> Option<u64> {
        self.outage_after_ms
    }

    /// Applies the current heartbeat timeout (a restored snapshot carries the one it was made with).
    pub fn set_heartbeat_timeout(&mut self, heartbeat_timeout_ms: u64) {
        if heartbeat_timeout_ms != self.heartbeat_timeout_ms {
            self.heartbeat_timeout_ms = heartbeat_timeout_ms;
            self.next_sweep_due = self
                .conns
                .values()
                .map(|c| c.last_beat)
                .min()
                .map(|b| b.plus(heartbeat_timeout_ms));
        }
    }

    /// The heartbeat timeout in force.
    pub fn heartbeat_timeout_ms(&self) -> u64 {
        self.heartbeat_timeout_ms
    }

    /// Sequence of the last event folded in (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Passes over the event at `seq` without folding it (undecodable, or fenced).
    pub fn skip(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// The time to fold an event the log stored at `stored` with: `stored`, or the newest
    /// time folded so far if the log's clock went back.
    pub fn log_time(&mut self, stored: Millis) -> Millis {
        self.last_at = self.last_at.max(stored);
        self.last_at
    }

    /// When the fold next needs a clock tick (event time): the next connection may go silent
    /// for the heartbeat timeout, an edge's lease runs out, or a partition with leases has
    /// been quiet long enough. `None` while nobody is connected and no edge holds a lease.
    pub fn next_sweep_due(&self) -> Option<Millis> {
        let leases = self.edges.next_due(self.folded_at);
        match (self.next_sweep_due, leases) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Edges holding a lease in this partition.
    pub fn edge_leases(&self) -> usize {
        self.edges.held()
    }

    /// Cluster-wide figures.
    pub fn stats(&self) -> &PresenceStats {
        &self.stats
    }

    /// The presence of one user, if ever seen.
    pub fn user(&self, tenant: &TenantId, user: &UserId) -> Option<&UserPresence> {
        self.users.get(&UserKey {
            tenant: tenant.clone(),
            user: user.clone(),
        })
    }

    /// Every user ever seen, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = (&UserKey, &UserPresence)> {
        self.users.iter()
    }

    /// Folds in the event at log sequence `seq`; returns the presence changes it caused, in
    /// order. An event at or below the last folded sequence (a redelivery) changes nothing.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Vec<PresenceChange> {
        if seq <= self.last_seq {
            return Vec::new();
        }
        self.last_seq = seq;
        let gap = match self.folded_at {
            Millis(0) => 0,
            folded_at => event.at.since(folded_at),
        };
        self.forgive_outage(event.at);
        let cx = ChangeContext { seq, at: event.at };
        let mut changes = Vec::new();
        if self.edges.heard(event.at, gap) {
            self.stats.outages_forgiven_to_edges += 1;
        }
        for (edge, renewed_at) in self.edges.run_out(event.at) {
            self.stats.edges_lost += 1;
            self.sweep_edge(&cx, edge, renewed_at, &mut changes);
        }
        let node = &event.node;
        match &event.body {
            EventBody::Join {
                tenant,
                user,
                conn,
                class,
            } => {
                let key = user_key(tenant, user);
                let opened = Opened {
                    conn,
                    node,
                    at: event.at,
                    cause: Cause::Join,
                };
                self.open(&cx, key, class, opened, &mut changes);
            }
            EventBody::Beat { beats } => {
                for BeatEntry {
                    tenant,
                    user,
                    conn,
                    class,
                    at,
                } in beats
                {
                    let key = user_key(tenant, user);
                    let opened = Opened {
                        conn,
                        node,
                        at: *at,
                        cause: Cause::Beat,
                    };
                    self.open(&cx, key, class, opened, &mut changes);
                }
            }
            EventBody::Leave { conn, .. } => self.close(&cx, *conn, &mut changes),
            EventBody::Status {
                tenant,
                user,
                conn,
                class,
                status,
                details,
            } => {
                let key = user_key(tenant, user);
                let opened = Opened {
                    conn,
                    node,
                    at: event.at,
                    cause: Cause::Status,
                };
                self.set_status(&cx, key, class, opened, *status, details, &mut changes);
            }
            EventBody::ServiceStatus {
                tenant,
                user,
                status,
                details,
            } => {
                // Only a connected user has a status to set; offline stays offline.
                if let Some(presence) = self.users.get_mut(&user_key(tenant, user))
                    && presence.online()
                {
                    let status = Status::from(*status);
                    if presence.status != status || presence.details != *details {
                        presence.status = status;
                        presence.details = details.clone();
                        changes.push(cx.change(&user_key(tenant, user), presence, Cause::Status));
                    }
                }
            }
            EventBody::Tick => self.sweep_silent_connections(&cx, &mut changes),
            EventBody::EdgeLease {
                incarnation,
                ttl_ms,
                released: false,
            } => {
                if let Some(previous_run) = self.edges.renew(node, *incarnation, *ttl_ms, event.at)
                {
                    self.stats.edges_lost += 1;
                    self.sweep_edge(&cx, previous_run, event.at, &mut changes);
                }
            }
            EventBody::EdgeLease {
                incarnation,
                released: true,
                ..
            } => self.edges.release(node, *incarnation),
            // Active-user sessions are folded by `sessions::ActiveUsers`.
            EventBody::SessionJoin { .. }
            | EventBody::SessionBeat { .. }
            | EventBody::SessionLeave { .. }
            | EventBody::MetricsTick => {}
        }
        changes
    }

    /// A sign of life of a connection: opens it if it is new (or was swept), else refreshes it.
    fn open(
        &mut self,
        cx: &ChangeContext,
        key: UserKey,
        class: &ViewerClass,
        opened: Opened<'_>,
        changes: &mut Vec<PresenceChange>,
    ) {
        let Opened {
            conn,
            node,
            at,
            cause,
        } = opened;
        let conn = *conn;
        if self.closed.contains_key(&conn) {
            return;
        }
        if let Some(existing) = self.conns.get_mut(&conn) {
            existing.last_beat = existing.last_beat.max(at);
            return;
        }
        let edge = self.edges.index(node);
        self.edges.attach(edge);
        self.conns.insert(
            conn,
            Conn {
                key: key.clone(),
                last_beat: at,
                edge,
            },
        );
        let due = at.plus(self.heartbeat_timeout_ms);
        self.next_sweep_due = Some(self.next_sweep_due.map_or(due, |d| d.min(due)));
        self.stats.total_connections += 1;
        let user = self
            .users
            .entry(key.clone())
            .or_insert_with(|| UserPresence {
                class: class.clone(),
                status: Status::Offline,
                details: None,
                conns: Vec::new(),
                last_seen: None,
            });
        user.class = class.clone();
        let was_online = user.online();
        user.conns.push(conn);
        if !was_online {
            user.status = Status::Online;
            user.details = None;
            user.last_seen = Some(at);
            self.stats.online_users += 1;
            self.stats.peak_online = self.stats.peak_online.max(self.stats.online_users);
            changes.push(cx.change(&key, user, cause));
        }
    }

    fn close(&mut self, cx: &ChangeContext, conn: ConnId, changes: &mut Vec<PresenceChange>) {
        self.closed.insert(conn, cx.at);
        if let Some(closed) = self.conns.remove(&conn) {
            self.edges.detach(closed.edge);
            self.stats.total_disconnections += 1;
            self.detach(cx, closed.key, conn, cx.at, Cause::Leave, changes);
        }
    }

    /// Removes `conn` from its user; the user goes offline, last seen at `seen`, if it was the last.
    fn detach(
        &mut self,
        cx: &ChangeContext,
        key: UserKey,
        conn: ConnId,
        seen: Millis,
        cause: Cause,
        changes: &mut Vec<PresenceChange>,
    ) {
        let Some(user) = self.users.get_mut(&key) else {
            return;
        };
        user.conns.retain(|c| *c != conn);
        if user.conns.is_empty() {
            user.status = Status::Offline;
            user.details = None;
            user.last_seen = Some(seen);
            self.stats.online_users = self.stats.online_users.saturating_sub(1);
            changes.push(cx.change(&key, user, cause));
            if self.offline_retention_ms.is_some() {
                self.gone.push_back((cx.at, key));
            }
        }
    }

    /// Forgets the users offline for the retention at `now`. The queue is in event-time
    /// order; a user who came back since (online, or offline again later) is kept, its later
    /// departure being further down the queue.
    fn forget_long_gone(&mut self, now: Millis) -> usize {
        let Some(retention) = self.offline_retention_ms else {
            return 0;
        };
        let mut forgotten = 0;
        while self
            .gone
            .front()
            .is_some_and(|(at, _)| now.since(*at) >= retention)
        {
            let Some((_, key)) = self.gone.pop_front() else {
                break;
            };
            let long_gone = self.users.get(&key).is_some_and(|u| {
                !u.online() && u.last_seen.is_some_and(|seen| now.since(seen) >= retention)
            });
            if long_gone {
                self.users.remove(&key);
                forgotten += 1;
            }
        }
        forgotten
    }

    #[allow(clippy::too_many_arguments)]
    fn set_status(
        &mut self,
        cx: &ChangeContext,
        key: UserKey,
        class: &ViewerClass,
        connection: Opened<'_>,
        status: SetStatus,
        details: &Option<Details>,
        changes: &mut Vec<PresenceChange>,
    ) {
        if self.closed.contains_key(connection.conn) {
            return;
        }
        // A status comes from an open connection: if its join was not seen, it opens here,
        // and the one change reported is the status.
        let mut opened = Vec::new();
        self.open(cx, key.clone(), class, connection, &mut opened);
        let Some(user) = self.users.get_mut(&key) else {
            return;
        };
        let status = Status::from(status);
        if !opened.is_empty() || user.status != status || user.details != *details {
            user.status = status;
            user.details = details.clone();
            changes.push(cx.change(&key, user, Cause::Status));
        }
    }

    /// Nobody is shown offline because the log was away. The partition's log hears from its
    /// owner's clock every sweep interval and from every edge with connections every beat
    /// flush; a silence of the whole partition longer than the outage threshold means nobody
    /// could write to it (JetStream without quorum, a full outage). The connections' silence
    /// during it does not count: their last beats move forward by its length. On log times
    /// only, so a replay forgives exactly the same gaps.
    fn forgive_outage(&mut self, at: Millis) {
        let gap = at.since(self.folded_at);
        let first = self.folded_at == Millis(0);
        self.folded_at = self.folded_at.max(at);
        let Some(threshold) = self.outage_after_ms else {
            return;
        };
        if first || gap <= threshold || self.conns.is_empty() {
            return;
        }
        for c in self.conns.values_mut() {
            c.last_beat = c.last_beat.plus(gap);
        }
        self.next_sweep_due = self.next_sweep_due.map(|due| due.plus(gap));
        self.stats.outages_forgiven += 1;
    }

    /// Sweeps every connection of `edge`, whose lease ran out (or whose process restarted);
    /// the users are last seen when the edge was last heard of, or their last beat if later.
    fn sweep_edge(
        &mut self,
        cx: &ChangeContext,
        edge: EdgeIndex,
        heard_at: Millis,
        changes: &mut Vec<PresenceChange>,
    ) {
        let mut gone: Vec<(ConnId, UserKey, Millis)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.edge == edge)
            .map(|(id, c)| (*id, c.key.clone(), c.last_beat.max(heard_at)))
            .collect();
        // Map order is arbitrary; the changes must come out the same in every replay.
        gone.sort_unstable_by_key(|(id, _, _)| *id);
        for (conn, key, seen) in gone {
            self.conns.remove(&conn);
            self.edges.detach(edge);
            self.stats.total_swepts += 1;
            self.detach(cx, key, conn, seen, Cause::Sweep, changes);
        }
    }

    /// Sweeps connections silent for the heartbeat timeout as of the tick's time. Before the
    /// next connection can be silent for that long (a tick for the leases), nothing is looked at.
    fn sweep_silent_connections(&mut self, cx: &ChangeContext, changes: &mut Vec<PresenceChange>) {
        let now = cx.at;
        self.stats.last_sweep_at = Some(now);
        if self.next_sweep_due.is_none_or(|due| now >= due) {
            self.sweep_silent(now, cx, changes);
        }
        // Late messages of a closed connection arrive within a beat flush; twice the timeout
        // is a wide margin.
        let keep = self.heartbeat_timeout_ms.saturating_mul(2);
        self.closed
            .retain(|_, closed_at| now.since(*closed_at) <= keep);
        self.release_memory(now);
    }

    fn sweep_silent(&mut self, now: Millis, cx: &ChangeContext, changes: &mut Vec<PresenceChange>) {
        let mut silent: Vec<(ConnId, UserKey, Millis)> = Vec::new();
        let mut oldest_kept: Option<Millis> = None;
        for (id, c) in &self.conns {
            if now.since(c.last_beat) >= self.heartbeat_timeout_ms {
                silent.push((*id, c.key.clone(), c.last_beat));
            } else {
                oldest_kept = Some(oldest_kept.map_or(c.last_beat, |o| o.min(c.last_beat)));
            }
        }
        self.next_sweep_due = oldest_kept.map(|b| b.plus(self.heartbeat_timeout_ms));
        // Map order is arbitrary; the changes must come out the same in every replay.
        silent.sort_unstable_by_key(|(id, _, _)| *id);
        for (conn, key, last_beat) in silent {
            if let Some(swept) = self.conns.remove(&conn) {
                self.edges.detach(swept.edge);
            }
            self.stats.total_swepts += 1;
            self.detach(cx, key, conn, last_beat, Cause::Sweep, changes);
        }
    }

    fn release_memory(&mut self, now: Millis) {
        let forgotten = self.forget_long_gone(now);
        // Memory follows who is here now: tables a crowd once filled are given back.
        let mut released = forgotten >= RELEASE_AFTER_FORGETTING;
        released |= shrink(&mut self.users);
        released |= shrink(&mut self.conns);
        released |= shrink(&mut self.closed);
        if self.gone.capacity() > 4 * self.gone.len() + 1024 {
            self.gone.shrink_to(2 * self.gone.len());
            released = true;
        }
        self.released |= released;
    }
}

/// Users forgotten in one sweep that make it worth handing their memory back to the system.
const RELEASE_AFTER_FORGETTING: usize = 1024;

/// Gives back most of a table's room once it holds a quarter of it or less; whether it did.
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) -> bool {
    let shrinks = map.capacity() > 4 * map.len() + 1024;
    if shrinks {
        map.shrink_to(2 * map.len());
    }
    shrinks
}

fn user_key(tenant: &TenantId, user: &UserId) -> UserKey {
    UserKey {
        tenant: tenant.clone(),
        user: user.clone(),
    }
}

#[cfg(test)]
mod tests {
    use presence_events::{LeaveReason, NodeId};

    use super::*;

    const TIMEOUT: u64 = 15_000;

    /// Drives the state machine like the log would: numbered events with their own times.
    struct Script {
        state: PresenceState,
        seq: u64,
    }

    impl Script {
        fn new() -> Self {
            Self {
                state: PresenceState::new(TIMEOUT),
                seq: 0,
            }
        }

        fn apply(&mut self, at: u64, body: EventBody) -> Vec<PresenceChange> {
            self.seq += 1;
            let event = Event::new(NodeId::parse("edge-1").unwrap(), Millis(at), body);
            self.state.apply(self.seq, &event)
        }

        /// As [`Script::apply`], written by `node`.
        fn apply_from(&mut self, node: &str, at: u64, body: EventBody) -> Vec<PresenceChange> {
            self.seq += 1;
            let event = Event::new(NodeId::parse(node).unwrap(), Millis(at), body);
            self.state.apply(self.seq, &event)
        }

        fn online(&self, user: &str) -> bool {
            self.state
                .user(&TenantId::default_tenant(), &uid(user))
                .is_some_and(UserPresence::online)
        }
    }

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn class(s: &str) -> ViewerClass {
        ViewerClass::from_gender(Some(s))
    }

    fn join(user: &str, conn: ConnId) -> EventBody {
        EventBody::Join {
            tenant: TenantId::default_tenant(),
            user: uid(user),
            conn,
            class: class("female"),
        }
    }

    fn leave(user: &str, conn: ConnId) -> EventBody {
        EventBody::Leave {
            tenant: TenantId::default_tenant(),
            user: uid(user),
            conn,
            class: class("female"),
            reason: LeaveReason::Client,
        }
    }

    fn beat(user: &str, conn: ConnId, at: u64) -> EventBody {
        EventBody::Beat {
            beats: vec![BeatEntry {
                tenant: TenantId::default_tenant(),
                user: uid(user),
                conn,
                class: class("female"),
                at: Millis(at),
            }],
        }
    }

    fn status(user: &str, conn: ConnId, status: SetStatus, details: Option<Details>) -> EventBody {
        EventBody::Status {
            tenant: TenantId::default_tenant(),
            user: uid(user),
            conn,
            class: class("female"),
            status,
            details,
        }
    }

    fn summary(changes: &[PresenceChange]) -> Vec<(String, Status, bool, Cause)> {
        changes
            .iter()
            .map(|c| (c.user.to_string(), c.status, c.online, c.cause))
            .collect()
    }

    #[test]
    fn a_join_brings_a_user_online_and_the_last_leave_takes_it_offline() {
        let mut s = Script::new();
        let c = ConnId::new();
        let changes = s.apply(1_000, join("ayse", c));
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Online, true, Cause::Join)]
        );
        let changes = s.apply(2_000, leave("ayse", c));
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Offline, false, Cause::Leave)]
        );
        assert_eq!(changes[0].last_seen, Some(Millis(2_000)));
        assert_eq!(changes[0].seq, 2);
    }

    #[test]
    fn a_user_connected_twice_stays_online_when_one_connection_closes() {
        let mut s = Script::new();
        let (phone, web) = (ConnId::new(), ConnId::new());
        s.apply(1_000, join("ayse", phone));
        assert!(s.apply(1_100, join("ayse", web)).is_empty());
        assert!(s.apply(1_200, leave("ayse", phone)).is_empty());
        assert!(s.online("ayse"));
        assert_eq!(s.apply(1_300, leave("ayse", web)).len(), 1);
        assert!(!s.online("ayse"));
    }

    #[test]
    fn a_late_disconnect_of_an_old_socket_keeps_the_user_online() {
        let mut s = Script::new();
        let (old, new) = (ConnId::new(), ConnId::new());
        s.apply(1_000, join("ayse", old));
        // The old socket went silent and was swept; the user reconnected on a new socket.
        s.apply(17_000, EventBody::Tick);
        assert!(!s.online("ayse"));
        s.apply(18_000, join("ayse", new));
        // Only now does the old socket's disconnect arrive.
        assert!(s.apply(18_500, leave("ayse", old)).is_empty());
        assert!(s.online("ayse"));
        // Nor may a stray heartbeat of the closed old socket resurrect it later.
        s.apply(19_000, leave("ayse", new));
        assert!(s.apply(19_100, beat("ayse", old, 18_400)).is_empty());
        assert!(!s.online("ayse"));
    }

    #[test]
    fn a_silent_connection_is_swept_at_the_first_tick_after_the_timeout_not_before() {
        let mut s = Script::new();
        let c = ConnId::new();
        s.apply(0, join("ayse", c));
        s.apply(5_000, beat("ayse", c, 5_000));
        assert!(s.apply(19_999, EventBody::Tick).is_empty());
        assert!(s.online("ayse"));
        let changes = s.apply(20_000, EventBody::Tick);
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Offline, false, Cause::Sweep)]
        );
        assert_eq!(changes[0].last_seen, Some(Millis(5_000)));
        assert_eq!(s.state.stats().total_swepts, 1);
        assert_eq!(s.state.stats().last_sweep_at, Some(Millis(20_000)));
    }

    #[test]
    fn heartbeats_keep_a_connection_alive_indefinitely() {
        let mut s = Script::new();
        let c = ConnId::new();
        s.apply(0, join("ayse", c));
        for i in 1..=100u64 {
            s.apply(i * 5_000, beat("ayse", c, i * 5_000));
            assert!(s.apply(i * 5_000 + 3_000, EventBody::Tick).is_empty());
        }
        assert!(s.online("ayse"));
    }

    #[test]
    fn a_heartbeat_of_a_swept_but_open_connection_brings_the_user_back() {
        let mut s = Script::new();
        let c = ConnId::new();
        s.apply(0, join("ayse", c));
        s.apply(15_000, EventBody::Tick);
        let changes = s.apply(16_000, beat("ayse", c, 16_000));
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Online, true, Cause::Beat)]
        );
    }

    #[test]
    fn statuses_change_with_details_and_reset_when_the_user_goes_offline() {
        let mut s = Script::new();
        let c = ConnId::new();
        s.apply(0, join("ayse", c));
        let details = Details::parse(serde_json::json!({"title": "evening stream"})).unwrap();
        let changes = s.apply(1, status("ayse", c, SetStatus::Live, Some(details.clone())));
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Live, true, Cause::Status)]
        );
        assert_eq!(changes[0].details, Some(details.clone()));
        // The same status again is not a change.
        assert!(
            s.apply(2, status("ayse", c, SetStatus::Live, Some(details)))
                .is_empty()
        );
        let changes = s.apply(3, status("ayse", c, SetStatus::InCall, None));
        assert_eq!(changes[0].status, Status::InCall);
        assert_eq!(changes[0].details, None);
        let changes = s.apply(4, leave("ayse", c));
        assert_eq!(changes[0].status, Status::Offline);
        let changes = s.apply(5, join("ayse", ConnId::new()));
        assert_eq!(changes[0].status, Status::Online);
    }

    #[test]
    fn a_service_sets_the_status_of_a_connected_user_only() {
        let mut s = Script::new();
        let service = |status| EventBody::ServiceStatus {
            tenant: TenantId::default_tenant(),
            user: uid("ayse"),
            status,
            details: None,
        };
        assert!(s.apply(0, service(SetStatus::Live)).is_empty());
        assert!(!s.online("ayse"));
        s.apply(1, join("ayse", ConnId::new()));
        let changes = s.apply(2, service(SetStatus::Live));
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Live, true, Cause::Status)]
        );
    }

    #[test]
    fn a_status_from_a_connection_whose_join_was_not_seen_opens_it() {
        let mut s = Script::new();
        let changes = s.apply(0, status("ayse", ConnId::new(), SetStatus::Live, None));
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Live, true, Cause::Status)]
        );
    }

    #[test]
    fn redelivered_events_change_nothing() {
        let mut s = Script::new();
        let c = ConnId::new();
        let event = Event::new(NodeId::parse("e").unwrap(), Millis(0), join("ayse", c));
        assert_eq!(s.state.apply(7, &event).len(), 1);
        let leave = Event::new(NodeId::parse("e").unwrap(), Millis(1), leave("ayse", c));
        assert!(s.state.apply(7, &leave).is_empty());
        assert!(s.online("ayse"));
    }

    #[test]
    fn stats_count_connections_and_the_peak() {
        let mut s = Script::new();
        let conns: Vec<ConnId> = (0..3).map(|_| ConnId::new()).collect();
        for (i, c) in conns.iter().enumerate() {
            s.apply(i as u64, join(&format!("u{i}"), *c));
        }
        s.apply(10, leave("u0", conns[0]));
        let stats = s.state.stats();
        assert_eq!(
            (
                stats.online_users,
                stats.peak_online,
                stats.total_connections,
                stats.total_disconnections
            ),
            (2, 3, 3, 1)
        );
    }

    /// A deterministic pseudo-random workload (xorshift), so the property is checked on many
    /// interleavings without a dependency.
    fn random_workload(seed: u64, len: usize) -> Vec<Event> {
        let mut x = seed.max(1);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let users = ["a", "b", "c", "d"];
        let mut open: Vec<(ConnId, &str)> = Vec::new();
        let mut events = Vec::new();
        let mut at = 0;
        for _ in 0..len {
            at += next() % 4_000;
            let user = users[(next() % users.len() as u64) as usize];
            let body = match next() % 6 {
                0 | 1 => {
                    let c = ConnId::new();
                    open.push((c, user));
                    join(user, c)
                }
                2 if !open.is_empty() => {
                    let (c, u) = open.swap_remove((next() % open.len() as u64) as usize);
                    leave(u, c)
                }
                3 if !open.is_empty() => {
                    let (c, u) = open[(next() % open.len() as u64) as usize];
                    beat(u, c, at)
                }
                4 if !open.is_empty() => {
                    let (c, u) = open[(next() % open.len() as u64) as usize];
                    status(u, c, SetStatus::Live, None)
                }
                _ => EventBody::Tick,
            };
            events.push(Event::new(NodeId::parse("n").unwrap(), Millis(at), body));
        }
        events
    }

    #[test]
    fn replaying_the_same_events_gives_the_same_state_and_changes() {
        for seed in 1..50 {
            let events = random_workload(seed, 300);
            let fold = |events: &[Event]| {
                let mut state = PresenceState::new(TIMEOUT);
                let changes: Vec<PresenceChange> = events
                    .iter()
                    .enumerate()
                    .flat_map(|(i, e)| state.apply(i as u64 + 1, e))
                    .collect();
                (state, changes)
            };
            let (first, first_changes) = fold(&events);
            let (second, second_changes) = fold(&events);
            assert_eq!(first, second, "seed {seed}");
            assert_eq!(first_changes, second_changes, "seed {seed}");
        }
    }

    #[test]
    fn an_offline_user_is_forgotten_at_the_first_tick_after_the_retention_and_comes_back_as_new() {
        let mut s = Script::new();
        s.state.set_offline_retention(Some(60_000));
        let c = ConnId::new();
        s.apply(1_000, join("ayse", c));
        s.apply(2_000, leave("ayse", c));
        s.apply(61_999, EventBody::Tick);
        assert!(
            s.state
                .user(&TenantId::default_tenant(), &uid("ayse"))
                .is_some()
        );
        s.apply(62_000, EventBody::Tick);
        assert!(
            s.state
                .user(&TenantId::default_tenant(), &uid("ayse"))
                .is_none()
        );
        assert_eq!(s.state.users_held(), 0);
        // Coming back is a join like any other.
        let changes = s.apply(70_000, join("ayse", ConnId::new()));
        assert_eq!(
            summary(&changes),
            [("ayse".into(), Status::Online, true, Cause::Join)]
        );
        assert_eq!(s.state.stats().online_users, 1);
    }

    #[test]
    fn a_user_back_within_the_retention_is_kept_until_its_last_departure_is_old() {
        let mut s = Script::new();
        s.state.set_offline_retention(Some(60_000));
        let (c1, c2) = (ConnId::new(), ConnId::new());
        s.apply(1_000, join("ayse", c1));
        s.apply(2_000, leave("ayse", c1));
        s.apply(30_000, join("ayse", c2));
        s.apply(45_000, beat("ayse", c2, 45_000));
        s.apply(60_000, beat("ayse", c2, 60_000));
        // Online: never forgotten, however old its first departure.
        s.apply(70_000, EventBody::Tick);
        assert!(s.online("ayse"));
        s.apply(71_000, leave("ayse", c2));
        s.apply(130_000, EventBody::Tick);
        let kept = s.state.user(&TenantId::default_tenant(), &uid("ayse"));
        assert_eq!(kept.and_then(|u| u.last_seen), Some(Millis(71_000)));
        s.apply(131_000, EventBody::Tick);
        assert_eq!(s.state.users_held(), 0);
        // A swept user is forgotten a retention after the sweep.
        s.apply(200_000, join("emre", ConnId::new()));
        s.apply(216_000, EventBody::Tick);
        assert!(!s.online("emre"));
        s.apply(275_999, EventBody::Tick);
        assert_eq!(s.state.users_held(), 1);
        s.apply(276_000, EventBody::Tick);
        assert_eq!(s.state.users_held(), 0);
    }

    #[test]
    fn a_crowd_gone_and_forgotten_asks_for_its_memory_to_be_released_once() {
        let mut s = Script::new();
        s.state.set_offline_retention(Some(60_000));
        for i in 0..3_000 {
            let c = ConnId::new();
            s.apply(1_000, join(&format!("u{i}"), c));
            s.apply(2_000, leave(&format!("u{i}"), c));
        }
        assert_eq!(s.state.closed_held(), 3_000);
        // Within the retention nothing is forgotten, and a few are not worth releasing.
        s.apply(10_000, EventBody::Tick);
        assert!(!s.state.take_released());
        // Past twice the timeout the closed connections go; past the retention the users.
        s.apply(62_000, EventBody::Tick);
        assert_eq!((s.state.users_held(), s.state.closed_held()), (0, 0));
        assert!(s.state.take_released());
        assert!(!s.state.take_released(), "taken once");
        s.apply(70_000, EventBody::Tick);
        assert!(!s.state.take_released(), "nothing new to give back");
    }

    #[test]
    fn without_a_retention_everyone_is_kept() {
        let mut s = Script::new();
        let c = ConnId::new();
        s.apply(1_000, join("ayse", c));
        s.apply(2_000, leave("ayse", c));
        s.apply(100_000_000, EventBody::Tick);
        assert_eq!(s.state.users_held(), 1);
    }

    #[test]
    fn a_replay_across_forgetting_and_a_snapshot_gives_the_live_result() {
        for seed in 1..40 {
            let events = random_workload(seed, 400);
            let fresh = || {
                let mut state = PresenceState::new(TIMEOUT);
                state.set_offline_retention(Some(20_000));
                state
            };
            let mut live = fresh();
            let live_changes: Vec<PresenceChange> = events
                .iter()
                .enumerate()
                .flat_map(|(i, e)| live.apply(i as u64 + 1, e))
                .collect();
            // The same log folded in two halves, through a snapshot.
            let mut first = fresh();
            let mut changes: Vec<PresenceChange> = events[..200]
                .iter()
                .enumerate()
                .flat_map(|(i, e)| first.apply(i as u64 + 1, e))
                .collect();
            let json = serde_json::to_string(&first).unwrap();
            let mut restored: PresenceState = serde_json::from_str(&json).unwrap();
            restored.set_offline_retention(Some(20_000));
            changes.extend(
                events[200..]
                    .iter()
                    .enumerate()
                    .flat_map(|(i, e)| restored.apply(i as u64 + 201, e)),
            );
            assert_eq!(restored, live, "seed {seed}");
            assert_eq!(changes, live_changes, "seed {seed}");
            let online = live.users().filter(|(_, u)| u.online()).count() as u64;
            assert_eq!(online, live.stats().online_users, "seed {seed}");
        }
    }

    #[test]
    fn online_exactly_while_a_connection_is_open_on_any_workload() {
        for seed in 1..50 {
            let mut state = PresenceState::new(TIMEOUT);
            for (i, e) in random_workload(seed, 300).iter().enumerate() {
                state.apply(i as u64 + 1, e);
                let online = state.users().filter(|(_, u)| u.online()).count() as u64;
                assert_eq!(online, state.stats().online_users, "seed {seed}");
                for (_, user) in state.users() {
                    assert_eq!(user.online(), user.status != Status::Offline);
                }
                assert!(state.stats().peak_online >= state.stats().online_users);
            }
        }
    }

    fn lease(incarnation: u64) -> EventBody {
        EventBody::EdgeLease {
            incarnation,
            ttl_ms: 2_500,
            released: false,
        }
    }

    #[test]
    fn the_connections_of_an_edge_whose_lease_runs_out_are_swept_at_once() {
        let mut s = Script::new();
        let (a, b, c) = (ConnId::new(), ConnId::new(), ConnId::new());
        s.apply_from("edge-a", 1_000, lease(7));
        s.apply_from("edge-b", 1_000, lease(8));
        s.apply_from("edge-a", 1_100, join("ayse", a));
        s.apply_from("edge-a", 1_200, join("fatma", b));
        s.apply_from("edge-b", 1_300, join("zeynep", c));
        for at in [2_000, 3_000] {
            s.apply_from("edge-a", at, lease(7));
            s.apply_from("edge-b", at, lease(8));
        }
        assert_eq!(s.state.edge_leases(), 2);
        // edge-a dies after its renewal at 3 s: it runs out at 5.5 s, not before.
        s.apply_from("edge-b", 4_000, lease(8));
        s.apply_from("edge-b", 5_000, lease(8));
        assert!(s.online("ayse") && s.online("fatma"));
        assert_eq!(s.state.next_sweep_due(), Some(Millis(5_500)));
        let swept = s.apply(5_500, EventBody::Tick);
        let mut who = summary(&swept);
        who.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            who,
            [
                ("ayse".into(), Status::Offline, false, Cause::Sweep),
                ("fatma".into(), Status::Offline, false, Cause::Sweep),
            ]
        );
        // Last seen when their edge was last heard of.
        assert!(swept.iter().all(|c| c.last_seen == Some(Millis(3_000))));
        assert!(s.online("zeynep"));
        assert_eq!(s.state.stats().edges_lost, 1);
        assert_eq!(s.state.edge_leases(), 1);
        // An edge that was only cut off comes back with its beats.
        s.apply_from("edge-a", 6_000, lease(7));
        s.apply_from("edge-a", 6_100, beat("ayse", a, 6_050));
        assert!(s.online("ayse"));
    }

    #[test]
    fn a_drained_edge_hands_its_connections_back_to_their_heartbeat_timeout() {
        let mut s = Script::new();
        let a = ConnId::new();
        s.apply_from("edge-a", 1_000, lease(7));
        s.apply_from("edge-a", 1_100, join("ayse", a));
        s.apply_from(
            "edge-a",
            2_000,
            EventBody::EdgeLease {
                incarnation: 7,
                ttl_ms: 2_500,
                released: true,
            },
        );
        assert_eq!(s.state.edge_leases(), 0);
        assert!(s.apply(10_000, EventBody::Tick).is_empty());
        assert!(s.online("ayse"));
        let swept = s.apply(1_100 + TIMEOUT, EventBody::Tick);
        assert_eq!(summary(&swept).len(), 1);
        assert_eq!(s.state.stats().edges_lost, 0);
    }

    #[test]
    fn a_restarted_edge_sweeps_what_its_previous_run_opened() {
        let mut s = Script::new();
        let (old, new) = (ConnId::new(), ConnId::new());
        s.apply_from("edge-a", 1_000, lease(1));
        s.apply_from("edge-a", 1_100, join("ayse", old));
        s.apply_from("edge-a", 1_900, lease(2));
        assert!(!s.online("ayse"));
        s.apply_from("edge-a", 2_000, join("ayse", new));
        s.apply_from("edge-a", 2_500, lease(2));
        assert!(s.online("ayse"));
    }

    #[test]
    fn nobody_is_swept_for_a_lease_nobody_could_renew_while_the_log_was_away() {
        let mut s = Script::new();
        let a = ConnId::new();
        s.apply_from("edge-a", 1_000, lease(7));
        s.apply_from("edge-a", 1_100, join("ayse", a));
        // The log is away from 1.1 s to 5 s: the first event after it (the owner's tick)
        // renews every lease instead of finding them run out.
        assert!(s.apply(5_000, EventBody::Tick).is_empty());
        assert_eq!(s.state.stats().outages_forgiven_to_edges, 1);
        s.apply_from("edge-a", 5_800, lease(7));
        assert!(s.online("ayse"));
        // A quiet partition is ticked well within half the lease, so a dead edge is found.
        assert_eq!(s.state.next_sweep_due(), Some(Millis(5_800 + 1_000)));
        s.apply(6_800, EventBody::Tick);
        s.apply(7_800, EventBody::Tick);
        let swept = s.apply(8_300, EventBody::Tick);
        assert_eq!(summary(&swept).len(), 1, "{swept:?}");
    }

    #[test]
    fn the_next_sweep_is_due_when_the_first_connection_goes_silent() {
        let mut s = Script::new();
        assert_eq!(s.state.next_sweep_due(), None, "nobody connected");
        let (a, b) = (ConnId::new(), ConnId::new());
        s.apply(1_000, join("ayse", a));
        assert_eq!(s.state.next_sweep_due(), Some(Millis(1_000 + TIMEOUT)));
        s.apply(4_000, join("mehmet", b));
        assert_eq!(
            s.state.next_sweep_due(),
            Some(Millis(1_000 + TIMEOUT)),
            "a later join does not postpone it"
        );
        // ayse beats at 6 s. A tick before the deadline looks at nobody (nobody can be silent
        // yet); a tick at it finds nobody silent and moves the deadline to the earliest one
        // left (mehmet's).
        s.apply(6_000, beat("ayse", a, 6_000));
        assert!(s.apply(10_000, EventBody::Tick).is_empty());
        assert_eq!(s.state.next_sweep_due(), Some(Millis(1_000 + TIMEOUT)));
        assert!(s.apply(1_000 + TIMEOUT, EventBody::Tick).is_empty());
        assert_eq!(s.state.next_sweep_due(), Some(Millis(4_000 + TIMEOUT)));
        // A tick exactly at the deadline sweeps mehmet, not ayse.
        let due = s.state.next_sweep_due().expect("due");
        let swept = s.apply(due.0, EventBody::Tick);
        assert_eq!(
            summary(&swept),
            [("mehmet".into(), Status::Offline, false, Cause::Sweep)]
        );
        assert!(s.online("ayse"));
        assert_eq!(s.state.next_sweep_due(), Some(Millis(6_000 + TIMEOUT)));
        // One millisecond before ayse's deadline she stays; at it she goes.
        assert!(s.apply(6_000 + TIMEOUT - 1, EventBody::Tick).is_empty());
        assert_eq!(s.apply(6_000 + TIMEOUT, EventBody::Tick).len(), 1);
        assert_eq!(s.state.next_sweep_due(), None);
    }

    #[test]
    fn a_shorter_timeout_after_a_restore_brings_the_next_sweep_forward() {
        let mut s = Script::new();
        s.apply(1_000, join("ayse", ConnId::new()));
        s.state.set_heartbeat_timeout(5_000);
        assert_eq!(s.state.next_sweep_due(), Some(Millis(6_000)));
    }

    #[test]
    fn a_silence_of_the_whole_log_does_not_count_against_anybody() {
        let mut s = Script::new();
        s.state.set_outage_after(Some(4_000));
        let c = ConnId::new();
        s.apply(1_000, join("ayse", c));
        s.apply(3_000, EventBody::Tick);
        // The log is away for 20 s: nothing can be written, not even a tick. The first tick
        // after it does not sweep ayse, whose beats could not be stored either.
        assert!(s.apply(23_000, EventBody::Tick).is_empty());
        assert!(s.online("ayse"));
        assert_eq!(s.state.stats().outages_forgiven, 1);
        // Her silence counts again, less the outage: beats resume, or she goes 15 s after her
        // last beat plus the 20 s the log was away.
        for t in [26_000, 29_000, 32_000, 35_000] {
            assert!(s.apply(t, EventBody::Tick).is_empty());
        }
        let swept = s.apply(1_000 + 20_000 + TIMEOUT, EventBody::Tick);
        assert_eq!(
            summary(&swept),
            [("ayse".into(), Status::Offline, false, Cause::Sweep)]
        );
    }

    #[test]
    fn ticks_that_keep_coming_leave_nothing_to_forgive() {
        let mut s = Script::new();
        s.state.set_outage_after(Some(4_000));
        let c = ConnId::new();
        s.apply(1_000, join("ayse", c));
        for t in (4_000..=13_000).step_by(3_000) {
            assert!(s.apply(t, EventBody::Tick).is_empty());
        }
        // Silent since 1 s, ticks every 3 s: swept at 16 s, as always.
        assert_eq!(s.apply(16_000, EventBody::Tick).len(), 1);
        assert_eq!(s.state.stats().outages_forgiven, 0);
    }
}
