//! Every metric family the aggregator exports, registered at start-up with its known label
//! values at zero, so a quiet cluster already shows them (sweeps, swept connections, changes
//! by cause, rejections): `rate()` and `absent()` alerts work before the first event.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Registers every family at zero, with its help text.
pub(crate) fn register() {
    describe_counter!("presence_events_consumed_total", "Events folded, by kind");
    for kind in [
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
    ] {
        metrics::counter!("presence_events_consumed_total", "kind" => kind).absolute(0);
    }
    describe_counter!(
        "presence_events_rejected_total",
        "Events skipped by the fold, by reason"
    );
    metrics::counter!("presence_events_rejected_total", "reason" => "undecodable").absolute(0);
    describe_counter!(
        "presence_changes_total",
        "Presence changes derived, by cause"
    );
    for cause in ["join", "beat", "leave", "status", "sweep"] {
        metrics::counter!("presence_changes_total", "cause" => cause).absolute(0);
    }
    describe_counter!("presence_sweeps_total", "Sweep ticks folded");
    describe_counter!(
        "presence_swept_connections_total",
        "Connections closed by a sweep for silence"
    );
    describe_counter!(
        "presence_active_users_unlabelled_ticks_total",
        "Metrics ticks of customers beyond the first 100"
    );
    for name in [
        "presence_sweeps_total",
        "presence_swept_connections_total",
        "presence_active_users_unlabelled_ticks_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    describe_counter!(
        "presence_ticks_failed_total",
        "Clock ticks that could not be appended, by kind"
    );
    for kind in ["tick", "metrics_tick"] {
        metrics::counter!("presence_ticks_failed_total", "kind" => kind).absolute(0);
    }
    describe_counter!(
        "presence_encode_failures_total",
        "Values that could not be encoded (a bug), by what"
    );
    for what in ["event", "change", "metrics", "stats"] {
        metrics::counter!("presence_encode_failures_total", "what" => what).absolute(0);
    }
    describe_gauge!(
        "presence_consumer_lag_messages",
        "Messages a reader of the log is behind"
    );
    metrics::gauge!("presence_consumer_lag_messages", "consumer" => "aggregator").set(0.0);
    describe_gauge!("presence_online_users", "Users online in the cluster");
    describe_gauge!(
        "presence_peak_online_users",
        "Most users online at once in the cluster"
    );
    describe_gauge!(
        "presence_folded_sequence",
        "Sequence of the newest event folded"
    );
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
    for name in [
        "presence_online_users",
        "presence_peak_online_users",
        "presence_folded_sequence",
    ] {
        metrics::gauge!(name).set(0.0);
    }
}
