//! Socket.io presence on the default namespace: who is online, pushed to who may see it.
//!
//! A socket is admitted by its [`handshake`] (its `join` durable in the log before the client
//! hears it is connected), then sends heartbeats, statuses and queries ([`handlers`]); the
//! edge's [`registry`] counts the sockets connected here. Every socket joins the audience
//! room of each class of users it may see ([`visibility`]). The [`fanout`] reads the changes
//! stream, keeps the edge's [`view`] of everyone's presence current and emits each change to
//! its one audience room. With a database, connected users are recorded in the user
//! [`directory`].
//!
//! A socket may instead ask, at its handshake, for the users it subscribes to only
//! ([`subscriptions`]) and for updates coalesced per window ([`batching`]); every frame and
//! the acks of `presence:subscribe` and `presence:sync` carry a [`cursor`], with which a
//! reconnecting client is told only what it missed.

mod batching;
mod connection;
mod cursor;
mod directory;
mod expiry;
mod fanout;
mod handlers;
mod handshake;
mod registry;
mod request_head;
mod subscriptions;
mod view;
pub(crate) mod visibility;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use presence_auth::Identity;
use presence_events::{Subjects, TenantId, ViewerClass};
use presence_log::EventLog;
use presence_store::Store;
use presence_telemetry::Readiness;
use socketioxide::SocketIo;
use socketioxide::layer::SocketIoLayer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ingress::{BeatBatcher, EventPublisher, Ingress};
use crate::wire::Announcements;
use directory::Directory;
use expiry::TokenExpiry;
use subscriptions::SubscriptionIndex;

pub(crate) use handshake::Authenticator;
pub(crate) use registry::LocalConnections;
pub(crate) use request_head::{detach_request_head, refuse_oversized_polls};
pub(crate) use view::PresenceView;
pub use visibility::VisibilityPolicy;

/// How Socket.io presence is set up on this edge.
pub(crate) struct PresenceSettings {
    pub(crate) authenticator: Authenticator,
    pub(crate) policy: VisibilityPolicy,
    /// Packets queued per connection before updates to it are dropped.
    pub(crate) socket_buffer: usize,
    /// Largest Socket.io packet (and polling payload) a client may send, in bytes.
    pub(crate) max_packet_bytes: usize,
    /// Socket.io connections one user may have open on this edge.
    pub(crate) max_connections_per_user: u32,
    /// Users one subscriptions socket may subscribe to.
    pub(crate) max_subscriptions: usize,
    /// Users one `presence:query` may name.
    pub(crate) max_query_ids: usize,
    /// How long a batch socket's window stays open.
    pub(crate) batch_window: std::time::Duration,
    /// Whether an open socket counts as heartbeating (transport liveness).
    pub(crate) transport_liveness: bool,
    /// Engine.IO ping interval and timeout.
    pub(crate) ping: (std::time::Duration, std::time::Duration),
    /// Where connected users are recorded, if anywhere.
    pub(crate) store: Option<Store>,
    /// Told of every change the view takes in.
    pub(crate) announcements: Announcements,
}

/// Socket.io presence, started: what the HTTP API and the operators' endpoints read.
pub(crate) struct Presence {
    pub(crate) view: Arc<PresenceView>,
    pub(crate) local: Arc<LocalConnections>,
    pub(crate) policy: VisibilityPolicy,
    io: SocketIo,
    /// Set when the edge drains: closing sockets then appends no leaves.
    draining: Arc<AtomicBool>,
}

/// What the socket handlers share.
struct SocketContext {
    auth: Authenticator,
    directory: Option<Directory>,
    publisher: EventPublisher,
    beats: BeatBatcher,
    view: Arc<PresenceView>,
    policy: VisibilityPolicy,
    local: Arc<LocalConnections>,
    draining: Arc<AtomicBool>,
    /// When each socket's token expires.
    expiry: Arc<TokenExpiry>,
    /// Socket.io connections one user may have open on this edge.
    max_connections_per_user: u32,
    /// Users one `presence:query` may name.
    max_query_ids: usize,
    /// Whether an open socket counts as heartbeating (transport liveness).
    transport_liveness: bool,
    /// Audience rooms per (tenant, viewer class, batch), computed once.
    rooms: Mutex<AudienceRooms>,
    /// Who subscribed to whom (subscriptions sockets).
    subscriptions: Arc<Mutex<SubscriptionIndex>>,
}

