//! What clients see while the log is away, on a 3-node JetStream cluster of the test's own
//! (every stream at 3 replicas), 2 aggregators, 2 edges and 12 heartbeating users:
//!
//! - without quorum (2 of 3 nodes killed), and with every node down (a full outage of 10 s),
//!   Socket.io connects are refused at once with "presence is unavailable", `user:status` is
//!   acknowledged `{ok: false}` at once, HTTP writes answer 503 at once;
//! - nobody connected is shown offline because the log was away;
//! - once the log takes writes again, the fold and the fan-out (a new user reaches an
//!   observer on the other edge), the metrics (an active-users count) and the figures (every
//!   partition ticks again) resume within 5 s, although the restart lost the servers'
//!   ephemeral consumers; and nobody flaps afterwards.

use std::time::{Duration, Instant};

use presence_e2e::{
    Deployment, Mode, NatsCluster, Observer, connect, http, now_ms, partition_seqs, token,
    until_all_owned,
};
use presence_sio_client::{SioClient, SioError};
use serde_json::{Value, json};

const USERS: usize = 12;
/// Every consumer is back within this once the log is.
const RESUME: Duration = Duration::from_secs(5);
/// Answers while the log is away come within this ("at once").
const AT_ONCE: Duration = Duration::from_millis(500);

fn tab(customer: &str, session: &str) -> Vec<u8> {
    json!({"customerId": customer, "sessionId": session, "tabId": "t", "timestamp": 1})
        .to_string()
        .into_bytes()
}

/// A connect that the edge refuses: how long the refusal took, and what it said.
async fn refused_connect(edge: &str, name: &str) -> (Duration, String) {
    let started = Instant::now();
    match connect(edge, name, "male").await {
        Ok(_) => panic!("{name} was admitted while the log was away"),
        Err(SioError::ConnectError(message)) => (started.elapsed(), message),
        Err(e) => panic!("{name}: expected a connect_error, got {e}"),
    }
}

