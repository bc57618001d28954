//! Every metric family the edge exports, registered at start-up with its known label values at
//! zero, so a quiet edge already shows them: `rate()` and `absent()` alerts and dashboards work
//! before the first connection, rejection or delivery (Prometheus' own advice: export known
//! series at 0). Families whose labels are open-ended (HTTP status of an API error) start with
//! the values the edge answers with.

use metrics::{describe_counter, describe_gauge, describe_histogram};
use presence_telemetry::{zero_counter, zero_counters, zero_gauges};

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

/// Why the active-users protocol refuses input (WebSocket frames and HTTP bodies alike).
const INPUT_ERRORS: [&str; 5] = [
    "invalid_json",
    "too_large",
    "missing_field",
    "invalid_field",
    "unknown_type",
];

/// Registers every family at zero, with its help text.
pub(crate) fn register() {
    const TRANSPORTS: &[&str] = &["socketio", "websocket"];
    zero_gauges(
        "presence_connections",
        "Open client connections on this edge",
        "transport",
        TRANSPORTS,
    );
    zero_counters(
        "presence_connections_opened_total",
        "Client connections admitted",
        "transport",
        TRANSPORTS,
    );
    for (name, help) in [
        (
            "presence_connections_expired_total",
            "Sockets closed because their token expired",
        ),
        (
            "presence_connections_handed_over_total",
            "Sockets closed by a drain without a leave",
        ),
        (
            "presence_heartbeats_received_total",
            "Socket.io heartbeats received",
        ),
        (
            "presence_fanout_changes_total",
            "Presence changes read from the changes stream and emitted",
        ),
        (
            "presence_fanout_batches_total",
            "Batches of changes emitted back to back",
        ),
        (
            "presence_fanout_deliveries_total",
            "Presence updates handed to sockets (an entry of a presence-updates frame is one)",
        ),
        (
            "presence_fanout_frames_total",
            "presence-update and presence-updates frames handed to sockets",
        ),
        (
            "presence_metrics_updates_delivered_total",
            "metrics:update frames handed to active-users WebSockets",
        ),
        (
            "presence_dashboard_streams_total",
            "Dashboard event streams opened",
        ),
        (
            "presence_directory_dropped_total",
            "Connected users not recorded in the directory (its writer was behind)",
        ),
        (
            "presence_directory_write_failures_total",
            "Directory writes to PostgreSQL that failed",
        ),
    ] {
        zero_counter(name, help);
    }
    describe_histogram!(
        "presence_beat_batch_connections",
        "Connections in one appended beat batch"
    );
    describe_counter!(
        "presence_events_published_total",
        "Events appended to the log, by kind and outcome"
    );
    for kind in EVENT_KINDS {
        for outcome in ["ok", "error", "refused"] {
            metrics::counter!("presence_events_published_total", "kind" => kind, "outcome" => outcome)
                .absolute(0);
        }
    }
    metrics::counter!("presence_events_published_total", "kind" => "beat", "outcome" => "abandoned")
        .absolute(0);
    describe_gauge!(
        "presence_log_available",
        "1 while this edge's appends succeed, 0 after one failed (connects and writes are refused at once until a probe succeeds)"
    );
    metrics::gauge!("presence_log_available").set(1.0);
    zero_counters(
        "presence_fanout_send_failures_total",
        "Presence updates a socket did not get, by reason",
        "reason",
        &["closed", "full", "other"],
    );
    zero_gauges(
        "presence_view_users",
        "Users this edge's view holds: online, and gone (offline, in the bounded cache)",
        "kind",
        &["online", "gone"],
    );
    zero_counter(
        "presence_history_lookups_total",
        "Users asked about that the view does not hold, looked up in PostgreSQL",
    );
    zero_counter(
        "presence_history_lookup_failures_total",
        "Lookups of offline users in PostgreSQL that failed (answered as never seen)",
    );
    zero_gauges(
        "presence_subscriptions",
        "Subscriptions sockets on this edge, and the users they subscribed to in all",
        "kind",
        &["sockets", "held"],
    );
    zero_counters(
        "presence_sync_full_total",
        "presence:sync and resubscriptions answered with the whole state, by reason",
        "reason",
        &["cursor_too_old"],
    );
    zero_gauges(
        "presence_consumer_lag_messages",
        "Messages a reader of the log is behind",
        "consumer",
        &["fanout"],
    );
    register_rejections();
}

