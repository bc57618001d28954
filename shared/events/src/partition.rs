//! Partitions of the event log. Each presence event goes to the partition of a stable hash of
//! (tenant, user), each active-users event to the partition of its tenant, so one user's
//! presence and one customer's count are each folded in exactly one place.
//!
//! The hash is FNV-1a (64 bit) of the tenant's bytes, a zero byte and the user's bytes: the
//! same on every machine, build and version, because the partition of a user must never
//! move while the streams exist. The number of partitions is fixed when the streams are
//! created (see `docs/operations.md` for changing it by replay).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{BeatEntry, EventBody, SessionBeatEntry, TenantId, UserId};

/// One partition of the event log, `0..count`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Partition(pub u16);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The most partitions a cluster may have.
pub const MAX_PARTITIONS: u16 = 256;

/// How many partitions the log has, and which one each key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    count: u16,
}

/// A partition count out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the number of partitions must be 1 to {MAX_PARTITIONS}, not {0}")]
pub struct PartitionCountError(pub u64);

impl Partitions {
    /// `count` partitions (1 to [`MAX_PARTITIONS`]).
    pub fn new(count: u64) -> Result<Self, PartitionCountError> {
        match u16::try_from(count) {
            Ok(c) if (1..=MAX_PARTITIONS).contains(&c) => Ok(Self { count: c }),
            _ => Err(PartitionCountError(count)),
        }
    }

    /// A single partition (everything in one fold).
    pub fn one() -> Self {
        Self { count: 1 }
    }

    /// How many there are.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Every partition, in order.
    pub fn all(&self) -> impl Iterator<Item = Partition> + use<> {
        (0..self.count).map(Partition)
    }

    /// The partition of a user's presence events.
    pub fn of_user(&self, tenant: &TenantId, user: &UserId) -> Partition {
        let mut h = Fnv::new();
        h.write(tenant.as_str().as_bytes());
        h.write(&[0]);
        h.write(user.as_str().as_bytes());
        self.pick(h.finish())
    }

    /// The partition of a customer's active-users events.
    pub fn of_tenant(&self, tenant: &TenantId) -> Partition {
        let mut h = Fnv::new();
        h.write(tenant.as_str().as_bytes());
        self.pick(h.finish())
    }

    fn pick(&self, hash: u64) -> Partition {
        Partition((hash % u64::from(self.count)) as u16)
    }

    /// The partition an event goes to; `None` for bodies that span partitions (beat batches,
    /// to be [split](Partitions::split)), belong to the partition's owner (clock ticks) or go
    /// to every partition (edge leases).
    pub fn of_event(&self, body: &EventBody) -> Option<Partition> {
        match body {
            EventBody::Join { tenant, user, .. }
            | EventBody::Leave { tenant, user, .. }
            | EventBody::Status { tenant, user, .. }
            | EventBody::ServiceStatus { tenant, user, .. } => Some(self.of_user(tenant, user)),
            EventBody::SessionJoin { tenant, .. } | EventBody::SessionLeave { tenant, .. } => {
                Some(self.of_tenant(tenant))
            }
            EventBody::Beat { .. }
            | EventBody::SessionBeat { .. }
            | EventBody::Tick
            | EventBody::MetricsTick
            | EventBody::EdgeLease { .. } => None,
        }
    }

    /// Beats grouped by partition, each group in its original order.
    pub fn split_beats(&self, beats: Vec<BeatEntry>) -> BTreeMap<Partition, Vec<BeatEntry>> {
        let mut out: BTreeMap<Partition, Vec<BeatEntry>> = BTreeMap::new();
        for beat in beats {
            out.entry(self.of_user(&beat.tenant, &beat.user))
                .or_default()
                .push(beat);
        }
        out
    }

    /// Tab beats grouped by partition, each group in its original order.
    pub fn split_tab_beats(
        &self,
        beats: Vec<SessionBeatEntry>,
    ) -> BTreeMap<Partition, Vec<SessionBeatEntry>> {
        let mut out: BTreeMap<Partition, Vec<SessionBeatEntry>> = BTreeMap::new();
        for beat in beats {
            out.entry(self.of_tenant(&beat.tenant))
                .or_default()
                .push(beat);
        }
        out
    }
}

/// The source of a client at `ip`, as the fold groups sessions by it: an IPv4 address, or
/// the /64 network of an IPv6 one (what one subscriber is given), hashed (FNV-1a, 64 bit,
/// hex) so the log does not carry addresses in the clear. Every edge computes the same key.
pub fn source_of(ip: std::net::IpAddr) -> String {
    let mut hash = Fnv::new();
    match ip {
        std::net::IpAddr::V4(v4) => hash.write(&v4.octets()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash.write(&v4.octets()),
            None => hash.write(&v6.octets()[..8]),
        },
    }
    format!("{:016x}", hash.finish())
}

/// FNV-1a, 64 bit: tiny, stable and spreads short keys well.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Fencing on the reading side: the outputs of a partition (changes, metrics) carry the lease
/// epoch of the owner that wrote them. Once a reader has seen an epoch of a partition, outputs
/// of that partition with an older epoch come from a deposed owner and are refused.
/// Epoch 0 (a single process owning every partition, or an older writer) is never refused.
#[derive(Debug, Default, Clone)]
pub struct EpochFence {
    newest: HashMap<Partition, u64>,
}

