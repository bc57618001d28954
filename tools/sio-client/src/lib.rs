//! A lean Socket.IO v5 client (Engine.IO v4, WebSocket transport only) for the end-to-end
//! tests and the load generator.
//!
//! It speaks the wire protocol the official JavaScript client speaks over WebSocket: the
//! Engine.IO open packet, ping/pong, namespace connect with an `auth` payload, events, and
//! acknowledgements. It is written here rather than taken from a crate because the load
//! generator holds tens of thousands of these at once: one small task pair per connection
//! and no HTTP client or TLS stack.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SioError {
    /// The WebSocket could not be opened.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server refused the namespace connection (`connect_error`).
    #[error("connect_error: {0}")]
    ConnectError(String),
    /// The server spoke something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// Nothing arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A function called with each server event (name, data) as it arrives.
pub type EventHandler = Arc<dyn Fn(&str, Value) + Send + Sync>;

/// What becomes of the events the server sends.
#[derive(Clone, Default)]
pub enum Events {
    /// Queued for [`SioClient::next_event`] and [`SioClient::wait_for`] (the default).
    #[default]
    Queue,
    /// Dropped unparsed: for clients that receive many events and look at none of them.
    /// Engine.IO pings and acknowledgements are still answered.
    Discard,
    /// Handed to a function on the connection's reader task, as they arrive.
    Handler(EventHandler),
}

/// How [`SioClient::connect_with`] connects.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// What becomes of server events.
    pub events: Events,
    /// Size of the WebSocket read buffer, in bytes (`None`: tungstenite's default, 128 KiB,
    /// which every read zero-fills: resident memory and memset time per connection).
    pub read_buffer_size: Option<usize>,
}

/// One Socket.IO connection to the default namespace.
pub struct SioClient {
    out: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    acks: Acks,
    next_ack: AtomicU64,
    sid: String,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    heartbeat: Option<JoinHandle<()>>,
    /// Its sender lives in the reader task: it is dropped when the connection ends.
    open: watch::Receiver<()>,
}

impl SioClient {
    /// Connects to `base` (`http://host:port`) with `auth` as the handshake payload; resolves
    /// once the namespace accepted (or refused) the connection.
    pub async fn connect(base: &str, auth: Value) -> Result<Self, SioError> {
        Self::connect_with(base, auth, ConnectOptions::default()).await
    }

