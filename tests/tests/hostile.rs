//! Hostile clients, case by case, over every protocol an edge speaks: HTTP (the active-users
//! fallback, the backend API, the operators' endpoints), the active-users WebSocket, Socket.io
//! handshakes and events, and the listener itself (connections per address, connects per
//! minute, slowloris headers and bodies). Each case asserts the specific error in its
//! protocol, that the counter of that refusal moved, and that the edge still answers.
//! Token lifetime on live connections (expiry, refresh, key rotation) is in
//! `token_lifetime.rs`; the per-user connection limit over time in `limits.rs`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use presence_auth::{Claims, sign_hs256, sign_hs256_with_kid};
use presence_e2e::{Deployment, Mode, SECRET, connect, http, now_secs, service_token, token};
use presence_sio_client::{SioClient, SioError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

/// The value of one exported series, `name{labels}` exactly as rendered (0 if absent).
async fn series(admin: &str, exact: &str) -> f64 {
    let text = http("GET", &format!("{admin}/metrics"), &[], None)
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == exact).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The edge still answers, on its public and its admin listener.
async fn alive(d: &Deployment) {
    let health = http("GET", &format!("{}/api/health", d.a), &[], None)
        .await
        .expect("the edge answers /api/health");
    assert_eq!(health.status, 200);
    let live = http("GET", &format!("{}/livez", d.edge_admin(0)), &[], None)
        .await
        .expect("the edge answers /livez");
    assert_eq!(live.status, 200);
}

fn claims(user: &str) -> Claims {
    Claims {
        sub: user.to_owned(),
        exp: now_secs() + 3_600,
        gender: Some("female".to_owned()),
        ..Default::default()
    }
}

fn signed(claims: &Claims) -> String {
    sign_hs256(claims, SECRET.as_bytes()).expect("signing a test token")
}

/// One HTTP request and what it must be refused with.
struct HttpCase {
    name: &'static str,
    method: &'static str,
    path: String,
    bearer: Option<String>,
    body: Option<Vec<u8>>,
    status: u16,
    /// A fragment of the answer's body: the code or the message.
    says: &'static str,
    /// The series that counts this refusal.
    counted: String,
}

// One row of the table: every field is named at the call site's position, as in a table.
#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    method: &'static str,
    path: impl Into<String>,
    bearer: Option<String>,
    body: Option<&[u8]>,
    status: u16,
    says: &'static str,
    counted: impl Into<String>,
) -> HttpCase {
    HttpCase {
        name,
        method,
        path: path.into(),
        bearer,
        body: body.map(<[u8]>::to_vec),
        status,
        says,
        counted: counted.into(),
    }
}

