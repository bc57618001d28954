//! Edge leases as the fold sees them: which edge opened each connection, and whether that
//! edge still holds its lease. Pure, on log time, so a replay sweeps a dead edge's
//! connections exactly where the live fold did.
//!
//! An edge renews its lease in every partition about every second. When `ttl` of log time
//! passes without a renewal the edge is gone, and the fold sweeps every connection it opened
//! at once. Two things keep that from happening to a live edge:
//! - the log may be away (no quorum, an owner's failover): nobody can renew then. A silence
//!   of the whole partition longer than half the shortest `ttl` is taken as that, and every
//!   lease counts as renewed when the log is heard again;
//! - the partition's owner writes a clock tick when the partition has been quiet for
//!   [`KEEPALIVE`] of the `ttl` (see [`Edges::next_due`]), so a quiet partition with a dead
//!   edge is not mistaken for a log that was away.

use presence_events::{Millis, NodeId};
use serde::{Deserialize, Serialize};

/// An edge's place in [`Edges`], kept in each connection (4 bytes, not a copy of the node id).
pub(crate) type EdgeIndex = u32;

/// The edge of connections opened before edges were tracked (a snapshot of an older build):
/// they are swept by their heartbeat timeout only.
pub(crate) const NO_EDGE: EdgeIndex = u32::MAX;

