//! The Socket.io interface on the default namespace.
//!
//! Handshake: `auth: { token }` (a JWT) or, only in development with
//! `SOCKET_ALLOW_INSECURE_USERID=true`, `auth: { userId, gender }`; each refusal is a
//! `connect_error` saying why. Client events: `user:heartbeat`, `user:status` (acked once the
//! event is durable), `presence:query` (acked with the presence of each user asked for,
//! visibility applied). Server events: `presence-update`. Every socket joins the audience room
//! of each class of users it may see; closing it appends a `leave`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use presence_auth::{AuthError, Identity, Verifier};
use presence_events::{
    BeatEntry, ConnId, Details, EventBody, LeaveReason, Millis, SetStatus, TenantId, UserId,
    UserKey, ViewerClass,
};
use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;

use crate::beats::BeatBatcher;
use crate::directory::Directory;
use crate::publisher::EventPublisher;
use crate::view::{PresenceUpdate, PresenceView};
use crate::visibility::VisibilityPolicy;

/// Most users one `presence:query` may ask about.
const MAX_QUERY_USERS: usize = 500;

/// How handshakes are authenticated.
pub(crate) struct Authenticator {
    pub(crate) verifier: Option<Verifier>,
    /// `auth: { userId, gender }` accepted (development only).
    pub(crate) insecure: bool,
}

/// Sockets and users connected to this edge.
#[derive(Default)]
pub(crate) struct LocalConnections {
    sockets: AtomicUsize,
    users: Mutex<HashMap<UserKey, u32>>,
    /// Sockets per audience room: how many deliveries an emit to a room makes.
    rooms: Mutex<HashMap<String, u32>>,
}

impl LocalConnections {
    fn opened(&self, key: UserKey, joined: &[String]) {
        self.sockets.fetch_add(1, Ordering::Relaxed);
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            for room in joined {
                *rooms.entry(room.clone()).or_default() += 1;
            }
        }
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *users.entry(key).or_default() += 1;
        metrics::gauge!("presence_connections", "transport" => "socketio").increment(1.0);
    }

    fn closed(&self, key: &UserKey, joined: &[String]) {
        self.sockets.fetch_sub(1, Ordering::Relaxed);
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            for room in joined {
                if let Some(count) = rooms.get_mut(room) {
                    *count -= 1;
                    if *count == 0 {
                        rooms.remove(room);
                    }
                }
            }
        }
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = users.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                users.remove(key);
            }
        }
        metrics::gauge!("presence_connections", "transport" => "socketio").decrement(1.0);
    }

    /// Sockets of this edge in `room`.
    pub(crate) fn sockets_in(&self, room: &str) -> u64 {
        let counts = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(room).map_or(0, |c| u64::from(*c))
    }

    /// Connections per user on this edge.
    pub(crate) fn users(&self) -> Vec<(UserKey, u32)> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// (sockets, distinct users) connected here.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner()).len();
        (self.sockets.load(Ordering::Relaxed), users)
    }
}

/// What the Socket.io handlers share.
pub(crate) struct SocketContext {
    pub(crate) auth: Authenticator,
    /// Where connected users are recorded, when there is a database.
    pub(crate) directory: Option<Directory>,
    pub(crate) publisher: EventPublisher,
    pub(crate) beats: BeatBatcher,
    pub(crate) view: Arc<PresenceView>,
    pub(crate) policy: VisibilityPolicy,
    pub(crate) local: Arc<LocalConnections>,
    /// Set when the edge drains: closing sockets then appends no leaves (see `Edge::start`).
    pub(crate) draining: Arc<AtomicBool>,
    /// Audience rooms per (tenant, viewer class), computed once.
    pub(crate) rooms: Mutex<AudienceRooms>,
}

/// Audience rooms per (tenant, viewer class).
pub(crate) type AudienceRooms = HashMap<(TenantId, ViewerClass), Arc<[String]>>;

