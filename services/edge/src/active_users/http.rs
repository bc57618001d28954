//! The active-users HTTP fallback: `POST /presence/{join,beat,leave}` (answered
//! `{"success": true}` once the event is durably in the log) and `GET /metrics?customerId=`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use presence_events::{EventBody, Millis, TenantId, Transport};
use serde::Serialize;

use super::ActiveUsersContext;
use super::protocol::{InputError, leave, parse_tab_request};
use super::rate_limit::{RateInfo, Verdict, rate_headers, too_many_requests};
use crate::wire::MetricsData;

/// How much longer than a beat flush an HTTP beat waits for its batch to be durable before
/// it is answered 503.
const BEAT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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

#[derive(Serialize)]
struct Success {
    success: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
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

/// `POST /presence/{join,beat,leave}`.
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
    let info = match cx.limits.check(ip, Some(&request.tab.tenant)) {
        Verdict::Allowed(info) => info,
        Verdict::Blocked {
            by,
            info,
            retry_after_secs,
        } => return too_many_requests(by, info, retry_after_secs),
    };
    // Beats join the edge's batch (one append per flush for all of them); joins and leaves
    // are appended at once. Either way the answer waits until the event is durable.
    let stored = match action {
        // While the log is away, refused at once (a 503 to retry) rather than after waiting.
        Action::Beat if !cx.publisher.admit() => false,
        Action::Beat => {
            let within = cx.beat_flush + BEAT_GRACE;
            let stored = cx
                .beats
                .tab_beat_durable(request.tab, Millis::now(), within)
                .await;
            if stored {
                cx.publisher.appended();
            }
            stored
        }
        Action::Join => append(cx, endpoint, request.join(Transport::Http)).await,
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
pub(super) async fn metrics(
    State(cx): State<Arc<ActiveUsersContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let ip = cx.limits.client_ip(peer, &headers);
    let customer = match query.get("customerId").map(String::as_str) {
        None | Some("") => Err(InputError {
            code: "missing_field",
            field: Some("customerId"),
            message: "customerId query parameter is required".into(),
        }),
        Some(raw) => TenantId::parse(raw).map_err(|e| InputError {
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
