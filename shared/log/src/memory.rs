//! An in-process event log for `presence standalone`: the same contract as JetStream
//! (sequences, subject wildcards, de-duplication window, last-per-subject retention), kept in
//! memory and lost with the process.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream;
use tokio::sync::watch;

use crate::{
    AckFuture, Acker, Board, BoardEntry, BoardSpec, Delivered, Deliveries, EventLog, LogError,
    Outgoing, StartAt, StreamSpec,
};

/// An in-process event log.
#[derive(Clone, Default)]
pub struct MemoryLog {
    streams: Arc<Mutex<Vec<MemStream>>>,
    boards: Arc<Mutex<HashMap<String, Arc<MemoryBoard>>>>,
    /// Sequences of every stream start after this.
    base_seq: u64,
}

struct Stored {
    subject: String,
    payload: Bytes,
    appended: Instant,
    /// The log's time of the message (this process's wall clock: one clock for all).
    stored_ms: u64,
}

struct MemStream {
    spec: StreamSpec,
    messages: BTreeMap<u64, Stored>,
    last_seq: u64,
    /// The time of the newest message: stored times never go backwards, even if the wall
    /// clock is stepped back.
    last_stored_ms: u64,
    bytes: i64,
    last_by_subject: HashMap<String, u64>,
    recent_ids: HashMap<String, u64>,
    recent_order: VecDeque<(Instant, String)>,
    /// Messages with a time to live, by when they go.
    expiring: BTreeSet<(Instant, u64)>,
    appended: watch::Sender<u64>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty log whose sequences start after `seq`: a process that restarts with the same
    /// database keeps its sequences growing, so rows written by the previous run (which carry
    /// its sequences) are never mistaken for newer ones.
    pub fn starting_after(seq: u64) -> Self {
        Self {
            streams: Arc::default(),
            boards: Arc::default(),
            base_seq: seq,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<MemStream>> {
        // A panic while holding the lock cannot leave a stream half-updated in a way that
        // matters more than losing the process; keep serving.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, msg: Outgoing) -> Result<u64, LogError> {
        let mut streams = self.lock();
        let stream = streams
            .iter_mut()
            .find(|s| {
                s.spec
                    .subjects
                    .iter()
                    .any(|p| subject_matches(p, &msg.subject))
            })
            .ok_or_else(|| LogError::Publish {
                subject: msg.subject.clone(),
                reason: "no stream captures this subject".into(),
            })?;
        Ok(stream.append(msg))
    }
}

impl MemStream {
    fn append(&mut self, msg: Outgoing) -> u64 {
        let now = Instant::now();
        while let Some((t, _)) = self.recent_order.front() {
            if now.duration_since(*t) < self.spec.duplicate_window {
                break;
            }
            if let Some((_, id)) = self.recent_order.pop_front() {
                self.recent_ids.remove(&id);
            }
        }
        if let Some(seq) = self.recent_ids.get(&msg.msg_id) {
            return *seq;
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        self.recent_ids.insert(msg.msg_id.clone(), seq);
        self.recent_order.push_back((now, msg.msg_id));
        if self.spec.max_msgs_per_subject == 1 {
            if let Some(old) = self.last_by_subject.insert(msg.subject.clone(), seq) {
                self.remove(old);
            }
        } else {
            self.last_by_subject.insert(msg.subject.clone(), seq);
        }
        self.bytes += msg.payload.len() as i64;
        if let Some(ttl) = msg.ttl.filter(|_| self.spec.allow_message_ttl) {
            self.expiring.insert((now + ttl, seq));
        }
        self.last_stored_ms = self.last_stored_ms.max(wall_clock_ms());
        self.messages.insert(
            seq,
            Stored {
                subject: msg.subject,
                payload: msg.payload,
                appended: now,
                stored_ms: self.last_stored_ms,
            },
        );
        self.enforce_limits(now);
        self.appended.send_replace(seq);
        seq
    }

    fn remove(&mut self, seq: u64) {
        if let Some(old) = self.messages.remove(&seq) {
            self.bytes -= old.payload.len() as i64;
            if self.last_by_subject.get(&old.subject) == Some(&seq) {
                self.last_by_subject.remove(&old.subject);
            }
        }
    }

    fn enforce_limits(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.expiring.first() {
            if at > now {
                break;
            }
            self.expiring.pop_first();
            self.remove(seq);
        }
        while let Some((&seq, oldest)) = self.messages.first_key_value() {
            let too_old = !self.spec.max_age.is_zero()
                && now.duration_since(oldest.appended) > self.spec.max_age;
            let too_big = self.spec.max_bytes > 0 && self.bytes > self.spec.max_bytes;
            if !(too_old || too_big) || seq == self.last_seq {
                break;
            }
            self.remove(seq);
        }
    }

    /// The first message at or after `from`, with the count behind it.
    fn next_from(&self, from: u64) -> Option<(u64, &Stored, u64)> {
        self.messages
            .range(from..)
            .next()
            .map(|(&seq, stored)| (seq, stored, self.last_seq - seq))
    }
}

/// NATS subject matching: `*` matches one token, `>` the rest.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

struct Cursor {
    log: MemoryLog,
    stream: String,
    /// Sequences to deliver first (the last message of each subject), in order.
    backlog: VecDeque<u64>,
    /// Only messages on subjects matching this.
    filter: Option<String>,
    next: u64,
    appended: watch::Receiver<u64>,
}

impl Cursor {
    fn take_next(&mut self) -> Result<Option<Delivered>, LogError> {
        let streams = self.log.lock();
        let stream = streams
            .iter()
            .find(|s| s.spec.name == self.stream)
            .ok_or_else(|| LogError::Consume {
                stream: self.stream.clone(),
                reason: "stream was removed".into(),
            })?;
        while let Some(seq) = self.backlog.pop_front() {
            if let Some(stored) = stream.messages.get(&seq) {
                return Ok(Some(delivered(seq, stored, stream.last_seq - seq)));
            }
        }
        while let Some((seq, stored, pending)) = stream.next_from(self.next) {
            self.next = seq + 1;
            if self
                .filter
                .as_deref()
                .is_none_or(|f| subject_matches(f, &stored.subject))
            {
                return Ok(Some(delivered(seq, stored, pending)));
            }
        }
        Ok(None)
    }
}

fn delivered(seq: u64, stored: &Stored, pending: u64) -> Delivered {
    Delivered {
        seq,
        subject: stored.subject.clone(),
        payload: stored.payload.clone(),
        pending,
        stored_ms: stored.stored_ms,
        ack: Acker::None,
    }
}

/// An in-process key-value board: entries expire `max_age` after they were written.
pub struct MemoryBoard {
    max_age: Duration,
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    revision: u64,
    entries: HashMap<String, (Bytes, u64, Instant)>,
}

impl MemoryBoard {
    fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            state: Mutex::default(),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut BoardState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !self.max_age.is_zero() {
            let max_age = self.max_age;
            state
                .entries
                .retain(|_, (_, _, written)| written.elapsed() < max_age);
        }
        f(&mut state)
    }
}

impl BoardState {
    fn write(&mut self, key: &str, value: Bytes) -> u64 {
        self.revision += 1;
        self.entries
            .insert(key.to_owned(), (value, self.revision, Instant::now()));
        self.revision
    }
}

impl Board for MemoryBoard {
    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
    ) -> BoxFuture<'a, Result<Option<u64>, LogError>> {
        let created =
            self.with_state(|s| (!s.entries.contains_key(key)).then(|| s.write(key, value)));
        Box::pin(async move { Ok(created) })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, LogError>> {
        let updated = self.with_state(|s| {
            let current = s.entries.get(key).map(|(_, r, _)| *r);
            (current == Some(revision)).then(|| s.write(key, value))
        });
        Box::pin(async move { Ok(updated) })
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, LogError>> {
        let revision = self.with_state(|s| s.write(key, value));
        Box::pin(async move { Ok(revision) })
    }

    fn delete<'a>(&'a self, key: &'a str, revision: u64) -> BoxFuture<'a, Result<bool, LogError>> {
        let deleted = self.with_state(|s| {
            let current = s.entries.get(key).map(|(_, r, _)| *r);
            current == Some(revision) && s.entries.remove(key).is_some()
        });
        Box::pin(async move { Ok(deleted) })
    }

    fn entries(&self) -> BoxFuture<'_, Result<Vec<BoardEntry>, LogError>> {
        let entries = self.with_state(|s| {
            let mut entries: Vec<BoardEntry> = s
                .entries
                .iter()
                .map(|(key, (value, revision, _))| BoardEntry {
                    key: key.clone(),
                    value: value.clone(),
                    revision: *revision,
                })
                .collect();
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            entries
        });
        Box::pin(async move { Ok(entries) })
    }
}

/// Now, in ms since the epoch.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventLog for MemoryLog {
    fn ensure_stream(&self, spec: StreamSpec) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let mut streams = self.lock();
            if let Some(existing) = streams.iter_mut().find(|s| s.spec.name == spec.name) {
                existing.spec = spec;
            } else {
                streams.push(MemStream {
                    spec,
                    messages: BTreeMap::new(),
                    last_seq: self.base_seq,
                    last_stored_ms: 0,
                    bytes: 0,
                    last_by_subject: HashMap::new(),
                    recent_ids: HashMap::new(),
                    recent_order: VecDeque::new(),
                    expiring: BTreeSet::new(),
                    appended: watch::Sender::new(self.base_seq),
                });
            }
            Ok(())
        })
    }

    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<AckFuture, LogError>> {
        let appended = self.append(msg);
        Box::pin(async move {
            let seq = appended?;
            let ack: AckFuture = Box::pin(async move { Ok(seq) });
            Ok(ack)
        })
    }

    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
        filter: Option<&'a str>,
        start: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>> {
        let filter = filter.map(str::to_owned);
        Box::pin(async move {
            let cursor = {
                let streams = self.lock();
                let s = streams
                    .iter()
                    .find(|s| s.spec.name == stream)
                    .ok_or_else(|| LogError::Stream {
                        stream: stream.to_owned(),
                        reason: "no such stream".into(),
                    })?;
                let mut backlog: Vec<u64> = Vec::new();
                let next = match start {
                    StartAt::Sequence(seq) => seq.max(1),
                    StartAt::New => s.last_seq + 1,
                    StartAt::LastPerSubject => {
                        backlog = s
                            .last_by_subject
                            .iter()
                            .filter(|(subject, _)| {
                                filter
                                    .as_deref()
                                    .is_none_or(|f| subject_matches(f, subject))
                            })
                            .map(|(_, seq)| *seq)
                            .collect();
                        backlog.sort_unstable();
                        s.last_seq + 1
                    }
                };
                Cursor {
                    log: self.clone(),
                    stream: stream.to_owned(),
                    backlog: backlog.into(),
                    filter,
                    next,
                    appended: s.appended.subscribe(),
                }
            };
            let deliveries = stream::unfold(cursor, |mut cursor| async move {
                loop {
                    cursor.appended.borrow_and_update();
                    match cursor.take_next() {
                        Ok(Some(delivered)) => return Some((Ok(delivered), cursor)),
                        Ok(None) => {}
                        Err(e) => return Some((Err(e), cursor)),
                    }
                    if cursor.appended.changed().await.is_err() {
                        return None;
                    }
                }
            });
            let deliveries: Deliveries = Box::pin(deliveries);
            Ok(deliveries)
        })
    }

    fn subscribe_shared<'a>(
        &'a self,
        stream: &'a str,
        _durable: &'a str,
        start_if_new: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>> {
        // One process holds the log: the only reader of a shared subscription is this one.
        self.subscribe(stream, None, start_if_new)
    }

    fn board(&self, spec: BoardSpec) -> BoxFuture<'_, Result<Arc<dyn Board>, LogError>> {
        let board = {
            let mut boards = self.boards.lock().unwrap_or_else(|e| e.into_inner());
            boards
                .entry(spec.name.clone())
                .or_insert_with(|| Arc::new(MemoryBoard::new(spec.max_age)))
                .clone()
        };
        Box::pin(async move {
            let board: Arc<dyn Board> = board;
            Ok(board)
        })
    }

    fn last_sequence<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(async move {
            self.lock()
                .iter()
                .find(|s| s.spec.name == stream)
                .map(|s| s.last_seq)
                .ok_or_else(|| LogError::Stream {
                    stream: stream.to_owned(),
                    reason: "no such stream".into(),
                })
        })
    }

    fn first_sequence<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(async move {
            self.lock()
                .iter()
                .find(|s| s.spec.name == stream)
                .map(|s| {
                    s.messages
                        .first_key_value()
                        .map_or(s.last_seq + 1, |(seq, _)| *seq)
                })
                .ok_or_else(|| LogError::Stream {
                    stream: stream.to_owned(),
                    reason: "no such stream".into(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use std::time::Duration;

    use super::*;

    fn spec(name: &str, subjects: &str, per_subject: i64) -> StreamSpec {
        StreamSpec {
            name: name.into(),
            subjects: vec![subjects.into()],
            max_msgs_per_subject: per_subject,
            max_age: Duration::ZERO,
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            allow_message_ttl: false,
        }
    }

    fn msg(subject: &str, id: &str) -> Outgoing {
        Outgoing {
            subject: subject.into(),
            msg_id: id.into(),
            payload: Bytes::from(id.to_owned()),
            ttl: None,
        }
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
    }

    #[tokio::test]
    async fn messages_are_sequenced_deduplicated_and_delivered_in_order() {
        let log = MemoryLog::new();
        log.ensure_stream(spec("E", "e.>", 0)).await.unwrap();
        assert_eq!(
            crate::publish_durable(&log, msg("e.a", "1")).await.unwrap(),
            1
        );
        assert_eq!(
            crate::publish_durable(&log, msg("e.b", "2")).await.unwrap(),
            2
        );
        assert_eq!(
            crate::publish_durable(&log, msg("e.a", "1")).await.unwrap(),
            1
        );
        let mut sub = log
            .subscribe("E", None, StartAt::Sequence(1))
            .await
            .unwrap();
        assert_eq!(sub.next().await.unwrap().unwrap().seq, 1);
        assert_eq!(sub.next().await.unwrap().unwrap().seq, 2);
        crate::publish_durable(&log, msg("e.c", "3")).await.unwrap();
        let third = sub.next().await.unwrap().unwrap();
        assert_eq!((third.seq, third.subject.as_str()), (3, "e.c"));
        assert!(crate::publish_durable(&log, msg("x.y", "4")).await.is_err());
    }

    #[tokio::test]
    async fn last_per_subject_delivers_each_subjects_newest_then_follows() {
        let log = MemoryLog::new();
        log.ensure_stream(spec("C", "c.>", 1)).await.unwrap();
        for (subject, id) in [("c.a", "1"), ("c.b", "2"), ("c.a", "3")] {
            crate::publish_durable(&log, msg(subject, id))
                .await
                .unwrap();
        }
        let mut sub = log
            .subscribe("C", None, StartAt::LastPerSubject)
            .await
            .unwrap();
        let first = sub.next().await.unwrap().unwrap();
        let second = sub.next().await.unwrap().unwrap();
        assert_eq!((first.seq, second.seq), (2, 3));
        crate::publish_durable(&log, msg("c.b", "4")).await.unwrap();
        assert_eq!(sub.next().await.unwrap().unwrap().seq, 4);
    }

    #[tokio::test]
    async fn a_filtered_subscription_sees_only_its_subjects() {
        let log = MemoryLog::new();
        log.ensure_stream(spec("E", "e.>", 0)).await.unwrap();
        for (subject, id) in [("e.0.join", "1"), ("e.1.join", "2"), ("e.0.leave", "3")] {
            crate::publish_durable(&log, msg(subject, id))
                .await
                .unwrap();
        }
        let mut sub = log
            .subscribe("E", Some("e.0.>"), StartAt::Sequence(1))
            .await
            .unwrap();
        assert_eq!(sub.next().await.unwrap().unwrap().seq, 1);
        assert_eq!(sub.next().await.unwrap().unwrap().seq, 3);
        crate::publish_durable(&log, msg("e.1.beat", "4"))
            .await
            .unwrap();
        crate::publish_durable(&log, msg("e.0.beat", "5"))
            .await
            .unwrap();
        assert_eq!(sub.next().await.unwrap().unwrap().seq, 5);
    }

    #[tokio::test]
    async fn a_board_sets_by_revision_and_forgets_what_is_not_rewritten() {
        let log = MemoryLog::new();
        let board = log
            .board(BoardSpec {
                name: "B".into(),
                max_age: Duration::from_millis(200),
                replicas: 1,
            })
            .await
            .unwrap();
        let r1 = board.create("k", Bytes::from("a")).await.unwrap().unwrap();
        assert_eq!(board.create("k", Bytes::from("b")).await.unwrap(), None);
        let r2 = board
            .update("k", Bytes::from("c"), r1)
            .await
            .unwrap()
            .unwrap();
        assert!(r2 > r1);
        assert_eq!(board.update("k", Bytes::from("d"), r1).await.unwrap(), None);
        assert!(!board.delete("k", r1).await.unwrap());
        let entries = board.entries().await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].value.as_ref(), entries[0].revision),
            (&b"c"[..], r2)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(board.entries().await.unwrap().is_empty());
        let r3 = board.create("k", Bytes::from("e")).await.unwrap().unwrap();
        assert!(r3 > r2);
        assert!(board.delete("k", r3).await.unwrap());
        assert!(board.entries().await.unwrap().is_empty());
    }
}
