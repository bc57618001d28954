//! Heartbeat batching: clients beat every few seconds, but an edge appends at most one beat
//! message per flush interval (split only past a size limit), carrying the latest beat of
//! every connection that beat; likewise one `session_beat` for the active-users tabs that
//! pinged. Log traffic stays flat however many clients beat.
//!
//! A connection (or tab) that closes is forgotten here before its leave is appended, so a
//! pending beat can never land after the leave and resurrect it.

use std::collections::HashMap;
use std::time::Duration;

use presence_events::{BeatEntry, ConnId, EventBody, Millis, SessionBeatEntry, TabKey};
use presence_log::publish_all_durable;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::EventPublisher;

/// Most connections in one beat message (keeps messages well under NATS' 1 MiB limit).
const MAX_BEATS_PER_MESSAGE: usize = 2_000;

enum Command {
    Beat(BeatEntry),
    TabBeat(TabKey),
    /// A tab's beat (at its arrival time) whose sender waits until it is durable (`true`).
    DurableTabBeat(TabKey, Millis, oneshot::Sender<bool>),
    Forget(ConnId, oneshot::Sender<()>),
    ForgetTab(TabKey, oneshot::Sender<()>),
}

#[derive(Default)]
struct Pending {
    conns: HashMap<ConnId, BeatEntry>,
    tabs: HashMap<TabKey, Millis>,
    /// Senders of the beats in this batch that wait for it to be durable.
    waiters: Vec<oneshot::Sender<bool>>,
}

/// Handle to the batching task.
#[derive(Clone)]
pub(crate) struct BeatBatcher {
    tx: mpsc::Sender<Command>,
}

impl BeatBatcher {
    pub(crate) fn start(
        publisher: EventPublisher,
        flush_every: Duration,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(65_536);
        tasks.spawn(batch_beats(rx, publisher, flush_every, shutdown));
        Self { tx }
    }

    /// Records a heartbeat; it is appended with the next flush.
    pub(crate) async fn beat(&self, entry: BeatEntry) {
        metrics::counter!("presence_heartbeats_received_total").increment(1);
        let _ = self.tx.send(Command::Beat(entry)).await;
    }

    /// Records an active-users ping of a tab (now); it is appended with the next flush.
    pub(crate) async fn tab_beat(&self, tab: TabKey) {
        let _ = self.tx.send(Command::TabBeat(tab)).await;
    }

    /// Drops the pending beat of `conn`; returns once any beat of it already being appended
    /// is durable, so a `leave` appended afterwards comes after it in the log.
    /// A tab's beat over HTTP, received at `at`: batched like the others, and answered once
    /// its batch is durably in the log. `false` if that did not happen within `within` (the
    /// log is unavailable) or the edge is stopping; the beat may still be appended later.
    pub(crate) async fn tab_beat_durable(&self, tab: TabKey, at: Millis, within: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let stored = async {
            self.tx
                .send(Command::DurableTabBeat(tab, at, done))
                .await
                .is_ok()
                && wait.await.unwrap_or(false)
        };
        tokio::time::timeout(within, stored).await.unwrap_or(false)
    }

    pub(crate) async fn forget(&self, conn: ConnId) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Forget(conn, done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// As [`BeatBatcher::forget`], for an active-users tab.
    pub(crate) async fn forget_tab(&self, tab: TabKey) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::ForgetTab(tab, done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn batch_beats(
    mut rx: mpsc::Receiver<Command>,
    publisher: EventPublisher,
    flush_every: Duration,
    shutdown: CancellationToken,
) {
    let mut pending = Pending::default();
    let mut timer = tokio::time::interval(flush_every);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Beat(entry)) => {
                    pending.conns.insert(entry.conn, entry);
                }
                Some(Command::TabBeat(tab)) => {
                    pending.tabs.insert(tab, Millis::now());
                }
                Some(Command::DurableTabBeat(tab, at, done)) => {
                    let latest = pending.tabs.entry(tab).or_insert(at);
                    *latest = (*latest).max(at);
                    pending.waiters.push(done);
                }
                Some(Command::Forget(conn, done)) => {
                    pending.conns.remove(&conn);
                    let _ = done.send(());
                }
                Some(Command::ForgetTab(tab, done)) => {
                    pending.tabs.remove(&tab);
                    let _ = done.send(());
                }
                None => break,
            },
            _ = timer.tick() => flush(&mut pending, &publisher, &shutdown).await,
            _ = shutdown.cancelled() => break,
        }
    }
    // Last beats on the way out, with a bounded wait of their own.
    let never = CancellationToken::new();
    if tokio::time::timeout(
        Duration::from_secs(5),
        flush(&mut pending, &publisher, &never),
    )
    .await
    .is_err()
    {
        tracing::warn!("gave up appending the last heartbeats at shutdown");
    }
}

async fn flush(pending: &mut Pending, publisher: &EventPublisher, shutdown: &CancellationToken) {
    let waiters = std::mem::take(&mut pending.waiters);
    let mut messages = Vec::new();
    if !pending.conns.is_empty() {
        let mut beats: Vec<BeatEntry> = pending.conns.drain().map(|(_, entry)| entry).collect();
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
    if !pending.tabs.is_empty() {
        let beats: Vec<SessionBeatEntry> = pending
            .tabs
            .drain()
            .map(|(tab, at)| SessionBeatEntry {
                tenant: tab.tenant,
                session: tab.session,
                tab: tab.tab,
                at,
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
        let beats = BeatBatcher::start(publisher, Duration::from_millis(50), &tasks, shutdown);
        let stored = futures::future::join_all((0..20).map(|i| {
            let beats = beats.clone();
            async move {
                let within = Duration::from_secs(5);
                beats
                    .tab_beat_durable(tab(&i.to_string()), Millis::now(), within)
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
