//! What a connected socket may do: `user:heartbeat`, `user:status` (acked once the event is
//! durable), `presence:query` (acked with the presence of each user asked for, visibility
//! applied), `presence:subscribe` (the users a subscriptions socket hears of, acked with their
//! presence and a cursor), `presence:sync` (what changed after a cursor, or the whole state),
//! `auth:refresh` (a fresh token for the same user, so the connection outlives the first one's
//! `exp`), and what happens when it disconnects (a `leave`, unless the edge drains).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use presence_auth::Identity;
use presence_events::api_input::{
    BodyError, StatusWrite, Subscribe, parse_batch, parse_status_write, parse_subscribe, parse_sync,
};
use presence_events::{ConnId, EventBody, LeaveReason, Millis, UserId};
use serde::Deserialize;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, TryData};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};

use super::SocketContext;
use super::connection::Connection;
use super::cursor::Cursor;
use super::subscriptions::SubscriptionIndex;
use crate::ingress::BeatBatcher;
use crate::wire::{PresenceUpdate, SocketAck as Ack};

/// `presence_subscriptions`: the subscriptions sockets of this edge and what they hold.
fn report_subscriptions(index: &SubscriptionIndex) {
    let (sockets, held) = index.counts();
    metrics::gauge!("presence_subscriptions", "kind" => "sockets").set(sockets as f64);
    metrics::gauge!("presence_subscriptions", "kind" => "held").set(held as f64);
}

#[derive(Debug, Deserialize)]
struct RefreshRequest {
    token: String,
}

/// The `reason` label of `presence_sockets_closed_total`.
fn closed_reason(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::ClientNSDisconnect | DisconnectReason::TransportClose => "client",
        DisconnectReason::ServerNSDisconnect | DisconnectReason::ClosingServer => "server",
        DisconnectReason::PacketParsingError | DisconnectReason::MultipleHttpPollingError => {
            "bad_packet"
        }
        // A transport error is most often a WebSocket message over PRESENCE_MAX_PACKET_BYTES.
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "ping_timeout",
    }
}

/// The `{ok: false, error}` answer to `event`, counted by `reason`.
fn refuse(event: &'static str, reason: &'static str, message: String) -> Ack {
    metrics::counter!("presence_socket_rejected_total", "event" => event, "reason" => reason)
        .increment(1);
    Ack::error(message)
}

/// A payload decoded as `T` if it is a JSON object: serde would also decode a struct from
/// an array of its fields (`["live"]` as `{status: "live"}`), which no client means.
fn object_of<T: serde::de::DeserializeOwned>(payload: serde_json::Value) -> Option<T> {
    if payload.is_object() {
        serde_json::from_value(payload).ok()
    } else {
        None
    }
}

/// Registers `$event` on socket `$s`: its payload read as `$request` (`None` if it does not
/// parse or is not an object), answered in its ack by `$answer`, with the context and connection at hand. The
/// handler holds the shared context only: the connection is read from the socket's
/// extensions when an event comes, not copied into every handler of every socket.
macro_rules! acked {
    ($s:expr, $context:expr, $event:literal, $request:ty,
     |$cx:ident, $sn:ident, $r:ident| $answer:expr) => {{
        let cx = $context.clone();
        $s.on(
            $event,
            move |Extension(sn): Extension<Connection>,
                  TryData(request): TryData<serde_json::Value>,
                  ack: AckSender| {
                let cx = cx.clone();
                async move {
                    let request: Option<$request> = request.ok().and_then(object_of);
                    let ($cx, $sn, $r) = (&cx, &sn, request);
                    let _ = ack.send(&$answer);
                }
            },
        );
    }};
}

/// `user:heartbeat`, handled in the socket's own read task as the packet is decoded: a
/// closure handler would be spawned as a task of its own for every beat. Clients send it
/// without an ack id, so nothing is written back; one that asks for an ack gets `{ok: true}`.
#[derive(Clone)]
struct Heartbeat {
    beats: BeatBatcher,
    conn: ConnId,
    identity: Arc<Identity>,
}

impl MessageHandler<LocalAdapter, Heartbeat> for Heartbeat {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, mut v: Value, ack_id: Option<i64>) {
        self.beats.beat(self.conn, &self.identity, Millis::now());
        if ack_id.is_some() {
            let Ok(ack) = AckSender::from_message_parts(&s, &mut v, &ack_id);
            let _ = ack.send(&Ack::ok());
        }
    }
}

