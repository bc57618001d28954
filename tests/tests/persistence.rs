//! Persistence end to end: real `presence` processes, real NATS JetStream and a real
//! PostgreSQL (a fresh database per test); the rows of the presence projection are read
//! back with SQL.

use std::time::{Duration, Instant};

use presence_e2e::{Deployment, Mode, connect, expect_update, metric_total};
use serde_json::json;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(5);

/// (status, online, last_seen in ms) of a user's row, if any.
async fn row(pool: &PgPool, user: &str) -> Option<(String, bool, Option<i64>)> {
    sqlx::query_as(
        "SELECT status, online, (extract(epoch from last_seen) * 1000)::int8
         FROM presence WHERE tenant = 'default' AND user_id = $1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await
    .expect("reading the presence row")
}

/// Polls until the row of `user` says `online`; returns how long it took.
async fn until_row(pool: &PgPool, user: &str, online: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if row(pool, user).await.is_some_and(|(_, o, _)| o == online) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "row of {user} not online={online} within {within:?}: {:?}",
            row(pool, user).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn connect_and_disconnect_reach_the_database_in_time(mode: Mode) {
    let d = Deployment::with_persistence(mode, &[]).await.unwrap();
    let pool = PgPool::connect(d.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let mut observer = connect(&d.b, "fatma", "female").await.unwrap();
    let ayse = connect(&d.a, "ayse", "female").await.unwrap();
    // Online transitions are debounced for 2 s: the row follows within 3 s.
    until_row(&pool, "ayse", true, Duration::from_secs(3)).await;
    ayse.disconnect().await;
    let update = expect_update(&mut observer, "ayse", "offline", WAIT)
        .await
        .unwrap();
    // Offline is written at once: within 1 s of the change.
    until_row(&pool, "ayse", false, Duration::from_secs(1)).await;
    let (status, _, last_seen) = row(&pool, "ayse").await.unwrap();
    assert_eq!(status, "offline");
    assert!(last_seen.is_some(), "lastSeen not stored");
    // And an offline user's lastSeen is served.
    let ack = observer
        .emit_with_ack("presence:query", json!({"userIds": ["ayse"]}), WAIT)
        .await
        .unwrap();
    assert_eq!(ack["presence"][0]["online"], false);
    assert_eq!(ack["presence"][0]["lastSeen"], update["lastSeen"]);
    assert!(ack["presence"][0]["lastSeen"].is_string());
}

#[tokio::test]
async fn cluster_rows_follow_connect_and_disconnect() {
    connect_and_disconnect_reach_the_database_in_time(Mode::Cluster).await;
}

#[tokio::test]
async fn standalone_rows_follow_connect_and_disconnect() {
    connect_and_disconnect_reach_the_database_in_time(Mode::Standalone).await;
}

#[tokio::test]
async fn twenty_flaps_in_two_seconds_cost_a_handful_of_writes_and_end_correct() {
    let mut d = Deployment::with_persistence(Mode::Cluster, &[])
        .await
        .unwrap();
    let pool = PgPool::connect(d.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let admin = d.proc("persister").admin.clone();
    let mut observer = connect(&d.b, "fatma", "female").await.unwrap();
    // Let the observer's own row settle first.
    until_row(&pool, "fatma", true, Duration::from_secs(3)).await;
    let before = metric_total(&admin, "presence_persister_rows_written_total").await;
    let started = Instant::now();
    for _ in 0..20 {
        let flapper = connect(&d.a, "flappy", "female").await.unwrap();
        flapper.disconnect().await;
    }
    let took = started.elapsed();
    expect_update(&mut observer, "flappy", "offline", WAIT)
        .await
        .unwrap();
    // Past the debounce window, every write has happened.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let writes = metric_total(&admin, "presence_persister_rows_written_total").await - before;
    println!("20 flaps in {took:?} cost {writes} row writes");
    assert!(
        (1.0..=5.0).contains(&writes),
        "{writes} writes for 20 flaps in {took:?}"
    );
    let (status, online, last_seen) = row(&pool, "flappy").await.unwrap();
    assert_eq!((status.as_str(), online), ("offline", false));
    assert!(last_seen.is_some());
}

/// Polls `presence:query` until the online users among `users` are exactly `expected`.
async fn until_online_set(
    observer: &presence_sio_client::SioClient,
    users: &[String],
    expected: &std::collections::BTreeSet<String>,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ack = observer
            .emit_with_ack("presence:query", json!({ "userIds": users }), WAIT)
            .await
            .unwrap();
        let online: std::collections::BTreeSet<String> = ack["presence"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["online"] == true)
            .map(|p| p["userId"].as_str().unwrap().to_owned())
            .collect();
        if &online == expected {
            return ack;
        }
        assert!(
            Instant::now() < deadline,
            "online {online:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_aggregator_killed_under_load_restarts_into_the_state_it_would_have_had() {
    let env = [("PRESENCE_SNAPSHOT_INTERVAL_MS", "300".to_owned())];
    let mut d = Deployment::with_persistence(Mode::Cluster, &env)
        .await
        .unwrap();
    let pool = PgPool::connect(d.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let observer = connect(&d.b, "watcher", "female").await.unwrap();
    let name = |i: usize| format!("u{i}");
    let users: Vec<String> = (0..16).map(name).collect();
    let mut clients = std::collections::BTreeMap::new();
    for i in 0..10 {
        let edge = if i % 2 == 0 { &d.a } else { &d.b };
        clients.insert(name(i), connect(edge, &name(i), "female").await.unwrap());
    }
    // Let a snapshot be taken with these in it.
    let aggregator_admin = d.proc("aggregator").admin.clone();
    let deadline = Instant::now() + WAIT;
    while metric_total(&aggregator_admin, "presence_snapshot_sequence").await < 1.0 {
        assert!(Instant::now() < deadline, "no snapshot saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The aggregator vanishes mid-workload; the workload goes on while it is away.
    d.proc("aggregator").kill().await;
    for i in 0..4 {
        clients.remove(&name(i)).unwrap().disconnect().await;
    }
    for i in 10..14 {
        clients.insert(name(i), connect(&d.a, &name(i), "female").await.unwrap());
    }
    clients[&name(4)]
        .emit_with_ack("user:status", json!({"status": "live"}), WAIT)
        .await
        .unwrap();
    d.kill_and_restart("aggregator").await.unwrap();
    clients.remove(&name(10)).unwrap().disconnect().await;
    clients.insert(name(14), connect(&d.b, &name(14), "female").await.unwrap());

    let expected: std::collections::BTreeSet<String> = clients.keys().cloned().collect();
    let ack = until_online_set(&observer, &users, &expected).await;
    assert_eq!(ack["presence"][4]["status"], "live", "{ack}");
    let restored = metric_total(
        &d.proc("aggregator").admin,
        "presence_snapshot_loaded_sequence",
    )
    .await;
    assert!(
        restored >= 1.0,
        "the new aggregator did not start from the snapshot"
    );

    // The projection converges to the same set.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT user_id FROM presence WHERE online AND user_id LIKE 'u%' ORDER BY user_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let in_db: std::collections::BTreeSet<String> = rows.into_iter().map(|(u,)| u).collect();
        if in_db == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "database {in_db:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // And nobody is stuck online once everyone has left.
    for (_, client) in std::mem::take(&mut clients) {
        client.disconnect().await;
    }
    until_online_set(&observer, &users, &std::collections::BTreeSet::new()).await;
}

#[tokio::test]
async fn a_persister_stopped_with_sigterm_leaves_no_unwritten_change() {
    let mut d = Deployment::with_persistence(Mode::Cluster, &[])
        .await
        .unwrap();
    let pool = PgPool::connect(d.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let mut observer = connect(&d.b, "fatma", "female").await.unwrap();
    let _ayse = connect(&d.a, "ayse", "female").await.unwrap();
    expect_update(&mut observer, "ayse", "online", WAIT)
        .await
        .unwrap();
    // The change is read and waiting in the 2 s debounce: a SIGTERM now must still write it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        row(&pool, "ayse").await.is_none(),
        "written before the debounce ended"
    );
    let status = d.proc("persister").terminate().await.unwrap();
    assert!(status.success(), "persister exited with {status}");
    let (status, online, _) = row(&pool, "ayse")
        .await
        .expect("the pending change was lost");
    assert_eq!((status.as_str(), online), ("online", true));
}