/// The audience rooms of each (tenant, viewer class, batch).
type AudienceRooms = HashMap<(TenantId, ViewerClass, bool), Arc<[String]>>;

impl SocketContext {
    /// The audience rooms of a broadcast viewer, shared by every socket of its tenant and
    /// class: the batch rooms of them if it takes `presence-updates` frames.
    fn audience_rooms(&self, id: &Identity, batch: bool) -> Arc<[String]> {
        let mut cache = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((id.tenant.clone(), id.class.clone(), batch))
            .or_insert_with(|| {
                let rooms = self.policy.rooms_of_viewer(&id.tenant, &id.class);
                if batch {
                    rooms.iter().map(|r| visibility::batch_room(r)).collect()
                } else {
                    rooms.into()
                }
            })
            .clone()
    }
}

impl Presence {
    /// Installs the Socket.io namespace and starts the fan-out from `log` on `tasks`. The
    /// returned layer serves Socket.io on the edge's public router; `readiness` turns true
    /// once the fan-out follows the changes stream.
    pub(crate) fn start(
        settings: PresenceSettings,
        ingress: &Ingress,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        readiness: Readiness,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> (Self, SocketIoLayer) {
        let (layer, io) = SocketIo::builder()
            .max_payload(settings.max_packet_bytes as u64)
            // A WebSocket message over the limit closes the socket (1009).
            .ws_max_message_size(settings.max_packet_bytes)
            .ws_max_frame_size(settings.max_packet_bytes)
            .ping_interval(settings.ping.0)
            .ping_timeout(settings.ping.1)
            .max_buffer_size(settings.socket_buffer)
            // Client frames are heartbeats, statuses and queries: a few hundred bytes. A
            // larger frame grows the buffer as it is read; 4 KiB (the default) idles per socket.
            .ws_read_buffer_size(1024)
            .build_layer();
        let view = Arc::new(PresenceView::new(settings.store.clone(), view::GONE_CACHE));
        let local = Arc::new(LocalConnections::default());
        let draining = Arc::new(AtomicBool::new(false));
        let directory = settings
            .store
            .map(|store| Directory::start(store, tasks, shutdown.clone()));
        let expiry = Arc::new(TokenExpiry::default());
        let subscriptions = Arc::new(Mutex::new(SubscriptionIndex::new(
            settings.max_subscriptions,
        )));
        {
            let (expiry, io, shutdown) = (expiry.clone(), io.clone(), shutdown.clone());
            tasks.spawn(async move { expiry.close_expired(io, shutdown).await });
        }
        handshake::register(
            &io,
            Arc::new(SocketContext {
                auth: settings.authenticator,
                directory,
                publisher: ingress.publisher.clone(),
                beats: ingress.beats.clone(),
                view: view.clone(),
                policy: settings.policy.clone(),
                local: local.clone(),
                draining: draining.clone(),
                expiry,
                max_connections_per_user: settings.max_connections_per_user,
                max_query_ids: settings.max_query_ids,
                transport_liveness: settings.transport_liveness,
                rooms: Mutex::default(),
                subscriptions: subscriptions.clone(),
            }),
        );
        tasks.spawn(
            fanout::FanOut {
                log,
                subjects,
                view: view.clone(),
                io: io.clone(),
                readiness,
                local: local.clone(),
                announcements: settings.announcements,
                last_full_warning: Mutex::default(),
                subscriptions,
                policy: settings.policy.clone(),
                batch_window: settings.batch_window,
            }
            .run(shutdown),
        );
        let presence = Self {
            view,
            local,
            policy: settings.policy,
            io,
            draining,
        };
        (presence, layer)
    }

    /// Closes every socket *without* appending their leaves. Clients reconnect through the
    /// balancer to another edge within the heartbeat timeout and their users never go
    /// offline; the closed connections are swept, and only users who do not come back go
    /// offline, after timeout + sweep.
    pub(crate) async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.io.close().await;
    }
}