/// Every refusal the edge counts, by the reasons it gives.
fn register_rejections() {
    zero_counters(
        "presence_handshakes_rejected_total",
        "Socket.io handshakes refused, by reason",
        "reason",
        &[
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
            "bad_delivery",
        ],
    );
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
        (
            "auth:refresh",
            &["bad_payload", "invalid_token", "other_user"][..],
        ),
        (
            "presence:subscribe",
            &[
                "bad_payload",
                "not_subscriptions",
                "bad_user_id",
                "bad_cursor",
                "too_many_subscriptions",
            ][..],
        ),
        ("presence:sync", &["bad_payload", "bad_cursor"][..]),
    ] {
        for reason in reasons {
            metrics::counter!("presence_socket_rejected_total", "event" => event, "reason" => *reason)
                .absolute(0);
        }
    }
    let ws_reasons: Vec<&'static str> = INPUT_ERRORS
        .into_iter()
        .chain([
            "binary_not_supported",
            "not_authenticated",
            "already_authenticated",
            "origin_not_allowed",
            "too_many_sessions",
        ])
        .collect();
    zero_counters(
        "presence_ws_rejected_total",
        "Active-users WebSocket frames refused, by reason",
        "reason",
        &ws_reasons,
    );
    zero_counters(
        "presence_ws_closed_total",
        "Active-users WebSockets closed by the edge, by close code",
        "code",
        &["1001", "1008", "1009", "1011", "4403", "4408", "4429"],
    );
    describe_counter!(
        "presence_http_rejected_total",
        "Active-users HTTP requests refused, by endpoint and reason"
    );
    for endpoint in ["join", "beat", "leave", "metrics"] {
        for reason in INPUT_ERRORS
            .iter()
            .chain(&["invalid_body", "invalid_query"])
        {
            metrics::counter!("presence_http_rejected_total", "endpoint" => endpoint, "reason" => *reason)
                .absolute(0);
        }
    }
    metrics::counter!("presence_http_rejected_total", "endpoint" => "ws", "reason" => "not_a_websocket")
        .absolute(0);
    metrics::counter!("presence_http_rejected_total", "endpoint" => "unknown", "reason" => "unknown_action")
        .absolute(0);
    for reason in ["too_large", "invalid_body"] {
        metrics::counter!("presence_http_rejected_total", "endpoint" => "socket.io", "reason" => reason)
            .absolute(0);
    }
    zero_counters(
        "presence_sockets_closed_total",
        "Socket.io connections closed, by why: the client left, the server closed it, a packet did not parse, the transport failed (a WebSocket message over PRESENCE_MAX_PACKET_BYTES among others), the client stopped answering pings",
        "reason",
        &[
            "client",
            "server",
            "bad_packet",
            "transport_error",
            "ping_timeout",
        ],
    );
    zero_counters(
        "presence_connections_refused_total",
        "Connections of the public listener refused or closed: over a client address' share of open connections or of connects per minute (429), request headers not sent in time (idle keep-alive included), a request with a body not sent and answered in time (408)",
        "reason",
        &[
            "ip_connections",
            "ip_connects",
            "header_timeout",
            "body_timeout",
        ],
    );
    zero_counters(
        "presence_api_rejected_total",
        "Backend API and operator requests refused, by HTTP status",
        "status",
        &["400", "401", "403", "409", "500", "503"],
    );
    zero_counters(
        "presence_rate_limited_total",
        "Requests over a rate limit, by what blocked them",
        "blocked_by",
        &["ip", "customer", "sessions", "websocket"],
    );
    zero_counters(
        "presence_feed_fenced_total",
        "Messages of a deposed aggregator (an older lease epoch) refused, by feed",
        "feed",
        &["changes", "metrics"],
    );
    zero_counters(
        "presence_feed_stale_total",
        "Changes derived again by a refold (below the partition's newest sequence taken) skipped, by feed",
        "feed",
        &["changes"],
    );
    zero_counters(
        "presence_feed_rejected_total",
        "Messages of a followed stream that did not decode",
        "feed",
        &["changes", "metrics", "stats"],
    );
    zero_counters(
        "presence_key_reloads_total",
        "Reloads of JWT_KEYS_FILE, by outcome",
        "outcome",
        &["ok", "error"],
    );
    zero_counters(
        "presence_origin_reloads_total",
        "Reloads of PRESENCE_CUSTOMER_ORIGINS_FILE, by outcome",
        "outcome",
        &["ok", "error"],
    );
    zero_counters(
        "presence_encode_failures_total",
        "Values that could not be encoded (a bug), by what",
        "what",
        &["event", "ws_frame", "dashboard"],
    );
}
