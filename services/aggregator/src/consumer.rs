//! The fold of one partition: reads the partition's events in order, applies each to the
//! [`PresenceState`] and the [`ActiveUsers`], and appends the resulting presence changes and
//! customer metrics (stamped with the owner's lease epoch) to their streams. Nothing is
//! written once the lease can no longer be trusted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use presence_events::{
    ClusterStats, EncodeError, Event, EventBody, Millis, NodeId, Partition, SCHEMA_VERSION,
    Subjects,
};
use presence_log::{EventLog, LogError, Outgoing, StartAt, publish_all_durable};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use presence_store::Store;

use crate::coordinator::Lease;
pub(crate) use presence_fold::Fold;
use presence_fold::{PresenceState, SnapshotError, in_log_time, is_fenced};

/// Where and how often the fold state is saved, so a restart replays only the events after
/// the newest snapshot instead of the whole log.
#[derive(Clone)]
pub(crate) struct Snapshots {
    pub(crate) store: Store,
    pub(crate) namespace: String,
    pub(crate) every: Duration,
}

impl Snapshots {
    /// The snapshot key of one partition.
    fn key(&self, partition: Partition) -> String {
        format!("{}.{partition}", self.namespace)
    }

    /// The newest snapshot, or a fresh fold when there is none (or it cannot be read:
    /// folding the whole log gives the same state, only later).
    async fn load(&self, partition: Partition, settings: &presence_fold::Settings) -> Fold {
        match self.store.load_snapshot(&self.key(partition)).await {
            Ok(Some((seq, state))) => match Fold::restore(&state, seq, settings) {
                Ok(fold) => {
                    metrics::gauge!("presence_snapshot_loaded_sequence", "partition" => partition.to_string())
                        .set(seq as f64);
                    tracing::info!(seq, %partition, "restored the partition's snapshot");
                    fold
                }
                Err(e @ SnapshotError::SequenceMismatch { .. }) => {
                    tracing::error!(seq, error = %e, "snapshot sequence does not match its state; folding the whole log");
                    Fold::new(settings)
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable snapshot; folding the whole log");
                    Fold::new(settings)
                }
            },
            Ok(None) => Fold::new(settings),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the snapshot; folding the whole log");
                Fold::new(settings)
            }
        }
    }

    async fn save(&self, partition: Partition, fold: &Fold, epoch: u64) -> bool {
        let started = std::time::Instant::now();
        let state = match serde_json::to_string(fold) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the snapshot");
                return false;
            }
        };
        let seq = fold.presence.last_seq();
        match self
            .store
            .save_snapshot(&self.key(partition), seq, &state, epoch)
            .await
        {
            Ok(saved) => {
                metrics::histogram!("presence_snapshot_save_seconds")
                    .record(started.elapsed().as_secs_f64());
                if saved {
                    metrics::gauge!("presence_snapshot_sequence", "partition" => partition.to_string())
                        .set(seq as f64);
                } else {
                    metrics::counter!("presence_snapshots_refused_total").increment(1);
                    tracing::warn!(%partition, epoch, "a newer owner saved this partition's snapshot; not replaced");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "saving the snapshot failed; retrying later");
                false
            }
        }
    }
}

const BATCH: usize = 512;

/// One partition's fold, as its owner runs it.
pub(crate) struct PartitionFold {
    pub(crate) partition: Partition,
    pub(crate) lease: Lease,
    pub(crate) settings: presence_fold::Settings,
    pub(crate) snapshots: Option<Snapshots>,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) subjects: Subjects,
    pub(crate) node: NodeId,
    pub(crate) started_at: Millis,
    pub(crate) sweep_due: watch::Sender<Option<Millis>>,
}

