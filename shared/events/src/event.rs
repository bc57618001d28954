//! Events: what edges (and the aggregator's clock) append to the event log.
//!
//! The log is the source of truth; every projection is a fold over these. An event carries
//! its own id (UUID v7, also the JetStream `Nats-Msg-Id` used for de-duplication), its own
//! time and the node that wrote it, so folding the same events always gives the same state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, DecodeError, EncodeError};
use crate::{
    ConnId, Details, Millis, NodeId, SessionId, SetStatus, TabId, TenantId, UserId, ViewerClass,
};

/// The version of the event schema this build writes. Readers accept this and older.
pub const SCHEMA_VERSION: u16 = 1;

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`SCHEMA_VERSION`] when written by this build).
    pub v: u16,
    /// Unique id, UUID v7; also the de-duplication id in the log.
    pub id: Uuid,
    /// When it happened, by the clock of the node that wrote it.
    pub at: Millis,
    /// The node that wrote it.
    pub node: NodeId,
    /// The lease epoch of the partition's owner, on the events the owner writes (clock
    /// ticks): the fold ignores ticks of an epoch older than one it has already seen, so a
    /// deposed owner's clock never sweeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// What happened.
    pub body: EventBody,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    /// A connection of a user opened.
    Join {
        /// Tenant of the user.
        tenant: TenantId,
        /// The user.
        user: UserId,
        /// The new connection.
        conn: ConnId,
        /// The user's visibility class.
        class: ViewerClass,
    },
    /// Connections that sent a heartbeat since the edge's previous beat message (batched per edge).
    Beat {
        /// One entry per connection that beat, with the time of its latest heartbeat.
        beats: Vec<BeatEntry>,
    },
    /// A connection closed.
    Leave {
        /// Tenant of the user.
        tenant: TenantId,
        /// The user.
        user: UserId,
        /// The connection that closed.
        conn: ConnId,
        /// The user's visibility class.
        class: ViewerClass,
        /// Why it closed.
        reason: LeaveReason,
    },
    /// A user chose a status on one of its connections.
    Status {
        /// Tenant of the user.
        tenant: TenantId,
        /// The user.
        user: UserId,
        /// The connection it was set on.
        conn: ConnId,
        /// The user's visibility class.
        class: ViewerClass,
        /// The chosen status.
        status: SetStatus,
        /// Details of the status (stream details of `live`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<Details>,
    },
    /// A backend service (service-role token) set the status of a connected user.
    ServiceStatus {
        /// Tenant of the user.
        tenant: TenantId,
        /// The user.
        user: UserId,
        /// The status.
        status: SetStatus,
        /// Details of the status.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<Details>,
    },
    /// The aggregator's clock: connections silent for the heartbeat timeout as of `at` are swept.
    /// Written to the log so that a replay sweeps at exactly the same points.
    Tick,
    /// An active-users tab opened (WebSocket auth or `POST /presence/join`).
    SessionJoin {
        /// The customer.
        tenant: TenantId,
        /// The browser session (shared by its tabs).
        session: SessionId,
        /// The tab.
        tab: TabId,
        /// How it came in.
        transport: Transport,
        /// Client platform, as reported (at most 64 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
        /// Where the client connected from, as [`source_of`](crate::source_of) hashes it: a
        /// customer's count takes a bounded number of sessions from any one source.
        #[serde(default, rename = "src", skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// Active-users tabs that beat (WebSocket pings batched per edge, or one `POST /presence/beat`).
    SessionBeat {
        /// One entry per tab, with the time of its latest beat.
        beats: Vec<SessionBeatEntry>,
    },
    /// An active-users tab closed.
    SessionLeave {
        /// The customer.
        tenant: TenantId,
        /// The browser session.
        session: SessionId,
        /// The tab.
        tab: TabId,
    },
    /// The aggregator's metrics clock: every customer's count and EMA are computed as of `at`.
    MetricsTick,
    /// An edge's lease on the connections it opened, renewed in every partition about every
    /// second and listing nothing per connection. While it holds, the edge's connections are
    /// alive as far as their edge goes; once `ttl_ms` of log time pass without a renewal,
    /// every connection the edge opened is swept at once rather than each at its heartbeat
    /// timeout. A `released` lease (a draining edge) hands them back to their heartbeat timeout.
    EdgeLease {
        /// This run of the edge's process: a restart under the same node id is a new one,
        /// and the connections of the run before it are swept.
        incarnation: u64,
        /// How long the lease holds without a renewal (ms of log time).
        ttl_ms: u64,
        /// The edge is draining: its clients reconnect elsewhere and its connections go
        /// silent as they do.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        released: bool,
    },
}

