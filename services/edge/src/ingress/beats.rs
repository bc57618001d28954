//! Heartbeat batching: clients beat every few seconds, but an edge appends at most one beat
//! message per flush interval (split only past a size limit), carrying the latest beat of
//! every connection that beat; likewise one `session_beat` for the active-users tabs that
//! pinged. Log traffic stays flat however many clients beat.
//!
//! A beat costs one short lock and one map write, in the socket's own task: no task, no
//! channel hop and no copy of the connection's identity (shared, copied once per flush).
//!
//! A connection (or tab) that closes is forgotten here before its leave is appended, so a
//! pending beat can never land after the leave and resurrect it: forgetting waits for a
//! batch that may hold its beat to be durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use presence_auth::Identity;
use presence_events::{BeatEntry, ConnId, EventBody, Millis, SessionBeatEntry, TabKey};
use presence_log::publish_all_durable;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::EventPublisher;

/// Most connections in one beat message (keeps messages well under NATS' 1 MiB limit).
const MAX_BEATS_PER_MESSAGE: usize = 2_000;

#[derive(Default)]
struct Pending {
    /// The latest beat of each connection that beat, with its (shared) identity.
    conns: HashMap<ConnId, (Arc<Identity>, Millis)>,
    /// The latest beat of each tab, and where it came from when it came on its own (HTTP).
    tabs: HashMap<TabKey, (Millis, Option<String>)>,
    /// Senders of the beats in this batch that wait for it to be durable.
    waiters: Vec<oneshot::Sender<bool>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// With transport liveness, the open connections, beaten on the edge's own clock.
    alive: Mutex<HashMap<ConnId, Arc<Identity>>>,
    /// Held while a batch taken from `pending` is appended: forgetting a connection waits
    /// for it.
    appending: tokio::sync::Mutex<()>,
    /// `presence_heartbeats_received_total`, looked up once rather than at every beat.
    received: metrics::Counter,
}

/// Handle to the batch, shared by every socket of the edge; a task appends it.
#[derive(Clone)]
pub(crate) struct BeatBatcher {
    shared: Arc<Shared>,
}

impl BeatBatcher {
    /// Starts the task appending the batch every `flush_every`; with `transport_beats`,
    /// it also beats every connection kept alive (see [`BeatBatcher::keep_alive`]) that often.
    pub(crate) fn start(
        publisher: EventPublisher,
        flush_every: Duration,
        transport_beats: Option<Duration>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            alive: Mutex::default(),
            appending: tokio::sync::Mutex::new(()),
            received: metrics::counter!("presence_heartbeats_received_total"),
        });
        tasks.spawn(batch_beats(
            shared.clone(),
            publisher,
            (flush_every, transport_beats),
            shutdown,
        ));
        Self { shared }
    }

    /// Transport liveness: connection `conn` beats on the edge's clock for as long as it is
    /// open (its transport closes it when the client stops answering pings).
    pub(crate) fn keep_alive(&self, conn: ConnId, identity: &Arc<Identity>) {
        let mut alive = self.shared.alive.lock().unwrap_or_else(|e| e.into_inner());
        alive.insert(conn, identity.clone());
    }

    /// Stops beating `conn` on the edge's clock (it disconnected).
    pub(crate) fn let_go(&self, conn: ConnId) {
        let mut alive = self.shared.alive.lock().unwrap_or_else(|e| e.into_inner());
        alive.remove(&conn);
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records a heartbeat of connection `conn` of `identity` at `at`; it is appended with
    /// the next flush.
    pub(crate) fn beat(&self, conn: ConnId, identity: &Arc<Identity>, at: Millis) {
        self.shared.received.increment(1);
        self.pending().conns.insert(conn, (identity.clone(), at));
    }

    /// Records an active-users ping of a tab (now); it is appended with the next flush.
    pub(crate) fn tab_beat(&self, tab: &TabKey) {
        let now = Millis::now();
        let mut pending = self.pending();
        match pending.tabs.get_mut(tab) {
            Some((at, _)) => *at = now,
            None => {
                pending.tabs.insert(tab.clone(), (now, None));
            }
        }
    }

    /// A tab's beat over HTTP, received at `at` from `source`: batched like the others, and
    /// answered once its batch is durably in the log. `false` if that did not happen within
    /// `within` (the log is unavailable) or the edge is stopping; the beat may still be
    /// appended later.
    pub(crate) async fn tab_beat_durable(
        &self,
        tab: TabKey,
        at: Millis,
        source: Option<String>,
        within: Duration,
    ) -> bool {
        let (done, wait) = oneshot::channel();
        {
            let mut pending = self.pending();
            let latest = pending.tabs.entry(tab).or_insert((at, None));
            latest.0 = latest.0.max(at);
            if source.is_some() {
                latest.1 = source;
            }
            pending.waiters.push(done);
        }
        tokio::time::timeout(within, wait)
            .await
            .is_ok_and(|stored| stored.unwrap_or(false))
    }

    /// Drops the pending beat of `conn`; returns once any beat of it already being appended
    /// is durable, so a `leave` appended afterwards comes after it in the log.
    pub(crate) async fn forget(&self, conn: ConnId) {
        self.let_go(conn);
        self.pending().conns.remove(&conn);
        let _appended = self.shared.appending.lock().await;
    }

    /// As [`BeatBatcher::forget`], for an active-users tab.
    pub(crate) async fn forget_tab(&self, tab: &TabKey) {
        self.pending().tabs.remove(tab);
        let _appended = self.shared.appending.lock().await;
    }
}

