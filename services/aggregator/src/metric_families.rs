//! Every metric family the aggregator exports, registered at start-up with its known label
//! values at zero, so a quiet cluster already shows them (sweeps, swept connections, changes
//! by cause, rejections): `rate()` and `absent()` alerts work before the first event.

use metrics::{describe_gauge, describe_histogram};
use presence_events::Partitions;
use presence_telemetry::{zero_counter, zero_counters, zero_gauge, zero_gauges};

/// Registers every family at zero, with its help text; per-partition families get a series
/// for each of `partitions`.
pub(crate) fn register(partitions: Partitions) {
    let labels: Vec<String> = partitions.all().map(|p| p.to_string()).collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    zero_counters(
        "presence_events_consumed_total",
        "Events folded, by kind",
        "kind",
        &[
            "join",
            "beat",
            "leave",
            "status",
            "service_status",
            "tick",
            "session_join",
            "session_beat",
            "session_leave",
            "metrics_tick",
        ],
    );
    zero_counter(
        "presence_memory_releases_total",
        "Times the aggregator handed memory its fold gave up back to the system",
    );
    zero_counters(
        "presence_events_rejected_total",
        "Events skipped by the fold, by reason",
        "reason",
        &["undecodable"],
    );
    zero_counters(
        "presence_changes_total",
        "Presence changes derived, by cause",
        "cause",
        &["join", "beat", "leave", "status", "sweep"],
    );
    zero_counter("presence_sweeps_total", "Sweep ticks folded");
    zero_counter(
        "presence_swept_connections_total",
        "Connections closed by a sweep for silence",
    );
    zero_counter(
        "presence_edges_lost_total",
        "Edges whose lease ran out or whose process restarted; their connections were swept at once",
    );
    zero_counter(
        "presence_active_users_unlabelled_ticks_total",
        "Metrics ticks of customers beyond the first 100",
    );
    zero_counters(
        "presence_ticks_failed_total",
        "Clock ticks that could not be appended, by kind",
        "kind",
        &["tick", "metrics_tick"],
    );
    zero_counters(
        "presence_encode_failures_total",
        "Values that could not be encoded (a bug), by what",
        "what",
        &["event", "change", "metrics", "stats"],
    );
    zero_gauges(
        "presence_consumer_lag_messages",
        "Messages a reader of the log is behind",
        "consumer",
        &["aggregator"],
    );
    zero_gauges(
        "presence_online_users",
        "Users online in a partition folded here",
        "partition",
        &labels,
    );
    zero_gauges(
        "presence_peak_online_users",
        "Most users online at once in a partition folded here",
        "partition",
        &labels,
    );
    zero_gauges(
        "presence_folded_sequence",
        "Sequence of the newest event folded, by partition",
        "partition",
        &labels,
    );
    zero_gauges(
        "presence_partition_owned",
        "1 while this aggregator holds the partition's lease",
        "partition",
        &labels,
    );
    zero_gauge(
        "presence_partitions_owned",
        "Partitions this aggregator holds the lease of",
    );
    describe_gauge!(
        "presence_lease_epoch",
        "Lease epoch of a partition held here"
    );
    describe_gauge!(
        "presence_edge_leases",
        "Edges holding a lease in a partition folded here"
    );
    describe_gauge!(
        "presence_fold_users",
        "Users a partition's fold holds: online, and offline within PRESENCE_OFFLINE_RETENTION"
    );
    describe_gauge!(
        "presence_fold_closed_connections",
        "Closed connections a partition's fold remembers (for twice the heartbeat timeout)"
    );
    zero_counters(
        "presence_lease_transitions_total",
        "Lease changes of this aggregator, by transition",
        "transition",
        &["acquired", "released", "lost", "renew_failed"],
    );
    zero_counters(
        "presence_fenced_events_total",
        "Clock ticks of a deposed owner (an older lease epoch) ignored by the fold",
        "kind",
        &["tick", "metrics_tick"],
    );
    zero_counters(
        "presence_log_gaps_total",
        "Starts of a partition's fold after events it never read were discarded by the log's limits",
        "partition",
        &labels,
    );
    zero_counter(
        "presence_snapshots_refused_total",
        "Snapshots not saved because a newer owner had saved the partition's",
    );
    // Exported with their first value: per customer, and with a database.
    describe_gauge!(
        "presence_active_users",
        "Live sessions of a customer (the first 100 customers)"
    );
    describe_gauge!(
        "presence_active_users_ema",
        "EMA of a customer's live sessions (the first 100 customers)"
    );
    describe_gauge!(
        "presence_snapshot_sequence",
        "Sequence of the newest fold snapshot saved"
    );
    describe_gauge!(
        "presence_snapshot_loaded_sequence",
        "Sequence of the fold snapshot restored at start"
    );
    describe_histogram!(
        "presence_snapshot_save_seconds",
        "Time to save a fold snapshot"
    );
}
