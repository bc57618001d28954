//! Every metric family the edge exports, registered at start-up with its known label values at
//! zero, so a quiet edge already shows them: `rate()` and `absent()` alerts and dashboards work
//! before the first connection, rejection or delivery (Prometheus' own advice: export known
//! series at 0). Families whose labels are open-ended (HTTP status of an API error) start with
//! the values the edge answers with.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Kinds of events an edge appends.
const EVENT_KINDS: [&str; 8] = [
    "join",
    "beat",
    "leave",
    "status",
    "service_status",
    "session_join",
    "session_beat",
    "session_leave",
];

/// Registers every family at zero, with its help text.
pub(crate) fn register() {
    describe_gauge!(
        "presence_connections",
        "Open client connections on this edge"
    );
    describe_counter!(
        "presence_connections_opened_total",
        "Client connections admitted"
    );
    for transport in ["socketio", "websocket"] {
        metrics::gauge!("presence_connections", "transport" => transport).set(0.0);
        metrics::counter!("presence_connections_opened_total", "transport" => transport)
            .absolute(0);
    }
    describe_counter!(
        "presence_connections_handed_over_total",
        "Sockets closed by a drain without a leave"
    );
    describe_counter!(
        "presence_heartbeats_received_total",
        "Socket.io heartbeats received"
    );
    describe_histogram!(
        "presence_beat_batch_connections",
        "Connections in one appended beat batch"
    );
    describe_counter!(
        "presence_fanout_changes_total",
        "Presence changes read from the changes stream and emitted"
    );
    describe_counter!(
        "presence_fanout_batches_total",
        "Batches of changes emitted back to back"
    );
    describe_counter!(
        "presence_metrics_updates_delivered_total",
        "metrics:update frames handed to active-users WebSockets"
    );
    describe_counter!(
        "presence_dashboard_streams_total",
        "Dashboard event streams opened"
    );
    describe_counter!(
        "presence_directory_dropped_total",
        "Connected users not recorded in the directory (its writer was behind)"
    );
    describe_counter!(
        "presence_directory_write_failures_total",
        "Directory writes to PostgreSQL that failed"
    );
    describe_counter!(
        "presence_connections_expired_total",
        "Sockets closed because their token expired"
    );
    for name in [
        "presence_connections_expired_total",
        "presence_connections_handed_over_total",
        "presence_heartbeats_received_total",
        "presence_fanout_changes_total",
        "presence_fanout_batches_total",
        "presence_fanout_deliveries_total",
        "presence_metrics_updates_delivered_total",
        "presence_dashboard_streams_total",
        "presence_directory_dropped_total",
        "presence_directory_write_failures_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    describe_counter!(
        "presence_events_published_total",
        "Events appended to the log, by kind and outcome"
    );
    for kind in EVENT_KINDS {
        for outcome in ["ok", "error"] {
            metrics::counter!("presence_events_published_total", "kind" => kind, "outcome" => outcome)
                .absolute(0);
        }
    }
    metrics::counter!("presence_events_published_total", "kind" => "beat", "outcome" => "abandoned")
        .absolute(0);
    describe_counter!(
        "presence_fanout_deliveries_total",
        "Presence updates handed to sockets"
    );
    describe_counter!(
        "presence_fanout_send_failures_total",
        "Presence updates a socket did not get, by reason"
    );
    for reason in ["closed", "full", "other"] {
        metrics::counter!("presence_fanout_send_failures_total", "reason" => reason).absolute(0);
    }
    describe_gauge!(
        "presence_consumer_lag_messages",
        "Messages a reader of the log is behind"
    );
    metrics::gauge!("presence_consumer_lag_messages", "consumer" => "fanout").set(0.0);
    register_rejections();
}

/// Every refusal the edge counts, by the reasons it gives.
fn register_rejections() {
    describe_counter!(
        "presence_handshakes_rejected_total",
        "Socket.io handshakes refused, by reason"
    );
    for reason in [
        "missing",
        "expired",
        "not_yet_valid",
        "too_large",
        "wrong_issuer_or_audience",
        "unknown_key",
        "too_many_connections",
        "invalid",
        "bad_payload",
        "no_verifier",
        "insecure_disabled",
        "unavailable",
    ] {
        metrics::counter!("presence_handshakes_rejected_total", "reason" => reason).absolute(0);
    }
    describe_counter!(
        "presence_socket_rejected_total",
        "Socket.io events answered {ok: false}, by event and reason"
    );
    for (event, reasons) in [
        (
            "user:status",
            &[
                "bad_payload",
                "unknown_status",
                "bad_details",
                "unavailable",
            ][..],
        ),
        (
            "presence:query",
            &["bad_payload", "too_many", "bad_user_id"][..],
        ),
    ] {
        for reason in reasons {
            metrics::counter!("presence_socket_rejected_total", "event" => event, "reason" => *reason)
                .absolute(0);
        }
    }
    let input_errors = [
        "invalid_json",
        "too_large",
        "missing_field",
        "invalid_field",
        "unknown_type",
    ];
    describe_counter!(
        "presence_ws_rejected_total",
        "Active-users WebSocket frames refused, by reason"
    );
    for reason in input_errors.iter().chain(&[
        "binary_not_supported",
        "not_authenticated",
        "already_authenticated",
    ]) {
        metrics::counter!("presence_ws_rejected_total", "reason" => *reason).absolute(0);
    }
    describe_counter!(
        "presence_ws_closed_total",
        "Active-users WebSockets closed by the edge, by close code"
    );
    for code in ["1001", "1008", "1009", "1011", "4408", "4429"] {
        metrics::counter!("presence_ws_closed_total", "code" => code).absolute(0);
    }
    describe_counter!(
        "presence_http_rejected_total",
        "Active-users HTTP requests refused, by endpoint and reason"
    );
    for endpoint in ["join", "beat", "leave", "metrics"] {
        for reason in input_errors.iter().chain(&["invalid_body"]) {
            metrics::counter!("presence_http_rejected_total", "endpoint" => endpoint, "reason" => *reason)
                .absolute(0);
        }
    }
    describe_counter!(
        "presence_api_rejected_total",
        "Backend API and operator requests refused, by HTTP status"
    );
    for status in ["400", "401", "403", "409", "500", "503"] {
        metrics::counter!("presence_api_rejected_total", "status" => status).absolute(0);
    }
    describe_counter!(
        "presence_rate_limited_total",
        "Requests over a rate limit, by what blocked them"
    );
    for by in ["ip", "customer", "websocket"] {
        metrics::counter!("presence_rate_limited_total", "blocked_by" => by).absolute(0);
    }
    describe_counter!(
        "presence_feed_rejected_total",
        "Messages of a followed stream that did not decode"
    );
    for feed in ["changes", "metrics", "stats"] {
        metrics::counter!("presence_feed_rejected_total", "feed" => feed).absolute(0);
    }
    describe_counter!(
        "presence_key_reloads_total",
        "Reloads of JWT_KEYS_FILE, by outcome"
    );
    for outcome in ["ok", "error"] {
        metrics::counter!("presence_key_reloads_total", "outcome" => outcome).absolute(0);
    }
    describe_counter!(
        "presence_encode_failures_total",
        "Values that could not be encoded (a bug), by what"
    );
    for what in ["event", "ws_frame", "dashboard"] {
        metrics::counter!("presence_encode_failures_total", "what" => what).absolute(0);
    }
}
