//! `GET /ws/active-users`: one WebSocket per tab, JSON text frames.
//!
//! The client authenticates with `{"type":"auth","customerId","sessionId","tabId"}` within
//! 10 s (`PRESENCE_WS_AUTH_TIMEOUT_MS`) and gets `hello`; then `ping` → `pong` (a ping is also the tab's beat) and a
//! `metrics:update` on every tick of its customer. Bad input gets an `error` frame; the socket
//! is closed with a specific code when it does not authenticate in time (4408), sends a frame
//! over the size limit (1009), keeps sending garbage (1008), is rate limited (4429), or
//! authenticates for a customer that does not allow the page's origin (4403).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use presence_events::{Millis, TabKey, Transport};
use tokio::sync::broadcast;

use super::protocol::{
    ClientMessage, InputError, MAX_MESSAGE_BYTES, TabRequest, leave, parse_client_message,
};
use super::rate_limit::{BlockedBy, Verdict};
use super::{ActiveUsersContext, http};
use crate::wire::ServerMessage;

/// Invalid messages tolerated before the socket is closed.
const MAX_INVALID: u32 = 5;

/// Close codes of this endpoint.
mod close {
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const POLICY: u16 = 1008;
    pub(super) const TOO_BIG: u16 = 1009;
    pub(super) const INTERNAL: u16 = 1011;
    pub(super) const AUTH_TIMEOUT: u16 = 4408;
    pub(super) const ORIGIN_NOT_ALLOWED: u16 = 4403;
    pub(super) const RATE_LIMITED: u16 = 4429;
}