/// Installs the event handlers of an admitted socket.
pub(super) fn install(context: &Arc<SocketContext>, s: &SocketRef, connection: &Connection) {
    s.on(
        "user:heartbeat",
        Heartbeat {
            beats: context.beats.clone(),
            conn: connection.conn,
            identity: connection.identity.clone(),
        },
    );

    acked!(
        s,
        context,
        "user:status",
        serde_json::Value,
        |cx, sn, request| { cx.set_status(sn, request).await }
    );
    acked!(
        s,
        context,
        "presence:query",
        serde_json::Value,
        |cx, sn, request| { cx.query(sn, request).await }
    );
    acked!(
        s,
        context,
        "presence:subscribe",
        serde_json::Value,
        |cx, sn, request| { cx.subscribe(sn, request).await }
    );
    acked!(
        s,
        context,
        "presence:sync",
        serde_json::Value,
        |cx, sn, request| { cx.sync(sn, request).await }
    );
    acked!(
        s,
        context,
        "auth:refresh",
        RefreshRequest,
        |cx, sn, request| { cx.refresh(sn, request) }
    );

    let (cx, sn) = (context.clone(), connection.clone());
    s.on_disconnect(move |reason: DisconnectReason| {
        let (cx, sn) = (cx.clone(), sn.clone());
        async move { cx.on_disconnect(&sn, reason).await }
    });
}