pub(crate) async fn fold_partition(run: PartitionFold, shutdown: CancellationToken) {
    let PartitionFold {
        partition,
        lease,
        settings,
        snapshots,
        log,
        subjects,
        node,
        started_at,
        sweep_due,
    } = run;
    let mut state = match &snapshots {
        Some(snapshots) => snapshots.load(partition, &settings).await,
        None => Fold::new(&settings),
    };
    let mut saved = Runtime {
        seq: state.presence.last_seq(),
        at: std::time::Instant::now(),
        started_at,
        labels: CustomerLabels::default(),
        sweep_due,
        node,
        partition,
        lease,
        log_clock_ahead_ms: std::collections::VecDeque::with_capacity(CLOCK_SAMPLES),
    };
    let stream = subjects.events_stream();
    let filter = subjects.partition_events(partition);
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() && saved.lease.is_valid() {
        // Before every (re)subscription: the log may have discarded what comes next.
        let subscribed = match check_for_gap(&mut state, log.as_ref(), &stream, partition).await {
            Ok(()) => {
                let start = StartAt::Sequence(state.presence.last_seq() + 1);
                log.subscribe(&stream, Some(&filter), start).await
            }
            Err(e) => Err(e),
        };
        match subscribed {
            Ok(deliveries) => {
                tracing::info!(
                    %partition,
                    epoch = saved.lease.epoch(),
                    from = state.presence.last_seq() + 1,
                    "folding the partition"
                );
                backoff = Duration::from_millis(100);
                fold_until_interrupted(
                    &mut state,
                    deliveries,
                    log.as_ref(),
                    &subjects,
                    snapshots.as_ref(),
                    &mut saved,
                    &shutdown,
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, %partition, retry_in = ?backoff, "cannot read the event stream")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
        // At most a second: a stream electing a new leader answers again within seconds,
        // and the partition's changes wait on it.
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    // A clean hand-over saves where it got to; a lost lease writes nothing more.
    if let Some(snapshots) = &snapshots
        && state.presence.last_seq() > saved.seq
        && saved.lease.is_valid()
    {
        snapshots.save(partition, &state, saved.lease.epoch()).await;
    }
}

/// The log's limits (`PRESENCE_EVENTS_MAX_AGE_HOURS`, `PRESENCE_EVENTS_MAX_BYTES`) may have
/// discarded events the fold never read: a snapshot older than the oldest event kept, or no
/// snapshot at all over a log whose start is gone. The fold does not pretend otherwise: the
/// gap is logged with its range and counted (`presence_log_gaps_total`), and folding goes on
/// from the oldest event kept. What the gap held is lost to the fold; presence converges
/// within a heartbeat timeout: connections that still beat are (re)opened by their beats,
/// connections whose leave was discarded are swept for silence.
///
/// The question is bounded to [`GAP_CHECK_WITHIN`]: a stream that is still electing its
/// leader does not answer, and the fold asks again rather than wait on it.
async fn check_for_gap(
    state: &mut Fold,
    log: &dyn EventLog,
    stream: &str,
    partition: Partition,
) -> Result<(), LogError> {
    let first = match tokio::time::timeout(GAP_CHECK_WITHIN, log.first_sequence(stream)).await {
        Ok(answer) => answer?,
        Err(_) => {
            return Err(LogError::Stream {
                stream: stream.to_owned(),
                reason: format!("where the log starts: no answer within {GAP_CHECK_WITHIN:?}"),
            });
        }
    };
    let next = state.presence.last_seq() + 1;
    if let Some(missing) = gap(next, first) {
        metrics::counter!("presence_log_gaps_total", "partition" => partition.to_string())
            .increment(1);
        tracing::error!(
            %partition,
            from = missing.0,
            to = missing.1,
            "events the fold never read were discarded by the log's limits; folding on from the oldest kept (presence converges within a heartbeat timeout)"
        );
        state.presence.skip(first - 1);
    }
    Ok(())
}

/// How long the fold waits to learn where the log starts before asking again.
const GAP_CHECK_WITHIN: Duration = Duration::from_secs(1);

/// The sequences discarded before the fold could read them, when it is to go on at `next`
/// and the log starts at `first`.
fn gap(next: u64, first: u64) -> Option<(u64, u64)> {
    (first > next).then(|| (next, first - 1))
}

/// Customers that get their own `customer` label on the active-users gauges: the first
/// [`LABELLED_CUSTOMERS`] seen, so the label set stays bounded whatever the traffic.
#[derive(Default)]
struct CustomerLabels(std::collections::HashSet<presence_events::TenantId>);

const LABELLED_CUSTOMERS: usize = 100;

impl CustomerLabels {
    fn record(&mut self, m: &presence_events::TenantMetrics) {
        if !self.0.contains(&m.tenant) {
            if self.0.len() >= LABELLED_CUSTOMERS {
                metrics::counter!("presence_active_users_unlabelled_ticks_total").increment(1);
                return;
            }
            self.0.insert(m.tenant.clone());
        }
        let customer = m.tenant.to_string();
        metrics::gauge!("presence_active_users", "customer" => customer.clone())
            .set(m.count as f64);
        metrics::gauge!("presence_active_users_ema", "customer" => customer).set(m.ema);
    }
}

/// What the fold loop keeps beside the fold: the newest snapshot saved, when this
/// aggregator started, the labelled customers, the sweep clock to tell.
struct Runtime {
    /// Sequence and time of the newest snapshot saved.
    seq: u64,
    at: std::time::Instant,
    /// When this aggregator started (reported in the cluster figures).
    started_at: Millis,
    labels: CustomerLabels,
    /// Tells the sweep clock when (by this machine's clock) the next connection's timeout
    /// runs out.
    sweep_due: watch::Sender<Option<Millis>>,
    /// This aggregator's node id: the ticks it wrote tell how far its clock is from the log's.
    node: NodeId,
    /// The partition folded, and the lease it is folded under.
    partition: Partition,
    lease: Lease,
    /// How far the log's clock was ahead of this machine's (plus the append's latency) for
    /// the newest own ticks folded.
    log_clock_ahead_ms: std::collections::VecDeque<i64>,
}

/// Own ticks whose offsets are kept: the smallest of them has the least append latency in it.
const CLOCK_SAMPLES: usize = 16;

impl Runtime {
    /// Learns the log's clock from a tick this aggregator wrote (stamped by its own clock).
    fn observe_own_tick(&mut self, event: &Event, stored: Millis) {
        let tick = matches!(event.body, EventBody::Tick | EventBody::MetricsTick);
        if tick && event.node == self.node {
            if self.log_clock_ahead_ms.len() == CLOCK_SAMPLES {
                self.log_clock_ahead_ms.pop_front();
            }
            self.log_clock_ahead_ms
                .push_back(stored.0 as i64 - event.at.0 as i64);
        }
    }

    /// A time of the log's clock by this machine's clock. The smallest recent offset is the
    /// one with the least latency: a tick sent at the converted time is stored at or after
    /// the log time asked for.
    fn local(&self, log_time: Millis) -> Millis {
        let ahead = self.log_clock_ahead_ms.iter().copied().min().unwrap_or(0);
        Millis(log_time.0.saturating_add_signed(-ahead))
    }
}

/// Folds deliveries until the subscription ends or shutdown.
async fn fold_until_interrupted(
    state: &mut Fold,
    deliveries: presence_log::Deliveries,
    log: &dyn EventLog,
    subjects: &Subjects,
    snapshots: Option<&Snapshots>,
    saved: &mut Runtime,
    shutdown: &CancellationToken,
) {
    let started_at = saved.started_at;
    let partition = saved.partition;
    let epoch = saved.lease.epoch();
    let label = partition.to_string();
    let mut batches = deliveries.ready_chunks(BATCH);
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            batch = batches.next() => batch,
        };
        let Some(batch) = batch else {
            tracing::warn!("event subscription ended; resubscribing");
            return;
        };
        let mut changes = Vec::new();
        let mut pending = 0;
        for delivered in batch {
            let delivered = match delivered {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "event delivery failed");
                    continue;
                }
            };
            match Event::decode(&delivered.payload) {
                Ok(event) if is_fenced(&mut state.epoch, &event) => {
                    metrics::counter!("presence_fenced_events_total", "kind" => event.kind())
                        .increment(1);
                    tracing::warn!(seq = delivered.seq, %partition, epoch = ?event.epoch, "ignoring a tick of a deposed owner");
                    state.presence.skip(delivered.seq);
                }
                Ok(event) => {
                    let stored = state.presence.log_time(Millis(delivered.stored_ms));
                    saved.observe_own_tick(&event, stored);
                    let event = in_log_time(event, stored);
                    // Redelivered events are folded as no-ops.
                    let fresh = delivered.seq > state.presence.last_seq();
                    metrics::counter!("presence_events_consumed_total", "kind" => event.kind())
                        .increment(1);
                    for mut metrics in state.active.apply(delivered.seq, &event) {
                        metrics.epoch = epoch;
                        saved.labels.record(&metrics);
                        changes.extend(outgoing(
                            subjects.metrics(&metrics.tenant),
                            metrics.msg_id(),
                            metrics.encode(),
                        ));
                    }
                    let tick = matches!(event.body, EventBody::Tick);
                    if tick && fresh {
                        metrics::counter!("presence_sweeps_total").increment(1);
                    }
                    for mut change in state.presence.apply(delivered.seq, &event) {
                        change.epoch = epoch;
                        metrics::counter!("presence_changes_total", "cause" => change.cause.as_str())
                            .increment(1);
                        let Some(message) = outgoing(
                            subjects.change(&change.tenant, &change.user),
                            change.msg_id(),
                            change.encode(),
                        ) else {
                            continue;
                        };
                        // The same change in the online stream, where an offline one expires.
                        let online = Outgoing {
                            subject: subjects.online(&change.tenant, &change.user),
                            msg_id: format!("on-{}", message.msg_id),
                            payload: message.payload.clone(),
                            ttl: (!change.online).then_some(state.offline_feed_ttl),
                        };
                        changes.push(message);
                        changes.push(online);
                    }
                    if tick {
                        metrics::gauge!("presence_fold_users", "partition" => partition.to_string())
                            .set(state.presence.users_held() as f64);
                        metrics::gauge!("presence_fold_closed_connections", "partition" => partition.to_string())
                            .set(state.presence.closed_held() as f64);
                        crate::release::release_freed_memory(
                            state.presence.take_released(),
                            std::time::Instant::now(),
                        );
                        let figures = Figures {
                            partition,
                            owner: &saved.node,
                            epoch,
                            lag: delivered.pending,
                            started_at,
                        };
                        changes.extend(stats_message(subjects, state, delivered.seq, &figures));
                    }
                }
                Err(e) => {
                    state.presence.skip(delivered.seq);
                    // Nothing to fold; skipping it loses nothing that was understood.
                    metrics::counter!("presence_events_rejected_total", "reason" => "undecodable")
                        .increment(1);
                    tracing::error!(seq = delivered.seq, error = %e, "skipping an undecodable event");
                }
            }
            pending = delivered.pending;
        }
        metrics::gauge!("presence_consumer_lag_messages", "consumer" => "aggregator", "partition" => label.clone())
            .set(pending as f64);
        record_stats(&state.presence, &label);
        // The clock appends a sweep tick when the next connection's timeout runs out.
        let due = state.presence.next_sweep_due().map(|due| saved.local(due));
        saved
            .sweep_due
            .send_if_modified(|d| std::mem::replace(d, due) != due);
        // Fencing: nothing is written under a lease that may have passed to another owner.
        if !saved.lease.is_valid() {
            tracing::warn!(%partition, epoch, "the lease ran out; not writing what was folded");
            return;
        }
        if !changes.is_empty() && !publish_all_durable(log, &changes, shutdown).await {
            return;
        }
        // Only now, with every change derived so far durable, may a snapshot include them.
        if let Some(snapshots) = snapshots
            && saved.at.elapsed() >= snapshots.every
            && state.presence.last_seq() > saved.seq
            && saved.lease.is_valid()
        {
            saved.at = std::time::Instant::now();
            if snapshots.save(partition, state, epoch).await {
                saved.seq = state.presence.last_seq();
            }
        }
    }
}

