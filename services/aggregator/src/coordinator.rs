//! The aggregator's partitions at run time: each round it reads the lease board, plans with
//! the [`LeaseBook`] and carries the plan out: renewing, taking partitions (starting their
//! fold and clocks), handing them over (stopping cleanly, saving, releasing) and stepping
//! down from lost ones (stopping at once, writing nothing more).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use presence_events::{EventBody, Millis, NodeId, Partition, Subjects};
use presence_log::{Board, BoardEntry, EventLog, LogError};
use presence_telemetry::Readiness;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AggregatorConfig;
use crate::consumer::{PartitionFold, Snapshots, fold_partition};
use crate::leases::{Held, Holder, LeaseBook, LeaseValue, Seen, Step, member_key, partition_key};
use crate::sweeper::{Clock, publish_ticks};

/// This process's monotonic clock, in ms since it started: leases are trusted by it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MonoClock(Instant);

impl MonoClock {
    pub(crate) fn new() -> Self {
        Self(Instant::now())
    }

    pub(crate) fn now(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// The lease a partition's fold and clocks run under: they write only while it is trusted.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    epoch: u64,
    valid_until: Arc<AtomicU64>,
    clock: MonoClock,
}

impl Lease {
    fn new(held: Held, clock: MonoClock) -> Self {
        Self {
            epoch: held.epoch,
            valid_until: Arc::new(AtomicU64::new(held.valid_until)),
            clock,
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.clock.now() < self.valid_until.load(Ordering::Acquire)
    }

    fn extend(&self, until: u64) {
        self.valid_until.fetch_max(until, Ordering::AcqRel);
    }

    fn revoke(&self) {
        self.valid_until.store(0, Ordering::Release);
    }
}

/// What a membership entry holds.
#[derive(Debug, Serialize, Deserialize)]
struct MemberValue {
    node: NodeId,
}

/// What every partition fold of this process shares.
pub(crate) struct FoldSettings {
    pub(crate) config: AggregatorConfig,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) subjects: Subjects,
    pub(crate) node: NodeId,
    pub(crate) snapshots: Option<Snapshots>,
    pub(crate) started_at: Millis,
}

/// One partition being folded here.
struct Run {
    lease: Lease,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Run {
    fn start(settings: &FoldSettings, partition: Partition, lease: Lease) -> Self {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (sweep_due, due) = watch::channel(None);
        tasks.spawn(fold_partition(
            PartitionFold {
                partition,
                lease: lease.clone(),
                settings: settings.config.fold_settings(),
                snapshots: settings.snapshots.clone(),
                log: settings.log.clone(),
                subjects: settings.subjects.clone(),
                node: settings.node.clone(),
                started_at: settings.started_at,
                sweep_due,
            },
            stop.clone(),
        ));
        let clock = |tick: EventBody, every_ms: u64| Clock {
            subject: settings.subjects.event(partition, tick.kind()),
            tick,
            log: settings.log.clone(),
            node: settings.node.clone(),
            lease: lease.clone(),
            interval: Duration::from_millis(every_ms),
        };
        tasks.spawn(publish_ticks(
            clock(EventBody::Tick, settings.config.sweep_interval_ms),
            Some(due),
            stop.clone(),
        ));
        tasks.spawn(publish_ticks(
            clock(EventBody::MetricsTick, settings.config.metrics_tick_ms),
            None,
            stop.clone(),
        ));
        tasks.close();
        Self { lease, stop, tasks }
    }

    async fn stop(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// Waits for a board operation at most `within`: a board that does not answer (its stream
/// electing a leader) must not hold up the round, or the leases it renews would lapse.
async fn bounded<T>(
    within: Duration,
    op: impl std::future::Future<Output = Result<T, LogError>>,
) -> Result<T, LogError> {
    match tokio::time::timeout(within, op).await {
        Ok(result) => result,
        Err(_) => Err(LogError::Board {
            board: "leases".into(),
            reason: format!("no answer within {within:?}"),
        }),
    }
}

/// The partitions of one aggregator.
pub(crate) struct Coordinator {
    settings: FoldSettings,
    board: Arc<dyn Board>,
    book: LeaseBook,
    runs: BTreeMap<Partition, Run>,
    clock: MonoClock,
    member_revision: Option<u64>,
}

impl Coordinator {
    pub(crate) fn new(settings: FoldSettings, board: Arc<dyn Board>) -> Self {
        let book = LeaseBook::new(
            settings.node.clone(),
            settings.subjects.partitions(),
            settings.config.lease_ttl_ms,
        );
        Self {
            settings,
            board,
            book,
            runs: BTreeMap::new(),
            clock: MonoClock::new(),
            member_revision: None,
        }
    }

    /// How long one board operation may take: a quarter of the lease.
    fn op_timeout(&self) -> Duration {
        Duration::from_millis((self.settings.config.lease_ttl_ms / 4).max(50))
    }

    /// Rounds until `shutdown`, then hands every partition over. Ready once the board has
    /// been read: owning partitions or standing by.
    pub(crate) async fn run(mut self, shutdown: CancellationToken, readiness: Readiness) {
        let mut timer = tokio::time::interval(Duration::from_millis(self.book.round()));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = timer.tick() => {}
            }
            if self.round().await {
                readiness.set(true);
            }
        }
        let held: Vec<(Partition, Held)> = self.book.held().collect();
        for (partition, held) in held {
            self.release(partition, held.revision).await;
        }
        if let Some(revision) = self.member_revision
            && let Err(e) = self
                .board
                .delete(&member_key(&self.settings.node), revision)
                .await
        {
            tracing::warn!(error = %e, "could not leave the aggregators' board");
        }
    }

    /// One round; whether the board could be read.
    async fn round(&mut self) -> bool {
        match self.member_value() {
            Ok(value) => {
                let key = member_key(&self.settings.node);
                match bounded(self.op_timeout(), self.board.put(&key, value)).await {
                    Ok(revision) => self.member_revision = Some(revision),
                    Err(e) => tracing::warn!(error = %e, "could not renew membership"),
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the membership entry"),
        }
        let seen = match bounded(self.op_timeout(), self.board.entries()).await {
            Ok(entries) => self.seen(entries),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lease board");
                // Unseen, leases still run out: stop what can no longer be trusted, and
                // renew the rest blind (compare-and-set still guards them).
                let now = self.clock.now();
                let held: Vec<(Partition, Held)> = self.book.held().collect();
                for (partition, h) in held {
                    if now >= h.valid_until {
                        self.step_down(partition).await;
                    } else {
                        self.renew(partition, h.revision, h.epoch).await;
                    }
                }
                self.record();
                return false;
            }
        };
        for step in self.book.plan(self.clock.now(), &seen) {
            match step {
                Step::Renew {
                    partition,
                    revision,
                    epoch,
                } => self.renew(partition, revision, epoch).await,
                Step::Acquire(partition) => self.acquire(partition).await,
                Step::Release {
                    partition,
                    revision,
                } => self.release(partition, revision).await,
                Step::Resign(partition) => self.step_down(partition).await,
            }
        }
        self.record();
        true
    }

    fn member_value(&self) -> Result<Bytes, serde_json::Error> {
        let value = MemberValue {
            node: self.settings.node.clone(),
        };
        serde_json::to_vec(&value).map(Bytes::from)
    }

    fn lease_value(&self, epoch: Option<u64>) -> Result<Bytes, serde_json::Error> {
        let value = LeaseValue {
            node: self.settings.node.clone(),
            epoch,
        };
        serde_json::to_vec(&value).map(Bytes::from)
    }

    fn seen(&self, entries: Vec<BoardEntry>) -> Seen {
        let count = self.settings.subjects.partitions().count();
        let mut seen = Seen::default();
        for entry in entries {
            if let Some(p) = entry.key.strip_prefix("partition.") {
                let Some(partition) = p.parse::<u16>().ok().filter(|p| *p < count) else {
                    continue;
                };
                match serde_json::from_slice::<LeaseValue>(&entry.value) {
                    Ok(value) => {
                        seen.holders.insert(
                            Partition(partition),
                            Holder {
                                node: value.node,
                                epoch: value.epoch.unwrap_or(entry.revision),
                                revision: entry.revision,
                            },
                        );
                    }
                    Err(e) => {
                        // Somebody's lease all the same: never taken while it lasts.
                        tracing::warn!(error = %e, key = entry.key, "unreadable lease entry");
                        if let Ok(unknown) = NodeId::parse("unknown") {
                            seen.holders.insert(
                                Partition(partition),
                                Holder {
                                    node: unknown,
                                    epoch: entry.revision,
                                    revision: entry.revision,
                                },
                            );
                        }
                    }
                }
            } else if entry.key.starts_with("member.") {
                match serde_json::from_slice::<MemberValue>(&entry.value) {
                    Ok(member) => seen.members.push(member.node),
                    Err(e) => {
                        tracing::warn!(error = %e, key = entry.key, "unreadable member entry")
                    }
                }
            }
        }
        seen
    }

    async fn renew(&mut self, partition: Partition, revision: u64, epoch: u64) {
        let value = match self.lease_value(Some(epoch)) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a lease");
                return;
            }
        };
        let sent_at = self.clock.now();
        let key = partition_key(partition);
        match bounded(self.op_timeout(), self.board.update(&key, value, revision)).await {
            Ok(Some(revision)) => {
                self.book.renewed(partition, revision, sent_at);
                if let (Some(run), Some(held)) = (
                    self.runs.get(&partition),
                    self.book.valid(partition, sent_at),
                ) {
                    run.lease.extend(held.valid_until);
                }
            }
            Ok(None) => {
                tracing::warn!(%partition, epoch, "the lease was taken over");
                self.step_down(partition).await;
            }
            Err(e) => {
                metrics::counter!("presence_lease_transitions_total", "transition" => "renew_failed")
                    .increment(1);
                tracing::warn!(error = %e, %partition, "could not renew a lease");
            }
        }
    }

