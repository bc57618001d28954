//! The active-users HTTP fallback: `POST /presence/{join,beat,leave}` (answered
//! `{"success": true}` once the event is durably in the log) and `GET /metrics?customerId=`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use presence_events::{EventBody, Millis, TenantId, Transport};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ActiveUsersContext;
use super::protocol::{InputError, TabRequestBody, leave, parse_tab_request};
use super::rate_limit::{
    RateInfo, TooManyRequests, Verdict, rate_headers, too_many_requests, too_many_sessions,
};
use crate::wire::MetricsData;

/// How much longer than a beat flush an HTTP beat waits for its batch to be durable before
/// it is answered 503.
const BEAT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a tab does (`POST /presence/{action}`).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(super) enum TabAction {
    Join,
    Beat,
    Leave,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Join,
    Beat,
    Leave,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Join => "join",
            Action::Beat => "beat",
            Action::Leave => "leave",
        }
    }
}

/// The event is durably in the log.
#[derive(Serialize, ToSchema)]
pub(super) struct Success {
    /// Always `true`.
    success: bool,
}

/// A refusal of the active-users endpoints.
#[derive(Serialize, ToSchema)]
#[schema(as = ActiveUsersError)]
pub(super) struct ErrorBody<'a> {
    /// The status' reason phrase.
    error: &'static str,
    /// Stable: `invalid_json`, `missing_field`, `invalid_field`, `too_large`, `invalid_body`,
    /// `invalid_query`, `unknown_action`, `not_a_websocket`, `origin_not_allowed`,
    /// `unavailable`.
    code: &'static str,
    /// What was wrong.
    message: &'a str,
    /// The offending field, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

/// The query of `GET /metrics`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MetricsQuery {
    /// The customer.
    #[param(
        required = true,
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-]+$"
    )]
    #[serde(rename = "customerId")]
    customer_id: Option<String>,
}

fn refuse(endpoint: &'static str, e: &InputError, info: Option<RateInfo>) -> Response {
    metrics::counter!("presence_http_rejected_total", "endpoint" => endpoint, "reason" => e.code)
        .increment(1);
    let (status, error) = if e.code == "too_large" {
        (StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large")
    } else {
        (StatusCode::BAD_REQUEST, "Bad Request")
    };
    let body = Json(ErrorBody {
        error,
        code: e.code,
        message: &e.message,
        field: e.field,
    });
    match info {
        Some(info) => (status, rate_headers(info), body).into_response(),
        None => (status, body).into_response(),
    }
}

/// The request's `Origin`, if it sent one.
pub(super) fn origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
}

/// The `403` answer to an origin the customer does not allow.
fn forbidden(endpoint: &'static str, message: &str, info: RateInfo) -> Response {
    metrics::counter!("presence_http_rejected_total", "endpoint" => endpoint, "reason" => "origin_not_allowed")
        .increment(1);
    let body = Json(ErrorBody {
        error: "Forbidden",
        code: "origin_not_allowed",
        message,
        field: None,
    });
    (StatusCode::FORBIDDEN, rate_headers(info), body).into_response()
}

/// The answer to a `GET /ws/active-users` that is not a WebSocket upgrade.
pub(super) fn not_a_websocket(rejection: &WebSocketUpgradeRejection) -> Response {
    metrics::counter!("presence_http_rejected_total", "endpoint" => "ws", "reason" => "not_a_websocket")
        .increment(1);
    let status = rejection.status();
    let message = rejection.body_text();
    let body = Json(ErrorBody {
        error: status.canonical_reason().unwrap_or("Bad Request"),
        code: "not_a_websocket",
        message: &message,
        field: None,
    });
    (status, body).into_response()
}