/// A silence of the whole partition longer than `ttl / QUIET_DIVISOR` is the log having been
/// away, not the edges.
const QUIET_DIVISOR: u64 = 2;
/// The owner's clock ticks a quiet partition after `ttl * KEEPALIVE` (fraction) of silence.
const KEEPALIVE: (u64, u64) = (2, 5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Edge {
    node: NodeId,
    /// Open connections it opened.
    conns: u32,
    /// `None` once released (a drain) or run out.
    lease: Option<Lease>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Lease {
    incarnation: u64,
    renewed_at: Millis,
    ttl_ms: u64,
}

impl Lease {
    fn runs_out(&self) -> Millis {
        self.renewed_at.plus(self.ttl_ms)
    }
}

/// The edges that opened connections in this partition or hold a lease in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Edges {
    /// By [`EdgeIndex`]; a free slot (no connection, no lease) is reused.
    slots: Vec<Option<Edge>>,
}

impl Edges {
    /// The index of `node`, if known.
    fn find(&self, node: &NodeId) -> Option<EdgeIndex> {
        self.slots
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|e| e.node == *node))
            .map(|i| i as EdgeIndex)
    }

    /// The index of `node`, registering it if new.
    pub(crate) fn index(&mut self, node: &NodeId) -> EdgeIndex {
        if let Some(i) = self.find(node) {
            return i;
        }
        let edge = Some(Edge {
            node: node.clone(),
            conns: 0,
            lease: None,
        });
        match self.slots.iter().position(Option::is_none) {
            Some(free) => {
                self.slots[free] = edge;
                free as EdgeIndex
            }
            None => {
                self.slots.push(edge);
                (self.slots.len() - 1) as EdgeIndex
            }
        }
    }

    fn slot(&mut self, index: EdgeIndex) -> Option<&mut Edge> {
        self.slots.get_mut(index as usize)?.as_mut()
    }

    /// A connection of edge `index` opened.
    pub(crate) fn attach(&mut self, index: EdgeIndex) {
        if let Some(edge) = self.slot(index) {
            edge.conns += 1;
        }
    }

    /// A connection of edge `index` closed or was swept; an edge without connections or
    /// lease is forgotten.
    pub(crate) fn detach(&mut self, index: EdgeIndex) {
        let Some(edge) = self.slot(index) else {
            return;
        };
        edge.conns = edge.conns.saturating_sub(1);
        if edge.conns == 0 && edge.lease.is_none() {
            self.slots[index as usize] = None;
        }
    }

    /// `node` renewed its lease at `at`. Returns the edge whose connections are to be swept
    /// now: the same node under an earlier incarnation that still held its lease (the
    /// process was restarted; everything it opened is gone).
    pub(crate) fn renew(
        &mut self,
        node: &NodeId,
        incarnation: u64,
        ttl_ms: u64,
        at: Millis,
    ) -> Option<EdgeIndex> {
        let index = self.index(node);
        let edge = self.slot(index)?;
        let restarted = edge
            .lease
            .is_some_and(|held| held.incarnation != incarnation);
        edge.lease = Some(Lease {
            incarnation,
            renewed_at: at,
            ttl_ms,
        });
        restarted.then_some(index)
    }

    /// `node` released its lease (it drains): its connections go back to their heartbeat
    /// timeout. A release of an incarnation other than the one holding changes nothing.
    pub(crate) fn release(&mut self, node: &NodeId, incarnation: u64) {
        let Some(index) = self.find(node) else {
            return;
        };
        if let Some(edge) = self.slot(index)
            && edge
                .lease
                .is_some_and(|held| held.incarnation == incarnation)
        {
            edge.lease = None;
            if edge.conns == 0 {
                self.slots[index as usize] = None;
            }
        }
    }

    /// The partition is heard at `at`, `gap` after the event before: after a silence longer
    /// than half the shortest lease, the log was away and every lease counts as renewed now.
    /// Whether that was the case.
    pub(crate) fn heard(&mut self, at: Millis, gap: u64) -> bool {
        let Some(shortest) = self.shortest_ttl() else {
            return false;
        };
        if gap <= shortest / QUIET_DIVISOR {
            return false;
        }
        for lease in self
            .slots
            .iter_mut()
            .flatten()
            .filter_map(|e| e.lease.as_mut())
        {
            lease.renewed_at = lease.renewed_at.max(at);
        }
        true
    }

    /// The edges whose lease has run out at `now`, with the time each was last renewed;
    /// their leases are dropped (a later renewal takes a new one).
    pub(crate) fn run_out(&mut self, now: Millis) -> Vec<(EdgeIndex, Millis)> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(edge) = slot
                && let Some(lease) = edge.lease
                && now >= lease.runs_out()
            {
                edge.lease = None;
                out.push((i as EdgeIndex, lease.renewed_at));
            }
        }
        out
    }

    /// When the fold needs a clock tick for the leases, `heard_at` being the time of the
    /// newest event: when the first lease runs out, or, sooner, when the partition has been
    /// quiet long enough that a tick must show the log is still there. `None` without leases.
    pub(crate) fn next_due(&self, heard_at: Millis) -> Option<Millis> {
        let shortest = self.shortest_ttl()?;
        let keepalive = heard_at.plus(shortest * KEEPALIVE.0 / KEEPALIVE.1);
        let first = self
            .leases()
            .map(|lease| lease.runs_out())
            .min()
            .unwrap_or(keepalive);
        Some(first.min(keepalive))
    }

    /// Leases held.
    pub(crate) fn held(&self) -> usize {
        self.leases().count()
    }

    fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.slots.iter().flatten().filter_map(|e| e.lease.as_ref())
    }

    fn shortest_ttl(&self) -> Option<u64> {
        self.leases().map(|lease| lease.ttl_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).unwrap()
    }

    #[test]
    fn a_lease_runs_out_ttl_after_its_last_renewal() {
        let mut edges = Edges::default();
        assert_eq!(edges.renew(&node("a"), 1, 2_500, Millis(10_000)), None);
        assert!(edges.run_out(Millis(12_499)).is_empty());
        assert_eq!(edges.renew(&node("a"), 1, 2_500, Millis(11_000)), None);
        assert!(edges.run_out(Millis(13_499)).is_empty());
        let a = edges.index(&node("a"));
        assert_eq!(edges.run_out(Millis(13_500)), vec![(a, Millis(11_000))]);
        // Once: the lease is gone.
        assert!(edges.run_out(Millis(20_000)).is_empty());
        assert_eq!(edges.held(), 0);
    }

    #[test]
    fn a_restart_under_the_same_node_id_sweeps_the_previous_run() {
        let mut edges = Edges::default();
        edges.renew(&node("a"), 1, 2_500, Millis(10_000));
        let a = edges.index(&node("a"));
        assert_eq!(edges.renew(&node("a"), 2, 2_500, Millis(10_500)), Some(a));
        assert_eq!(edges.renew(&node("a"), 2, 2_500, Millis(11_000)), None);
    }

    #[test]
    fn a_released_lease_never_runs_out_and_its_edge_goes_with_its_last_connection() {
        let mut edges = Edges::default();
        let a = edges.index(&node("a"));
        edges.attach(a);
        edges.renew(&node("a"), 1, 2_500, Millis(10_000));
        // A release of another run is not this one's.
        edges.release(&node("a"), 9);
        assert_eq!(edges.held(), 1);
        edges.release(&node("a"), 1);
        assert!(edges.run_out(Millis(60_000)).is_empty());
        edges.detach(a);
        assert_eq!(edges.slots, vec![None]);
        // The slot is reused.
        assert_eq!(edges.index(&node("b")), a);
        // A restart after a drain sweeps nothing: the drained connections keep their timeout.
        edges.renew(&node("c"), 1, 2_500, Millis(10_000));
        edges.release(&node("c"), 1);
        assert_eq!(edges.renew(&node("c"), 2, 2_500, Millis(11_000)), None);
    }

    #[test]
    fn a_silence_of_the_log_renews_every_lease_and_a_quiet_partition_is_ticked_before_it() {
        let mut edges = Edges::default();
        edges.renew(&node("a"), 1, 2_500, Millis(10_000));
        edges.renew(&node("b"), 1, 5_000, Millis(10_000));
        // Half the shortest lease is the longest silence that is still the edges'.
        assert!(!edges.heard(Millis(11_250), 1_250));
        assert!(edges.heard(Millis(16_000), 4_750));
        assert!(edges.run_out(Millis(18_499)).is_empty());
        assert_eq!(edges.run_out(Millis(18_500)).len(), 1);
        // The owner ticks a quiet partition at 2/5 of the shortest lease...
        assert_eq!(edges.next_due(Millis(19_000)), Some(Millis(21_000)));
        // ...or when a lease runs out, if sooner.
        assert_eq!(edges.next_due(Millis(20_000)), Some(Millis(21_000)));
        let mut none = Edges::default();
        assert_eq!(none.next_due(Millis(1)), None);
        assert!(!none.heard(Millis(100_000), 99_999));
    }
}
