//! Active users end to end: the WebSocket endpoint and the HTTP fallback on two edges over a
//! real NATS JetStream, counted together by the aggregator, with the EMA pushed back; rate
//! limits; bad input.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use presence_e2e::{Deployment, Mode, http};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Fast clocks: metrics every 200 ms, sessions expire after 2 s without a beat.
fn fast() -> Vec<(&'static str, String)> {
    vec![
        ("PRESENCE_METRICS_TICK_MS", "200".into()),
        ("PRESENCE_SESSION_TTL_MS", "2000".into()),
    ]
}

async fn ws(base: &str) -> Ws {
    let url = format!("{}/ws/active-users", base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next JSON text frame, skipping `metrics:update` unless asked for.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} frame within {WAIT:?}"));
        match frame {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                if v["type"] == kind {
                    return v;
                }
            }
            Some(Ok(Message::Close(c))) => panic!("closed while waiting for {kind}: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("socket ended while waiting for {kind}: {other:?}"),
        }
    }
}

async fn close_code(ws: &mut Ws) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no close")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.as_str().to_owned());
            }
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame: {other:?}"),
        }
    }
}

async fn auth(ws: &mut Ws, customer: &str, session: &str, tab: &str) {
    send(
        ws,
        json!({"type": "auth", "customerId": customer, "sessionId": session, "tabId": tab}),
    )
    .await;
    let hello = next_of(ws, "hello").await;
    assert_eq!(hello["sessionId"], session);
    assert!(hello["timestamp"].is_u64());
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Waits for a `metrics:update` of a tick after `since` (ms) with `count`, pinging meanwhile
/// so the tab stays alive. Older frames still queued on the socket are skipped.
async fn until_count(ws: &mut Ws, count: u64, since: u64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        send(ws, json!({"type": "ping", "timestamp": 1})).await;
        let update = tokio::time::timeout_at(deadline, next_of(ws, "metrics:update"))
            .await
            .unwrap_or_else(|_| panic!("count never reached {count}"));
        let fresh = update["data"]["timestamp"].as_u64().unwrap_or(0) > since;
        if fresh && update["data"]["count"] == count {
            return update;
        }
    }
}

async fn post(base: &str, action: &str, body: Value) -> presence_e2e::HttpResponse {
    http(
        "POST",
        &format!("{base}/presence/{action}"),
        &[],
        Some(body.to_string().as_bytes()),
    )
    .await
    .expect("http")
}

fn tab(customer: &str, session: &str, tab: &str) -> Value {
    json!({"customerId": customer, "sessionId": session, "tabId": tab, "timestamp": 1, "platform": "web"})
}