/// `POST /presence/{join,beat,leave}`.
#[utoipa::path(
    post,
    path = "/presence/{action}",
    tag = "active-users",
    summary = "A tab joins, beats (every 30 s) or leaves",
    description = "Answered once the event is durably in the log. A tab that stops beating is \
        swept after the session timeout (60 s). Allowed from any origin (CORS), rate limited \
        per IP address and per customer.",
    params(("action" = inline(TabAction), Path, description = "What the tab does")),
    request_body(content = TabRequestBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = Success),
        (status = 400, description = "The body is not a valid request: `code` and `field` say why", body = ErrorBody),
        (status = 403, description = "The customer does not allow this origin (`origin_not_allowed`, PRESENCE_CUSTOMER_ORIGINS)", body = ErrorBody),
        (status = 404, description = "Not join, beat or leave (`unknown_action`)", body = ErrorBody),
        (status = 413, description = "The body is over 4 KiB (`too_large`)", body = ErrorBody),
        (status = 429, description = "Rate limited (`blockedBy` `ip` or `customer`), or the address already counts PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER sessions of the customer (`blockedBy: sessions`)", body = TooManyRequests),
        (status = 503, description = "The log did not take the event: retry", body = ErrorBody),
    )
)]
pub(super) async fn tab_event(
    State(cx): State<Arc<ActiveUsersContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let action = match action.as_str() {
        "join" => Action::Join,
        "beat" => Action::Beat,
        "leave" => Action::Leave,
        _ => {
            let e = InputError::general(
                "unknown_action",
                "expected /presence/join, /presence/beat or /presence/leave",
            );
            metrics::counter!("presence_http_rejected_total", "endpoint" => "unknown", "reason" => e.code)
                .increment(1);
            return (
                StatusCode::NOT_FOUND,
                Json(ErrorBody {
                    error: "Not Found",
                    code: e.code,
                    message: &e.message,
                    field: None,
                }),
            )
                .into_response();
        }
    };
    handle(&cx, action, peer, &headers, body).await
}

async fn handle(
    cx: &ActiveUsersContext,
    action: Action,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let endpoint = action.name();
    let ip = cx.limits.client_ip(peer, headers);
    let parsed = match body {
        Ok(bytes) => parse_tab_request(&bytes),
        Err(rejection) => Err(InputError::general(
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "invalid_body"
            },
            rejection.body_text(),
        )),
    };
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            // Garbage counts against the sender's budget too.
            return match cx.limits.check(ip, None) {
                Verdict::Allowed(info) => refuse(endpoint, &e, Some(info)),
                Verdict::Blocked {
                    by,
                    info,
                    retry_after_secs,
                } => too_many_requests(by, info, retry_after_secs),
            };
        }
    };
    // Before the customer's budget is charged: pages of other sites must not use it up.
    if let Err(refusal) = cx.origins.check(&request.tab.tenant, origin(headers)) {
        return match cx.limits.check(ip, None) {
            Verdict::Allowed(info) => {
                forbidden(endpoint, &refusal.message(&request.tab.tenant), info)
            }
            Verdict::Blocked {
                by,
                info,
                retry_after_secs,
            } => too_many_requests(by, info, retry_after_secs),
        };
    }
    let info = match cx.limits.check(ip, Some(&request.tab.tenant)) {
        Verdict::Allowed(info) => info,
        Verdict::Blocked {
            by,
            info,
            retry_after_secs,
        } => return too_many_requests(by, info, retry_after_secs),
    };
    if matches!(action, Action::Leave) {
        // The tab's session gives its place back (another tab of it takes it again).
        cx.sessions
            .release(ip, &request.tab.tenant, &request.tab.session);
    } else if let Err(limit) =
        cx.sessions
            .admit(ip, &request.tab.tenant, &request.tab.session, Millis::now())
    {
        return too_many_sessions(&request.tab.tenant, limit, info);
    }
    // Beats join the edge's batch (one append per flush for all of them); joins and leaves
    // are appended at once. Either way the answer waits until the event is durable.
    let stored = match action {
        // While the log is away, refused at once (a 503 to retry) rather than after waiting.
        Action::Beat if !cx.publisher.admit() => false,
        Action::Beat => {
            let within = cx.beat_flush + BEAT_GRACE;
            let stored = cx
                .beats
                .tab_beat_durable(request.tab, Millis::now(), cx.sessions.source(ip), within)
                .await;
            if stored {
                cx.publisher.appended();
            }
            stored
        }
        Action::Join => {
            let source = cx.sessions.source(ip);
            append(cx, endpoint, request.join(Transport::Http, source)).await
        }
        Action::Leave => {
            // A beat of this tab still waiting in the batch must not land after its leave.
            cx.beats.forget_tab(&request.tab).await;
            append(cx, endpoint, leave(request.tab)).await
        }
    };
    if stored {
        (
            StatusCode::OK,
            rate_headers(info),
            Json(Success { success: true }),
        )
            .into_response()
    } else {
        let body = Json(ErrorBody {
            error: "Service Unavailable",
            code: "unavailable",
            message: "the event could not be stored; retry",
            field: None,
        });
        let retry = [(axum::http::header::RETRY_AFTER, "1")];
        (
            StatusCode::SERVICE_UNAVAILABLE,
            rate_headers(info),
            retry,
            body,
        )
            .into_response()
    }
}

