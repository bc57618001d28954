//! Every metric family the aggregator exports, registered at start-up with its known label
//! values at zero, so a quiet cluster already shows them (sweeps, swept connections, changes
//! by cause, rejections): `rate()` and `absent()` alerts work before the first event.

use metrics::{describe_gauge, describe_histogram};
use presence_telemetry::{zero_counter, zero_counters, zero_gauge, zero_gauges};

/// Registers every family at zero, with its help text.
pub(crate) fn register() {
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
    zero_gauge("presence_online_users", "Users online in the cluster");
    zero_gauge(
        "presence_peak_online_users",
        "Most users online at once in the cluster",
    );
    zero_gauge(
        "presence_folded_sequence",
        "Sequence of the newest event folded",
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
