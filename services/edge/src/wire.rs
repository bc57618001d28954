//! What clients receive, in one place: the presence of a user (`presence-update`, the entries
//! of `presence:query` and of the HTTP API's answers), Socket.io acknowledgements, a
//! customer's active-users metrics
//! (`GET /metrics`, `metrics:update`), the frames of `/ws/active-users`, and the users the
//! dashboard lists. Their JSON shapes are the documented protocol (`docs/api.md`); changing a
//! field here changes it for every client.

use std::sync::Arc;

use presence_events::{
    Details, Millis, PresenceChange, SessionId, Status, TenantId, TenantMetrics, UserId,
    format_rfc3339,
};
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// What clients receive about one user: the `presence-update` payload and each entry of a
/// `presence:query` answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PresenceUpdate {
    /// The user.
    #[schema(value_type = String)]
    pub(crate) user_id: UserId,
    /// `online`, `offline`, `live` or `in_call`.
    #[schema(value_type = crate::openapi::StatusName)]
    pub(crate) status: Status,
    /// Whether the user has a live connection.
    pub(crate) online: bool,
    /// RFC 3339 time the user was last seen, or `null` if never.
    #[schema(required = true, format = DateTime)]
    pub(crate) last_seen: Option<String>,
    /// Details of `live` / `in_call`: the JSON object the status was set with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) details: Option<Details>,
}

impl PresenceUpdate {
    /// The update a change announces.
    pub(crate) fn from_change(change: &PresenceChange) -> Self {
        Self {
            user_id: change.user.clone(),
            status: change.status,
            online: change.online,
            last_seen: change.last_seen.map(format_rfc3339),
            details: change.details.clone(),
        }
    }

    /// What is said of a user never seen, or not visible to the asker: offline, never seen.
    /// Hidden users are indistinguishable from absent ones, so visibility cannot be probed.
    pub(crate) fn unknown(user: UserId) -> Self {
        Self {
            user_id: user,
            status: Status::Offline,
            online: false,
            last_seen: None,
            details: None,
        }
    }
}

/// What a Socket.io acknowledgement carries: `{ok: true}`, `{ok: true, presence: [...]}`
/// (with a `cursor`, and `full: true` when it is the whole state rather than what changed
/// after the cursor sent), or `{ok: false, error}` (with the `limit` passed, if that is why).
#[derive(Debug, Default, Serialize)]
pub(crate) struct SocketAck {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    full: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<Vec<PresenceUpdate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
}

impl SocketAck {
    pub(crate) fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    pub(crate) fn presence(presence: Vec<PresenceUpdate>) -> Self {
        Self {
            ok: true,
            presence: Some(presence),
            ..Self::default()
        }
    }

    /// Presence as of `cursor`: the whole state asked for when `full`, else only what
    /// changed after the cursor the client sent.
    pub(crate) fn presence_at(presence: Vec<PresenceUpdate>, cursor: String, full: bool) -> Self {
        Self {
            ok: true,
            presence: Some(presence),
            cursor: Some(cursor),
            full: full.then_some(true),
            ..Self::default()
        }
    }

    pub(crate) fn error(message: String) -> Self {
        Self {
            ok: false,
            error: Some(message),
            ..Self::default()
        }
    }

    /// Refused for going past `limit`.
    pub(crate) fn over_limit(error: &str, limit: usize) -> Self {
        Self {
            ok: false,
            error: Some(error.to_owned()),
            limit: Some(limit),
            ..Self::default()
        }
    }
}

/// One user as the operators' dashboard lists it: its tenant, then its presence.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TenantPresence {
    pub(crate) tenant: TenantId,
    #[serde(flatten)]
    pub(crate) presence: PresenceUpdate,
}

impl TenantPresence {
    /// The dashboard entry a change announces.
    pub(crate) fn from_change(change: &PresenceChange) -> Self {
        Self {
            tenant: change.tenant.clone(),
            presence: PresenceUpdate::from_change(change),
        }
    }
}

/// What this edge announces to whoever watches all of it (the operators' dashboard): every
/// presence change its view takes in and every metrics tick, in the order they happen here,
/// each encoded once for all watchers. Nothing is encoded while nobody watches.
#[derive(Clone)]
pub(crate) struct Announcements {
    tx: broadcast::Sender<Announcement>,
}

/// One announcement: its kind (`presence` or `metrics`) and its JSON.
#[derive(Debug, Clone)]
pub(crate) struct Announcement {
    pub(crate) kind: &'static str,
    pub(crate) json: Arc<str>,
}