    async fn acquire(&mut self, partition: Partition) {
        let value = match self.lease_value(None) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a lease");
                return;
            }
        };
        let sent_at = self.clock.now();
        let key = partition_key(partition);
        match bounded(self.op_timeout(), self.board.create(&key, value)).await {
            Ok(Some(revision)) => {
                let held = self.book.acquired(partition, revision, sent_at);
                tracing::info!(%partition, epoch = held.epoch, "took the partition");
                metrics::counter!("presence_lease_transitions_total", "transition" => "acquired")
                    .increment(1);
                let lease = Lease::new(held, self.clock);
                self.runs
                    .insert(partition, Run::start(&self.settings, partition, lease));
            }
            Ok(None) => tracing::debug!(%partition, "the partition was taken first by another"),
            Err(e) => tracing::warn!(error = %e, %partition, "could not take a partition"),
        }
    }

    /// A clean hand-over: the fold stops and saves its snapshot while the lease still holds,
    /// then the lease is emptied so the next owner need not wait for it to run out.
    async fn release(&mut self, partition: Partition, revision: u64) {
        if let Some(run) = self.runs.remove(&partition) {
            // The snapshot is saved while the lease holds; past it, the fold gives up saving.
            let within = Duration::from_millis(self.settings.config.lease_ttl_ms);
            if tokio::time::timeout(within, run.stop()).await.is_err() {
                tracing::warn!(%partition, "the fold did not stop in time; handing over anyway");
            }
            run.lease.revoke();
            run.stop.cancel();
        }
        self.book.dropped(partition);
        let key = partition_key(partition);
        match bounded(self.op_timeout(), self.board.delete(&key, revision)).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(%partition, "the lease changed before it was released"),
            Err(e) => {
                tracing::warn!(error = %e, %partition, "could not release a lease; it runs out by itself")
            }
        }
        metrics::counter!("presence_lease_transitions_total", "transition" => "released")
            .increment(1);
        tracing::info!(%partition, "handed the partition over");
    }

    /// The lease is lost: nothing more is written under it, the fold stops without saving.
    async fn step_down(&mut self, partition: Partition) {
        if let Some(run) = self.runs.remove(&partition) {
            // Revoked, it writes nothing more; its tasks end on their own (one may be stuck
            // on a log that does not answer, and the round must go on renewing the rest).
            run.lease.revoke();
            run.stop.cancel();
        }
        self.book.dropped(partition);
        metrics::counter!("presence_lease_transitions_total", "transition" => "lost").increment(1);
        tracing::warn!(%partition, "stepped down from a lost lease");
    }

    fn record(&self) {
        metrics::gauge!("presence_partitions_owned").set(self.runs.len() as f64);
        for partition in self.settings.subjects.partitions().all() {
            let epoch = self.runs.get(&partition).map(|r| r.lease.epoch());
            let label = partition.to_string();
            metrics::gauge!("presence_partition_owned", "partition" => label.clone())
                .set(if epoch.is_some() { 1.0 } else { 0.0 });
            match epoch {
                Some(epoch) => {
                    metrics::gauge!("presence_lease_epoch", "partition" => label).set(epoch as f64);
                }
                None => {
                    // Figures of a partition folded elsewhere now are the owner's to report:
                    // zero here, so sums over aggregators count each partition once.
                    for name in [
                        "presence_online_users",
                        "presence_peak_online_users",
                        "presence_lease_epoch",
                    ] {
                        metrics::gauge!(name, "partition" => label.clone()).set(0.0);
                    }
                    metrics::gauge!("presence_consumer_lag_messages", "consumer" => "aggregator", "partition" => label)
                        .set(0.0);
                }
            }
        }
    }
}

