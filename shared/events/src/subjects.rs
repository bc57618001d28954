//! Names of the streams and subjects, derived from one namespace so that several clusters
//! (or test runs) can share a NATS server without seeing each other.

use crate::{TenantId, UserId};

/// The streams and subjects of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    namespace: String,
}

impl Subjects {
    /// Subjects under `namespace` (lower-case letters, digits, `-`, `_`; `presence` by default).
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
        }
    }

    /// Name of the stream of events (`PRESENCE_EVENTS`).
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.namespace.to_ascii_uppercase())
    }

    /// Name of the stream of presence changes (`PRESENCE_CHANGES`).
    pub fn changes_stream(&self) -> String {
        format!("{}_CHANGES", self.namespace.to_ascii_uppercase())
    }

    /// All event subjects (`presence.events.>`).
    pub fn events_wildcard(&self) -> String {
        format!("{}.events.>", self.namespace)
    }

    /// The subject of one kind of event (`presence.events.join`).
    pub fn event(&self, kind: &str) -> String {
        format!("{}.events.{kind}", self.namespace)
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

    /// The subject of the cluster figures (`presence.stats`); the stream keeps the last.
    pub fn stats(&self) -> String {
        format!("{}.stats", self.namespace)
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
}
