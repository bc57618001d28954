//! Presence changes: what the aggregator derives from the events and publishes for the
//! edges (fan-out) and the persister.

use serde::{Deserialize, Serialize};

use crate::{Details, Millis, Status, TenantId, UserId, ViewerClass};

/// A user's presence after an event changed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// Schema version.
    pub v: u16,
    /// Tenant of the user.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// The user's visibility class: decides who is told.
    pub class: ViewerClass,
    /// The new status.
    pub status: Status,
    /// Whether the user has a live connection.
    pub online: bool,
    /// When the user was last seen: set once the user is offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
    /// Details of `live` / `in_call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    /// What caused the change.
    pub cause: Cause,
    /// Event time of the event that caused it.
    pub at: Millis,
    /// Sequence in the event log of the event that caused it.
    pub seq: u64,
    /// Lease epoch of the aggregator that derived it (0: a single process owning every
    /// partition). Readers refuse changes of an epoch older than one they have seen.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What caused a presence change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A connection opened.
    Join,
    /// A heartbeat revived a connection that had been swept.
    Beat,
    /// The last connection closed.
    Leave,
    /// The user chose a status.
    Status,
    /// The last connection went silent and was swept.
    Sweep,
}

impl Cause {
    /// The wire name, also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Join => "join",
            Cause::Beat => "beat",
            Cause::Leave => "leave",
            Cause::Status => "status",
            Cause::Sweep => "sweep",
        }
    }
}

impl PresenceChange {
    /// Encodes for the log.
    pub fn encode(&self) -> Result<Vec<u8>, crate::EncodeError> {
        crate::codec::encode("change", self)
    }

    /// Decodes from the log, refusing versions this build does not know.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        crate::codec::decode(bytes)
    }

    /// The de-duplication id of this change: derived from the event it came from, so that a
    /// restarted aggregator re-deriving it is de-duplicated by the log.
    pub fn msg_id(&self) -> String {
        format!(
            "chg-{}-{}-{}",
            self.seq,
            self.tenant,
            crate::hex_token(self.user.as_str())
        )
    }
}

impl crate::codec::Versioned for PresenceChange {
    fn version(&self) -> u16 {
        self.v
    }
}