fn tab_refused(endpoint: &str, reason: &str) -> String {
    format!(r#"presence_http_rejected_total{{endpoint="{endpoint}",reason="{reason}"}}"#)
}

fn api_refused(status: u16) -> String {
    format!(r#"presence_api_rejected_total{{status="{status}"}}"#)
}

async fn run_http_cases(d: &Deployment, cases: Vec<HttpCase>) {
    let admin = d.edge_admin(0);
    for c in cases {
        let before = series(&admin, &c.counted).await;
        let auth = c.bearer.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let answer = http(
            c.method,
            &format!("{}{}", d.a, c.path),
            &headers,
            c.body.as_deref(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: no answer: {e}", c.name));
        assert_eq!(answer.status, c.status, "{}: {}", c.name, answer.body);
        assert!(
            answer.json().is_object(),
            "{}: not a JSON error: {}",
            c.name,
            answer.body
        );
        assert!(
            answer.body.contains(c.says),
            "{}: expected {:?} in {}",
            c.name,
            c.says,
            answer.body
        );
        let after = series(&admin, &c.counted).await;
        assert!(
            after >= before + 1.0,
            "{}: {} did not move ({before} -> {after})",
            c.name,
            c.counted
        );
        alive(d).await;
    }
}

#[tokio::test]
async fn http_requests_that_break_the_rules_are_refused_specifically_and_counted() {
    let d = Deployment::start(Mode::Standalone, &[("PRESENCE_ENV", "production".into())])
        .await
        .expect("standalone");
    let service = Some(service_token());
    let person = Some(token("ayse", "female"));
    let expired = Some(signed(&Claims {
        exp: now_secs() - 60,
        ..claims("ayse")
    }));
    let early = Some(signed(&Claims {
        nbf: Some(now_secs() + 3_600),
        ..claims("ayse")
    }));
    let forged = Some(sign_hs256(&claims("ayse"), b"someone else's secret").expect("signing"));
    let huge = Some(signed(&Claims {
        username: Some("x".repeat(5_000)),
        ..claims("ayse")
    }));
    let tab = |extra: &str| {
        format!(r#"{{"customerId":"shop-1","sessionId":"s-1","tabId":"t-1"{extra}}}"#)
    };
    let big_details = format!(
        r#"{{"status":"live","details":{{"x":"{}"}}}}"#,
        "y".repeat(5_000)
    );
    let ids: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    let too_many_ids = json!({ "userIds": ids }).to_string();
    let cases = vec![
        // The active-users fallback.
        case(
            "join: not JSON",
            "POST",
            "/presence/join",
            None,
            Some(b"{nope"),
            400,
            "invalid_json",
            tab_refused("join", "invalid_json"),
        ),
        case(
            "join: an array",
            "POST",
            "/presence/join",
            None,
            Some(b"[1,2]"),
            400,
            "invalid_json",
            tab_refused("join", "invalid_json"),
        ),
        case(
            "join: no customerId",
            "POST",
            "/presence/join",
            None,
            Some(br#"{"sessionId":"s","tabId":"t"}"#),
            400,
            "customerId",
            tab_refused("join", "missing_field"),
        ),
        case(
            "join: empty customerId",
            "POST",
            "/presence/join",
            None,
            Some(br#"{"customerId":"","sessionId":"s","tabId":"t"}"#),
            400,
            "missing_field",
            tab_refused("join", "missing_field"),
        ),
        case(
            "join: customerId with a subject metacharacter",
            "POST",
            "/presence/join",
            None,
            Some(br#"{"customerId":"shop.>","sessionId":"s","tabId":"t"}"#),
            400,
            "invalid_field",
            tab_refused("join", "invalid_field"),
        ),
        case(
            "join: customerId of 65 bytes",
            "POST",
            "/presence/join",
            None,
            Some(
                format!(
                    r#"{{"customerId":"{}","sessionId":"s","tabId":"t"}}"#,
                    "c".repeat(65)
                )
                .as_bytes(),
            ),
            400,
            "longer than 64",
            tab_refused("join", "invalid_field"),
        ),
        case(
            "join: sessionId a number",
            "POST",
            "/presence/join",
            None,
            Some(br#"{"customerId":"shop-1","sessionId":7,"tabId":"t"}"#),
            400,
            "sessionId must be a string",
            tab_refused("join", "invalid_field"),
        ),
        case(
            "beat: no tabId",
            "POST",
            "/presence/beat",
            None,
            Some(br#"{"customerId":"shop-1","sessionId":"s"}"#),
            400,
            "tabId",
            tab_refused("beat", "missing_field"),
        ),
        case(
            "beat: timestamp a string",
            "POST",
            "/presence/beat",
            None,
            Some(tab(r#","timestamp":"noon""#).as_bytes()),
            400,
            "timestamp must be a number",
            tab_refused("beat", "invalid_field"),
        ),
        case(
            "leave: platform a number",
            "POST",
            "/presence/leave",
            None,
            Some(tab(r#","platform":42"#).as_bytes()),
            400,
            "platform must be a string",
            tab_refused("leave", "invalid_field"),
        ),
        case(
            "join: a 5 KB body",
            "POST",
            "/presence/join",
            None,
            Some(tab(&format!(r#","userAgent":"{}""#, "a".repeat(5_000))).as_bytes()),
            413,
            "too_large",
            tab_refused("join", "too_large"),
        ),
        case(
            "join: a 70 KB body",
            "POST",
            "/presence/join",
            None,
            Some(&vec![b' '; 70_000]),
            413,
            "too_large",
            tab_refused("join", "too_large"),
        ),
        case(
            "an unknown tab action",
            "POST",
            "/presence/dance",
            None,
            Some(tab("").as_bytes()),
            404,
            "unknown_action",
            tab_refused("unknown", "unknown_action"),
        ),
        case(
            "metrics: no customerId",
            "GET",
            "/metrics",
            None,
            None,
            400,
            "customerId query parameter is required",
            tab_refused("metrics", "missing_field"),
        ),
        case(
            "metrics: a bad customerId",
            "GET",
            "/metrics?customerId=a%20b",
            None,
            None,
            400,
            "invalid_field",
            tab_refused("metrics", "invalid_field"),
        ),
        case(
            "a Socket.io polling body over the packet limit",
            "POST",
            "/socket.io/?EIO=4&transport=polling&sid=anything",
            None,
            Some(&vec![b'4'; 300_000]),
            413,
            "PRESENCE_MAX_PACKET_BYTES",
            tab_refused("socket.io", "too_large"),
        ),
        case(
            "the WebSocket endpoint without an upgrade",
            "GET",
            "/ws/active-users",
            None,
            None,
            400,
            "not_a_websocket",
            tab_refused("ws", "not_a_websocket"),
        ),
        // Tokens on the backend API.
        case(
            "no token",
            "GET",
            "/api/presence/ayse",
            None,
            None,
            401,
            "Authorization: Bearer",
            api_refused(401),
        ),
        case(
            "a token that is not a JWT",
            "GET",
            "/api/presence/ayse",
            Some("not.a.jwt".into()),
            None,
            401,
            "invalid token",
            api_refused(401),
        ),
        case(
            "an expired token",
            "GET",
            "/api/presence/ayse",
            expired,
            None,
            401,
            "expired",
            api_refused(401),
        ),
        case(
            "a token not valid yet",
            "GET",
            "/api/presence/ayse",
            early,
            None,
            401,
            "not valid yet",
            api_refused(401),
        ),
        case(
            "a token signed with another secret",
            "GET",
            "/api/presence/ayse",
            forged,
            None,
            401,
            "signature does not verify",
            api_refused(401),
        ),
        case(
            "a token over 4 KiB",
            "GET",
            "/api/presence/ayse",
            huge,
            None,
            401,
            "longer than 4096 bytes",
            api_refused(401),
        ),
        case(
            "a person's token on a service write",
            "PUT",
            "/api/presence/ayse/status",
            person.clone(),
            Some(br#"{"status":"live"}"#),
            403,
            "service-role",
            api_refused(403),
        ),
        // Bodies and parameters of the backend API.
        case(
            "status: offline",
            "PUT",
            "/api/presence/ayse/status",
            service.clone(),
            Some(br#"{"status":"offline"}"#),
            400,
            "cannot be set",
            api_refused(400),
        ),
        case(
            "status: unknown",
            "PUT",
            "/api/presence/ayse/status",
            service.clone(),
            Some(br#"{"status":"dancing"}"#),
            400,
            "unknown status",
            api_refused(400),
        ),
        case(
            "status: details an array",
            "PUT",
            "/api/presence/ayse/status",
            service.clone(),
            Some(br#"{"status":"live","details":[1]}"#),
            400,
            "details",
            api_refused(400),
        ),
        case(
            "status: details over 4 KiB",
            "PUT",
            "/api/presence/ayse/status",
            service.clone(),
            Some(big_details.as_bytes()),
            400,
            "details",
            api_refused(400),
        ),
        case(
            "status: the body an array",
            "PUT",
            "/api/presence/ayse/status",
            service.clone(),
            Some(br#"["live", null]"#),
            400,
            "not a JSON object",
            api_refused(400),
        ),
        case(
            "status: of a user who is offline",
            "PUT",
            "/api/presence/nobody/status",
            service.clone(),
            Some(br#"{"status":"live"}"#),
            409,
            "offline",
            api_refused(409),
        ),
        case(
            "batch: 501 ids",
            "POST",
            "/api/presence/batch",
            person.clone(),
            Some(too_many_ids.as_bytes()),
            400,
            "at most 500",
            api_refused(400),
        ),
        case(
            "batch: an id that is a number",
            "POST",
            "/api/presence/batch",
            person.clone(),
            Some(br#"{"userIds":[1]}"#),
            400,
            "invalid type: integer",
            api_refused(400),
        ),
        case(
            "batch: not JSON",
            "POST",
            "/api/presence/batch",
            person.clone(),
            Some(b"userIds=1"),
            400,
            "Failed to parse the request body as JSON",
            api_refused(400),
        ),
        case(
            "batch: an id with a control character",
            "POST",
            "/api/presence/batch",
            person.clone(),
            Some(br#"{"userIds":["a\u0001b"]}"#),
            400,
            "userIds[0]",
            api_refused(400),
        ),
        case(
            "online: limit 0",
            "GET",
            "/api/presence/online?limit=0",
            person.clone(),
            None,
            400,
            "limit must be 1 to 500",
            api_refused(400),
        ),
        case(
            "online: limit not a number",
            "GET",
            "/api/presence/online?limit=all",
            person.clone(),
            None,
            400,
            "limit",
            api_refused(400),
        ),
        case(
            "a user id of 129 bytes",
            "GET",
            format!("/api/presence/{}", "u".repeat(129)),
            person.clone(),
            None,
            400,
            "longer than 128",
            api_refused(400),
        ),
        case(
            "a user id with a control character",
            "GET",
            "/api/presence/a%01b",
            person.clone(),
            None,
            400,
            "printable",
            api_refused(400),
        ),
        case(
            "search: no q",
            "GET",
            "/api/users/search",
            person.clone(),
            None,
            400,
            "q is required",
            api_refused(400),
        ),
        case(
            "search: q of 101 characters",
            "GET",
            format!("/api/users/search?q={}", "q".repeat(101)),
            person.clone(),
            None,
            400,
            "longer than 100",
            api_refused(400),
        ),
        case(
            "search: q with NUL",
            "GET",
            "/api/users/search?q=a%00b",
            person.clone(),
            None,
            400,
            "NUL",
            api_refused(400),
        ),
        case(
            "directory: a username of 101 characters",
            "PUT",
            "/api/users/ayse",
            service.clone(),
            Some(format!(r#"{{"username":"{}"}}"#, "n".repeat(101)).as_bytes()),
            400,
            "at most 100 characters",
            api_refused(400),
        ),
        // The operators' endpoints in production.
        case(
            "debug without a token",
            "GET",
            "/api/debug/presence",
            None,
            None,
            401,
            "Authorization: Bearer",
            api_refused(401),
        ),
        case(
            "debug with a person's token",
            "GET",
            "/api/debug/socket-status",
            person.clone(),
            None,
            403,
            "service-role",
            api_refused(403),
        ),
        case(
            "the dashboard stream with a person's token",
            "GET",
            "/api/dashboard/stream",
            person,
            None,
            403,
            "service-role",
            api_refused(403),
        ),
    ];
    assert!(cases.len() >= 40);
    run_http_cases(&d, cases).await;
}

#[tokio::test]
async fn a_flood_of_joins_for_one_customer_from_one_address_is_cut_off() {
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_RATE_LIMIT_IP_PER_MIN", "20".into())],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let before = series(&admin, r#"presence_rate_limited_total{blocked_by="ip"}"#).await;
    let mut refused = 0;
    let mut taken = 0;
    for i in 0..60 {
        let body = format!(r#"{{"customerId":"shop-42","sessionId":"fake-{i}","tabId":"t"}}"#);
        let answer = http(
            "POST",
            &format!("{}/presence/join", d.a),
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .await
        .expect("an answer");
        match answer.status {
            200 => taken += 1,
            429 => {
                refused += 1;
                assert_eq!(answer.json()["blockedBy"], "ip", "{}", answer.body);
                assert!(answer.header("retry-after").is_some());
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert!(
        taken <= 21,
        "{taken} joins taken with a budget of 20 a minute"
    );
    assert!(refused >= 39, "only {refused} of 60 joins refused");
    let after = series(&admin, r#"presence_rate_limited_total{blocked_by="ip"}"#).await;
    assert!(after - before >= f64::from(refused), "{before} -> {after}");
    alive(&d).await;
}

/// A raw connection to the public listener.
async fn raw(d: &Deployment) -> TcpStream {
    TcpStream::connect(d.a.trim_start_matches("http://"))
        .await
        .expect("connecting")
}

/// Everything the server sends until it closes (or `within` passes).
async fn read_all(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_listener_cuts_off_clients_that_talk_too_slowly() {
    let d = Deployment::start(
        Mode::Standalone,
        &[
            ("PRESENCE_HTTP_HEADER_TIMEOUT_MS", "500".into()),
            ("PRESENCE_HTTP_BODY_TIMEOUT_MS", "500".into()),
        ],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let counted =
        |reason: &str| format!(r#"presence_connections_refused_total{{reason="{reason}"}}"#);

    // Slowloris: headers trickled byte by byte are cut off at the deadline.
    let before = series(&admin, &counted("header_timeout")).await;
    let mut slow = raw(&d).await;
    let started = std::time::Instant::now();
    for byte in b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: " {
        if slow.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let rest = read_all(&mut slow, WAIT).await;
    assert!(
        rest.is_empty(),
        "the trickling client got an answer: {rest}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
    assert!(series(&admin, &counted("header_timeout")).await >= before + 1.0);
    alive(&d).await;

    // A body that never arrives: 408 with a JSON body.
    let before = series(&admin, &counted("body_timeout")).await;
    let mut stalled = raw(&d).await;
    stalled
        .write_all(b"POST /presence/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"customerId\"")
        .await
        .expect("writing");
    let answer = read_all(&mut stalled, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(series(&admin, &counted("body_timeout")).await >= before + 1.0);
    alive(&d).await;
}

/// Writes `body` as a chunked HTTP/1.1 POST to `path`, in chunks of `chunk` bytes, and reads
/// the answer.
async fn post_chunked(d: &Deployment, path: &str, body: &[u8], chunk: usize) -> String {
    let mut stream = raw(d).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut out = head.into_bytes();
    for part in body.chunks(chunk) {
        out.extend(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend(part);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(&out).await;
    read_all(&mut stream, WAIT).await
}

#[tokio::test]
async fn a_chunked_polling_body_is_bounded_like_one_that_declares_its_length() {
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_MAX_PACKET_BYTES", "150000".into())],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let open = http(
        "GET",
        &format!("{}/socket.io/?EIO=4&transport=polling", d.a),
        &[],
        None,
    )
    .await
    .expect("an Engine.IO handshake");
    assert_eq!(open.status, 200, "{}", open.body);
    let sid = open
        .body
        .split(r#""sid":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a session id in the handshake")
        .to_owned();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");

    // Within the limit, a chunked body reaches the session (a pong is answered "ok").
    let fits = post_chunked(&d, &path, b"3", 1).await;
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits}");
    assert!(fits.ends_with("ok"), "{fits}");

    // Over it, the same 413 as a declared length gets, counted, and the session is untouched.
    let before = series(&admin, &tab_refused("socket.io", "too_large")).await;
    let over = post_chunked(&d, &path, &vec![b'4'; 200_000], 16_384).await;
    assert!(over.starts_with("HTTP/1.1 413"), "{over}");
    assert!(over.contains(r#""code":"too_large""#), "{over}");
    assert!(over.contains("limit of 150000 bytes"), "{over}");
    assert!(series(&admin, &tab_refused("socket.io", "too_large")).await >= before + 1.0);
    let still = post_chunked(&d, &path, b"3", 1).await;
    assert!(still.starts_with("HTTP/1.1 200"), "{still}");
    alive(&d).await;
}

#[tokio::test]
async fn the_seventh_connection_of_one_address_is_turned_away_until_one_closes() {
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_MAX_CONNECTIONS_PER_IP", "6".into())],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let counted = r#"presence_connections_refused_total{reason="ip_connections"}"#;
    let before = series(&admin, counted).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(raw(&d).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 429 naming the limit, before any HTTP is read.
    let mut seventh = raw(&d).await;
    let answer = read_all(&mut seventh, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.contains(r#""code":"too_many_connections""#),
        "{answer}"
    );
    assert!(answer.contains("holds 6 open connections"), "{answer}");
    assert!(series(&admin, counted).await >= before + 1.0);
    // While all six are held, so is an HTTP request.
    let refused = http("GET", &format!("{}/api/health", d.a), &[], None)
        .await
        .expect("an answer");
    assert_eq!(refused.status, 429, "{}", refused.body);
    // One closed: its place is taken again.
    drop(held.pop());
    let mut waited = Duration::ZERO;
    loop {
        let answer = http("GET", &format!("{}/api/health", d.a), &[], None)
            .await
            .expect("an answer");
        if answer.status == 200 {
            break;
        }
        assert!(
            waited < WAIT,
            "the place of a closed connection was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    drop(held);
    let live = http("GET", &format!("{admin}/livez"), &[], None)
        .await
        .expect("livez");
    assert_eq!(live.status, 200);
}

#[tokio::test]
async fn an_address_opening_connections_too_fast_is_told_when_to_retry() {
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_CONNECTS_PER_IP_PER_MIN", "10".into())],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let counted = r#"presence_connections_refused_total{reason="ip_connects"}"#;
    let before = series(&admin, counted).await;
    let mut refused = None;
    // The deployment's own start-up checks used some of the budget; 20 tries pass it.
    for _ in 0..20 {
        let answer = http("GET", &format!("{}/api/health", d.a), &[], None)
            .await
            .expect("an answer");
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
    }
    let answer = refused.expect("an address opening 20 connections at once is refused");
    assert_eq!(
        answer.json()["code"],
        "too_many_connects",
        "{}",
        answer.body
    );
    let retry: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=61).contains(&retry), "{retry}");
    assert!(series(&admin, counted).await >= before + 1.0);
    // The admin listener is not behind the door.
    let live = http("GET", &format!("{admin}/livez"), &[], None)
        .await
        .expect("livez");
    assert_eq!(live.status, 200);
}

fn refusal(name: &str, result: Result<SioClient, SioError>) -> String {
    match result {
        Err(SioError::ConnectError(message)) => message,
        Err(other) => panic!("{name}: expected connect_error, got {other}"),
        Ok(_) => panic!("{name}: the connection was accepted"),
    }
}

#[tokio::test]
async fn socketio_handshakes_that_break_the_rules_get_a_specific_connect_error() {
    // One key chosen by kid is in use: a token naming another (retired) key is refused.
    let keys = std::env::temp_dir().join(format!(
        "presence-hostile-keys-{}.json",
        uuid::Uuid::now_v7()
    ));
    std::fs::write(
        &keys,
        json!({"keys": [{"kty": "oct", "kid": "current", "k": "aG9zdGlsZS1jdXJyZW50LWtleS0wMTIzNDU2Nzg5YWI"}]})
            .to_string(),
    )
    .expect("writing the key set");
    let d = Deployment::start(
        Mode::Standalone,
        &[
            ("PRESENCE_ENV", "production".into()),
            ("JWT_ISSUER", "presence-auth".into()),
            ("JWT_AUDIENCE", "presence-app".into()),
            ("JWT_KEYS_FILE", keys.display().to_string()),
        ],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let good = |user: &str| Claims {
        iss: Some("presence-auth".into()),
        aud: Some("presence-app".into()),
        ..claims(user)
    };
    let tokened = |t: String| json!({ "token": t });
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("no auth", json!({}), "authentication required", "missing"),
        (
            "auth a string",
            json!("let me in"),
            "auth must be an object",
            "bad_payload",
        ),
        (
            "a token that is not a JWT",
            tokened("abc.def.ghi".into()),
            "invalid token",
            "invalid",
        ),
        (
            "a token signed with another secret",
            tokened(sign_hs256(&good("a"), b"other").expect("signing")),
            "signature does not verify",
            "invalid",
        ),
        (
            "an expired token",
            tokened(signed(&Claims {
                exp: now_secs() - 60,
                ..good("a")
            })),
            "expired",
            "expired",
        ),
        (
            "a token not valid yet",
            tokened(signed(&Claims {
                nbf: Some(now_secs() + 600),
                ..good("a")
            })),
            "not valid yet",
            "not_yet_valid",
        ),
        (
            "a wrong audience",
            tokened(signed(&Claims {
                aud: Some("another-app".into()),
                ..good("a")
            })),
            "audience (aud) missing or not accepted",
            "wrong_issuer_or_audience",
        ),
        (
            "no audience",
            tokened(signed(&Claims {
                aud: None,
                ..good("a")
            })),
            "audience (aud) missing or not accepted",
            "wrong_issuer_or_audience",
        ),
        (
            "a wrong issuer",
            tokened(signed(&Claims {
                iss: Some("evil".into()),
                ..good("a")
            })),
            "issuer (iss) missing or not accepted",
            "wrong_issuer_or_audience",
        ),
        (
            "a token over 4 KiB",
            tokened(signed(&Claims {
                name: Some("n".repeat(5_000)),
                ..good("a")
            })),
            "longer than 4096 bytes",
            "too_large",
        ),
        (
            "a token signed by a retired key",
            tokened(
                sign_hs256_with_kid(&good("a"), SECRET.as_bytes(), "retired-2025")
                    .expect("signing"),
            ),
            "key id",
            "unknown_key",
        ),
        (
            "auth {userId} in production",
            json!({ "userId": "ayse", "gender": "female" }),
            "only accepted in development",
            "insecure_disabled",
        ),
        (
            "an unknown delivery mode",
            json!({ "token": signed(&good("a")), "delivery": "pigeon" }),
            "auth.delivery must be",
            "bad_delivery",
        ),
        (
            "batch not a boolean",
            json!({ "token": signed(&good("a")), "batch": "yes" }),
            "auth.batch must be true or false",
            "bad_delivery",
        ),
    ];
    for (name, auth, says, reason) in cases {
        let counted = format!(r#"presence_handshakes_rejected_total{{reason="{reason}"}}"#);
        let before = series(&admin, &counted).await;
        let message = refusal(name, SioClient::connect(&d.a, auth).await);
        assert!(message.contains(says), "{name}: {message}");
        assert!(
            series(&admin, &counted).await >= before + 1.0,
            "{name}: {counted} did not move"
        );
        alive(&d).await;
    }

    // The eleventh connection of one user.
    let counted = r#"presence_handshakes_rejected_total{reason="too_many_connections"}"#;
    let before = series(&admin, counted).await;
    let mut tabs = Vec::new();
    for _ in 0..10 {
        tabs.push(
            SioClient::connect(&d.a, json!({ "token": signed(&good("many-tabs")) }))
                .await
                .expect("one of ten tabs"),
        );
    }
    let message = refusal(
        "the eleventh tab",
        SioClient::connect(&d.a, json!({ "token": signed(&good("many-tabs")) })).await,
    );
    assert!(
        message.contains("too many connections for this user (at most 10)"),
        "{message}"
    );
    assert!(series(&admin, counted).await >= before + 1.0);
    alive(&d).await;
    let _ = std::fs::remove_file(&keys);
}

#[tokio::test]
async fn socketio_events_that_break_the_rules_are_answered_ok_false_and_counted() {
    // A packet limit that cannot hold a full subscription (1,000 ids of 128 bytes) stops the
    // edge at start rather than closing sockets later.
    assert!(
        Deployment::start(
            Mode::Standalone,
            &[("PRESENCE_MAX_PACKET_BYTES", "70000".into())]
        )
        .await
        .is_err(),
        "an edge started with a packet limit under its largest request"
    );
    // Nor does one whose queries may name more ids than a packet holds.
    assert!(
        Deployment::start(
            Mode::Standalone,
            &[
                ("PRESENCE_MAX_PACKET_BYTES", "70000".into()),
                ("PRESENCE_MAX_SUBSCRIPTIONS", "100".into()),
                ("PRESENCE_MAX_QUERY_IDS", "1000".into()),
            ]
        )
        .await
        .is_err(),
        "an edge started with queries larger than its packet limit"
    );
    // It starts with room for 100 subscriptions, or a query of 40 ids, and the rest.
    let d = Deployment::start(
        Mode::Standalone,
        &[
            ("PRESENCE_MAX_PACKET_BYTES", "70000".into()),
            ("PRESENCE_MAX_SUBSCRIPTIONS", "100".into()),
            ("PRESENCE_MAX_QUERY_IDS", "40".into()),
        ],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let client = connect(&d.a, "hostile", "female").await.expect("a client");
    let ids: Vec<String> = (0..41).map(|i| format!("u{i}")).collect();
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "a query of 41 users (PRESENCE_MAX_QUERY_IDS=40)",
            "presence:query",
            json!({ "userIds": ids }),
            "too_many",
        ),
        (
            "a query that is not a list",
            "presence:query",
            json!({ "userIds": "everyone" }),
            "bad_payload",
        ),
        (
            "a query with a control character",
            "presence:query",
            json!({ "userIds": ["a\u{1}b"] }),
            "bad_user_id",
        ),
        (
            "a status that cannot be set",
            "user:status",
            json!({ "status": "offline" }),
            "unknown_status",
        ),
        (
            "status details over 4 KiB",
            "user:status",
            json!({ "status": "live", "details": { "x": "y".repeat(5_000) } }),
            "bad_details",
        ),
        (
            "a status that is not an object",
            "user:status",
            json!(["live"]),
            "bad_payload",
        ),
        (
            "subscribing on a broadcast socket",
            "presence:subscribe",
            json!({ "userIds": ["a"] }),
            "not_subscriptions",
        ),
        (
            "a sync from a forged cursor",
            "presence:sync",
            json!({ "since": "not-a-cursor" }),
            "bad_cursor",
        ),
        (
            "a refresh with garbage",
            "auth:refresh",
            json!({ "token": "abc" }),
            "invalid_token",
        ),
        (
            "a refresh for another user",
            "auth:refresh",
            json!({ "token": token("someone-else", "female") }),
            "other_user",
        ),
        (
            "a refresh without a token",
            "auth:refresh",
            json!({}),
            "bad_payload",
        ),
    ];
    for (name, event, data, reason) in cases {
        let counted =
            format!(r#"presence_socket_rejected_total{{event="{event}",reason="{reason}"}}"#);
        let before = series(&admin, &counted).await;
        let ack = client
            .emit_with_ack(event, data, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{name}: no ack: {e}"));
        assert_eq!(ack["ok"], false, "{name}: {ack}");
        assert!(
            ack["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {ack}"
        );
        assert!(
            series(&admin, &counted).await >= before + 1.0,
            "{name}: {counted} did not move"
        );
        assert!(!client.is_closed(), "{name}: the socket was closed");
    }
    alive(&d).await;

    // A WebSocket message over PRESENCE_MAX_PACKET_BYTES closes that socket, and only it.
    let counted = r#"presence_sockets_closed_total{reason="transport_error"}"#;
    let before = series(&admin, counted).await;
    let big = connect(&d.a, "big-sender", "female")
        .await
        .expect("a client");
    big.emit(
        "user:status",
        json!({ "status": "live", "details": { "x": "y".repeat(100_000) } }),
    )
    .expect("sending");
    tokio::time::timeout(WAIT, big.closed())
        .await
        .expect("the socket that sent 100 KB was closed");
    let mut waited = Duration::ZERO;
    while series(&admin, counted).await < before + 1.0 {
        assert!(waited < WAIT, "{counted} did not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert!(!client.is_closed(), "another socket was closed with it");
    alive(&d).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws(d: &Deployment) -> Ws {
    let url = format!("{}/ws/active-users", d.a.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket")
        .0
}

/// The next frame that is not a metrics update.
async fn next_frame(ws: &mut Ws) -> Option<Message> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.ok()??.ok()?;
        if let Message::Text(t) = &frame
            && t.contains("metrics:update")
        {
            continue;
        }
        return Some(frame);
    }
}

/// Sends `auth` on `socket`: it must be answered an `error` frame with `code`, then closed with
/// `close`, and `presence_ws_rejected_total{reason=code}` must move.
async fn refused_at_auth(d: &Deployment, socket: &mut Ws, auth: String, code: &str, close: u16) {
    let counted = format!(r#"presence_ws_rejected_total{{reason="{code}"}}"#);
    let before = series(&d.edge_admin(0), &counted).await;
    socket.send(Message::text(auth)).await.expect("send");
    let frame = next_frame(socket).await.expect("an error frame");
    let frame: Value = serde_json::from_str(frame.to_text().unwrap_or("")).unwrap_or(Value::Null);
    assert_eq!(frame["code"], code, "{frame}");
    let closed = next_frame(socket).await;
    assert!(
        matches!(&closed, Some(Message::Close(Some(c))) if u16::from(c.code) == close),
        "{closed:?}"
    );
    assert!(
        series(&d.edge_admin(0), &counted).await >= before + 1.0,
        "{counted} did not move"
    );
    alive(d).await;
}

#[tokio::test]
async fn active_users_websocket_frames_that_break_the_rules_are_answered_and_counted() {
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_WS_AUTH_TIMEOUT_MS", "800".into())],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let auth =
        json!({"type":"auth","customerId":"shop-1","sessionId":"s-1","tabId":"t-1"}).to_string();
    // (name, frames sent first, the bad frame, the code it is answered with)
    let cases: Vec<(&str, Vec<String>, Message, &str)> = vec![
        ("not JSON", vec![], Message::text("{nope"), "invalid_json"),
        ("an array", vec![], Message::text("[1]"), "invalid_json"),
        (
            "no type",
            vec![],
            Message::text(r#"{"customerId":"shop-1"}"#),
            "missing_field",
        ),
        (
            "an unknown type",
            vec![],
            Message::text(r#"{"type":"subscribe"}"#),
            "unknown_type",
        ),
        (
            "auth without customerId",
            vec![],
            Message::text(r#"{"type":"auth","sessionId":"s","tabId":"t"}"#),
            "missing_field",
        ),
        (
            "auth with a bad tabId",
            vec![],
            Message::text(r#"{"type":"auth","customerId":"shop-1","sessionId":"s","tabId":"t/1"}"#),
            "invalid_field",
        ),
        (
            "a ping before auth",
            vec![],
            Message::text(r#"{"type":"ping"}"#),
            "not_authenticated",
        ),
        (
            "a binary frame",
            vec![],
            Message::binary(vec![1, 2, 3]),
            "binary_not_supported",
        ),
        (
            "auth twice",
            vec![auth.clone()],
            Message::text(auth.clone()),
            "already_authenticated",
        ),
    ];
    for (name, first, bad, code) in cases {
        let counted = format!(r#"presence_ws_rejected_total{{reason="{code}"}}"#);
        let before = series(&admin, &counted).await;
        let mut socket = ws(&d).await;
        for frame in first {
            socket.send(Message::text(frame)).await.expect("send");
            let hello = next_frame(&mut socket).await.expect("hello");
            assert!(
                hello.to_text().unwrap_or("").contains("hello"),
                "{name}: {hello:?}"
            );
        }
        socket.send(bad).await.expect("send");
        let answer = next_frame(&mut socket).await.expect("an error frame");
        let answer: Value =
            serde_json::from_str(answer.to_text().unwrap_or("")).unwrap_or(Value::Null);
        assert_eq!(answer["type"], "error", "{name}: {answer}");
        assert_eq!(answer["code"], code, "{name}: {answer}");
        assert!(
            series(&admin, &counted).await >= before + 1.0,
            "{name}: {counted} did not move"
        );
        alive(&d).await;
    }

    // Closed with a specific code: a frame over 4 KiB (1009), five bad frames in a row (1008),
    // no auth in time (4408).
    let closes: Vec<(&str, Vec<Message>, u16)> = vec![
        (
            "a frame over 4 KiB",
            vec![Message::text("x".repeat(5_000))],
            1009,
        ),
        (
            "garbage, again and again",
            (0..8).map(|_| Message::text("{")).collect(),
            1008,
        ),
        ("no auth in time", vec![], 4408),
    ];
    for (name, frames, code) in closes {
        let counted = format!(r#"presence_ws_closed_total{{code="{code}"}}"#);
        let before = series(&admin, &counted).await;
        let mut socket = ws(&d).await;
        for frame in frames {
            if socket.send(frame).await.is_err() {
                break;
            }
        }
        let mut closed_with = None;
        while let Ok(Some(frame)) = tokio::time::timeout(WAIT, socket.next()).await {
            match frame {
                Ok(Message::Close(Some(close))) => {
                    closed_with = Some(u16::from(close.code));
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        assert_eq!(closed_with, Some(code), "{name}");
        assert!(
            series(&admin, &counted).await >= before + 1.0,
            "{name}: {counted} did not move"
        );
        alive(&d).await;
    }
}

#[tokio::test]
async fn only_a_customers_own_sites_may_count_for_it() {
    let d = Deployment::start(
        Mode::Standalone,
        &[
            (
                "PRESENCE_CUSTOMER_ORIGINS",
                "shop-42=https://shop42.example|https://www.shop42.example".into(),
            ),
            // A small budget for the customer: refused origins must not use it up.
            ("PRESENCE_RATE_LIMIT_CUSTOMER_PER_MIN", "5".into()),
        ],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let join = br#"{"customerId":"shop-42","sessionId":"s-1","tabId":"t-1"}"#;
    let post = |origin: Option<&'static str>| {
        let url = format!("{}/presence/join", d.a);
        async move {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(origin) = origin {
                headers.push(("origin", origin));
            }
            http("POST", &url, &headers, Some(join))
                .await
                .expect("an answer")
        }
    };
    let counted = |endpoint: &str| tab_refused(endpoint, "origin_not_allowed");

    // Another site, or no Origin at all, is refused for a customer with a list.
    for (name, origin, says) in [
        (
            "a competitor's page",
            Some("https://evil.example"),
            "origin https://evil.example may not call",
        ),
        ("a script sending no Origin", None, "no Origin was sent"),
        (
            "a look-alike host",
            Some("https://shop42.example.evil.example"),
            "may not call",
        ),
    ] {
        let before = series(&admin, &counted("join")).await;
        let answer = post(origin).await;
        assert_eq!(answer.status, 403, "{name}: {}", answer.body);
        assert_eq!(answer.json()["code"], "origin_not_allowed", "{name}");
        assert!(answer.body.contains(says), "{name}: {}", answer.body);
        assert!(
            series(&admin, &counted("join")).await >= before + 1.0,
            "{name}"
        );
        alive(&d).await;
    }
    // Pages of other sites cannot use up the customer's budget and lock its own pages out.
    for _ in 0..10 {
        assert_eq!(post(Some("https://evil.example")).await.status, 403);
    }
    // The customer's own site is counted, and its CORS answer names it, never `*`.
    let own = post(Some("https://www.shop42.example")).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(
        own.header("access-control-allow-origin"),
        Some("https://www.shop42.example")
    );
    // An unlisted customer takes any origin (PRESENCE_CUSTOMER_ORIGINS_DEFAULT=any).
    let other = http(
        "POST",
        &format!("{}/presence/join", d.a),
        &[
            ("content-type", "application/json"),
            ("origin", "https://evil.example"),
        ],
        Some(br#"{"customerId":"blog-7","sessionId":"s-1","tabId":"t-1"}"#),
    )
    .await
    .expect("an answer");
    assert_eq!(other.status, 200, "{}", other.body);

    // Reading the count is bound the same way.
    let before = series(&admin, &counted("metrics")).await;
    let read = http(
        "GET",
        &format!("{}/metrics?customerId=shop-42", d.a),
        &[("origin", "https://evil.example")],
        None,
    )
    .await
    .expect("an answer");
    assert_eq!(read.status, 403, "{}", read.body);
    assert_eq!(read.json()["code"], "origin_not_allowed");
    assert!(series(&admin, &counted("metrics")).await >= before + 1.0);

    // The WebSocket: told why, then closed with 4403.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/ws/active-users", d.a.replacen("http", "ws", 1))
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "origin",
        "https://evil.example".parse().expect("a header value"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    let auth = json!({"type":"auth","customerId":"shop-42","sessionId":"s-2","tabId":"t-2"});
    refused_at_auth(
        &d,
        &mut socket,
        auth.to_string(),
        "origin_not_allowed",
        4403,
    )
    .await;
    alive(&d).await;
}

#[tokio::test]
async fn a_customers_new_site_is_allowed_from_the_origins_file_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("presence-origins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("origins");
    // Written whole and renamed into place, as an operator (or a ConfigMap) does.
    let write = |text: &str| {
        let next = dir.join("origins.next");
        std::fs::write(&next, text).expect("writing the origins file");
        std::fs::rename(&next, &file).expect("replacing the origins file");
    };
    write("# the widget's sites\nshop-9=https://nine.example\n");
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_CUSTOMER_ORIGINS_FILE", file.display().to_string())],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let join = |origin: &'static str| {
        let url = format!("{}/presence/join", d.a);
        async move {
            let body = br#"{"customerId":"shop-9","sessionId":"s-1","tabId":"t-1"}"#;
            let headers = [("content-type", "application/json"), ("origin", origin)];
            http("POST", &url, &headers, Some(body))
                .await
                .expect("an answer")
                .status
        }
    };
    let until = |want: u16, origin: &'static str| async move {
        let started = std::time::Instant::now();
        loop {
            let status = join(origin).await;
            if status == want {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{origin}: still {status}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(join("https://nine.example").await, 200);
    assert_eq!(join("https://shop.nine.example").await, 403);

    // The customer opens a second site: the file names it, and the edge takes it as it runs.
    let reloads = r#"presence_origin_reloads_total{outcome="ok"}"#;
    let before = series(&admin, reloads).await;
    write("shop-9=https://nine.example|https://shop.nine.example\n");
    until(200, "https://shop.nine.example").await;
    assert!(series(&admin, reloads).await >= before + 1.0);

    // A file that does not parse is counted and changes nothing.
    let failed = r#"presence_origin_reloads_total{outcome="error"}"#;
    let before = series(&admin, failed).await;
    write("shop-9=shop.nine.example\n");
    let started = std::time::Instant::now();
    while series(&admin, failed).await < before + 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the bad file was not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(join("https://shop.nine.example").await, 200);
    assert_eq!(join("https://evil.example").await, 403);

    // And a site taken off the list is refused again.
    write("shop-9=https://nine.example\n");
    until(403, "https://shop.nine.example").await;
    alive(&d).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn one_machine_inventing_sessions_counts_as_a_few_people_at_most() {
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER", "5".into())],
    )
    .await
    .expect("standalone");
    let admin = d.edge_admin(0);
    let tab = |customer: &str, session: &str| {
        format!(r#"{{"customerId":"{customer}","sessionId":"{session}","tabId":"t"}}"#)
    };
    let send = |action: &'static str, body: String| {
        let url = format!("{}/presence/{action}", d.a);
        async move {
            http(
                "POST",
                &url,
                &[("content-type", "application/json")],
                Some(body.as_bytes()),
            )
            .await
            .expect("an answer")
        }
    };
    for i in 0..5 {
        let answer = send("join", tab("shop-42", &format!("browser-{i}"))).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let counted = r#"presence_rate_limited_total{blocked_by="sessions"}"#;
    let before = series(&admin, counted).await;
    let sixth = send("join", tab("shop-42", "browser-5")).await;
    assert_eq!(sixth.status, 429, "{}", sixth.body);
    assert_eq!(sixth.json()["blockedBy"], "sessions", "{}", sixth.body);
    assert!(
        sixth
            .body
            .contains("already counts 5 sessions for customer shop-42")
    );
    assert!(sixth.header("retry-after").is_some());
    assert!(series(&admin, counted).await >= before + 1.0);
    // A beat for an invented session is refused the same way; the held ones keep beating.
    assert_eq!(send("beat", tab("shop-42", "browser-9")).await.status, 429);
    assert_eq!(send("beat", tab("shop-42", "browser-0")).await.status, 200);
    // Another customer is counted on its own.
    assert_eq!(send("join", tab("blog-7", "browser-5")).await.status, 200);

    // The WebSocket: told why, then closed with 4429.
    let mut socket = ws(&d).await;
    let auth = tab("shop-42", "browser-6").replacen('{', r#"{"type":"auth","#, 1);
    refused_at_auth(&d, &mut socket, auth, "too_many_sessions", 4429).await;
    alive(&d).await;
}

#[tokio::test]
async fn behind_two_edges_one_machine_still_counts_as_its_share_of_sessions() {
    let d = Deployment::start(
        Mode::Cluster,
        &[
            ("PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER", "3".into()),
            ("PRESENCE_MAX_SESSIONS_PER_SOURCE", "3".into()),
            ("PRESENCE_METRICS_TICK_MS", "200".into()),
        ],
    )
    .await
    .expect("cluster");
    // Each edge admits three sessions of this address: six in all, over HTTP and WebSocket.
    for (edge, browser) in [(&d.a, 0), (&d.a, 1), (&d.a, 2), (&d.b, 3), (&d.b, 4)] {
        let body =
            format!(r#"{{"customerId":"shop-42","sessionId":"browser-{browser}","tabId":"t"}}"#);
        let answer = http(
            "POST",
            &format!("{edge}/presence/join"),
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .await
        .expect("an answer");
        assert_eq!(answer.status, 200, "browser-{browser}: {}", answer.body);
    }
    let mut socket = tokio_tungstenite::connect_async(format!(
        "{}/ws/active-users",
        d.b.replacen("http", "ws", 1)
    ))
    .await
    .expect("a WebSocket")
    .0;
    socket
        .send(Message::text(
            r#"{"type":"auth","customerId":"shop-42","sessionId":"browser-5","tabId":"t"}"#,
        ))
        .await
        .expect("auth");
    // The count the cluster computes takes three of them, read on either edge.
    let count = || async {
        http(
            "GET",
            &format!("{}/metrics?customerId=shop-42", d.a),
            &[],
            None,
        )
        .await
        .expect("an answer")
        .json()["count"]
            .as_u64()
    };
    let started = std::time::Instant::now();
    while count().await != Some(3) {
        assert!(
            started.elapsed() < WAIT,
            "the count is {:?}, not 3",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several ticks later it has not crept up to the six sessions the edges admitted.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(count().await, Some(3));
    alive(&d).await;
}
