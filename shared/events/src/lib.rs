//! The presence event schema: the domain types every service speaks, the events edges
//! publish to the log, the presence changes the aggregator derives from them, and the
//! subject names they travel on.
//!
//! This crate does no I/O. Everything that crosses a process boundary is defined here,
//! encoded as JSON and versioned (see `docs/events.md`), so that a replay years later
//! still decodes what the live system wrote.

pub mod api_input;
mod change;
mod codec;
mod event;
mod ids;
mod metrics;
mod partition;
mod stats;
mod status;
mod subjects;
pub mod tab_input;
mod time;

pub use change::{Cause, PresenceChange};
pub use codec::{DecodeError, EncodeError};
pub use event::{
    BeatEntry, Event, EventBody, LeaveReason, SCHEMA_VERSION, SessionBeatEntry, Transport,
};
pub use ids::{
    ConnId, IdError, NodeId, SessionId, TabId, TabKey, TenantId, UserId, UserKey, ViewerClass,
};
pub use metrics::TenantMetrics;
pub use partition::{
    EpochFence, MAX_PARTITIONS, Partition, PartitionCountError, Partitions, SequenceMark, source_of,
};
pub use stats::{ClusterStats, PresenceStats};
pub use status::{Details, DetailsError, SetStatus, Status, StatusError};
pub use subjects::{Subjects, hex_token};
pub use time::{Millis, format_rfc3339};