async fn sessions_on_two_edges_and_transports_are_counted_together(mode: Mode) {
    let d = Deployment::start(mode, &fast()).await.unwrap();
    let shop = "shop-1";
    let start = now_ms();
    // Session 1: a WebSocket tab on edge A and another tab of the same browser on edge B.
    let mut a1 = ws(&d.a).await;
    auth(&mut a1, shop, "browser-1", "tab-1").await;
    let mut b1 = ws(&d.b).await;
    auth(&mut b1, shop, "browser-1", "tab-2").await;
    // Session 2: the HTTP fallback on edge B.
    let joined = post(&d.b, "join", tab(shop, "browser-2", "tab-1")).await;
    assert_eq!(
        (joined.status, joined.json()),
        (200, json!({"success": true}))
    );

    let update = until_count(&mut b1, 2, start).await;
    assert_eq!(update["data"]["customerId"], shop);
    assert!(update["data"]["ema"].as_f64().unwrap() > 0.0);
    let polled = http(
        "GET",
        &format!("{}/metrics?customerId={shop}", d.a),
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(polled.status, 200);

    // A leave drops the count on the next tick.
    let leave_at = now_ms();
    let left = post(&d.b, "leave", tab(shop, "browser-2", "tab-1")).await;
    assert_eq!(left.status, 200);
    until_count(&mut b1, 1, leave_at).await;

    // A session that joins and never beats again expires after the TTL (2 s), not before.
    let join_at = now_ms();
    post(&d.a, "join", tab(shop, "browser-3", "tab-1")).await;
    until_count(&mut a1, 2, join_at).await;
    let expired = until_count(&mut a1, 1, join_at).await;
    let tick = expired["data"]["timestamp"].as_u64().unwrap();
    assert!(
        tick >= join_at + 2_000,
        "expired {} ms after joining",
        tick - join_at
    );

    // Another customer's clients hear nothing of this one.
    let mut other = ws(&d.a).await;
    let other_at = now_ms();
    auth(&mut other, "shop-2", "browser-9", "tab-1").await;
    let update = until_count(&mut other, 1, other_at).await;
    assert_eq!(update["data"]["customerId"], "shop-2");
}

async fn polling_get_metrics_answers_with_the_count_and_ema(mode: Mode) {
    let d = Deployment::start(mode, &fast()).await.unwrap();
    for s in ["s1", "s2", "s3"] {
        assert_eq!(post(&d.a, "join", tab("shop-9", s, "t")).await.status, 200);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = http(
            "GET",
            &format!("{}/metrics?customerId=shop-9", d.b),
            &[],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["customerId"], "shop-9");
        if v["count"] == 3 {
            assert!(v["ema"].as_f64().unwrap() > 0.0 && v["timestamp"].is_u64());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "count never reached 3: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cluster_counts_sessions_across_edges_and_transports() {
    sessions_on_two_edges_and_transports_are_counted_together(Mode::Cluster).await;
}

#[tokio::test]
async fn standalone_counts_sessions_across_transports() {
    sessions_on_two_edges_and_transports_are_counted_together(Mode::Standalone).await;
}

#[tokio::test]
async fn the_ema_curve_continues_across_an_aggregator_restart() {
    let env = [
        ("PRESENCE_METRICS_TICK_MS", "200".to_owned()),
        ("PRESENCE_SESSION_TTL_MS", "60000".to_owned()),
    ];
    let mut d = Deployment::start(Mode::Cluster, &env).await.unwrap();
    let mut watcher = ws(&d.a).await;
    auth(&mut watcher, "shop-r", "watcher", "t").await;
    for s in ["s1", "s2", "s3", "s4"] {
        assert_eq!(post(&d.b, "join", tab("shop-r", s, "t")).await.status, 200);
    }
    // Climb to 5, then fall to 1: the EMA decays from about 5 towards 1.
    for _ in 0..15 {
        until_count(&mut watcher, 5, now_ms()).await;
    }
    for s in ["s1", "s2", "s3", "s4"] {
        assert_eq!(post(&d.b, "leave", tab("shop-r", s, "t")).await.status, 200);
    }
    let falling = until_count(&mut watcher, 1, now_ms()).await;
    let before = falling["data"]["ema"].as_f64().unwrap();
    assert!(before > 2.0, "ema only reached {before}");
    // Take the aggregator away without a goodbye and start another.
    d.kill_and_restart_aggregator().await.unwrap();
    let after = until_count(&mut watcher, 1, now_ms()).await;
    let after = after["data"]["ema"].as_f64().unwrap();
    // A curve restarted from nothing would report ema == count (1) on its first tick; the
    // restored one keeps decaying from where it was.
    assert!(
        after > 1.05 && after < before,
        "before {before}, after {after}"
    );
}

#[tokio::test]
async fn cluster_serves_polled_metrics() {
    polling_get_metrics_answers_with_the_count_and_ema(Mode::Cluster).await;
}

#[tokio::test]
async fn the_101st_request_from_one_ip_gets_429_with_headers_and_other_ips_do_not() {
    // The balancer is named by its range (any loopback address).
    let env = [(
        "PRESENCE_TRUSTED_PROXIES",
        "10.0.0.7,127.0.0.0/8".to_owned(),
    )];
    let d = Deployment::start(Mode::Standalone, &env).await.unwrap();
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    let url = format!("{}/metrics?customerId=shop", d.a);
    // The limiter (GCRA) gives back one request every 600 ms: if the burst below takes a
    // while, the 429 may come a request or two later than the 101st.
    let started = Instant::now();
    let mut previous_remaining = 100;
    let mut n = 0;
    let r = loop {
        n += 1;
        let r = http("GET", &url, &from("203.0.113.7"), None).await.unwrap();
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 200, "request {n}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
        let remaining: u32 = r.header("x-ratelimit-remaining").unwrap().parse().unwrap();
        assert!(
            remaining < previous_remaining + 1,
            "remaining went up: {remaining} after {previous_remaining}"
        );
        previous_remaining = remaining;
        assert!(r.header("x-ratelimit-reset").is_some());
        assert!(n <= 200, "never limited");
    };
    let given_back = (started.elapsed().as_millis() / 600) as u32;
    assert!(
        (101..=101 + given_back).contains(&n),
        "limited at request {n}, after {:?}",
        started.elapsed()
    );
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("x-ratelimit-reset").is_some());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body = r.json();
    assert_eq!(body["error"], "Too Many Requests");
    assert_eq!(body["blockedBy"], "ip");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("100 requests per minute")
    );
    // Another client IP is unaffected; so is WebSocket auth from it.
    let r = http("GET", &url, &from("203.0.113.8"), None).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_customer_limit_trips_independently_of_the_ip_limit() {
    let env = [
        ("PRESENCE_TRUSTED_PROXIES", "127.0.0.1".to_owned()),
        ("PRESENCE_RATE_LIMIT_CUSTOMER_PER_MIN", "5".to_owned()),
    ];
    let d = Deployment::start(Mode::Standalone, &env).await.unwrap();
    for n in 0..5 {
        let ip = format!("198.51.100.{n}");
        let r = http(
            "POST",
            &format!("{}/presence/join", d.a),
            &[("X-Forwarded-For", &ip)],
            Some(
                tab("busy-shop", &format!("s{n}"), "t")
                    .to_string()
                    .as_bytes(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    let r = http(
        "POST",
        &format!("{}/presence/beat", d.a),
        &[("X-Forwarded-For", "198.51.100.99")],
        Some(tab("busy-shop", "s0", "t").to_string().as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["blockedBy"], "customer");
    // The same IP for another customer is fine.
    let r = http(
        "POST",
        &format!("{}/presence/beat", d.a),
        &[("X-Forwarded-For", "198.51.100.99")],
        Some(tab("quiet-shop", "s0", "t").to_string().as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    // WebSocket auth counts against the customer too.
    let mut socket = ws(&d.a).await;
    send(
        &mut socket,
        json!({"type": "auth", "customerId": "busy-shop", "sessionId": "x", "tabId": "y"}),
    )
    .await;
    let error = next_of(&mut socket, "error").await;
    assert_eq!(error["code"], "rate_limited");
    assert_eq!(close_code(&mut socket).await.0, 4429);
}

#[tokio::test]
async fn bad_http_input_gets_a_field_level_400() {
    let d = Deployment::start(Mode::Standalone, &[]).await.unwrap();
    /// (endpoint, body, status, code, field)
    type Case = (
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "join",
            b"{}".to_vec(),
            400,
            "missing_field",
            Some("customerId"),
        ),
        (
            "join",
            br#"{"customerId":"","sessionId":"s","tabId":"t"}"#.to_vec(),
            400,
            "missing_field",
            Some("customerId"),
        ),
        (
            "beat",
            br#"{"customerId":"c","sessionId":5,"tabId":"t"}"#.to_vec(),
            400,
            "invalid_field",
            Some("sessionId"),
        ),
        (
            "beat",
            br#"{"customerId":"c","sessionId":"s"}"#.to_vec(),
            400,
            "missing_field",
            Some("tabId"),
        ),
        (
            "leave",
            br#"{"customerId":"c","sessionId":"s","tabId":"t","timestamp":"soon"}"#.to_vec(),
            400,
            "invalid_field",
            Some("timestamp"),
        ),
        (
            "leave",
            br#"{"customerId":"a b","sessionId":"s","tabId":"t"}"#.to_vec(),
            400,
            "invalid_field",
            Some("customerId"),
        ),
        ("join", b"not json".to_vec(), 400, "invalid_json", None),
        ("join", b"[]".to_vec(), 400, "invalid_json", None),
        (
            "join",
            format!(
                r#"{{"customerId":"c","sessionId":"s","tabId":"t","userAgent":"{}"}}"#,
                "x".repeat(5000)
            )
            .into_bytes(),
            413,
            "too_large",
            None,
        ),
    ];
    for (action, body, status, code, field) in cases {
        let r = http(
            "POST",
            &format!("{}/presence/{action}", d.a),
            &[],
            Some(&body),
        )
        .await
        .unwrap();
        let v = r.json();
        assert_eq!(
            r.status,
            status,
            "{action} {}: {v}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["field"].as_str(), field, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = http("GET", &format!("{}/metrics", d.a), &[], None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, json!("customerId"))
    );
    // The edge is still serving.
    assert_eq!(post(&d.a, "join", tab("c", "s", "t")).await.status, 200);
}

#[tokio::test]
async fn bad_websocket_input_gets_error_frames_and_specific_close_codes() {
    let env = [("PRESENCE_WS_AUTH_TIMEOUT_MS", "500".to_owned())];
    let d = Deployment::start(Mode::Standalone, &env).await.unwrap();

    // Frames before auth, unknown types, missing fields: error frames, socket stays open.
    let mut socket = ws(&d.a).await;
    send(&mut socket, json!({"type": "ping", "timestamp": 1})).await;
    assert_eq!(
        next_of(&mut socket, "error").await["code"],
        "not_authenticated"
    );
    send(&mut socket, json!({"type": "subscribe"})).await;
    assert_eq!(next_of(&mut socket, "error").await["code"], "unknown_type");
    send(
        &mut socket,
        json!({"type": "auth", "customerId": "c", "sessionId": "s"}),
    )
    .await;
    let e = next_of(&mut socket, "error").await;
    assert_eq!(e["code"], "missing_field");
    assert!(e["message"].as_str().unwrap().contains("tabId"));
    auth(&mut socket, "c", "s", "t").await;
    send(&mut socket, json!({"type": "ping", "timestamp": 2})).await;
    assert!(next_of(&mut socket, "pong").await["timestamp"].is_u64());
    send(
        &mut socket,
        json!({"type": "auth", "customerId": "c", "sessionId": "s", "tabId": "t"}),
    )
    .await;
    assert_eq!(
        next_of(&mut socket, "error").await["code"],
        "already_authenticated"
    );

    // Garbage, again and again: closed with 1008.
    let mut garbage = ws(&d.a).await;
    for _ in 0..5 {
        garbage.send(Message::text("{{{{")).await.unwrap();
    }
    assert_eq!(close_code(&mut garbage).await.0, 1008);

    // Oversized frame: closed with 1009.
    let mut big = ws(&d.a).await;
    big.send(Message::text(format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(10_000)
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut big).await.0, 1009);

    // No auth in time: closed with 4408.
    let mut silent = ws(&d.a).await;
    let (code, reason) = close_code(&mut silent).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(reason.contains("authentication timeout"));

    // None of this disturbed the edge or the authenticated socket.
    send(&mut socket, json!({"type": "ping", "timestamp": 3})).await;
    next_of(&mut socket, "pong").await;
}
