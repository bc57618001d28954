//! What a connected socket may do: `user:heartbeat`, `user:status` (acked once the event is
//! durable), `presence:query` (acked with the presence of each user asked for, visibility
//! applied), `auth:refresh` (a fresh token for the same user, so the connection outlives the
//! first one's `exp`), and what happens when it disconnects (a `leave`, unless the edge
//! drains).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use presence_events::{BeatEntry, Details, EventBody, LeaveReason, Millis, SetStatus, UserId};
use serde::Deserialize;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::socket::DisconnectReason;

use super::SocketContext;
use super::connection::Connection;
use crate::wire::SocketAck as Ack;

/// Most users one `presence:query` may ask about.
const MAX_QUERY_USERS: usize = 500;

#[derive(Debug, Deserialize)]
struct StatusRequest {
    status: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RefreshRequest {
    token: String,
}

#[derive(Debug, Deserialize)]
struct QueryRequest {
    #[serde(rename = "userIds")]
    user_ids: Vec<String>,
}

/// The `{ok: false, error}` answer to `event`, counted by `reason`.
fn refuse(event: &'static str, reason: &'static str, message: String) -> Ack {
    metrics::counter!("presence_socket_rejected_total", "event" => event, "reason" => reason)
        .increment(1);
    Ack::error(message)
}

/// Installs the event handlers of an admitted socket.
pub(super) fn install(context: &Arc<SocketContext>, s: &SocketRef, connection: &Connection) {
    let (cx, sn) = (context.clone(), connection.clone());
    s.on("user:heartbeat", move |ack: AckSender| {
        let (cx, sn) = (cx.clone(), sn.clone());
        async move {
            let id = &sn.identity;
            cx.beats
                .beat(BeatEntry {
                    tenant: id.tenant.clone(),
                    user: id.user.clone(),
                    conn: sn.conn,
                    class: id.class.clone(),
                    at: Millis::now(),
                })
                .await;
            let _ = ack.send(&Ack::ok());
        }
    });

    let (cx, sn) = (context.clone(), connection.clone());
    s.on(
        "user:status",
        move |TryData(request): TryData<StatusRequest>, ack: AckSender| {
            let (cx, sn) = (cx.clone(), sn.clone());
            async move {
                let answer = cx.set_status(&sn, request.ok()).await;
                let _ = ack.send(&answer);
            }
        },
    );

    let (cx, sn) = (context.clone(), connection.clone());
    s.on(
        "presence:query",
        move |TryData(request): TryData<QueryRequest>, ack: AckSender| {
            let (cx, sn) = (cx.clone(), sn.clone());
            async move {
                let _ = ack.send(&cx.query(&sn, request.ok()).await);
            }
        },
    );

    let (cx, sn) = (context.clone(), connection.clone());
    s.on(
        "auth:refresh",
        move |TryData(request): TryData<RefreshRequest>, ack: AckSender| {
            let (cx, sn) = (cx.clone(), sn.clone());
            async move {
                let _ = ack.send(&cx.refresh(&sn, request.ok()));
            }
        },
    );

    let (cx, sn) = (context.clone(), connection.clone());
    s.on_disconnect(move |reason: DisconnectReason| {
        let (cx, sn) = (cx.clone(), sn.clone());
        async move { cx.on_disconnect(&sn, reason).await }
    });
}

impl SocketContext {
    async fn set_status(&self, sn: &Connection, request: Option<StatusRequest>) -> Ack {
        const EVENT: &str = "user:status";
        let Some(request) = request else {
            return refuse(
                EVENT,
                "bad_payload",
                "expected {status: \"online\" | \"live\" | \"in_call\", details?: {...}}".into(),
            );
        };
        let status = match SetStatus::parse(&request.status) {
            Ok(status) => status,
            Err(e) => return refuse(EVENT, "unknown_status", e.to_string()),
        };
        let details = match request.details {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => match Details::parse(value) {
                Ok(details) => Some(details),
                Err(e) => return refuse(EVENT, "bad_details", e.to_string()),
            },
        };
        let id = &sn.identity;
        let body = EventBody::Status {
            tenant: id.tenant.clone(),
            user: id.user.clone(),
            conn: sn.conn,
            class: id.class.clone(),
            status,
            details,
        };
        match self.publisher.publish(body).await {
            Ok(_) => Ack::ok(),
            Err(e) => {
                tracing::warn!(error = %e, "could not append a status");
                refuse(
                    EVENT,
                    "unavailable",
                    "status not saved: presence is unavailable right now; retry".into(),
                )
            }
        }
    }

