//! Names of the streams and subjects, derived from one namespace so that several clusters
//! (or test runs) can share a NATS server without seeing each other.

use crate::{Partition, Partitions, TenantId, UserId};

/// The streams and subjects of one cluster, and how its event log is partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    namespace: String,
    partitions: Partitions,
}

impl Subjects {
    /// Subjects under `namespace` (lower-case letters, digits, `-`, `_`; `presence` by
    /// default), with one partition.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            partitions: Partitions::one(),
        }
    }

    /// The same subjects over `partitions` partitions.
    pub fn with_partitions(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    /// How the event log is partitioned.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key-value bucket of the partitions' leases and the aggregators' membership
    /// (`PRESENCE_LEASES`).
    pub fn leases_bucket(&self) -> String {
        format!("{}_LEASES", self.namespace.to_ascii_uppercase())
    }

    /// The key-value bucket of the cluster's permanent settings, such as the number of
    /// partitions (`PRESENCE_CLUSTER`).
    pub fn cluster_bucket(&self) -> String {
        format!("{}_CLUSTER", self.namespace.to_ascii_uppercase())
    }

    /// Name of the stream of events (`PRESENCE_EVENTS`).
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.namespace.to_ascii_uppercase())
    }

    /// Name of the stream of presence changes (`PRESENCE_CHANGES`).
    pub fn changes_stream(&self) -> String {
        format!("{}_CHANGES", self.namespace.to_ascii_uppercase())
    }

    /// The stream of who is online (`PRESENCE_ONLINE`): each user's newest change, like the
    /// changes stream, but an offline change there expires after a while, so the stream
    /// holds the online and the recently gone, not everyone ever seen. The edges start
    /// their view from it.
    pub fn online_stream(&self) -> String {
        format!("{}_ONLINE", self.namespace.to_ascii_uppercase())
    }

    /// All subjects of the online stream (`presence.online.>`).
    pub fn online_wildcard(&self) -> String {
        format!("{}.online.>", self.namespace)
    }

    /// One user's subject in the online stream (`presence.online.<tenant>.<hex of user id>`).
    pub fn online(&self, tenant: &TenantId, user: &UserId) -> String {
        format!(
            "{}.online.{tenant}.{}",
            self.namespace,
            hex_token(user.as_str())
        )
    }

    /// All event subjects (`presence.events.>`).
    pub fn events_wildcard(&self) -> String {
        format!("{}.events.>", self.namespace)
    }

    /// The subject of one kind of event in one partition (`presence.events.3.join`).
    pub fn event(&self, partition: Partition, kind: &str) -> String {
        format!("{}.events.{partition}.{kind}", self.namespace)
    }

    /// All event subjects of one partition (`presence.events.3.>`).
    pub fn partition_events(&self, partition: Partition) -> String {
        format!("{}.events.{partition}.>", self.namespace)
    }

    /// The partition of an event subject, if it is one of this cluster's.
    pub fn partition_of_event_subject(&self, subject: &str) -> Option<Partition> {
        let rest = subject
            .strip_prefix(&self.namespace)?
            .strip_prefix(".events.")?;
        let (p, _kind) = rest.split_once('.')?;
        let p: u16 = p.parse().ok()?;
        (p < self.partitions.count()).then_some(Partition(p))
    }

    /// Name of the stream of per-customer active-user metrics (`PRESENCE_METRICS`).
    pub fn metrics_stream(&self) -> String {
        format!("{}_METRICS", self.namespace.to_ascii_uppercase())
    }

    /// All metrics subjects (`presence.metrics.>`).
    pub fn metrics_wildcard(&self) -> String {
        format!("{}.metrics.>", self.namespace)
    }

    /// The subject of one customer's metrics (`presence.metrics.<tenant>`); the stream keeps the last.
    pub fn metrics(&self, tenant: &TenantId) -> String {
        format!("{}.metrics.{tenant}", self.namespace)
    }

    /// Name of the stream of cluster figures (`PRESENCE_STATS`).
    pub fn stats_stream(&self) -> String {
        format!("{}_STATS", self.namespace.to_ascii_uppercase())
    }

    /// The subject of one partition's figures (`presence.stats.3`); the stream keeps the last.
    pub fn stats(&self, partition: Partition) -> String {
        format!("{}.stats.{partition}", self.namespace)
    }

    /// All figures subjects (`presence.stats.>`).
    pub fn stats_wildcard(&self) -> String {
        format!("{}.stats.>", self.namespace)
    }

    /// All change subjects (`presence.changes.>`).
    pub fn changes_wildcard(&self) -> String {
        format!("{}.changes.>", self.namespace)
    }

    /// The subject of one user's changes (`presence.changes.<tenant>.<hex of user id>`).
    /// The stream keeps the last message per subject, so it also holds everyone's current presence.
    pub fn change(&self, tenant: &TenantId, user: &UserId) -> String {
        format!(
            "{}.changes.{tenant}.{}",
            self.namespace,
            hex_token(user.as_str())
        )
    }
}

/// Lower-case hex of a string: a subject token for any user id (user ids may hold `.`, `*`,
/// `>` or spaces, which NATS subjects cannot).
pub fn hex_token(s: &str) -> String {
    use std::fmt::Write;
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_are_safe_for_any_user_id() {
        let s = Subjects::new("presence");
        let subject = s.change(
            &TenantId::default_tenant(),
            &UserId::parse("a.b *>").unwrap(),
        );
        assert_eq!(subject, "presence.changes.default.612e62202a3e");
        assert_eq!(s.events_stream(), "PRESENCE_EVENTS");
    }

    #[test]
    fn event_subjects_name_their_partition() {
        let s = Subjects::new("presence").with_partitions(Partitions::new(4).unwrap());
        let subject = s.event(Partition(3), "join");
        assert_eq!(subject, "presence.events.3.join");
        assert_eq!(s.partition_of_event_subject(&subject), Some(Partition(3)));
        assert_eq!(s.partition_of_event_subject("presence.events.4.join"), None);
        assert_eq!(s.partition_of_event_subject("other.events.1.join"), None);
        assert_eq!(s.partition_events(Partition(1)), "presence.events.1.>");
    }
}