    /// As [`SioClient::connect`], with `options`.
    pub async fn connect_with(
        base: &str,
        auth: Value,
        options: ConnectOptions,
    ) -> Result<Self, SioError> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http", "ws", 1)
        );
        let config = options
            .read_buffer_size
            .map(|size| WebSocketConfig::default().read_buffer_size(size));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, config, false).await?;
        let (mut sink, mut stream) = ws.split();

        // Engine.IO open packet.
        match next_text(&mut stream).await? {
            t if t.starts_with('0') => {}
            other => {
                return Err(SioError::Protocol(format!(
                    "expected open packet, got {other:?}"
                )));
            }
        }
        sink.send(Message::text(format!("40{auth}"))).await?;
        // Events may arrive before the CONNECT packet (the server puts the socket in its rooms
        // first); like the official client, keep them for after the connection.
        let mut early = Vec::new();
        let sid = loop {
            let text = next_text(&mut stream).await?;
            if text == "2" {
                sink.send(Message::text("3")).await?;
            } else if text.starts_with("42") {
                early.push(text);
            } else if let Some(body) = text.strip_prefix("40") {
                let v: Value = serde_json::from_str(body)
                    .map_err(|e| SioError::Protocol(format!("connect packet: {e}")))?;
                break v["sid"].as_str().unwrap_or_default().to_owned();
            } else if let Some(body) = text.strip_prefix("44") {
                let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let message = v["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or(body.to_owned());
                return Err(SioError::ConnectError(message));
            } else {
                return Err(SioError::Protocol(format!(
                    "unexpected packet {text:?} during connect"
                )));
            }
        };

        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let event_sink = match options.events {
            Events::Queue => EventSink::Queue(events_tx),
            Events::Discard => EventSink::Discard,
            Events::Handler(f) => EventSink::Handler(f),
        };
        let acks: Acks = Arc::default();
        for text in early {
            dispatch(&text, &out, &event_sink, &acks);
        }
        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let closing = matches!(msg, Message::Close(_));
                if sink.send(msg).await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let (open_tx, open) = watch::channel(());
        let reader = {
            let out = out.clone();
            let acks = acks.clone();
            tokio::spawn(async move {
                let _open = open_tx;
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    dispatch(text.as_str(), &out, &event_sink, &acks);
                }
            })
        };
        Ok(Self {
            out,
            events,
            acks,
            next_ack: AtomicU64::new(1),
            sid,
            reader,
            writer,
            heartbeat: None,
            open,
        })
    }

    /// Resolves once the connection has ended (closed by the server, or broken).
    pub async fn closed(&self) {
        let mut open = self.open.clone();
        // Only the end of the reader task (which drops the sender) completes this.
        while open.changed().await.is_ok() {}
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }

    /// Sends one `user:heartbeat`, as [`SioClient::start_heartbeat`] does on its timer.
    pub fn heartbeat(&self) -> Result<(), SioError> {
        self.out
            .send(Message::text(HEARTBEAT))
            .map_err(|_| SioError::Closed)
    }

    /// The Socket.IO session id the server gave.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Emits an event without acknowledgement.
    pub fn emit(&self, event: &str, data: Value) -> Result<(), SioError> {
        let packet = format!("42{}", serde_json::json!([event, data]));
        self.out
            .send(Message::text(packet))
            .map_err(|_| SioError::Closed)
    }

    /// Emits an event and waits for its acknowledgement.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, SioError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let packet = format!("42{id}{}", serde_json::json!([event, data]));
        self.out
            .send(Message::text(packet))
            .map_err(|_| SioError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(SioError::Closed),
            Err(_) => Err(SioError::Timeout(timeout)),
        }
    }

    /// Sends `user:heartbeat` every `every` until [`SioClient::stop_heartbeat`].
    pub fn start_heartbeat(&mut self, every: Duration) {
        let out = self.out.clone();
        self.stop_heartbeat();
        self.heartbeat = Some(tokio::spawn(async move {
            let mut timer = tokio::time::interval(every);
            loop {
                timer.tick().await;
                if out.send(Message::text(HEARTBEAT)).is_err() {
                    return;
                }
            }
        }));
    }

    /// Stops sending heartbeats; the socket stays open (a "silent" client).
    pub fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// The next server event, or `None` if nothing arrives within `timeout` or the connection closed.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for an event named `event` whose data satisfies `matches`; other events are dropped.
    pub async fn wait_for(
        &mut self,
        event: &str,
        timeout: Duration,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> Result<Value, SioError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((name, data))) if name == event && matches(&data) => return Ok(data),
                Ok(Some(_)) => {}
                Ok(None) => return Err(SioError::Closed),
                Err(_) => return Err(SioError::Timeout(timeout)),
            }
        }
    }

    /// Every event received within `window`.
    pub async fn drain_for(&mut self, window: Duration) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            seen.push(ev);
        }
        seen
    }

    /// Disconnects politely (namespace disconnect, then close).
    pub async fn disconnect(mut self) {
        self.stop_heartbeat();
        let _ = self.out.send(Message::text("41"));
        let _ = self.out.send(Message::Close(None));
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.writer).await;
        self.reader.abort();
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        self.stop_heartbeat();
        self.reader.abort();
        self.writer.abort();
    }
}

/// The `user:heartbeat` event packet.
const HEARTBEAT: &str = "42[\"user:heartbeat\"]";

/// Where [`dispatch`] puts events.
enum EventSink {
    Queue(mpsc::UnboundedSender<(String, Value)>),
    Discard,
    Handler(EventHandler),
}

impl EventSink {
    fn wants_events(&self) -> bool {
        !matches!(self, EventSink::Discard)
    }

    fn deliver(&self, name: String, data: Value) {
        match self {
            EventSink::Queue(tx) => {
                let _ = tx.send((name, data));
            }
            EventSink::Discard => {}
            EventSink::Handler(f) => f(&name, data),
        }
    }
}

async fn next_text<S>(stream: &mut S) -> Result<String, SioError>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => return Err(SioError::Closed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

fn dispatch(text: &str, out: &mpsc::UnboundedSender<Message>, events: &EventSink, acks: &Acks) {
    if text == "2" {
        let _ = out.send(Message::text("3"));
        return;
    }
    let Some(packet) = text.strip_prefix('4') else {
        return;
    };
    let kind = packet.as_bytes().first().copied();
    let body = &packet[1.min(packet.len())..];
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    let (id, json) = body.split_at(digits);
    match kind {
        Some(b'2') if events.wants_events() => {
            if let Ok(Value::Array(mut parts)) = serde_json::from_str::<Value>(json) {
                if parts.is_empty() {
                    return;
                }
                let name = parts.remove(0).as_str().unwrap_or_default().to_owned();
                let data = parts.into_iter().next().unwrap_or(Value::Null);
                events.deliver(name, data);
            }
        }
        Some(b'3') => {
            let Ok(id) = id.parse::<u64>() else { return };
            let data = match serde_json::from_str::<Value>(json) {
                Ok(Value::Array(parts)) => parts.into_iter().next().unwrap_or(Value::Null),
                _ => Value::Null,
            };
            if let Some(tx) = acks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                let _ = tx.send(data);
            }
        }
        Some(b'1') => events.deliver("disconnect".into(), Value::Null),
        _ => {}
    }
}