    async fn query(&self, sn: &Connection, request: Option<QueryRequest>) -> Ack {
        const EVENT: &str = "presence:query";
        let Some(request) = request else {
            return refuse(
                EVENT,
                "bad_payload",
                "expected {userIds: [\"<userId>\", ...]}".into(),
            );
        };
        if request.user_ids.len() > MAX_QUERY_USERS {
            return refuse(
                EVENT,
                "too_many",
                format!(
                    "at most {MAX_QUERY_USERS} userIds per query, got {}",
                    request.user_ids.len()
                ),
            );
        }
        let mut users = Vec::with_capacity(request.user_ids.len());
        for (i, raw) in request.user_ids.into_iter().enumerate() {
            match UserId::parse(raw) {
                Ok(user) => users.push(user),
                Err(e) => return refuse(EVENT, "bad_user_id", format!("userIds[{i}]: {e}")),
            }
        }
        let id = &sn.identity;
        Ack::presence(
            self.view
                .presence_for(&self.policy, &id.class, &id.tenant, users)
                .await,
        )
    }

    /// A fresh token for the same user: the connection lives until its `exp`.
    fn refresh(&self, sn: &Connection, request: Option<RefreshRequest>) -> Ack {
        const EVENT: &str = "auth:refresh";
        let Some(request) = request else {
            return refuse(EVENT, "bad_payload", "expected {token: \"<JWT>\"}".into());
        };
        let identity = match self.auth.verify(&request.token) {
            Ok(identity) => identity,
            Err(e) => return refuse(EVENT, "invalid_token", e.to_string()),
        };
        if identity.tenant != sn.identity.tenant || identity.user != sn.identity.user {
            return refuse(
                EVENT,
                "other_user",
                "the new token names another user: a connection keeps its user".into(),
            );
        }
        if let Some(exp) = identity.expires_at {
            self.expiry.track(sn.sid, exp);
        }
        Ack::ok()
    }

    async fn on_disconnect(&self, sn: &Connection, reason: DisconnectReason) {
        self.expiry.forget(sn.sid);
        self.local.release_user(&sn.key());
        if sn.close() {
            self.local.closed(&sn.rooms);
        }
        if self.draining.load(Ordering::Acquire) {
            // Handed over: the client reconnects elsewhere; the connection is swept if not.
            metrics::counter!("presence_connections_handed_over_total").increment(1);
            return;
        }
        // A beat still pending for this connection must not land after its leave.
        self.beats.forget(sn.conn).await;
        let id = &sn.identity;
        let reason = match reason {
            DisconnectReason::ClientNSDisconnect | DisconnectReason::TransportClose => {
                LeaveReason::Client
            }
            DisconnectReason::ServerNSDisconnect
            | DisconnectReason::ClosingServer
            | DisconnectReason::PacketParsingError
            | DisconnectReason::MultipleHttpPollingError => LeaveReason::Server,
            DisconnectReason::TransportError | DisconnectReason::HeartbeatTimeout => {
                LeaveReason::Transport
            }
        };
        let leave = EventBody::Leave {
            tenant: id.tenant.clone(),
            user: id.user.clone(),
            conn: sn.conn,
            class: id.class.clone(),
            reason,
        };
        // If this fails the connection is swept after the heartbeat timeout instead.
        if let Err(e) = self.publisher.publish_departure(leave).await {
            tracing::warn!(error = %e, "could not append a leave; the sweep will close it");
        }
    }
}
