//! The streams of a cluster, created idempotently by every role at start-up.

use std::time::Duration;

use presence_config::LogArgs;
use presence_events::Subjects;
use presence_log::{EventLog, LogError, StreamSpec};

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
    })
    .await?;
    // One message per user (per customer): each stream is both a feed of updates and
    // everyone's current value.
    for (name, subject) in [
        (subjects.changes_stream(), subjects.changes_wildcard()),
        (subjects.metrics_stream(), subjects.metrics_wildcard()),
        (subjects.stats_stream(), subjects.stats()),
    ] {
        log.ensure_stream(StreamSpec {
            name,
            subjects: vec![subject],
            max_msgs_per_subject: 1,
            max_age: Duration::ZERO,
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
        })
        .await?;
    }
    Ok(())
}