/// Opens the lease board of `subjects` with leases of `ttl`.
pub(crate) async fn open_board(
    log: &dyn EventLog,
    subjects: &Subjects,
    ttl: Duration,
    replicas: usize,
) -> Result<Arc<dyn Board>, LogError> {
    log.board(presence_log::BoardSpec {
        name: subjects.leases_bucket(),
        max_age: ttl,
        replicas,
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use presence_events::Partitions;
    use presence_log::{MemoryLog, StreamSpec};
    use tokio::task::JoinHandle;

    use super::*;

    const TTL_MS: u64 = 600;

    fn config() -> AggregatorConfig {
        AggregatorConfig {
            heartbeat_timeout_ms: 15_000,
            sweep_interval_ms: 500,
            session_ttl_ms: 60_000,
            metrics_tick_ms: 500,
            ema_alpha: 0.2,
            max_sessions_per_source: 50,
            snapshot_interval_ms: 30_000,
            lease_ttl_ms: TTL_MS,
            offline_retention: Duration::from_secs(3600),
            offline_feed_ttl: Duration::from_secs(60),
        }
    }

    async fn cluster_log(subjects: &Subjects) -> Arc<dyn EventLog> {
        let log = MemoryLog::new();
        for (name, subject) in [
            (subjects.events_stream(), subjects.events_wildcard()),
            (subjects.changes_stream(), subjects.changes_wildcard()),
            (subjects.online_stream(), subjects.online_wildcard()),
            (subjects.metrics_stream(), subjects.metrics_wildcard()),
            (subjects.stats_stream(), subjects.stats_wildcard()),
        ] {
            log.ensure_stream(StreamSpec {
                name,
                subjects: vec![subject],
                max_msgs_per_subject: 0,
                max_age: Duration::ZERO,
                max_bytes: 0,
                duplicate_window: Duration::from_secs(60),
                replicas: 1,
                allow_message_ttl: true,
            })
            .await
            .unwrap();
        }
        Arc::new(log)
    }

    struct Member {
        stop: CancellationToken,
        task: JoinHandle<()>,
    }

    async fn member(log: &Arc<dyn EventLog>, subjects: &Subjects, name: &str) -> Member {
        let board = open_board(log.as_ref(), subjects, Duration::from_millis(TTL_MS), 1)
            .await
            .unwrap();
        let settings = FoldSettings {
            config: config(),
            log: log.clone(),
            subjects: subjects.clone(),
            node: NodeId::parse(name).unwrap(),
            snapshots: None,
            started_at: Millis::now(),
        };
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(Coordinator::new(settings, board).run(stop.clone(), Readiness::default()));
        Member { stop, task }
    }

    /// How many partitions each node holds on the board.
    async fn owners(log: &Arc<dyn EventLog>, subjects: &Subjects) -> BTreeMap<String, usize> {
        let board = open_board(log.as_ref(), subjects, Duration::from_millis(TTL_MS), 1)
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for entry in board.entries().await.unwrap() {
            if entry.key.starts_with("partition.") {
                let value: LeaseValue = serde_json::from_slice(&entry.value).unwrap();
                *out.entry(value.node.to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    async fn until_owned(
        log: &Arc<dyn EventLog>,
        subjects: &Subjects,
        want: &[(&str, usize)],
        within: Duration,
    ) -> Duration {
        let want: BTreeMap<String, usize> =
            want.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
        let started = Instant::now();
        loop {
            let got = owners(log, subjects).await;
            if got == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "wanted {want:?} within {within:?}, the board shows {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn aggregators_share_the_partitions_and_cover_one_that_leaves_or_dies() {
        let subjects = Subjects::new("t").with_partitions(Partitions::new(4).unwrap());
        let log = cluster_log(&subjects).await;
        let a = member(&log, &subjects, "a").await;
        until_owned(&log, &subjects, &[("a", 4)], Duration::from_secs(2)).await;
        let b = member(&log, &subjects, "b").await;
        until_owned(
            &log,
            &subjects,
            &[("a", 2), ("b", 2)],
            Duration::from_secs(3),
        )
        .await;

        // A clean stop hands over at once: well before the leases could run out.
        a.stop.cancel();
        a.task.await.unwrap();
        let handed = until_owned(&log, &subjects, &[("b", 4)], Duration::from_secs(2)).await;
        assert!(
            handed < Duration::from_millis(TTL_MS),
            "hand-over took {handed:?}"
        );

        // A member that dies holds its partitions only until their leases run out.
        let c = member(&log, &subjects, "c").await;
        until_owned(
            &log,
            &subjects,
            &[("b", 2), ("c", 2)],
            Duration::from_secs(3),
        )
        .await;
        c.task.abort();
        let _ = c.task.await;
        until_owned(&log, &subjects, &[("b", 4)], Duration::from_secs(3)).await;
        b.stop.cancel();
        b.task.await.unwrap();
        until_owned(&log, &subjects, &[], Duration::from_secs(1)).await;
    }
}