/// What `edge`'s `/api/health` says of the log.
async fn log_state(edge: &str) -> String {
    http("GET", &format!("{edge}/api/health"), &[], None)
        .await
        .map(|r| r.json()["log"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Checks that connects, statuses and HTTP writes are all refused at once. Without quorum
/// an append may wait for its acknowledgement (3 s): once the edge has seen the log away it
/// lets one admission through per second to probe it, and refuses the others at once.
async fn everything_refused_at_once(edge: &str, client: &SioClient, what: &str) {
    let started = Instant::now();
    let mut tries = 0;
    while !["unavailable", "disconnected"].contains(&log_state(edge).await.as_str()) {
        let _ = connect(edge, &format!("{what}-warm-{tries}"), "male").await;
        tries += 1;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: never unavailable"
        );
    }
    // Ten connects over a second, at once: all refused, at most two of them (probes) slowly.
    let attempts: Vec<_> = (0..10)
        .map(|i| {
            let (edge, name) = (edge.to_owned(), format!("{what}-{i}"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                refused_connect(&edge, &name).await
            })
        })
        .collect();
    let mut slow = Vec::new();
    for attempt in attempts {
        let (took, message) = attempt.await.unwrap();
        assert!(
            message.contains("presence is unavailable"),
            "{what}: refused with {message:?}"
        );
        assert!(
            took < Duration::from_millis(3_500),
            "{what}: refused after {took:?}"
        );
        if took >= AT_ONCE {
            slow.push(took);
        }
    }
    eprintln!(
        "{what}: the edge saw the log away after {:?} and {tries} connects; of 10 connects, \
         refused slowly: {slow:?}",
        started.elapsed()
    );
    assert!(slow.len() <= 2, "{what}: refused slowly: {slow:?}");
    let started = Instant::now();
    let ack = client
        .emit_with_ack(
            "user:status",
            json!({"status": "live"}),
            Duration::from_secs(5),
        )
        .await
        .expect("a status ack");
    assert_eq!(ack["ok"], false, "{what}: {ack}");
    assert!(
        ack["error"]
            .as_str()
            .is_some_and(|e| e.contains("presence is unavailable")),
        "{what}: {ack}"
    );
    // It may be the second's probe.
    let status_took = started.elapsed();
    assert!(
        status_took < Duration::from_millis(3_500),
        "{what}: the status ack took {status_took:?}"
    );
    let started = Instant::now();
    let r = http(
        "POST",
        &format!("{edge}/presence/join"),
        &[("Content-Type", "application/json")],
        Some(&tab("outage-shop", what)),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{what}: {}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    let http_took = started.elapsed();
    assert!(
        http_took < Duration::from_millis(3_500),
        "{what}: the 503 took {http_took:?}"
    );
    eprintln!("{what}: status refused in {status_took:?}, HTTP join in {http_took:?}");
    let health = http("GET", &format!("{edge}/api/health"), &[], None)
        .await
        .unwrap()
        .json();
    assert_ne!(health["log"], "available", "{what}: {health}");
    assert_eq!(health["status"], "degraded");
}

/// Connects `name` to `edge`, retrying while connects are refused; returns when admitted.
async fn admitted(edge: &str, name: &str, within: Duration) -> SioClient {
    let started = Instant::now();
    loop {
        match connect(edge, name, "male").await {
            Ok(client) => return client,
            Err(e) => assert!(
                started.elapsed() < within,
                "{name} not admitted within {within:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `probe` holds, polling; returns how long it took, or panics after `within`.
async fn within<F, Fut>(what: &str, within: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// After the log is back: fold, fan-out, metrics and figures resume within [`RESUME`] of
/// the first write the log takes again. Returns the probe user's client.
async fn everything_resumes(
    nats: &NatsCluster,
    a: &str,
    b: &str,
    observer: &Observer,
    what: &str,
) -> SioClient {
    let down_seqs = partition_seqs(b).await;
    let restarted = Instant::now();
    nats.until_every_stream_led(Duration::from_secs(60))
        .await
        .unwrap();
    let led = restarted.elapsed();
    // The log is back when it takes a write again: an active-users join through edge A.
    let shop = format!("shop-{what}");
    within(
        &format!("{what}: a write taken"),
        Duration::from_secs(60),
        || async {
            http(
                "POST",
                &format!("{a}/presence/join"),
                &[("Content-Type", "application/json")],
                Some(&tab(&shop, "s1")),
            )
            .await
            .is_ok_and(|r| r.status == 200)
        },
    )
    .await;
    let back = Instant::now();
    let writable = restarted.elapsed();
    eprintln!("{what}: writes taken at {} ms since the epoch", now_ms());
    // Fold and fan-out: a user connecting to edge A is shown to the observer on edge B.
    let probe = format!("probe-{what}");
    let client = admitted(a, &probe, RESUME).await;
    within(&format!("{what}: {probe} shown"), RESUME, || async {
        observer.count(&probe, "online") > 0
    })
    .await;
    let shown = back.elapsed();
    // Metrics: the active-users session is counted.
    within(&format!("{what}: {shop} counted"), RESUME, || async {
        http("GET", &format!("{b}/metrics?customerId={shop}"), &[], None)
            .await
            .is_ok_and(|r| r.json()["count"] == 1)
    })
    .await;
    let counted = back.elapsed();
    // Figures: every partition ticks again (a sequence past the one it had before).
    within(
        &format!("{what}: every partition ticks"),
        RESUME,
        || async {
            let now = partition_seqs(b).await;
            !now.is_empty()
                && now
                    .iter()
                    .all(|(p, seq)| down_seqs.get(p).is_none_or(|before| seq > before))
        },
    )
    .await;
    let ticking = back.elapsed();
    assert!(ticking < RESUME, "{what}: consumers back after {ticking:?}");
    let health = http("GET", &format!("{b}/api/health"), &[], None)
        .await
        .unwrap()
        .json();
    assert_eq!(health["log"], "available", "{health}");
    eprintln!(
        "{what}: every stream led {led:?} after the restart, writes taken after {writable:?}; \
         from then: probe shown {shown:?}, session counted {counted:?}, every partition \
         ticking {ticking:?}"
    );
    client
}

fn status_of(v: &Value) -> String {
    v["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn while_the_log_is_away_clients_are_refused_at_once_nobody_goes_offline_and_all_resumes() {
    let mut nats = NatsCluster::start().await.unwrap();
    let env = [
        ("NATS_URL", nats.url()),
        ("PRESENCE_STREAM_REPLICAS", "3".to_owned()),
        ("PRESENCE_PARTITIONS", "4".to_owned()),
        ("PRESENCE_HEARTBEAT_TIMEOUT_MS", "4000".to_owned()),
        ("PRESENCE_SWEEP_INTERVAL_MS", "500".to_owned()),
        ("PRESENCE_METRICS_TICK_MS", "500".to_owned()),
        ("PRESENCE_NODE_ID", "agg-0".to_owned()),
    ];
    let mut d = Deployment::start(Mode::Cluster, &env).await.unwrap();
    d.add("aggregator", &[("PRESENCE_NODE_ID", "agg-1".to_owned())])
        .await
        .unwrap();
    let (a, b) = (d.a.clone(), d.b.clone());
    until_all_owned(&a, 4, Duration::from_secs(20)).await;
    let observer = Observer::start(&b, &token("watcher", "female"))
        .await
        .unwrap();
    let mut users = Vec::new();
    for i in 0..USERS {
        let edge = if i % 2 == 0 { &a } else { &b };
        users.push((
            format!("u{i}"),
            connect(edge, &format!("u{i}"), "male").await.unwrap(),
        ));
    }
    let names: Vec<String> = users.iter().map(|(n, _)| n.clone()).collect();
    observer
        .until_all(&names, "online", Duration::from_secs(20))
        .await
        .unwrap();

    // No quorum: two of the three nodes SIGKILLed. The first append to fail may wait for
    // its acknowledgement (3 s); from then on everything is refused at once.
    let nodes = nats.names();
    for node in &nodes[..2] {
        nats.kill(node).await.unwrap();
    }
    let first = Instant::now();
    let _ = connect(&a, "first-refused", "male").await;
    eprintln!(
        "no quorum: the first connect was answered in {:?}",
        first.elapsed()
    );
    everything_refused_at_once(&a, &users[0].1, "no-quorum").await;
    for node in &nodes[..2] {
        nats.restart(node).unwrap();
    }
    let probe_1 = everything_resumes(&nats, &a, &b, &observer, "quorum-back").await;

    // A full outage: every node SIGKILLed for 10 s (longer than the heartbeat timeout),
    // the users heartbeating all along.
    for node in &nodes {
        nats.kill(node).await.unwrap();
    }
    let down_at = now_ms();
    everything_refused_at_once(&a, &users[1].1, "outage-a").await;
    everything_refused_at_once(&b, &users[2].1, "outage-b").await;
    tokio::time::sleep(
        Duration::from_secs(10)
            .saturating_sub(Duration::from_millis(now_ms().saturating_sub(down_at))),
    )
    .await;
    for node in &nodes {
        nats.restart(node).unwrap();
    }
    let probe_2 = everything_resumes(&nats, &a, &b, &observer, "outage-over").await;

    // Converged without flaps: after more than a heartbeat timeout and a sweep, nobody who
    // stayed connected was ever shown offline, and everyone still shows online.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (name, client) in &users {
        assert!(!client.is_closed(), "{name}'s connection was closed");
        assert_eq!(
            observer.count(name, "offline"),
            0,
            "{name} was shown offline: {:?}",
            observer
                .seen()
                .iter()
                .filter(|s| &s.user == name)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            observer.count(name, "online"),
            1,
            "{name} shown online twice"
        );
    }
    let batch = http(
        "POST",
        &format!("{b}/api/presence/batch"),
        &[
            ("Content-Type", "application/json"),
            (
                "Authorization",
                &presence_e2e::bearer(&presence_e2e::service_token()),
            ),
        ],
        Some(json!({"userIds": names}).to_string().as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(batch.status, 200, "{}", batch.body);
    let answers = batch.json();
    for entry in answers["presence"].as_array().expect("a presence list") {
        assert_eq!(status_of(entry), "online", "{entry}");
    }
    drop((probe_1, probe_2));
}
