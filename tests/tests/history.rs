//! Cost that follows who is online, on JetStream and PostgreSQL:
//!
//! - users gone offline longer than the online stream keeps them are answered with their
//!   `lastSeen` from PostgreSQL, over Socket.io (`presence:query`) and HTTP, by an edge that
//!   started after they left; a user never seen still reads as offline with `lastSeen: null`;
//!   the aggregator forgets them after `PRESENCE_OFFLINE_RETENTION`;
//! - an edge started after 50,000 users joined and left is ready only with a complete view
//!   (an online user reads online right after `/readyz` says 200), and holds about what an
//!   edge started on an empty history holds.

use std::time::{Duration, Instant};

use presence_e2e::{
    Deployment, Mode, bearer, connect, fill_history, http, metric_total, rss_bytes, service_token,
    until_all_owned,
};
use serde_json::{Value, json};

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("PRESENCE_OFFLINE_FEED_TTL", "1s".to_owned()),
        ("PRESENCE_OFFLINE_RETENTION", "2s".to_owned()),
        ("PRESENCE_ONLINE_DEBOUNCE_MS", "0".to_owned()),
    ]
}

/// The presence of `users` as a service sees it, over HTTP.
async fn batch(edge: &str, users: &[&str]) -> Vec<Value> {
    let r = http(
        "POST",
        &format!("{edge}/api/presence/batch"),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer(&service_token())),
        ],
        Some(json!({ "userIds": users }).to_string().as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["presence"].as_array().unwrap().clone()
}

/// Starts another edge and waits until its `/readyz` says 200; returns its public URL, admin
/// URL, how long readiness took and the answer to `probe` right then.
async fn new_edge(
    d: &mut Deployment,
    name: &str,
    probe: &str,
) -> (String, String, Duration, Value) {
    let started = Instant::now();
    let n = d
        .add("edge", &[("PRESENCE_NODE_ID", name.to_owned())])
        .await
        .unwrap();
    let (url, admin) = d.edges()[n].clone();
    loop {
        let ready = http("GET", &format!("{admin}/readyz"), &[], None)
            .await
            .is_ok_and(|r| r.status == 200);
        if ready {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} never ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let answer = batch(&url, &[probe]).await.remove(0);
    (url, admin, took, answer)
}

#[tokio::test]
async fn the_long_gone_are_answered_from_postgresql_and_forgotten_by_the_fold() {
    let mut d = Deployment::with_persistence(Mode::Cluster, &settings())
        .await
        .unwrap();
    let (a, b) = (d.a.clone(), d.b.clone());
    for name in ["gone-1", "gone-2"] {
        let client = connect(&a, name, "female").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.disconnect().await;
    }
    // What the running edges answer (their cache of the recently gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    let cached = loop {
        let answers = batch(&b, &["gone-1", "gone-2"]).await;
        if answers
            .iter()
            .all(|p| p["lastSeen"].is_string() && p["online"] == false)
        {
            break answers;
        }
        assert!(Instant::now() < deadline, "never offline: {answers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Past the online stream's time to live and the fold's retention (2 s, a tick).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let aggregator = d.proc("aggregator").admin.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_total(&aggregator, "presence_fold_users").await > 0.0 {
        assert!(Instant::now() < deadline, "the fold never forgot the gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An edge started now holds none of them: they come from PostgreSQL.
    let (c, c_admin, _, _) = new_edge(&mut d, "edge-c", "gone-1").await;
    let answers = batch(&c, &["gone-1", "gone-2", "never-seen"]).await;
    assert_eq!(answers[0]["lastSeen"], cached[0]["lastSeen"], "{answers:?}");
    assert_eq!(answers[1]["lastSeen"], cached[1]["lastSeen"], "{answers:?}");
    assert_eq!(
        (answers[0]["online"].clone(), answers[0]["status"].clone()),
        (json!(false), json!("offline"))
    );
    assert_eq!(answers[2]["lastSeen"], Value::Null);
    assert_eq!(answers[2]["online"], false);
    assert!(metric_total(&c_admin, "presence_history_lookups_total").await >= 3.0);
    // And over Socket.io, visibility applied (a male viewer sees female users).
    let viewer = connect(&c, "viewer", "male").await.unwrap();
    let ack = viewer
        .emit_with_ack(
            "presence:query",
            json!({"userIds": ["gone-1", "never-seen"]}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        ack["presence"][0]["lastSeen"], cached[0]["lastSeen"],
        "{ack}"
    );
    assert_eq!(ack["presence"][1]["lastSeen"], Value::Null, "{ack}");
    // A forgotten user who comes back is online again, for everyone.
    let back = connect(&a, "gone-1", "female").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while batch(&c, &["gone-1"]).await[0]["online"] != true {
        assert!(Instant::now() < deadline, "gone-1 never back online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((back, viewer));
}

#[tokio::test]
async fn an_edge_started_after_50000_users_came_and_went_is_ready_with_a_complete_view_and_as_small()
 {
    // The history: 50,000 users joined and left, then one user online.
    let mut d = Deployment::start(Mode::Cluster, &settings()).await.unwrap();
    let a = d.a.clone();
    until_all_owned(&a, 4, Duration::from_secs(20)).await;
    fill_history(&d.namespace().unwrap(), 4, "past-", 50_000)
        .await
        .unwrap();
    let online = connect(&a, "still-here", "female").await.unwrap();
    // The fold has taken it all in: it holds the online user alone once the retention ran.
    let aggregator = d.proc("aggregator").admin.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = metric_total(&aggregator, "presence_fold_users").await;
        let folded = metric_total(&aggregator, "presence_changes_total").await;
        if folded >= 100_001.0 && held <= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fold did not get through the history: {folded} changes, {held} users held"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Past the online stream's time to live of the offline changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c, _, took, answer) = new_edge(&mut d, "edge-c", "still-here").await;
    assert_eq!(answer["online"], true, "right after /readyz: {answer}");
    let past = batch(&c, &["past-7"]).await.remove(0);
    assert_eq!(past["online"], false);
    assert!(past["lastSeen"].is_null(), "without a database: {past}");
    let c_rss = rss_bytes(d.nth("edge", 2).pid().unwrap()).unwrap();

    // An edge of a cluster with an empty history, for comparison.
    let mut empty = Deployment::start(Mode::Cluster, &settings()).await.unwrap();
    let (_, _, empty_took, _) = new_edge(&mut empty, "edge-c", "nobody").await;
    let empty_rss = rss_bytes(empty.nth("edge", 2).pid().unwrap()).unwrap();
    eprintln!(
        "edge after 50,000 users came and went: ready in {took:?}, RSS {} KiB; on an empty \
         history: ready in {empty_took:?}, RSS {} KiB",
        c_rss / 1024,
        empty_rss / 1024
    );
    assert!(
        (c_rss as f64) < empty_rss as f64 * 1.2,
        "{c_rss} bytes after the history, {empty_rss} on an empty one"
    );
    drop(online);
}