/// Upgrades to the active-users protocol.
#[utoipa::path(
    get,
    path = "/ws/active-users",
    tag = "active-users",
    summary = "The widget's WebSocket: a tab's presence and its customer's live count",
    description = "JSON text frames, see docs/active-users.md: `auth` within 10 s, then `ping` \
        (the tab's beat) answered `pong`, and `metrics:update` on every tick. Bad frames get an \
        `error` frame; the socket is closed with 4408 (no auth in time), 1009 (frame over \
        4 KiB), 1008 (repeated garbage) or 4429 (rate limited).",
    params(
        ("Connection" = String, Header, description = "Names `Upgrade`", pattern = "(?i)^(.*[ ,])?upgrade([ ,].*)?$"),
        ("Upgrade" = String, Header, description = "`websocket`", pattern = "(?i)^websocket$"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`", pattern = "^13$"),
        ("Sec-WebSocket-Key" = String, Header, description = "16 random bytes, base64 (RFC 6455)"),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request (`not_a_websocket`)", body = http::ErrorBody),
        (status = 426, description = "The connection cannot be upgraded (`not_a_websocket`)", body = http::ErrorBody),
    )
)]
pub(super) async fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(cx): State<Arc<ActiveUsersContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return http::not_a_websocket(&rejection),
    };
    let ip = cx.limits.client_ip(peer, &headers);
    let origin = http::origin(&headers).map(str::to_owned);
    // Frames past our limit are read (up to 64 KiB) so the client can be told why it is closed.
    // Frames are small: a 4 KiB read buffer instead of the 128 KiB default keeps an idle
    // connection cheap (the buffer grows for the rare larger frame).
    ws.max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move { serve(socket, cx, ip, origin).await })
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;
type Source = futures::stream::SplitStream<WebSocket>;

struct Conn {
    sink: Sink,
    source: Source,
    invalid: u32,
}

/// What a received frame amounts to.
enum Incoming {
    Message(ClientMessage),
    /// Answered with an error frame; the socket stays open unless too many.
    Invalid(InputError),
    /// The socket must be closed with this code and reason.
    Fatal(u16, String),
    Closed,
}

impl Conn {
    /// Sends a frame; `false` if the socket is gone (or the frame could not be encoded,
    /// which is counted and logged where it is encoded).
    async fn send(&mut self, message: ServerMessage<'_>) -> bool {
        let Some(text) = message.to_text() else {
            return false;
        };
        self.sink.send(Message::Text(text.into())).await.is_ok()
    }

    async fn close(&mut self, code: u16, reason: &str) {
        metrics::counter!("presence_ws_closed_total", "code" => code.to_string()).increment(1);
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
        let _ = self.sink.close().await;
    }

    async fn receive(&mut self) -> Incoming {
        loop {
            let Some(frame) = self.source.next().await else {
                return Incoming::Closed;
            };
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(Message::Binary(_)) => {
                    return Incoming::Invalid(InputError::general(
                        "binary_not_supported",
                        "send JSON text frames",
                    ));
                }
                Ok(Message::Close(_)) => return Incoming::Closed,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Err(e) => {
                    let e = e.to_string();
                    return if e.contains("too long") || e.contains("too big") {
                        Incoming::Fatal(
                            close::TOO_BIG,
                            format!("message too big: limit {MAX_MESSAGE_BYTES} bytes"),
                        )
                    } else {
                        Incoming::Closed
                    };
                }
            };
            if text.len() > MAX_MESSAGE_BYTES {
                return Incoming::Fatal(
                    close::TOO_BIG,
                    format!(
                        "message too big: {} bytes, limit {MAX_MESSAGE_BYTES}",
                        text.len()
                    ),
                );
            }
            return match parse_client_message(text.as_str()) {
                Ok(message) => Incoming::Message(message),
                Err(e) => Incoming::Invalid(e),
            };
        }
    }

    /// Tells the client what was wrong; `false` once it has been wrong too often (closed).
    async fn reject(&mut self, e: &InputError) -> bool {
        metrics::counter!("presence_ws_rejected_total", "reason" => e.code).increment(1);
        self.invalid += 1;
        let message = match e.field {
            Some(field) if !e.message.contains(field) => format!("{field}: {}", e.message),
            _ => e.message.clone(),
        };
        self.send(ServerMessage::Error {
            code: e.code,
            message: &message,
        })
        .await;
        if self.invalid >= MAX_INVALID {
            self.close(close::POLICY, "too many invalid messages").await;
            return false;
        }
        true
    }
}

async fn serve(socket: WebSocket, cx: Arc<ActiveUsersContext>, ip: IpAddr, origin: Option<String>) {
    let (sink, source) = socket.split();
    let mut conn = Conn {
        sink,
        source,
        invalid: 0,
    };
    let Some(request) = authenticate(&mut conn, &cx, ip, origin.as_deref()).await else {
        return;
    };
    let tab = request.tab.clone();
    metrics::gauge!("presence_connections", "transport" => "websocket").increment(1.0);
    metrics::counter!("presence_connections_opened_total", "transport" => "websocket").increment(1);
    let updates = cx.hub.subscribe(&tab.tenant);
    let joined = cx
        .publisher
        .publish(request.join(Transport::Websocket, cx.sessions.source(ip)))
        .await;
    if let Err(e) = joined {
        tracing::warn!(error = %e, "could not append a session join");
        conn.send(ServerMessage::Error {
            code: "unavailable",
            message: "active users are unavailable right now; reconnect later",
        })
        .await;
        conn.close(close::INTERNAL, "unavailable").await;
    } else {
        conn.send(ServerMessage::Hello {
            timestamp: Millis::now(),
            session_id: &tab.session,
        })
        .await;
        follow(&mut conn, &cx, &tab, ip, updates).await;
        // A pending ping must not land after the leave.
        cx.beats.forget_tab(&tab).await;
        cx.sessions.release(ip, &tab.tenant, &tab.session);
        let left = cx.publisher.publish_departure(leave(tab.clone())).await;
        if let Err(e) = left {
            tracing::warn!(error = %e, "could not append a session leave; the tab expires instead");
        }
    }
    metrics::gauge!("presence_connections", "transport" => "websocket").decrement(1.0);
}

/// Waits for a valid `auth` within the auth timeout; `None` if the socket was closed.
async fn authenticate(
    conn: &mut Conn,
    cx: &ActiveUsersContext,
    ip: IpAddr,
    origin: Option<&str>,
) -> Option<TabRequest> {
    let deadline = tokio::time::Instant::now() + cx.auth_timeout;
    loop {
        let incoming = tokio::select! {
            incoming = conn.receive() => incoming,
            _ = tokio::time::sleep_until(deadline) => {
                let reason = format!("authentication timeout: send auth within {} ms", cx.auth_timeout.as_millis());
                conn.close(close::AUTH_TIMEOUT, &reason).await;
                return None;
            }
        };
        match incoming {
            Incoming::Message(ClientMessage::Auth(request)) => {
                // Before the customer's budget is charged: pages of other sites must not use it.
                if let Err(refusal) = cx.origins.check(&request.tab.tenant, origin) {
                    let _ = cx.limits.check(ip, None);
                    metrics::counter!("presence_ws_rejected_total", "reason" => "origin_not_allowed")
                        .increment(1);
                    let message = refusal.message(&request.tab.tenant);
                    conn.send(ServerMessage::Error {
                        code: "origin_not_allowed",
                        message: &message,
                    })
                    .await;
                    conn.close(close::ORIGIN_NOT_ALLOWED, "origin not allowed")
                        .await;
                    return None;
                }
                match cx.limits.check(ip, Some(&request.tab.tenant)) {
                    Verdict::Allowed(_) => {
                        let tab = &request.tab;
                        let Err(limit) =
                            cx.sessions
                                .admit(ip, &tab.tenant, &tab.session, Millis::now())
                        else {
                            return Some(request);
                        };
                        metrics::counter!("presence_ws_rejected_total", "reason" => "too_many_sessions")
                            .increment(1);
                        let message = format!(
                            "this address already counts {limit} sessions for customer {}, the most allowed",
                            tab.tenant
                        );
                        conn.send(ServerMessage::Error {
                            code: "too_many_sessions",
                            message: &message,
                        })
                        .await;
                        conn.close(close::RATE_LIMITED, "too many sessions").await;
                        return None;
                    }
                    Verdict::Blocked {
                        by,
                        retry_after_secs,
                        ..
                    } => {
                        let message = format!(
                            "too many requests from this {}; retry in {retry_after_secs} s",
                            match by {
                                BlockedBy::Ip => "IP address",
                                BlockedBy::Customer | BlockedBy::Sessions => "customer",
                            }
                        );
                        metrics::counter!("presence_rate_limited_total", "blocked_by" => "websocket").increment(1);
                        conn.send(ServerMessage::Error {
                            code: "rate_limited",
                            message: &message,
                        })
                        .await;
                        conn.close(close::RATE_LIMITED, "rate limited").await;
                        return None;
                    }
                }
            }
            Incoming::Message(ClientMessage::Ping) => {
                let e = InputError::general("not_authenticated", "send auth first");
                if !conn.reject(&e).await {
                    return None;
                }
            }
            Incoming::Invalid(e) => {
                if !conn.reject(&e).await {
                    return None;
                }
            }
            Incoming::Fatal(code, reason) => {
                conn.close(code, &reason).await;
                return None;
            }
            Incoming::Closed => return None,
        }
    }
}

/// Serves an authenticated tab until it closes or the edge shuts down.
async fn follow(
    conn: &mut Conn,
    cx: &ActiveUsersContext,
    tab: &TabKey,
    ip: IpAddr,
    mut updates: broadcast::Receiver<Arc<str>>,
) {
    if let Some(latest) = cx.hub.latest(&tab.tenant) {
        conn.send(ServerMessage::MetricsUpdate { data: &latest })
            .await;
    }
    loop {
        tokio::select! {
            incoming = conn.receive() => match incoming {
                Incoming::Message(ClientMessage::Ping) => {
                    cx.beats.tab_beat(tab);
                    // Keeps the session held by its address (it was admitted at auth).
                    let _ = cx.sessions.admit(ip, &tab.tenant, &tab.session, Millis::now());
                    if !conn.send(ServerMessage::Pong { timestamp: Millis::now() }).await {
                        return;
                    }
                }
                Incoming::Message(ClientMessage::Auth(_)) => {
                    let e = InputError::general("already_authenticated", "this socket is already authenticated");
                    if !conn.reject(&e).await {
                        return;
                    }
                }
                Incoming::Invalid(e) => {
                    if !conn.reject(&e).await {
                        return;
                    }
                }
                Incoming::Fatal(code, reason) => {
                    conn.close(code, &reason).await;
                    return;
                }
                Incoming::Closed => return,
            },
            frame = updates.recv() => match frame {
                Ok(frame) => {
                    if conn.sink.send(Message::Text(Utf8Bytes::from(&*frame))).await.is_err() {
                        return;
                    }
                }
                // Skipped ticks are fine: the next one carries the current value.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = cx.shutdown.cancelled() => {
                conn.close(close::GOING_AWAY, "server shutting down").await;
                return;
            }
        }
    }
}