impl EpochFence {
    /// Whether an output of `partition` written under `epoch` is accepted (and remembers it).
    pub fn admit(&mut self, partition: Partition, epoch: u64) -> bool {
        if epoch == 0 {
            return true;
        }
        let newest = self.newest.entry(partition).or_insert(0);
        if epoch < *newest {
            return false;
        }
        *newest = epoch;
        true
    }

    /// The newest epoch seen of `partition` (0 if none).
    pub fn newest(&self, partition: Partition) -> u64 {
        self.newest.get(&partition).copied().unwrap_or(0)
    }
}

/// The newest event-log sequence a reader has taken each partition's outputs at. A partition's
/// outputs are published in sequence order, so one below the mark is a re-derivation of what
/// was already taken (an owner folding the partition again from an older snapshot, or from
/// the start, after the log's de-duplication window), even for users the reader no longer
/// holds: it is refused. Outputs of one event share its sequence, so an equal one passes.
#[derive(Debug, Default, Clone)]
pub struct SequenceMark {
    newest: HashMap<Partition, u64>,
}

impl SequenceMark {
    /// Whether an output of `partition` derived at `seq` is new (and remembers it).
    pub fn admit(&mut self, partition: Partition, seq: u64) -> bool {
        let newest = self.newest.entry(partition).or_insert(0);
        if seq < *newest {
            return false;
        }
        *newest = seq;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_mark_refuses_what_a_refold_derives_again() {
        let mut mark = SequenceMark::default();
        assert!(mark.admit(Partition(0), 10));
        assert!(mark.admit(Partition(0), 10), "two outputs of one event");
        assert!(mark.admit(Partition(1), 3), "partitions are apart");
        assert!(mark.admit(Partition(0), 12));
        assert!(
            !mark.admit(Partition(0), 11),
            "derived again from an older snapshot"
        );
        assert!(!mark.admit(Partition(0), 1));
        assert!(mark.admit(Partition(0), 13));
    }

    fn user(i: usize) -> UserId {
        UserId::parse(format!("user-{i}")).unwrap()
    }

    #[test]
    fn the_hash_is_fixed_forever() {
        // These values are part of the log's format: a change here moves users between
        // partitions of an existing cluster. (Computed independently with a reference FNV-1a.)
        let p = Partitions::new(16).unwrap();
        let t = TenantId::default_tenant();
        let got: Vec<u16> = (0..8).map(|i| p.of_user(&t, &user(i)).0).collect();
        assert_eq!(got, [0, 3, 6, 9, 12, 15, 2, 5]);
        assert_eq!(p.of_tenant(&TenantId::parse("shop").unwrap()).0, 9);
        assert_eq!(p.of_tenant(&TenantId::parse("acme").unwrap()).0, 15);
    }

    #[test]
    fn users_spread_evenly_over_partitions() {
        let t = TenantId::parse("shop").unwrap();
        for count in [2u64, 4, 7, 16] {
            let p = Partitions::new(count).unwrap();
            let n = 20_000;
            let mut per = vec![0usize; count as usize];
            for i in 0..n {
                per[p.of_user(&t, &user(i)).0 as usize] += 1;
            }
            let mean = n as f64 / count as f64;
            for (i, got) in per.iter().enumerate() {
                let off = (*got as f64 - mean).abs() / mean;
                assert!(
                    off < 0.05,
                    "partition {i} of {count}: {got} users, mean {mean}"
                );
            }
        }
    }

    #[test]
    fn the_same_user_in_two_tenants_is_two_keys() {
        let p = Partitions::new(64).unwrap();
        let spread: std::collections::HashSet<u16> = (0..32)
            .map(|i| {
                p.of_user(&TenantId::parse(format!("t{i}")).unwrap(), &user(1))
                    .0
            })
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }

    #[test]
    fn counts_out_of_range_are_refused() {
        assert!(Partitions::new(0).is_err());
        assert!(Partitions::new(257).is_err());
        assert_eq!(Partitions::new(256).unwrap().count(), 256);
        assert_eq!(Partitions::one().all().count(), 1);
    }

    #[test]
    fn the_fence_refuses_older_epochs_per_partition() {
        let mut fence = EpochFence::default();
        assert!(fence.admit(Partition(0), 5));
        assert!(fence.admit(Partition(0), 5));
        assert!(fence.admit(Partition(1), 3));
        assert!(fence.admit(Partition(0), 9));
        assert!(!fence.admit(Partition(0), 5));
        assert!(fence.admit(Partition(1), 4));
        assert!(fence.admit(Partition(0), 0));
        assert_eq!(fence.newest(Partition(0)), 9);
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_network_hashed_the_same_everywhere() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let a = source_of(ip("203.0.113.7"));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("203"));
        assert_eq!(a, source_of(ip("::ffff:203.0.113.7")));
        assert_ne!(a, source_of(ip("203.0.113.8")));
        // One /64: one source.
        assert_eq!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
        // Stable across builds and machines (a reference FNV-1a of 203.0.113.7's octets).
        assert_eq!(
            a,
            format!("{:016x}", {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in [203u8, 0, 113, 7] {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
                h
            })
        );
    }
}
