//! The streams of a cluster, created idempotently by every role at start-up.

use std::time::Duration;

use presence_config::LogArgs;
use presence_events::Subjects;
use presence_log::{EventLog, LogError, StreamSpec};

/// Creates (or updates) the events and changes streams.
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
    // One message per user: the stream is both the feed of changes and everyone's current presence.
    log.ensure_stream(StreamSpec {
        name: subjects.changes_stream(),
        subjects: vec![subjects.changes_wildcard()],
        max_msgs_per_subject: 1,
        max_age: Duration::ZERO,
        max_bytes: 0,
        duplicate_window: Duration::from_secs(120),
    })
    .await
}