/// Appends a join or leave; `false` when the log did not take it.
async fn append(cx: &ActiveUsersContext, endpoint: &'static str, event: EventBody) -> bool {
    match cx.publisher.publish(event).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, endpoint, "could not append an active-users event");
            false
        }
    }
}

/// `GET /metrics?customerId=`: the customer's latest count and EMA.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "active-users",
    summary = "A customer's count of people on its site and its EMA",
    description = "The latest tick of the aggregator (every second or so); `count` 0 before the \
        first. Allowed from any origin (CORS), rate limited like the tab events.",
    params(MetricsQuery),
    responses(
        (status = 200, description = "The latest figures", body = MetricsData),
        (status = 400, description = "`customerId` is missing or not a customer id", body = ErrorBody),
        (status = 403, description = "The customer does not allow this origin (`origin_not_allowed`)", body = ErrorBody),
        (status = 429, description = "Rate limited", body = TooManyRequests),
    )
)]
pub(super) async fn metrics(
    State(cx): State<Arc<ActiveUsersContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<MetricsQuery>, QueryRejection>,
) -> Response {
    let ip = cx.limits.client_ip(peer, &headers);
    let customer = match query.as_ref().map(|q| q.customer_id.as_deref()) {
        Err(rejection) => Err(InputError::general("invalid_query", rejection.body_text())),
        Ok(None | Some("")) => Err(InputError {
            code: "missing_field",
            field: Some("customerId"),
            message: "customerId query parameter is required".into(),
        }),
        Ok(Some(raw)) => TenantId::parse(raw).map_err(|e| InputError {
            code: "invalid_field",
            field: Some("customerId"),
            message: e.to_string(),
        }),
    };
    let customer = match customer {
        Ok(c) => c,
        Err(e) => {
            return match cx.limits.check(ip, None) {
                Verdict::Allowed(info) => refuse("metrics", &e, Some(info)),
                Verdict::Blocked {
                    by,
                    info,
                    retry_after_secs,
                } => too_many_requests(by, info, retry_after_secs),
            };
        }
    };
    if let Err(refusal) = cx.origins.check(&customer, origin(&headers)) {
        return match cx.limits.check(ip, None) {
            Verdict::Allowed(info) => forbidden("metrics", &refusal.message(&customer), info),
            Verdict::Blocked {
                by,
                info,
                retry_after_secs,
            } => too_many_requests(by, info, retry_after_secs),
        };
    }
    match cx.limits.check(ip, Some(&customer)) {
        Verdict::Allowed(info) => {
            let data = cx
                .hub
                .latest(&customer)
                .unwrap_or_else(|| MetricsData::empty(customer, Millis::now()));
            (StatusCode::OK, rate_headers(info), Json(data)).into_response()
        }
        Verdict::Blocked {
            by,
            info,
            retry_after_secs,
        } => too_many_requests(by, info, retry_after_secs),
    }
}
