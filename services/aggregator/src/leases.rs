//! Who folds which partition: leases on a key-value board, decided here without I/O.
//!
//! Every aggregator keeps a membership entry (`member.<node>`) and one entry per partition it
//! owns (`partition.<n>`), rewriting each about every [`round`](LeaseBook::round) with
//! compare-and-set on the entry's revision. The board forgets an entry not rewritten for the
//! lease's time to live, so the partitions of a killed aggregator come free by themselves,
//! by the board's one clock. The revision of the write that took a partition is the owner's
//! **epoch**: higher for every later owner, carried by everything the owner writes, so that
//! readers and the fold can refuse what a deposed owner writes late.
//!
//! An owner trusts its lease only until `ttl` after it *sent* the last confirmed write (by
//! its own monotonic clock), never longer than the board keeps it, and stops writing once
//! that has passed. Each round it plans against what the board shows:
//! - renew what it holds; step down from what the board shows as gone or someone else's;
//! - take its fair share ([`LeaseBook::share`]: the partitions divided among the members,
//!   the remainder going to the first members by node id): release what is over it
//!   (cleanly: the fold stops and saves its snapshot first) and take free partitions while
//!   under it.

use std::collections::BTreeMap;

use presence_events::{NodeId, Partition, Partitions, hex_token};
use serde::{Deserialize, Serialize};

/// The board key of a partition's lease.
pub(crate) fn partition_key(partition: Partition) -> String {
    format!("partition.{partition}")
}

/// The board key of an aggregator's membership.
pub(crate) fn member_key(node: &NodeId) -> String {
    format!("member.{}", hex_token(node.as_str()))
}

/// What a partition's lease entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseValue {
    /// The owner.
    pub(crate) node: NodeId,
    /// Its epoch; absent in the write that took the partition (whose revision it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) epoch: Option<u64>,
}

/// A lease as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) node: NodeId,
    pub(crate) epoch: u64,
    pub(crate) revision: u64,
}

/// What the board showed in one read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) holders: BTreeMap<Partition, Holder>,
    /// Aggregators with a membership entry (this one included or not).
    pub(crate) members: Vec<NodeId>,
}

/// A lease this aggregator holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) epoch: u64,
    /// Revision of the newest confirmed write.
    pub(crate) revision: u64,
    /// Monotonic ms until which the lease may be trusted.
    pub(crate) valid_until: u64,
}

/// One thing to do this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Rewrite the lease (compare-and-set on `revision`).
    Renew {
        partition: Partition,
        revision: u64,
        epoch: u64,
    },
    /// Try to take a free partition.
    Acquire(Partition),
    /// Hand a partition over: stop folding it, save, then empty the entry.
    Release { partition: Partition, revision: u64 },
    /// The lease is lost: stop folding at once, write nothing more.
    Resign(Partition),
}

/// The leases of one aggregator.
#[derive(Debug)]
pub(crate) struct LeaseBook {
    node: NodeId,
    partitions: Partitions,
    ttl_ms: u64,
    held: BTreeMap<Partition, Held>,
}

impl LeaseBook {
    pub(crate) fn new(node: NodeId, partitions: Partitions, ttl_ms: u64) -> Self {
        Self {
            node,
            partitions,
            ttl_ms,
            held: BTreeMap::new(),
        }
    }

    /// How often to renew and re-plan: a sixth of the lease's time to live, so a lease
    /// survives a few lost writes in a row.
    pub(crate) fn round(&self) -> u64 {
        (self.ttl_ms / 6).max(50)
    }

