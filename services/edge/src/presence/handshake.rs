//! The Socket.io handshake: `auth: { token }` (a JWT) or, only in development with
//! `SOCKET_ALLOW_INSECURE_USERID=true`, `auth: { userId, gender }`. Each refusal is a
//! `connect_error` saying why, counted by reason.
//!
//! Admission happens entirely in the connect middleware, before the client is told it is
//! connected: socketioxide sends the CONNECT packet before it runs the connect handler, so a
//! client may emit before that handler would have registered anything. Here its events, its
//! rooms and its `join` (durable in the log) are all in place first; if the join cannot be
//! appended the client gets a `connect_error` saying so and can retry.
//!
//! The handshake also chooses how the socket receives presence ([`Delivery`]):
//! `auth: {delivery: "broadcast" | "subscriptions", batch?: boolean}`; a stock client that
//! sends neither gets broadcast, one `presence-update` per change, as always.

use std::sync::Arc;

use presence_auth::{AuthError, Identity, Verifier};
use presence_events::EventBody;
use serde::Deserialize;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use super::SocketContext;
use super::connection::Connection;

/// How handshakes are authenticated.
pub(crate) struct Authenticator {
    pub(crate) verifier: Option<Verifier>,
    /// `auth: { userId, gender }` accepted (development only).
    pub(crate) insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct HandshakeAuth {
    token: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    gender: Option<String>,
    tenant: Option<String>,
    /// `"broadcast"` (the default) or `"subscriptions"`.
    delivery: Option<serde_json::Value>,
    /// Updates coalesced into `presence-updates` frames.
    batch: Option<serde_json::Value>,
}

/// How a socket receives presence, chosen at its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Delivery {
    /// Only the users it subscribed to (`presence:subscribe`), not everyone it may see.
    pub(super) subscriptions: bool,
    /// `presence-updates` frames, once per `PRESENCE_BATCH_MS`, instead of one
    /// `presence-update` per change.
    pub(super) batch: bool,
}

impl Delivery {
    /// The delivery an `auth` asks for.
    fn of(auth: &HandshakeAuth) -> Result<Self, HandshakeError> {
        let subscriptions = match &auth.delivery {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::String(mode)) if mode == "broadcast" => false,
            Some(serde_json::Value::String(mode)) if mode == "subscriptions" => true,
            Some(other) => return Err(HandshakeError::BadDelivery(other.to_string())),
        };
        let batch = match &auth.batch {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(batch)) => *batch,
            Some(other) => return Err(HandshakeError::BadBatch(other.to_string())),
        };
        Ok(Self {
            subscriptions,
            batch,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
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
    #[error("too many connections for this user (at most {0}): close one first")]
    TooManyConnections(u32),
    #[error("auth.delivery must be \"broadcast\" or \"subscriptions\", got {0}")]
    BadDelivery(String),
    #[error("auth.batch must be true or false, got {0}")]
    BadBatch(String),
}

impl HandshakeError {
    fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Auth(AuthError::Missing) => "missing",
            HandshakeError::Auth(AuthError::Expired) => "expired",
            HandshakeError::Auth(AuthError::NotYetValid) => "not_yet_valid",
            HandshakeError::Auth(AuthError::TooLarge) => "too_large",
            HandshakeError::Auth(AuthError::WrongIssuer | AuthError::WrongAudience) => {
                "wrong_issuer_or_audience"
            }
            HandshakeError::Auth(AuthError::UnknownKey(_) | AuthError::NoKeyId) => "unknown_key",
            HandshakeError::Auth(_) => "invalid",
            HandshakeError::BadPayload => "bad_payload",
            HandshakeError::NoVerifier => "no_verifier",
            HandshakeError::InsecureDisabled => "insecure_disabled",
            HandshakeError::Unavailable => "unavailable",
            HandshakeError::TooManyConnections(_) => "too_many_connections",
            HandshakeError::BadDelivery(_) | HandshakeError::BadBatch(_) => "bad_delivery",
        }
    }
}

