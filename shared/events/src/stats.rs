//! Cluster-wide presence figures: kept by the aggregator's fold, published on every sweep
//! tick and served by every edge's `/api/health`.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// Presence figures kept by the fold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStats {
    /// Users online now.
    pub online_users: u64,
    /// Most users online at once.
    pub peak_online: u64,
    /// Connections opened.
    pub total_connections: u64,
    /// Connections closed by a `leave`.
    pub total_disconnections: u64,
    /// Connections swept for silence.
    pub total_swepts: u64,
    /// Event time of the latest sweep.
    pub last_sweep_at: Option<Millis>,
    /// Silences of the whole log long enough to be an outage, during which nobody's silence
    /// counted towards a sweep.
    #[serde(default)]
    pub outages_forgiven: u64,
    /// Edges whose lease ran out (or whose process restarted): their connections were swept
    /// at once.
    #[serde(default)]
    pub edges_lost: u64,
    /// Silences of the whole log long enough that the edges' leases counted as renewed.
    #[serde(default)]
    pub outages_forgiven_to_edges: u64,
}

/// The aggregator's figures as of one sweep tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// Schema version.
    pub v: u16,
    /// The figures.
    pub presence: PresenceStats,
    /// When the aggregator process started.
    pub started_at: Millis,
    /// Event-log sequence of the tick.
    pub seq: u64,
    /// The partition these figures are of (the cluster's are the sum over partitions).
    #[serde(default)]
    pub partition: crate::Partition,
    /// The aggregator that owns the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::NodeId>,
    /// Its lease epoch (0: one process owns every partition).
    #[serde(default)]
    pub epoch: u64,
    /// Events of the partition waiting to be folded when the tick was.
    #[serde(default)]
    pub lag: u64,
}

impl ClusterStats {
    /// Encodes for the log.
    pub fn encode(&self) -> Result<Vec<u8>, crate::EncodeError> {
        crate::codec::encode("stats", self)
    }

    /// Decodes from the log, refusing versions this build does not know.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        crate::codec::decode(bytes)
    }
}

impl crate::codec::Versioned for ClusterStats {
    fn version(&self) -> u16 {
        self.v
    }
}