impl SocketContext {
    async fn set_status(&self, sn: &Connection, request: Option<serde_json::Value>) -> Ack {
        const EVENT: &str = "user:status";
        let parsed = request.map(parse_status_write);
        let StatusWrite { status, details } = match parsed {
            Some(Ok(write)) => write,
            Some(Err(BodyError::Status(e))) => {
                return refuse(EVENT, "unknown_status", e.to_string());
            }
            Some(Err(BodyError::Details(e))) => return refuse(EVENT, "bad_details", e.to_string()),
            None | Some(Err(_)) => {
                return refuse(
                    EVENT,
                    "bad_payload",
                    "expected {status: \"online\" | \"live\" | \"in_call\", details?: {...}}"
                        .into(),
                );
            }
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

    async fn query(&self, sn: &Connection, request: Option<serde_json::Value>) -> Ack {
        const EVENT: &str = "presence:query";
        let users = match request.map(|v| parse_batch(v, self.max_query_ids)) {
            Some(Ok(users)) => users,
            Some(Err(BodyError::TooMany { got, limit })) => {
                return refuse(
                    EVENT,
                    "too_many",
                    format!("at most {limit} userIds per query, got {got}"),
                );
            }
            Some(Err(e @ BodyError::UserId { .. })) => {
                return refuse(EVENT, "bad_user_id", e.to_string());
            }
            None | Some(Err(_)) => {
                return refuse(
                    EVENT,
                    "bad_payload",
                    "expected {userIds: [\"<userId>\", ...]}".into(),
                );
            }
        };
        let id = &sn.identity;
        Ack::presence(
            self.view
                .presence_for(&self.policy, &id.class, &id.tenant, users)
                .await,
        )
    }

    /// Changes the set of users a subscriptions socket hears of. Acked with the presence of
    /// the users the request named (visibility applied) and a cursor; with `since`, only
    /// those of the set that changed after it (or the whole set, `full: true`, if the cursor
    /// is older than this edge can answer for).
    async fn subscribe(&self, sn: &Connection, request: Option<serde_json::Value>) -> Ack {
        const EVENT: &str = "presence:subscribe";
        let request = match request.map(parse_subscribe) {
            None | Some(Err(BodyError::Shape(_))) => {
                return refuse(
                    EVENT,
                    "bad_payload",
                    "expected {userIds: [...]}, {add: [...]} or {remove: [...]}, and since?: \"<cursor>\"".into(),
                );
            }
            Some(request) => request,
        };
        if !sn.delivery.subscriptions {
            return refuse(
                EVENT,
                "not_subscriptions",
                "this socket receives every user it may see: connect with auth {delivery: \"subscriptions\"} to subscribe".into(),
            );
        }
        let Subscribe { change, since } = match request {
            Ok(request) => request,
            Err(e @ BodyError::OneChange) => return refuse(EVENT, "bad_payload", e.to_string()),
            Err(e @ BodyError::Cursor(_)) => return refuse(EVENT, "bad_cursor", e.to_string()),
            Err(e) => return refuse(EVENT, "bad_user_id", e.to_string()),
        };
        let since = since.map(Cursor);
        // Taken before anything is read: what changes after it is pushed, or in the answer.
        let cursor = self.view.cursor();
        let (named, subscribed) = {
            let mut index = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            let updated = index.update(sn.sid, change);
            report_subscriptions(&index);
            match updated {
                Ok(named) => (named, index.subscribed(sn.sid)),
                Err(too_many) => {
                    metrics::counter!("presence_socket_rejected_total", "event" => EVENT, "reason" => "too_many_subscriptions")
                        .increment(1);
                    return Ack::over_limit(&too_many.to_string(), too_many.limit);
                }
            }
        };
        if let Some(since) = since {
            if let Some(changes) = self.changes_since(sn, Some(&subscribed), since) {
                return changes;
            }
            let full = self.full_state(sn, Some(subscribed)).await;
            return Ack::presence_at(full, cursor.to_string(), true);
        }
        let id = &sn.identity;
        let presence = self
            .view
            .presence_for(&self.policy, &id.class, &id.tenant, named)
            .await;
        Ack::presence_at(presence, cursor.to_string(), false)
    }

    /// What changed after `since` among the users this socket hears of (every user it may
    /// see, or its subscriptions), with a cursor; without `since`, or with one older than
    /// this edge can answer for, the whole state (`full: true`): every visible user online,
    /// or every subscribed user.
    async fn sync(&self, sn: &Connection, request: Option<serde_json::Value>) -> Ack {
        const EVENT: &str = "presence:sync";
        let since = match request.map(parse_sync) {
            Some(Ok(since)) => since.map(Cursor),
            Some(Err(e @ BodyError::Cursor(_))) => {
                return refuse(EVENT, "bad_cursor", e.to_string());
            }
            None | Some(Err(_)) => {
                return refuse(
                    EVENT,
                    "bad_payload",
                    "expected {since?: \"<cursor>\"}".into(),
                );
            }
        };
        let cursor = self.view.cursor();
        let subscribed: Option<Vec<UserId>> = sn.delivery.subscriptions.then(|| {
            self.subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .subscribed(sn.sid)
        });
        if let Some(since) = since
            && let Some(changes) = self.changes_since(sn, subscribed.as_deref(), since)
        {
            return changes;
        }
        let full = self.full_state(sn, subscribed).await;
        Ack::presence_at(full, cursor.to_string(), true)
    }

    /// The users this socket hears of (every one it may see, or only `subscribed`) whose
    /// presence changed after `since`, as an ack; `None` (counted) if the view cannot answer
    /// for a cursor that old, and the caller answers with the whole state.
    fn changes_since(
        &self,
        sn: &Connection,
        subscribed: Option<&[UserId]>,
        since: Cursor,
    ) -> Option<Ack> {
        let id = &sn.identity;
        let set: Option<HashSet<&UserId>> = subscribed.map(|users| users.iter().collect());
        let only = |u: &UserId| set.as_ref().is_none_or(|set| set.contains(u));
        let answer =
            self.view
                .changed_since(&self.policy, &id.class, &id.tenant, Some(&only), since);
        if answer.is_none() {
            metrics::counter!("presence_sync_full_total", "reason" => "cursor_too_old")
                .increment(1);
        }
        answer.map(|(changed, to)| Ack::presence_at(changed, to.to_string(), false))
    }

    /// The whole state this socket hears of: every subscribed user, or every user online it
    /// may see.
    async fn full_state(
        &self,
        sn: &Connection,
        subscribed: Option<Vec<UserId>>,
    ) -> Vec<PresenceUpdate> {
        let id = &sn.identity;
        match subscribed {
            Some(users) => {
                self.view
                    .presence_for(&self.policy, &id.class, &id.tenant, users)
                    .await
            }
            None => self
                .view
                .online_visible(&self.policy, &id.class, &id.tenant, None, usize::MAX),
        }
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
        metrics::counter!("presence_sockets_closed_total", "reason" => closed_reason(reason))
            .increment(1);
        self.expiry.forget(sn.sid);
        if sn.delivery.subscriptions {
            let mut index = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            index.drop_socket(sn.sid);
            report_subscriptions(&index);
        }
        self.local.release_user(&sn.key());
        if sn.close() {
            self.local.closed(&sn.rooms);
        }
        // After the close: an open that lost the race lets go itself (see `handshake`).
        self.beats.let_go(sn.conn);
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