/// Who folds a partition, for its figures.
struct Figures<'a> {
    partition: Partition,
    owner: &'a NodeId,
    epoch: u64,
    lag: u64,
    started_at: Millis,
}

/// A partition's figures as of the tick at `seq`, for every edge's `/api/health`.
fn stats_message(
    subjects: &Subjects,
    state: &Fold,
    seq: u64,
    figures: &Figures<'_>,
) -> Option<Outgoing> {
    let stats = ClusterStats {
        v: SCHEMA_VERSION,
        presence: state.presence.stats().clone(),
        started_at: figures.started_at,
        seq,
        partition: figures.partition,
        owner: Some(figures.owner.clone()),
        epoch: figures.epoch,
        lag: figures.lag,
    };
    outgoing(
        subjects.stats(figures.partition),
        format!("stats-{seq}"),
        stats.encode(),
    )
}

/// The message for an encoded output of the fold. One that could not be encoded (a bug: the
/// outputs hold only strings and numbers) is counted and logged, and not published.
fn outgoing(
    subject: String,
    msg_id: String,
    encoded: Result<Vec<u8>, EncodeError>,
) -> Option<Outgoing> {
    match encoded {
        Ok(payload) => Some(Outgoing {
            subject,
            msg_id,
            payload: Bytes::from(payload),
            ttl: None,
        }),
        Err(e) => {
            metrics::counter!("presence_encode_failures_total", "what" => e.what).increment(1);
            tracing::error!(error = %e, subject, "cannot encode an output of the fold; not published");
            None
        }
    }
}

fn record_stats(state: &PresenceState, partition: &str) {
    let stats = state.stats();
    let p = partition.to_owned();
    metrics::gauge!("presence_online_users", "partition" => p.clone())
        .set(stats.online_users as f64);
    metrics::gauge!("presence_peak_online_users", "partition" => p.clone())
        .set(stats.peak_online as f64);
    metrics::gauge!("presence_folded_sequence", "partition" => p.clone())
        .set(state.last_seq() as f64);
    // The fold counts them (and keeps the count in its snapshot): the counter follows it.
    metrics::counter!("presence_swept_connections_total", "partition" => p.clone())
        .absolute(stats.total_swepts);
    metrics::counter!("presence_edges_lost_total", "partition" => p.clone())
        .absolute(stats.edges_lost);
    metrics::gauge!("presence_edge_leases", "partition" => p).set(state.edge_leases() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_starting_after_the_next_event_to_fold_is_a_gap() {
        assert_eq!(gap(1, 1), None);
        assert_eq!(gap(101, 50), None);
        assert_eq!(gap(101, 101), None);
        assert_eq!(gap(101, 160), Some((101, 159)));
        assert_eq!(gap(1, 7), Some((1, 6)));
    }
}