impl Authenticator {
    /// Verifies a token sent on a live connection (`auth:refresh`).
    pub(super) fn verify(&self, token: &str) -> Result<Identity, HandshakeError> {
        Ok(self
            .verifier
            .as_ref()
            .ok_or(HandshakeError::NoVerifier)?
            .verify(token)?)
    }

    fn authenticate(
        &self,
        auth: Option<HandshakeAuth>,
    ) -> Result<(Identity, Delivery), HandshakeError> {
        let auth = auth.ok_or(HandshakeError::BadPayload)?;
        let delivery = Delivery::of(&auth)?;
        let identity = match (auth.token, auth.user_id) {
            (Some(token), _) => Ok(self
                .verifier
                .as_ref()
                .ok_or(HandshakeError::NoVerifier)?
                .verify(&token)?),
            (None, Some(user)) if self.insecure => Ok(Identity::from_claims(
                &user,
                auth.gender.as_deref(),
                auth.tenant.as_deref(),
            )?),
            (None, Some(_)) => Err(HandshakeError::InsecureDisabled),
            (None, None) => Err(AuthError::Missing.into()),
        }?;
        Ok((identity, delivery))
    }
}

/// Installs the default namespace: admission in the connect middleware (above), then the
/// connection is counted in the edge's registry once socketioxide has opened it.
pub(super) fn register(io: &SocketIo, cx: Arc<SocketContext>) {
    let (local, beats, transport) = (cx.local.clone(), cx.beats.clone(), cx.transport_liveness);
    let admit = move |s: SocketRef, TryData(auth): TryData<HandshakeAuth>| {
        let cx = cx.clone();
        async move {
            let result = admit(cx, &s, auth.ok()).await;
            if let Err(e) = &result {
                metrics::counter!("presence_handshakes_rejected_total", "reason" => e.reason())
                    .increment(1);
            }
            result
        }
    };
    let opened = move |s: SocketRef| async move {
        let Some(connection) = s.extensions.get::<Connection>() else {
            return;
        };
        // Transport liveness: kept alive before it counts as open, so a disconnect racing
        // this either lets go after it or finds it closed here.
        if transport {
            beats.keep_alive(connection.conn, &connection.identity);
        }
        if connection.open() {
            local.opened(&connection.rooms);
        } else if transport {
            beats.let_go(connection.conn);
        }
    };
    io.ns("/", opened.with(admit));
}

async fn admit(
    cx: Arc<SocketContext>,
    s: &SocketRef,
    auth: Option<HandshakeAuth>,
) -> Result<(), HandshakeError> {
    let (identity, delivery) = cx.auth.authenticate(auth)?;
    // A subscriptions socket joins no audience room: only its own, where the updates of the
    // users it subscribed to are sent.
    let rooms = if delivery.subscriptions {
        std::sync::Arc::from(vec![s.id.to_string()])
    } else {
        cx.audience_rooms(&identity, delivery.batch)
    };
    let connection = Connection::new(s.id, identity, rooms, delivery);
    if !cx
        .local
        .admit_user(connection.key(), cx.max_connections_per_user)
    {
        return Err(HandshakeError::TooManyConnections(
            cx.max_connections_per_user,
        ));
    }
    let id = &connection.identity;
    let join = EventBody::Join {
        tenant: id.tenant.clone(),
        user: id.user.clone(),
        conn: connection.conn,
        class: id.class.clone(),
    };
    if let Err(e) = cx.publisher.publish(join).await {
        tracing::warn!(error = %e, "could not append a join; refusing the connection");
        cx.local.release_user(&connection.key());
        return Err(HandshakeError::Unavailable);
    }
    if let Some(directory) = &cx.directory {
        directory.saw(id);
    }
    if let Some(exp) = connection.identity.expires_at {
        cx.expiry.track(connection.sid, exp);
    }
    if delivery.subscriptions {
        cx.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(s.id, id.tenant.clone(), id.class.clone(), delivery.batch);
    }
    s.join(connection.rooms.to_vec());
    super::handlers::install(&cx, s, &connection);
    s.extensions.insert(connection);
    metrics::counter!("presence_connections_opened_total", "transport" => "socketio").increment(1);
    Ok(())
}