/// One tab's beat inside a batched [`EventBody::SessionBeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionBeatEntry {
    /// The customer.
    #[serde(rename = "t")]
    pub tenant: TenantId,
    /// The browser session.
    #[serde(rename = "s")]
    pub session: SessionId,
    /// The tab.
    pub tab: TabId,
    /// Time of the tab's latest beat.
    pub at: Millis,
    /// Where the beat came from ([`source_of`](crate::source_of)), for a beat that arrived on
    /// its own (HTTP); a WebSocket's beats leave it to the join of their connection.
    #[serde(default, rename = "src", skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The transport an active-users tab came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// `GET /ws/active-users`.
    Websocket,
    /// `POST /presence/*`.
    Http,
}

/// One connection's heartbeat inside a batched [`EventBody::Beat`]. Short field names:
/// beats are the bulk of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeatEntry {
    /// Tenant of the user.
    #[serde(rename = "t")]
    pub tenant: TenantId,
    /// The user.
    #[serde(rename = "u")]
    pub user: UserId,
    /// The connection that beat.
    #[serde(rename = "c")]
    pub conn: ConnId,
    /// The user's visibility class.
    #[serde(rename = "k")]
    pub class: ViewerClass,
    /// Time of the connection's latest heartbeat.
    pub at: Millis,
}

/// Why a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The client disconnected on purpose.
    Client,
    /// The transport closed or failed (network loss, ping timeout).
    Transport,
    /// The edge closed it (shutdown, protocol error).
    Server,
}

impl Event {
    /// A new event written now by `node`.
    pub fn new(node: NodeId, at: Millis, body: EventBody) -> Self {
        Self {
            v: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            at,
            node,
            epoch: None,
            body,
        }
    }

    /// The kind of event, as used in subjects and metric labels.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// Encodes for the log.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode("event", self)
    }

    /// Decodes from the log, refusing versions this build does not know.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes)
    }
}

impl codec::Versioned for Event {
    fn version(&self) -> u16 {
        self.v
    }
}

impl EventBody {
    /// The kind of event, as used in subjects and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Join { .. } => "join",
            EventBody::Beat { .. } => "beat",
            EventBody::Leave { .. } => "leave",
            EventBody::Status { .. } => "status",
            EventBody::ServiceStatus { .. } => "service_status",
            EventBody::Tick => "tick",
            EventBody::SessionJoin { .. } => "session_join",
            EventBody::SessionBeat { .. } => "session_beat",
            EventBody::SessionLeave { .. } => "session_leave",
            EventBody::MetricsTick => "metrics_tick",
            EventBody::EdgeLease { .. } => "edge_lease",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join() -> Event {
        Event::new(
            NodeId::parse("edge-1").unwrap(),
            Millis(1_700_000_000_000),
            EventBody::Join {
                tenant: TenantId::default_tenant(),
                user: UserId::parse("alice").unwrap(),
                conn: ConnId::new(),
                class: ViewerClass::from_gender(Some("female")),
            },
        )
    }

    #[test]
    fn events_round_trip_through_their_encoding() {
        let event = join();
        assert_eq!(Event::decode(&event.encode().unwrap()).unwrap(), event);
        let tick = Event::new(NodeId::parse("agg").unwrap(), Millis(5), EventBody::Tick);
        assert_eq!(Event::decode(&tick.encode().unwrap()).unwrap(), tick);
    }

    #[test]
    fn the_wire_form_is_the_documented_one() {
        let json: serde_json::Value = serde_json::from_slice(&join().encode().unwrap()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["body"]["type"], "join");
        assert_eq!(json["body"]["data"]["user"], "alice");
        assert_eq!(json["body"]["data"]["class"], "female");
    }

    #[test]
    fn newer_schema_versions_are_refused_with_a_clear_error() {
        let mut event = join();
        event.v = SCHEMA_VERSION + 1;
        let err = Event::decode(&serde_json::to_vec(&event).unwrap()).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedVersion(2)));
    }

    #[test]
    fn invalid_ids_inside_events_are_refused() {
        let bytes = br#"{"v":1,"id":"0190f5a0-0000-7000-8000-000000000000","at":1,"node":"n","body":{"type":"join","data":{"tenant":"a.b","user":"u","conn":"0190f5a0-0000-7000-8000-000000000001","class":"male"}}}"#;
        assert!(Event::decode(bytes).is_err());
    }
}
