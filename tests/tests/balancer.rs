//! Through a real HAProxy in front of two edges: the stock socket.io-client over polling and
//! websocket, the active-users WebSocket, and an edge killed with SIGKILL: its users go
//! offline for the others within timeout + sweep, and their clients reconnect through the
//! balancer to the other edge.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use presence_e2e::{
    Balancer, Deployment, HEARTBEAT_TIMEOUT_MS, Mode, SWEEP_INTERVAL_MS, connect, expect_update,
    http, token,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_stock_client_works_through_the_balancer_over_polling_and_websocket() {
    let d = Deployment::start(Mode::Cluster, &[]).await.unwrap();
    let lb = Balancer::start(&d.edges()).await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    for transport in ["polling", "websocket"] {
        let output = tokio::process::Command::new("node")
            .arg(dir.join("interop.mjs"))
            .args([&lb.url, &lb.url, transport])
            .arg(token("fatma", "female"))
            .arg(token(&format!("ali-{transport}"), "male"))
            .arg(format!("ali-{transport}"))
            .output()
            .await
            .expect("running node");
        assert!(
            output.status.success(),
            "{transport}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn the_active_users_websocket_works_through_the_balancer() {
    let d = Deployment::start(
        Mode::Cluster,
        &[("PRESENCE_METRICS_TICK_MS", "200".to_owned())],
    )
    .await
    .unwrap();
    let lb = Balancer::start(&d.edges()).await.unwrap();
    let url = format!("{}/ws/active-users", lb.url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(
        json!({"type": "auth", "customerId": "lb-shop", "sessionId": "s", "tabId": "t"})
            .to_string(),
    ))
    .await
    .unwrap();
    let mut kinds = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !kinds.contains(&"metrics:update".to_owned()) {
        ws.send(Message::text(
            json!({"type": "ping", "timestamp": 1}).to_string(),
        ))
        .await
        .unwrap();
        let frame = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("no metrics through the balancer");
        if let Some(Ok(Message::Text(t))) = frame {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "metrics:update" {
                assert_eq!(v["data"]["count"], 1);
            }
            kinds.push(v["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds[0], "hello");
    assert!(kinds.contains(&"pong".to_owned()));
}

#[tokio::test]
async fn killing_an_edge_takes_its_users_offline_in_time_and_they_reconnect_elsewhere() {
    let mut d = Deployment::start(Mode::Cluster, &[]).await.unwrap();
    let lb = Balancer::start(&d.edges()).await.unwrap();
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(connect(&lb.url, &format!("k{i}"), "female").await.unwrap());
    }
    // The balancer pinned these clients (one source address) to one edge; watch from the other.
    let mut serving = None;
    for (public, _) in d.edges() {
        let h = http("GET", &format!("{public}/api/health"), &[], None)
            .await
            .unwrap()
            .json();
        if h["sockets"]["connected"] == 3 {
            serving = Some(public);
        }
    }
    let serving = serving.expect("no edge holds the balanced clients");
    let other = d
        .edges()
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| p != &serving)
        .unwrap();
    let mut observer = connect(&other, "watcher", "female").await.unwrap();
    for i in 0..3 {
        let ack = observer
            .emit_with_ack(
                "presence:query",
                json!({"userIds": [format!("k{i}")]}),
                WAIT,
            )
            .await
            .unwrap();
        if ack["presence"][0]["online"] != true {
            expect_update(&mut observer, &format!("k{i}"), "online", WAIT)
                .await
                .unwrap();
        }
    }

    d.kill_edge(&serving).await;
    let killed = Instant::now();
    let limit =
        Duration::from_millis(HEARTBEAT_TIMEOUT_MS + SWEEP_INTERVAL_MS) + Duration::from_secs(2);
    // Each user's partition sweeps on its own clock: the offlines come in any order.
    let mut offline = std::collections::BTreeSet::new();
    while offline.len() < 3 {
        let left = limit.saturating_sub(killed.elapsed());
        let Some((event, v)) = observer.next_event(left).await else {
            panic!("only {offline:?} shown offline within {limit:?}");
        };
        if event == "presence-update" && v["status"] == "offline" {
            offline.insert(v["userId"].as_str().unwrap_or_default().to_owned());
        }
    }
    let offline_after = killed.elapsed();
    assert!(
        offline_after <= limit,
        "offline only after {offline_after:?}"
    );

    // Their clients reconnect through the balancer, which now sends them to the other edge.
    drop(users);
    let mut back = Vec::new();
    for i in 0..3 {
        let deadline = Instant::now() + WAIT;
        let client = loop {
            match connect(&lb.url, &format!("k{i}"), "female").await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "k{i} could not reconnect: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        back.push(client);
        expect_update(&mut observer, &format!("k{i}"), "online", WAIT)
            .await
            .unwrap();
    }
    let h = http("GET", &format!("{other}/api/health"), &[], None)
        .await
        .unwrap()
        .json();
    assert_eq!(h["sockets"]["connected"], 4, "{h}");
}
