//! The streams of a cluster, created idempotently by every role at start-up, and the
//! cluster's permanent settings.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use presence_config::LogArgs;
use presence_events::{Partitions, Subjects};
use presence_log::{BoardSpec, EventLog, LogError, StreamSpec};

const PARTITIONS_KEY: &str = "partitions";

/// How long a role starting keeps trying to reach JetStream (a cluster still electing its
/// leaders, a server restarting) before it gives up.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds or [`START_PATIENCE`] has passed, with backoff.
pub(crate) async fn retrying<T, E, F, Fut>(what: &str, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(250);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if started.elapsed() + backoff < START_PATIENCE => {
                tracing::warn!(error = %e, retry_in = ?backoff, "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The number of partitions of the cluster's log: recorded by the first role that starts,
/// and from then on the same for everyone. `configured` must match it.
pub(crate) async fn pin_partitions(
    log: &dyn EventLog,
    subjects: &Subjects,
    args: &LogArgs,
) -> anyhow::Result<Partitions> {
    let configured = args.partitions;
    // A bucket just created on a cluster has no leader for a moment: its first requests get
    // no responders.
    let stored = retrying("recording the number of partitions", || {
        recorded_partitions(
            log,
            subjects,
            Some(configured),
            args.stream_replicas as usize,
        )
    })
    .await?;
    if stored != configured {
        bail!(
            "this cluster's event log has {stored} partitions (fixed when its streams were created); \
             PRESENCE_PARTITIONS is {configured}. Give every role {stored}, or move to a new \
             PRESENCE_NAMESPACE and fill it by replay (docs/operations.md)"
        );
    }
    Partitions::new(stored).context("PRESENCE_PARTITIONS")
}

/// The number of partitions recorded for the cluster, recording `record` if none is yet.
pub(crate) async fn recorded_partitions(
    log: &dyn EventLog,
    subjects: &Subjects,
    record: Option<u64>,
    replicas: usize,
) -> anyhow::Result<u64> {
    let board = log
        .board(BoardSpec {
            name: subjects.cluster_bucket(),
            max_age: Duration::ZERO,
            replicas,
        })
        .await
        .context("opening the cluster's settings")?;
    if let Some(n) = record
        && board
            .create(PARTITIONS_KEY, Bytes::from(n.to_string()))
            .await
            .context("recording the number of partitions")?
            .is_some()
    {
        return Ok(n);
    }
    let entries = board
        .entries()
        .await
        .context("reading the cluster's settings")?;
    let entry = entries
        .iter()
        .find(|e| e.key == PARTITIONS_KEY)
        .context("the cluster has no recorded number of partitions")?;
    std::str::from_utf8(&entry.value)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("unreadable number of partitions {:?}", entry.value))
}

/// Creates (or updates) the events, changes and metrics streams.
pub(crate) async fn ensure_streams(
    log: &dyn EventLog,
    subjects: &Subjects,
    retention: &LogArgs,
) -> Result<(), LogError> {
    log.ensure_stream(StreamSpec {
        name: subjects.events_stream(),
        subjects: vec![subjects.events_wildcard()],
        max_msgs_per_subject: 0,
        max_age: retention.events_max_age(),
        max_bytes: retention.events_max_bytes,
        duplicate_window: Duration::from_secs(120),
        replicas: retention.stream_replicas as usize,
        allow_message_ttl: false,
    })
    .await?;
    // Who is online: each user's newest change; offline ones carry a time to live.
    log.ensure_stream(StreamSpec {
        name: subjects.online_stream(),
        subjects: vec![subjects.online_wildcard()],
        max_msgs_per_subject: 1,
        max_age: Duration::ZERO,
        max_bytes: 0,
        duplicate_window: Duration::from_secs(120),
        replicas: retention.stream_replicas as usize,
        allow_message_ttl: true,
    })
    .await?;
    // One message per user (per customer): each stream is both a feed of updates and
    // everyone's current value.
    for (name, subject) in [
        (subjects.changes_stream(), subjects.changes_wildcard()),
        (subjects.metrics_stream(), subjects.metrics_wildcard()),
        (subjects.stats_stream(), subjects.stats_wildcard()),
    ] {
        log.ensure_stream(StreamSpec {
            name,
            subjects: vec![subject],
            max_msgs_per_subject: 1,
            max_age: Duration::ZERO,
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            replicas: retention.stream_replicas as usize,
            allow_message_ttl: false,
        })
        .await?;
    }
    Ok(())
}