/// One authenticated socket: who, and which connection.
#[derive(Clone)]
struct Session {
    identity: Arc<Identity>,
    conn: ConnId,
    /// [`NEW`], [`OPENED`] (counted as connected here) or [`CLOSED`]: the connect and
    /// disconnect handlers run as separate tasks, in either order.
    lifecycle: Arc<AtomicU8>,
    /// The audience rooms the socket joined (one per class of users it may see).
    rooms: Arc<[String]>,
}

const NEW: u8 = 0;
const OPENED: u8 = 1;
const CLOSED: u8 = 2;

impl Session {
    fn key(&self) -> UserKey {
        UserKey {
            tenant: self.identity.tenant.clone(),
            user: self.identity.user.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct HandshakeAuth {
    token: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    gender: Option<String>,
    tenant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("auth must be an object like {{ token: \"<JWT>\" }}")]
    BadPayload,
    #[error("token authentication is not configured on this server")]
    NoVerifier,
    #[error(
        "auth {{ userId }} is only accepted in development with SOCKET_ALLOW_INSECURE_USERID=true: send auth {{ token: \"<JWT>\" }}"
    )]
    InsecureDisabled,
    #[error("presence is unavailable right now; retry shortly")]
    Unavailable,
}

impl HandshakeError {
    fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Auth(AuthError::Missing) => "missing",
            HandshakeError::Auth(AuthError::Expired) => "expired",
            HandshakeError::Auth(_) => "invalid",
            HandshakeError::BadPayload => "bad_payload",
            HandshakeError::NoVerifier => "no_verifier",
            HandshakeError::InsecureDisabled => "insecure_disabled",
            HandshakeError::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatusRequest {
    status: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct QueryRequest {
    #[serde(rename = "userIds")]
    user_ids: Vec<String>,
}

/// What an acknowledgement carries: `{ok: true, …}` or `{ok: false, error}`.
#[derive(Debug, Serialize)]
struct Ack {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<Vec<PresenceUpdate>>,
}

impl Ack {
    fn ok() -> Self {
        Self {
            ok: true,
            error: None,
            presence: None,
        }
    }

    fn error(event: &'static str, reason: &'static str, message: String) -> Self {
        metrics::counter!("presence_socket_rejected_total", "event" => event, "reason" => reason)
            .increment(1);
        Self {
            ok: false,
            error: Some(message),
            presence: None,
        }
    }
}

/// Installs the handlers of the default namespace.
///
/// Everything happens in the connect middleware, before the client is told it is connected:
/// socketioxide sends the CONNECT packet before it runs the connect handler, so a client may
/// emit before that handler would have registered anything. Here its events, its room and its
/// `join` (durable in the log) are all in place first; if the join cannot be appended the
/// client gets a `connect_error` saying so and can retry.
pub(crate) fn register(io: &SocketIo, cx: Arc<SocketContext>) {
    let local = cx.local.clone();
    let admit = move |s: SocketRef, TryData(auth): TryData<HandshakeAuth>| {
        let cx = cx.clone();
        async move {
            let result = cx.admit(&s, auth.ok()).await;
            if let Err(e) = &result {
                metrics::counter!("presence_handshakes_rejected_total", "reason" => e.reason())
                    .increment(1);
            }
            result
        }
    };
    let opened = move |s: SocketRef| async move {
        if let Some(session) = s.extensions.get::<Session>()
            && session
                .lifecycle
                .compare_exchange(NEW, OPENED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            local.opened(session.key(), &session.rooms);
        }
    };
    io.ns("/", opened.with(admit));
}

impl SocketContext {
    /// The audience rooms of a viewer, shared by every socket of its tenant and class.
    fn audience_rooms(&self, id: &Identity) -> Arc<[String]> {
        let mut cache = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((id.tenant.clone(), id.class.clone()))
            .or_insert_with(|| self.policy.rooms_of_viewer(&id.tenant, &id.class).into())
            .clone()
    }

    fn authenticate(&self, auth: Option<HandshakeAuth>) -> Result<Identity, HandshakeError> {
        let auth = auth.ok_or(HandshakeError::BadPayload)?;
        match (auth.token, auth.user_id) {
            (Some(token), _) => Ok(self
                .auth
                .verifier
                .as_ref()
                .ok_or(HandshakeError::NoVerifier)?
                .verify(&token)?),
            (None, Some(user)) if self.auth.insecure => Ok(Identity::from_claims(
                &user,
                auth.gender.as_deref(),
                auth.tenant.as_deref(),
            )?),
            (None, Some(_)) => Err(HandshakeError::InsecureDisabled),
            (None, None) => Err(AuthError::Missing.into()),
        }
    }

    async fn admit(
        self: Arc<Self>,
        s: &SocketRef,
        auth: Option<HandshakeAuth>,
    ) -> Result<(), HandshakeError> {
        let identity = self.authenticate(auth)?;
        let rooms = self.audience_rooms(&identity);
        let session = Session {
            identity: Arc::new(identity),
            conn: ConnId::new(),
            lifecycle: Arc::new(AtomicU8::new(NEW)),
            rooms,
        };
        let id = &session.identity;
        let join = EventBody::Join {
            tenant: id.tenant.clone(),
            user: id.user.clone(),
            conn: session.conn,
            class: id.class.clone(),
        };
        if let Err(e) = self.publisher.publish(join).await {
            tracing::warn!(error = %e, "could not append a join; refusing the connection");
            return Err(HandshakeError::Unavailable);
        }
        if let Some(directory) = &self.directory {
            directory.saw(id);
        }
        s.join(session.rooms.to_vec());
        self.install_handlers(s, &session);
        s.extensions.insert(session.clone());
        metrics::counter!("presence_connections_opened_total", "transport" => "socketio")
            .increment(1);
        Ok(())
    }

    fn install_handlers(self: &Arc<Self>, s: &SocketRef, session: &Session) {
        let (cx, sn) = (self.clone(), session.clone());
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

        let (cx, sn) = (self.clone(), session.clone());
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

        let (cx, sn) = (self.clone(), session.clone());
        s.on(
            "presence:query",
            move |TryData(request): TryData<QueryRequest>, ack: AckSender| {
                let (cx, sn) = (cx.clone(), sn.clone());
                async move {
                    let _ = ack.send(&cx.query(&sn, request.ok()));
                }
            },
        );

        let (cx, sn) = (self.clone(), session.clone());
        s.on_disconnect(move |reason: DisconnectReason| {
            let (cx, sn) = (cx.clone(), sn.clone());
            async move { cx.on_disconnect(&sn, reason).await }
        });
    }

    async fn set_status(&self, sn: &Session, request: Option<StatusRequest>) -> Ack {
        const EVENT: &str = "user:status";
        let Some(request) = request else {
            return Ack::error(
                EVENT,
                "bad_payload",
                "expected {status: \"online\" | \"live\" | \"in_call\", details?: {...}}".into(),
            );
        };
        let status = match SetStatus::parse(&request.status) {
            Ok(status) => status,
            Err(e) => return Ack::error(EVENT, "unknown_status", e.to_string()),
        };
        let details = match request.details {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => match Details::parse(value) {
                Ok(details) => Some(details),
                Err(e) => return Ack::error(EVENT, "bad_details", e.to_string()),
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
                Ack::error(
                    EVENT,
                    "unavailable",
                    "status not saved: presence is unavailable right now; retry".into(),
                )
            }
        }
    }

    fn query(&self, sn: &Session, request: Option<QueryRequest>) -> Ack {
        const EVENT: &str = "presence:query";
        let Some(request) = request else {
            return Ack::error(
                EVENT,
                "bad_payload",
                "expected {userIds: [\"<userId>\", ...]}".into(),
            );
        };
        if request.user_ids.len() > MAX_QUERY_USERS {
            return Ack::error(
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
                Err(e) => return Ack::error(EVENT, "bad_user_id", format!("userIds[{i}]: {e}")),
            }
        }
        let id = &sn.identity;
        Ack {
            ok: true,
            error: None,
            presence: Some(
                self.view
                    .presence_for(&self.policy, &id.class, &id.tenant, users),
            ),
        }
    }

    async fn on_disconnect(&self, sn: &Session, reason: DisconnectReason) {
        if sn.lifecycle.swap(CLOSED, Ordering::AcqRel) == OPENED {
            self.local.closed(&sn.key(), &sn.rooms);
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
        if let Err(e) = self.publisher.publish(leave).await {
            tracing::warn!(error = %e, "could not append a leave; the sweep will close it");
        }
    }
}

/// Copies the request head of every Socket.io request out of the connection's read buffer.
///
/// hyper parses a request's URI and header values as slices of the connection's read buffer
/// (16 KiB), and the Socket.io layer keeps each connection's request head for as long as the
/// connection lives: without this copy, every open socket would pin that whole buffer. With
/// it the buffer is freed once the request is parsed (about 16 KB per connection saved).
pub(crate) async fn detach_request_head(mut req: axum::extract::Request) -> axum::extract::Request {
    if req.uri().path().starts_with(SOCKET_IO_PATH) {
        detach_head(&mut req);
    }
    req
}

/// Where the Socket.io layer answers.
const SOCKET_IO_PATH: &str = "/socket.io/";

fn detach_head<B>(req: &mut axum::http::Request<B>) {
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
    if let Ok(uri) = Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(
        req.uri().to_string().as_bytes(),
    )) {
        *req.uri_mut() = uri;
    }
    let headers = std::mem::take(req.headers_mut());
    let mut copied = HeaderMap::with_capacity(headers.len());
    let mut name = None;
    for (next, value) in headers {
        // The iterator names a header's first value only; the following ones repeat it.
        if let Some(next) = next {
            name = Some(HeaderName::from_bytes(next.as_str().as_bytes()).unwrap_or(next));
        }
        let Some(name) = name.clone() else { continue };
        let sensitive = value.is_sensitive();
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or(value);
        owned.set_sensitive(sensitive);
        copied.append(name, owned);
    }
    *req.headers_mut() = copied;
}

#[cfg(test)]
mod head_tests {
    use super::*;
    use axum::http::{HeaderValue, Request, Uri};
    use bytes::Bytes;

    fn within(buffer: &Bytes, part: &[u8]) -> bool {
        let start = buffer.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        at >= start && at < start + buffer.len()
    }

    #[test]
    fn the_copied_head_no_longer_points_into_the_read_buffer() {
        let buffer = Bytes::from_static(
            b"/socket.io/?EIO=4&transport=websocket|websocket|tab-7|tab-8|secret-token",
        );
        let uri = Uri::from_maybe_shared(buffer.slice(0..37)).expect("uri");
        let upgrade = HeaderValue::from_maybe_shared(buffer.slice(38..47)).expect("value");
        let tab_a = HeaderValue::from_maybe_shared(buffer.slice(48..53)).expect("value");
        let tab_b = HeaderValue::from_maybe_shared(buffer.slice(54..59)).expect("value");
        let mut token = HeaderValue::from_maybe_shared(buffer.slice(60..)).expect("value");
        token.set_sensitive(true);
        let mut req = Request::builder()
            .uri(uri)
            .header("upgrade", upgrade)
            .header("x-tab", tab_a)
            .header("x-tab", tab_b)
            .header("authorization", token)
            .body(())
            .expect("request");
        assert!(within(&buffer, req.uri().path().as_bytes()));
        assert!(within(&buffer, req.headers()["upgrade"].as_bytes()));

        detach_head(&mut req);

        assert_eq!(
            req.uri().to_string(),
            "/socket.io/?EIO=4&transport=websocket"
        );
        assert!(!within(&buffer, req.uri().path().as_bytes()));
        assert!(!within(&buffer, req.uri().query().unwrap_or("").as_bytes()));
        assert_eq!(req.headers()["upgrade"], "websocket");
        let tabs: Vec<_> = req.headers().get_all("x-tab").iter().collect();
        assert_eq!(
            tabs,
            ["tab-7", "tab-8"],
            "repeated headers keep every value, in order"
        );
        assert!(req.headers()["authorization"].is_sensitive());
        for value in req.headers().values() {
            assert!(!within(&buffer, value.as_bytes()));
        }
    }
}
