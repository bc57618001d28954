//! Operations: `/api/health` with the cluster's and the answering edge's figures, and every
//! role's Prometheus `/metrics`, parsed as Prometheus text, moving as a workload runs.

use std::time::{Duration, Instant};

use presence_e2e::{Deployment, Mode, connect, http};
use prometheus_parse::{Scrape, Value};
use serde_json::Value as Json;

async fn health(edge: &str) -> Json {
    let r = http("GET", &format!("{edge}/api/health"), &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    r.json()
}

async fn until_health(edge: &str, ok: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = health(edge).await;
        if ok(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "health never matched: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_reports_the_clusters_figures_and_the_answering_edges_sockets() {
    let d = Deployment::start(Mode::Cluster, &[]).await.unwrap();
    let mut on_a = Vec::new();
    for i in 0..3 {
        on_a.push(connect(&d.a, &format!("a{i}"), "female").await.unwrap());
    }
    let _on_b = connect(&d.b, "b0", "male").await.unwrap();
    let h = until_health(&d.b, |h| {
        h["presence"]["onlineUsers"] == 4 && h["status"] == "ok"
    })
    .await;
    assert_eq!(h["sockets"]["connected"], 1);
    assert_eq!(h["sockets"]["connectedUsers"], 1);
    assert!(h["presence"]["peakOnline"].as_u64().unwrap() >= 4);
    assert!(h["presence"]["totalConnections"].as_u64().unwrap() >= 4);
    assert!(h["presence"]["lastSweepAt"].is_string(), "{h}");
    assert!(h["presence"]["uptimeMs"].as_u64().unwrap() > 0);
    let a = health(&d.a).await;
    assert_eq!(
        (
            a["sockets"]["connected"].clone(),
            a["sockets"]["connectedUsers"].clone()
        ),
        (3.into(), 3.into())
    );

    // The operators' debug views: protected outside development.
    let r = http("GET", &format!("{}/api/debug/presence", d.a), &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let service = presence_e2e::bearer(&presence_e2e::service_token());
    let r = http(
        "GET",
        &format!("{}/api/debug/presence", d.b),
        &[("Authorization", &service)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["onlineCount"], 4, "{}", r.body);
    assert_eq!(r.json()["online"][0]["userId"], "a0", "{}", r.body);
    let r = http(
        "GET",
        &format!("{}/api/debug/socket-status", d.a),
        &[("Authorization", &service)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            r.json()["connected"].clone(),
            r.json()["users"].as_array().map(Vec::len)
        ),
        (3.into(), Some(3)),
        "{}",
        r.body
    );

    on_a.pop().unwrap().disconnect().await;
    let h = until_health(&d.b, |h| h["presence"]["onlineUsers"] == 3).await;
    assert!(h["presence"]["totalDisconnections"].as_u64().unwrap() >= 1);
    assert_eq!(h["presence"]["peakOnline"], 4);
}

async fn scrape(admin: &str) -> Scrape {
    let text = http("GET", &format!("{admin}/metrics"), &[], None)
        .await
        .unwrap()
        .body;
    // Before a role has recorded anything its text may be empty; it must parse either way.
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// Sum of a counter (or gauge) over all its label sets.
fn total(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

fn customer_gauge(scrape: &Scrape, name: &str, customer: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("customer") == Some(customer))
        .and_then(|s| match s.value {
            Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test]
async fn every_role_serves_prometheus_text_whose_counters_move_with_the_workload() {
    let mut d = Deployment::with_persistence(Mode::Cluster, &[])
        .await
        .unwrap();
    let aggregator = d.proc("aggregator").admin.clone();
    let persister = d.proc("persister").admin.clone();
    let edge_a = {
        let h = health(&d.a).await;
        assert!(h.is_object());
        d.edge_admin(0)
    };
    let before_edge = scrape(&edge_a).await;
    let before_aggregator = scrape(&aggregator).await;
    let before_persister = scrape(&persister).await;

    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(connect(&d.a, &format!("m{i}"), "female").await.unwrap());
    }
    for c in clients.drain(..2) {
        c.disconnect().await;
    }
    let join =
        serde_json::json!({"customerId": "prom-shop", "sessionId": "s", "tabId": "t"}).to_string();
    let r = http(
        "POST",
        &format!("{}/presence/join", d.a),
        &[],
        Some(join.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let edge = scrape(&edge_a).await;
        let agg = scrape(&aggregator).await;
        let per = scrape(&persister).await;
        let moved = total(&edge, "presence_connections_opened_total")
            - total(&before_edge, "presence_connections_opened_total")
            >= 5.0
            && total(&edge, "presence_events_published_total")
                > total(&before_edge, "presence_events_published_total")
            && total(&agg, "presence_events_consumed_total")
                - total(&before_aggregator, "presence_events_consumed_total")
                >= 7.0
            && total(&agg, "presence_changes_total")
                - total(&before_aggregator, "presence_changes_total")
                >= 7.0
            && total(&per, "presence_persister_rows_written_total")
                - total(&before_persister, "presence_persister_rows_written_total")
                >= 5.0
            && total(&edge, "presence_fanout_deliveries_total")
                > total(&before_edge, "presence_fanout_deliveries_total")
            && customer_gauge(&agg, "presence_active_users", "prom-shop") == Some(1.0)
            && customer_gauge(&agg, "presence_active_users_ema", "prom-shop")
                .is_some_and(|e| e > 0.0);
        if moved {
            assert_eq!(
                total(&edge, "presence_connections"),
                3.0,
                "open sockets gauge"
            );
            for scrape in [&edge, &agg, &per] {
                assert!(
                    scrape
                        .samples
                        .iter()
                        .all(|s| s.metric.starts_with("presence_"))
                );
                assert!(scrape.docs.is_empty() || scrape.samples.len() > 1);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters did not move as expected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_drained_edge_hands_its_users_over_without_an_offline_flap() {
    use presence_e2e::{HEARTBEAT_TIMEOUT_MS, SWEEP_INTERVAL_MS, expect_update};
    let mut d = Deployment::start(Mode::Cluster, &[]).await.unwrap();
    let wait = Duration::from_secs(5);
    let mut observer = connect(&d.b, "observer", "female").await.unwrap();
    let mut moving = Vec::new();
    for i in 0..3 {
        moving.push(connect(&d.a, &format!("h{i}"), "female").await.unwrap());
        expect_update(&mut observer, &format!("h{i}"), "online", wait)
            .await
            .unwrap();
    }
    let stays_away = connect(&d.a, "gone", "female").await.unwrap();
    expect_update(&mut observer, "gone", "online", wait)
        .await
        .unwrap();

    // SIGTERM edge A; its clients come back through "the balancer" to edge B.
    let drained = Instant::now();
    d.proc("edge").signal_term().unwrap();
    let mut back = Vec::new();
    for (i, mut client) in moving.into_iter().enumerate() {
        // The edge closes the socket (a disconnect packet, or the connection just ends).
        let _ = client.wait_for("disconnect", wait, |_| true).await;
        back.push(connect(&d.b, &format!("h{i}"), "female").await.unwrap());
    }
    let reconnected = drained.elapsed();
    assert!(
        reconnected < Duration::from_millis(HEARTBEAT_TIMEOUT_MS),
        "reconnecting took {reconnected:?}"
    );

    // Past the heartbeat timeout and several sweeps: the users who came back never went
    // offline; the one who did not is offline, not before the timeout.
    let window = Duration::from_millis(HEARTBEAT_TIMEOUT_MS + 4 * SWEEP_INTERVAL_MS);
    let mut seen = Vec::new();
    while drained.elapsed() < window {
        seen.extend(
            observer
                .drain_for(Duration::from_millis(100))
                .await
                .into_iter()
                .map(|e| (drained.elapsed(), e)),
        );
    }
    for i in 0..3 {
        let flapped: Vec<_> = seen
            .iter()
            .filter(|(_, (_, v))| v["userId"] == format!("h{i}") && v["online"] == false)
            .collect();
        assert!(
            flapped.is_empty(),
            "h{i} flapped offline during the hand-over: {flapped:?}"
        );
    }
    let gone: Vec<_> = seen
        .iter()
        .filter(|(_, (_, v))| v["userId"] == "gone" && v["online"] == false)
        .collect();
    assert_eq!(gone.len(), 1, "the user who did not come back: {seen:?}");
    assert!(
        gone[0].0 >= Duration::from_millis(HEARTBEAT_TIMEOUT_MS - 600),
        "swept early: {:?}",
        gone[0].0
    );
    let ack = observer
        .emit_with_ack(
            "presence:query",
            serde_json::json!({"userIds": ["h0", "h1", "h2", "gone"]}),
            wait,
        )
        .await
        .unwrap();
    let online: Vec<bool> = ack["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["online"] == true)
        .collect();
    assert_eq!(online, [true, true, true, false]);
    drop(stays_away);
}