    /// The partitions held, with their leases.
    pub(crate) fn held(&self) -> impl Iterator<Item = (Partition, Held)> + '_ {
        self.held.iter().map(|(p, h)| (*p, *h))
    }

    /// The lease of `partition`, if held and still trusted at `now`.
    pub(crate) fn valid(&self, partition: Partition, now: u64) -> Option<Held> {
        self.held
            .get(&partition)
            .copied()
            .filter(|h| now < h.valid_until)
    }

    /// A trusted lease ends this long before the board could forget it (rounding, scheduling).
    fn margin(&self) -> u64 {
        self.ttl_ms / 10
    }

    /// The write that took `partition` (sent at `sent_at`) got `revision`: the new epoch.
    pub(crate) fn acquired(&mut self, partition: Partition, revision: u64, sent_at: u64) -> Held {
        let held = Held {
            epoch: revision,
            revision,
            valid_until: sent_at + self.ttl_ms - self.margin(),
        };
        self.held.insert(partition, held);
        held
    }

    /// A renewal sent at `sent_at` was confirmed with `revision`.
    pub(crate) fn renewed(&mut self, partition: Partition, revision: u64, sent_at: u64) {
        let until = sent_at + self.ttl_ms - self.margin();
        if let Some(h) = self.held.get_mut(&partition) {
            h.revision = revision;
            h.valid_until = h.valid_until.max(until);
        }
    }

    /// `partition` is no longer held (stepped down or released).
    pub(crate) fn dropped(&mut self, partition: Partition) {
        self.held.remove(&partition);
    }

    /// This aggregator's fair share among `members` (itself counted whether listed or not):
    /// `partitions / members`, one more for the first `partitions % members` of them in
    /// order of node id, so the shares add up to every partition and all agree on them.
    pub(crate) fn share(&self, members: &[NodeId]) -> usize {
        let mut all: Vec<&NodeId> = members.iter().collect();
        if !all.contains(&&self.node) {
            all.push(&self.node);
        }
        all.sort();
        all.dedup();
        let total = usize::from(self.partitions.count());
        let index = all.iter().position(|n| **n == self.node).unwrap_or(0);
        total / all.len() + usize::from(index < total % all.len())
    }

    /// What to do this round, given what the board shows at `now`.
    pub(crate) fn plan(&self, now: u64, seen: &Seen) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut kept = Vec::new();
        for (&partition, held) in &self.held {
            let mine = seen
                .holders
                .get(&partition)
                .filter(|h| h.node == self.node && h.epoch == held.epoch);
            match mine {
                Some(holder) if now < held.valid_until => {
                    kept.push(partition);
                    steps.push(Step::Renew {
                        partition,
                        // A renewal whose answer was lost may have landed: renew from what
                        // the board shows (still this epoch, so still this lease).
                        revision: holder.revision.max(held.revision),
                        epoch: held.epoch,
                    });
                }
                _ => steps.push(Step::Resign(partition)),
            }
        }
        let total = usize::from(self.partitions.count());
        let share = self.share(&seen.members);
        if kept.len() > share {
            // Hand over the highest-numbered surplus.
            for &partition in kept.iter().rev().take(kept.len() - share) {
                let revision = match steps.iter().find_map(|s| match s {
                    Step::Renew {
                        partition: p,
                        revision,
                        ..
                    } if *p == partition => Some(*revision),
                    _ => None,
                }) {
                    Some(r) => r,
                    None => continue,
                };
                steps.retain(|s| !matches!(s, Step::Renew { partition: p, .. } if *p == partition));
                steps.push(Step::Release {
                    partition,
                    revision,
                });
            }
        } else if kept.len() < share {
            // Free partitions, starting at a place of this node's own so that aggregators
            // starting together try different ones first.
            let start = (hash(self.node.as_str()) % total as u64) as usize;
            let free = (0..total)
                .map(|i| Partition(((start + i) % total) as u16))
                .filter(|p| !seen.holders.contains_key(p) && !self.held.contains_key(p));
            steps.extend(free.take(share - kept.len()).map(Step::Acquire));
        }
        steps
    }
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 3_000;

    fn node(n: &str) -> NodeId {
        NodeId::parse(n).unwrap()
    }

    fn book(n: &str, partitions: u64) -> LeaseBook {
        LeaseBook::new(node(n), Partitions::new(partitions).unwrap(), TTL)
    }

    fn seen(holders: &[(u16, &str, u64, u64)], members: &[&str]) -> Seen {
        Seen {
            holders: holders
                .iter()
                .map(|(p, n, epoch, revision)| {
                    (
                        Partition(*p),
                        Holder {
                            node: node(n),
                            epoch: *epoch,
                            revision: *revision,
                        },
                    )
                })
                .collect(),
            members: members.iter().map(|m| node(m)).collect(),
        }
    }

    fn acquires(steps: &[Step]) -> Vec<u16> {
        let mut out: Vec<u16> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Acquire(p) => Some(p.0),
                _ => None,
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn a_lone_aggregator_takes_every_free_partition() {
        let b = book("a", 4);
        assert_eq!(acquires(&b.plan(0, &seen(&[], &[]))), [0, 1, 2, 3]);
        // Held by others: only the free ones.
        let s = seen(&[(1, "b", 7, 7)], &["a", "b"]);
        assert_eq!(acquires(&b.plan(0, &s)), [0, 2]);
    }

    #[test]
    fn an_acquired_lease_is_renewed_and_trusted_only_until_ttl_after_its_last_write() {
        let mut b = book("a", 1);
        let held = b.acquired(Partition(0), 10, 1_000);
        assert_eq!(held.epoch, 10);
        assert!(b.valid(Partition(0), 3_000).is_some());
        // Trusted for less than the board keeps it (3 s after the write was *sent*).
        assert!(b.valid(Partition(0), 3_700).is_none());
        let s = seen(&[(0, "a", 10, 10)], &["a"]);
        assert_eq!(
            b.plan(1_500, &s),
            [Step::Renew {
                partition: Partition(0),
                revision: 10,
                epoch: 10
            }]
        );
        b.renewed(Partition(0), 11, 1_500);
        assert!(b.valid(Partition(0), 4_000).is_some());
        // Renewals keep the epoch.
        assert_eq!(b.valid(Partition(0), 4_000).unwrap().epoch, 10);
    }

    #[test]
    fn an_expired_lease_is_stepped_down_from_even_if_the_board_still_shows_it() {
        let mut b = book("a", 1);
        b.acquired(Partition(0), 10, 0);
        // Paused past its lease (SIGSTOP): the board still shows it, but it may be gone.
        let s = seen(&[(0, "a", 10, 10)], &["a"]);
        assert_eq!(b.plan(5_000, &s), [Step::Resign(Partition(0))]);
    }

    #[test]
    fn a_stolen_or_forgotten_lease_is_stepped_down_from() {
        let mut b = book("a", 2);
        b.acquired(Partition(0), 10, 0);
        b.acquired(Partition(1), 11, 0);
        // Partition 0 was taken by b (a newer epoch); partition 1 expired on the board.
        let s = seen(&[(0, "b", 20, 20)], &["a", "b"]);
        let steps = b.plan(100, &s);
        assert!(steps.contains(&Step::Resign(Partition(0))));
        assert!(steps.contains(&Step::Resign(Partition(1))));
        // After stepping down it may take the free one again, under a new epoch.
        b.dropped(Partition(0));
        b.dropped(Partition(1));
        assert_eq!(acquires(&b.plan(100, &s)), [1]);
    }

    #[test]
    fn an_own_older_epoch_on_the_board_is_not_this_lease() {
        let mut b = book("a", 1);
        b.acquired(Partition(0), 30, 0);
        // The board shows a lease of this node from an earlier life (epoch 12).
        let s = seen(&[(0, "a", 12, 29)], &["a"]);
        assert_eq!(b.plan(100, &s), [Step::Resign(Partition(0))]);
    }

    #[test]
    fn a_renewal_whose_answer_was_lost_is_continued_from_the_boards_revision() {
        let mut b = book("a", 1);
        b.acquired(Partition(0), 10, 0);
        let s = seen(&[(0, "a", 10, 14)], &["a"]);
        assert_eq!(
            b.plan(500, &s),
            [Step::Renew {
                partition: Partition(0),
                revision: 14,
                epoch: 10
            }]
        );
    }

    #[test]
    fn members_share_partitions_fairly_and_release_the_surplus() {
        let mut a = book("a", 4);
        for p in 0..4 {
            a.acquired(Partition(p), 10 + u64::from(p), 0);
        }
        let all_a = [
            (0, "a", 10, 10),
            (1, "a", 11, 11),
            (2, "a", 12, 12),
            (3, "a", 13, 13),
        ];
        // Alone: renews all four.
        let steps = a.plan(100, &seen(&all_a, &["a"]));
        assert_eq!(steps.len(), 4);
        assert!(steps.iter().all(|s| matches!(s, Step::Renew { .. })));
        // A second member joins: a hands two over, the highest first.
        let steps = a.plan(100, &seen(&all_a, &["a", "b"]));
        let released: Vec<u16> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Release { partition, .. } => Some(partition.0),
                _ => None,
            })
            .collect();
        assert_eq!(released, [3, 2]);
        // Four members: one each.
        let steps = a.plan(100, &seen(&all_a, &["a", "b", "c", "d"]));
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::Release { .. }))
                .count(),
            3
        );
        // b, a member with nothing, takes up to its share of what is free.
        let b = book("b", 4);
        let s = seen(&[(0, "a", 10, 10), (1, "a", 11, 11)], &["a", "b"]);
        assert_eq!(acquires(&b.plan(100, &s)), [2, 3]);
        // Three members over four partitions: 2, 1, 1 in order of node id.
        let members = [node("a"), node("b"), node("c")];
        let shares: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|n| book(n, 4).share(&members))
            .collect();
        assert_eq!(shares, [2, 1, 1]);
        let c = book("c", 4);
        let s = seen(&[(0, "a", 10, 10), (1, "a", 11, 11)], &["a", "b", "c"]);
        assert_eq!(acquires(&c.plan(100, &s)).len(), 1);
        // b holding two of them gives one up to c.
        let mut b = book("b", 4);
        b.acquired(Partition(2), 12, 0);
        b.acquired(Partition(3), 13, 0);
        let s = seen(
            &[
                (0, "a", 10, 10),
                (1, "a", 11, 11),
                (2, "b", 12, 12),
                (3, "b", 13, 13),
            ],
            &["a", "b", "c"],
        );
        let released: Vec<Step> = b
            .plan(100, &s)
            .into_iter()
            .filter(|s| matches!(s, Step::Release { .. }))
            .collect();
        assert_eq!(
            released,
            [Step::Release {
                partition: Partition(3),
                revision: 13
            }]
        );
    }

    #[test]
    fn shares_always_add_up_to_every_partition() {
        for partitions in [1u64, 3, 4, 16] {
            for m in 1..=6 {
                let members: Vec<NodeId> = (0..m).map(|i| node(&format!("n{i}"))).collect();
                let total: usize = members
                    .iter()
                    .map(|n| {
                        LeaseBook::new(n.clone(), Partitions::new(partitions).unwrap(), TTL)
                            .share(&members)
                    })
                    .sum();
                assert_eq!(total, partitions as usize, "{partitions} over {m}");
            }
        }
    }
}