async fn batch_beats(
    shared: Arc<Shared>,
    publisher: EventPublisher,
    (flush_every, transport_beats): (Duration, Option<Duration>),
    shutdown: CancellationToken,
) {
    let mut timer = tokio::time::interval(flush_every);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut transport = transport_beats.map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = timer.tick() => flush(&shared, &publisher, &shutdown).await,
            _ = tick(&mut transport) => beat_alive(&shared),
            _ = shutdown.cancelled() => break,
        }
    }
    // Last beats on the way out, with a bounded wait of their own.
    let never = CancellationToken::new();
    if tokio::time::timeout(Duration::from_secs(5), flush(&shared, &publisher, &never))
        .await
        .is_err()
    {
        tracing::warn!("gave up appending the last heartbeats at shutdown");
    }
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A beat now for every connection kept alive by its transport.
fn beat_alive(shared: &Shared) {
    let now = Millis::now();
    let alive = shared.alive.lock().unwrap_or_else(|e| e.into_inner());
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    for (conn, identity) in alive.iter() {
        pending.conns.insert(*conn, (identity.clone(), now));
    }
    metrics::counter!("presence_transport_beats_total").increment(alive.len() as u64);
}

async fn flush(shared: &Shared, publisher: &EventPublisher, shutdown: &CancellationToken) {
    // Taken under `appending`: a connection forgotten from now on waits for this batch.
    let _appending = shared.appending.lock().await;
    let taken = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|e| e.into_inner()));
    let Pending {
        conns,
        tabs,
        waiters,
    } = taken;
    let mut messages = Vec::new();
    if !conns.is_empty() {
        let mut beats: Vec<BeatEntry> = conns
            .into_iter()
            .map(|(conn, (id, at))| BeatEntry {
                tenant: id.tenant.clone(),
                user: id.user.clone(),
                conn,
                class: id.class.clone(),
                at,
            })
            .collect();
        beats.sort_unstable_by_key(|b| b.conn);
        metrics::histogram!("presence_beat_batch_connections").record(beats.len() as f64);
        // One batch per partition: each partition's fold reads only its own.
        for (partition, beats) in publisher.partitions().split_beats(beats) {
            let bodies = beats
                .chunks(MAX_BEATS_PER_MESSAGE)
                .map(|chunk| EventBody::Beat {
                    beats: chunk.to_vec(),
                });
            // An unencodable batch is counted and logged where it is encoded; its beats are
            // lost and the connections are swept unless they beat again.
            messages.extend(bodies.filter_map(|body| publisher.message_in(partition, body).ok()));
        }
    }
    // The tab beats' waiters are told whether the tab beats were stored.
    let mut tabs_unencodable = false;
    if !tabs.is_empty() {
        let beats: Vec<SessionBeatEntry> = tabs
            .into_iter()
            .map(|(tab, (at, source))| SessionBeatEntry {
                tenant: tab.tenant,
                session: tab.session,
                tab: tab.tab,
                at,
                source,
            })
            .collect();
        for (partition, beats) in publisher.partitions().split_tab_beats(beats) {
            for chunk in beats.chunks(MAX_BEATS_PER_MESSAGE) {
                let body = EventBody::SessionBeat {
                    beats: chunk.to_vec(),
                };
                match publisher.message_in(partition, body) {
                    Ok(message) => messages.push(message),
                    Err(_) => tabs_unencodable = true,
                }
            }
        }
    }
    let published =
        messages.is_empty() || publish_all_durable(publisher.log(), &messages, shutdown).await;
    if !messages.is_empty() {
        if published {
            publisher.appended();
        }
        let outcome = if published { "ok" } else { "abandoned" };
        metrics::counter!("presence_events_published_total", "kind" => "beat", "outcome" => outcome)
            .increment(messages.len() as u64);
    }
    // With no message at all, every waiting beat was superseded by its tab's leave: nothing
    // was left to store.
    for waiter in waiters {
        let _ = waiter.send(published && !tabs_unencodable);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use presence_events::{NodeId, SessionId, Subjects, TabId, TenantId};
    use presence_log::{EventLog, MemoryLog, StreamSpec};

    use super::*;

    fn tab(id: &str) -> TabKey {
        TabKey {
            tenant: TenantId::parse("shop").unwrap(),
            session: SessionId::parse(format!("s-{id}")).unwrap(),
            tab: TabId::parse(format!("t-{id}")).unwrap(),
        }
    }

    #[tokio::test]
    async fn http_beats_share_one_append_and_are_answered_once_it_is_durable() {
        let log = Arc::new(MemoryLog::new());
        let subjects = Subjects::new("test");
        log.ensure_stream(StreamSpec {
            name: subjects.events_stream(),
            subjects: vec![subjects.events_wildcard()],
            max_msgs_per_subject: 0,
            max_age: Duration::ZERO,
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            allow_message_ttl: false,
        })
        .await
        .unwrap();
        let publisher = EventPublisher::new(
            log.clone(),
            subjects.clone(),
            NodeId::parse("edge").unwrap(),
        );
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let beats =
            BeatBatcher::start(publisher, Duration::from_millis(50), None, &tasks, shutdown);
        let stored = futures::future::join_all((0..20).map(|i| {
            let beats = beats.clone();
            async move {
                let within = Duration::from_secs(5);
                beats
                    .tab_beat_durable(tab(&i.to_string()), Millis::now(), None, within)
                    .await
            }
        }))
        .await;
        assert!(stored.iter().all(|ok| *ok), "{stored:?}");
        // Twenty beats, answered only after they were appended, in one message.
        let appended = log.last_sequence(&subjects.events_stream()).await.unwrap();
        assert!((1..=2).contains(&appended), "{appended} appends");
    }
}
