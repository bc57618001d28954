//! The event log's limits: when `PRESENCE_EVENTS` discards old events (here its byte limit,
//! kept tiny) while no aggregator runs, the restarted aggregator finds its snapshot older than
//! the oldest event kept. It says so (`presence_log_gaps_total`) instead of folding across the
//! gap silently, and presence converges: a user whose leave was discarded goes offline within
//! the heartbeat timeout, a user who kept beating is never shown offline.

use std::time::{Duration, Instant};

use presence_e2e::{Deployment, Mode, connect, expect_update, metric_total};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_snapshot_older_than_the_log_is_detected_and_presence_converges() {
    let env = [
        ("PRESENCE_PARTITIONS", "1".to_owned()),
        ("PRESENCE_EVENTS_MAX_BYTES", "30000".to_owned()),
        ("PRESENCE_SNAPSHOT_INTERVAL_MS", "200".to_owned()),
    ];
    let mut d = Deployment::with_persistence(Mode::Cluster, &env)
        .await
        .unwrap();
    let mut observer = connect(&d.b, "watcher", "female").await.unwrap();
    let _stay = connect(&d.a, "stay", "male").await.unwrap();
    let gone = connect(&d.a, "gone", "male").await.unwrap();
    expect_update(&mut observer, "stay", "online", WAIT)
        .await
        .unwrap();
    expect_update(&mut observer, "gone", "online", WAIT)
        .await
        .unwrap();

    // The aggregator stops (saving its snapshot); meanwhile "gone" leaves and heartbeats of
    // 30 users push the log far past its 30 kB: the leave and everything after the snapshot
    // are discarded.
    d.nth("aggregator", 0).terminate().await.unwrap();
    gone.disconnect().await;
    let mut fillers = Vec::new();
    for i in 0..30 {
        fillers.push(connect(&d.a, &format!("filler-{i}"), "male").await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    d.kill_and_restart("aggregator").await.unwrap();
    let admin = d.nth("aggregator", 0).admin.clone();
    let started = Instant::now();
    while metric_total(&admin, "presence_log_gaps_total").await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the restarted aggregator did not report the gap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // "gone" converges to offline (swept: its leave is gone); "stay" is never shown offline.
    let seen = observer.drain_for(Duration::from_secs(6)).await;
    let status_of = |user: &str| -> Vec<String> {
        seen.iter()
            .filter(|(event, v)| event == "presence-update" && v["userId"] == user)
            .map(|(_, v)| v["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        status_of("gone").last().map(String::as_str),
        Some("offline")
    );
    assert!(
        !status_of("stay").iter().any(|s| s == "offline"),
        "stay was shown offline: {:?}",
        status_of("stay")
    );
}