impl Default for Announcements {
    fn default() -> Self {
        // A watcher this far behind is told so and starts over.
        Self {
            tx: broadcast::channel(1_024).0,
        }
    }
}

impl Announcements {
    /// Announcements from now on.
    pub(crate) fn watch(&self) -> broadcast::Receiver<Announcement> {
        self.tx.subscribe()
    }

    /// A user's presence changed.
    pub(crate) fn presence(&self, change: &PresenceChange) {
        self.announce("presence", || TenantPresence::from_change(change));
    }

    /// A customer's metrics ticked.
    pub(crate) fn metrics(&self, data: &MetricsData) {
        self.announce("metrics", || data);
    }

    fn announce<T: Serialize>(&self, kind: &'static str, value: impl FnOnce() -> T) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        match serde_json::to_string(&value()) {
            Ok(json) => {
                let _ = self.tx.send(Announcement {
                    kind,
                    json: json.into(),
                });
            }
            Err(e) => {
                metrics::counter!("presence_encode_failures_total", "what" => "dashboard")
                    .increment(1);
                tracing::error!(error = %e, kind, "cannot encode an announcement");
            }
        }
    }
}

/// A customer's metrics as clients see them.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetricsData {
    /// The customer.
    #[schema(value_type = String)]
    pub(crate) customer_id: TenantId,
    /// When the count was taken, in ms since the epoch (the time of the answer before the
    /// first count).
    #[schema(value_type = u64)]
    pub(crate) timestamp: Millis,
    /// Sessions (browsers) on the customer's site now.
    pub(crate) count: u64,
    /// The count smoothed by an exponential moving average, two decimals.
    pub(crate) ema: f64,
}

impl MetricsData {
    pub(crate) fn from_metrics(m: &TenantMetrics) -> Self {
        Self {
            customer_id: m.tenant.clone(),
            timestamp: m.at,
            count: m.count,
            // Two decimals are all a display needs; keeps frames short and stable.
            ema: (m.ema * 100.0).round() / 100.0,
        }
    }

    /// Before the first tick: nobody counted yet.
    pub(crate) fn empty(customer: TenantId, now: Millis) -> Self {
        Self {
            customer_id: customer,
            timestamp: now,
            count: 0,
            ema: 0.0,
        }
    }
}

/// A message to an active-users WebSocket client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub(crate) enum ServerMessage<'a> {
    #[serde(rename = "hello")]
    Hello {
        timestamp: Millis,
        #[serde(rename = "sessionId")]
        session_id: &'a SessionId,
    },
    #[serde(rename = "pong")]
    Pong { timestamp: Millis },
    #[serde(rename = "metrics:update")]
    MetricsUpdate { data: &'a MetricsData },
    #[serde(rename = "error")]
    Error {
        code: &'static str,
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    /// The JSON text frame. Every field is a string or a number, so encoding cannot fail in
    /// practice; if it ever does, the failure is counted and logged and `None` returned, never
    /// an empty frame.
    pub(crate) fn to_text(&self) -> Option<String> {
        match serde_json::to_string(self) {
            Ok(text) => Some(text),
            Err(e) => {
                metrics::counter!("presence_encode_failures_total", "what" => "ws_frame")
                    .increment(1);
                tracing::error!(error = %e, "cannot encode an active-users frame");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_have_the_documented_shape() {
        let data = MetricsData {
            customer_id: TenantId::parse("shop").unwrap(),
            timestamp: Millis(10),
            count: 3,
            ema: 2.5,
        };
        assert_eq!(
            ServerMessage::MetricsUpdate { data: &data }
                .to_text()
                .unwrap(),
            r#"{"type":"metrics:update","data":{"customerId":"shop","timestamp":10,"count":3,"ema":2.5}}"#
        );
        assert_eq!(
            ServerMessage::Error {
                code: "x",
                message: "y"
            }
            .to_text()
            .unwrap(),
            r#"{"type":"error","code":"x","message":"y"}"#
        );
    }

    #[test]
    fn a_dashboard_entry_is_the_tenant_then_the_presence_fields() {
        let entry = TenantPresence {
            tenant: TenantId::parse("shop").unwrap(),
            presence: PresenceUpdate::unknown(UserId::parse("ayse").unwrap()),
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"tenant":"shop","userId":"ayse","status":"offline","online":false,"lastSeen":null}"#
        );
    }
}
