//! Active-user metrics: what the aggregator computes for each customer on every metrics tick.

use serde::{Deserialize, Serialize};

use crate::{Millis, TenantId};

/// One customer's live count and its EMA at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantMetrics {
    /// Schema version.
    pub v: u16,
    /// The customer.
    pub tenant: TenantId,
    /// Event time of the tick.
    pub at: Millis,
    /// Distinct live sessions.
    pub count: u64,
    /// `alpha * count + (1 - alpha) * previous`, the first tick's being the count.
    pub ema: f64,
    /// Sequence in the event log of the tick.
    pub seq: u64,
    /// Lease epoch of the aggregator that computed it (see [`crate::PresenceChange::epoch`]).
    #[serde(default, skip_serializing_if = "crate::change::is_zero")]
    pub epoch: u64,
}

impl TenantMetrics {
    /// Encodes for the log.
    pub fn encode(&self) -> Result<Vec<u8>, crate::EncodeError> {
        crate::codec::encode("metrics", self)
    }

    /// Decodes from the log, refusing versions this build does not know.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        crate::codec::decode(bytes)
    }

    /// De-duplication id: one value per customer per tick.
    pub fn msg_id(&self) -> String {
        format!("met-{}-{}", self.seq, self.tenant)
    }
}

impl crate::codec::Versioned for TenantMetrics {
    fn version(&self) -> u16 {
        self.v
    }
}
