//! One clock decides: the fold stamps every event with the time JetStream stored it, so edges
//! whose wall clocks are 30 s behind and 30 s ahead (libfaketime) neither flap their
//! heartbeating users offline nor keep their vanished users online past timeout + sweep; and
//! an aggregator whose clock is off still appends its deadline ticks on time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use presence_e2e::{
    HEARTBEAT_TIMEOUT_MS, Proc, SWEEP_INTERVAL_MS, connect, expect_update, nats_url, token,
    unique_namespace,
};
use presence_sio_client::SioClient;
use serde_json::json;

/// Debian's libfaketime for multi-threaded programs (package `faketime`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How long the heartbeating users are watched for a false offline.
const WATCH: Duration = Duration::from_secs(8);

/// `presence role` whose wall clock is `offset_secs` off (monotonic time is left alone, as a
/// real machine's would be).
async fn skewed(role: &str, base: &[(&str, String)], name: &str, offset_secs: i64) -> Proc {
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: apt-get install faketime"
    );
    let mut env = base.to_vec();
    env.extend([
        ("PRESENCE_NODE_ID", name.to_owned()),
        ("LD_PRELOAD", FAKETIME_LIB.to_owned()),
        ("FAKETIME", format!("{offset_secs:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]);
    Proc::start(role, &env)
        .await
        .unwrap_or_else(|e| panic!("starting {name}: {e:#}"))
}

/// What an observer saw for [`WATCH`]: when each user was first shown offline, and the
/// offline updates of users whose id starts with `beats-` (who never stop heartbeating).
async fn watch(observer: &mut SioClient) -> (HashMap<String, Instant>, Vec<String>) {
    let started = Instant::now();
    let mut offline_at = HashMap::new();
    let mut false_offlines = Vec::new();
    while started.elapsed() < WATCH {
        let Some((name, update)) = observer.next_event(Duration::from_millis(200)).await else {
            continue;
        };
        if name != "presence-update" || update["status"] != "offline" {
            continue;
        }
        let user = update["userId"].as_str().unwrap_or_default().to_owned();
        if user.starts_with("beats-") {
            false_offlines.push(user);
        } else {
            offline_at.entry(user).or_insert_with(Instant::now);
        }
    }
    (offline_at, false_offlines)
}

/// Asserts that each silent user went offline after its heartbeat timeout, and no later than
/// `latest` after it connected.
fn assert_swept_in_time(
    silent: &[(&str, Instant)],
    offline_at: &HashMap<String, Instant>,
    latest: Duration,
) {
    let timeout = Duration::from_millis(HEARTBEAT_TIMEOUT_MS);
    for (user, joined) in silent {
        let at = offline_at
            .get(*user)
            .unwrap_or_else(|| panic!("{user} was never shown offline within {WATCH:?}"));
        let online_for = at.duration_since(*joined);
        assert!(
            online_for <= latest,
            "{user} stayed online {online_for:?}; it should be offline within {latest:?}"
        );
        assert!(
            online_for + Duration::from_millis(300) >= timeout,
            "{user} went offline after {online_for:?}, before its heartbeat timeout {timeout:?}"
        );
    }
}

/// A user who connects and then says nothing.
async fn silent_user(url: &str, user: &str) -> SioClient {
    SioClient::connect(url, json!({ "token": token(user, "female") }))
        .await
        .expect(user)
}

#[tokio::test]
async fn edges_30_s_behind_and_ahead_neither_flap_the_connected_nor_keep_the_vanished_online() {
    let base = vec![
        ("NATS_URL", nats_url().expect("NATS_URL")),
        ("PRESENCE_NAMESPACE", unique_namespace()),
    ];
    let _aggregator = Proc::start("aggregator", &base).await.expect("aggregator");
    let behind = skewed("edge", &base, "edge-behind", -30).await;
    let ahead = skewed("edge", &base, "edge-ahead", 30).await;

    let mut observer = connect(ahead.url(), "observer", "female")
        .await
        .expect("observer");
    let mut beating = Vec::new();
    for (edge, user) in [(&behind, "beats-behind"), (&ahead, "beats-ahead")] {
        beating.push(connect(edge.url(), user, "female").await.expect(user));
        expect_update(&mut observer, user, "online", Duration::from_secs(5))
            .await
            .expect("heartbeating user online");
    }
    // Swept after the timeout, by the log's clock.
    let mut silent = Vec::new();
    let mut clients = Vec::new();
    for (edge, user) in [(&behind, "silent-behind"), (&ahead, "silent-ahead")] {
        clients.push(silent_user(edge.url(), user).await);
        silent.push((user, Instant::now()));
    }

    let (offline_at, false_offlines) = watch(&mut observer).await;
    assert!(
        false_offlines.is_empty(),
        "heartbeating users shown offline: {false_offlines:?}"
    );
    let timeout_and_sweep = Duration::from_millis(HEARTBEAT_TIMEOUT_MS + SWEEP_INTERVAL_MS);
    assert_swept_in_time(
        &silent,
        &offline_at,
        timeout_and_sweep + Duration::from_millis(1_500),
    );
    drop((beating, clients));
}

#[tokio::test]
async fn an_aggregator_45_s_behind_still_sweeps_the_silent_just_after_their_timeout() {
    let base = vec![
        ("NATS_URL", nats_url().expect("NATS_URL")),
        ("PRESENCE_NAMESPACE", unique_namespace()),
    ];
    // Regular sweeps only every 5 s: going offline sooner takes a deadline tick, appended
    // when the log's clock (not the aggregator's) passes the silent connection's timeout.
    let mut aggregator_env = base.clone();
    aggregator_env.push(("PRESENCE_SWEEP_INTERVAL_MS", "5000".to_owned()));
    let _aggregator = skewed("aggregator", &aggregator_env, "aggregator-behind", -45).await;
    let edge = Proc::start("edge", &base).await.expect("edge");

    let mut observer = connect(edge.url(), "observer", "female")
        .await
        .expect("observer");
    let beating = connect(edge.url(), "beats-on", "female")
        .await
        .expect("heartbeating user");
    expect_update(&mut observer, "beats-on", "online", Duration::from_secs(5))
        .await
        .expect("heartbeating user online");
    let client = silent_user(edge.url(), "silent").await;
    let silent = [("silent", Instant::now())];

    let (offline_at, false_offlines) = watch(&mut observer).await;
    assert!(
        false_offlines.is_empty(),
        "heartbeating users shown offline: {false_offlines:?}"
    );
    // Timeout, then a deadline tick within 250 ms; far sooner than the next regular sweep.
    assert_swept_in_time(
        &silent,
        &offline_at,
        Duration::from_millis(HEARTBEAT_TIMEOUT_MS + 250 + 1_500),
    );
    drop((beating, client));
}
