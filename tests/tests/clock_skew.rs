//! One clock decides: the fold stamps every event with the time JetStream stored it, so edges
//! whose wall clocks are 30 s behind and 30 s ahead (libfaketime) neither flap their
//! heartbeating users offline nor keep their vanished users online past timeout + sweep.

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

/// An edge whose wall clock is `offset_secs` off (monotonic time is left alone, as a real
/// machine's would be).
async fn skewed_edge(base: &[(&str, String)], name: &str, offset_secs: i64) -> Proc {
    let mut env = base.to_vec();
    env.extend([
        ("PRESENCE_NODE_ID", name.to_owned()),
        ("LD_PRELOAD", FAKETIME_LIB.to_owned()),
        ("FAKETIME", format!("{offset_secs:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]);
    Proc::start("edge", &env)
        .await
        .unwrap_or_else(|e| panic!("starting the {name} edge: {e:#}"))
}

#[tokio::test]
async fn edges_30_s_behind_and_ahead_neither_flap_the_connected_nor_keep_the_vanished_online() {
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: apt-get install faketime"
    );
    let base = vec![
        ("NATS_URL", nats_url().expect("NATS_URL")),
        ("PRESENCE_NAMESPACE", unique_namespace()),
    ];
    let _aggregator = Proc::start("aggregator", &base).await.expect("aggregator");
    let behind = skewed_edge(&base, "edge-behind", -30).await;
    let ahead = skewed_edge(&base, "edge-ahead", 30).await;

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

    // Users who connect and then say nothing: swept after the timeout, by the log's clock.
    let mut silent = Vec::new();
    for (edge, user) in [(&behind, "silent-behind"), (&ahead, "silent-ahead")] {
        let client = SioClient::connect(edge.url(), json!({ "token": token(user, "female") }))
            .await
            .expect(user);
        silent.push((user, Instant::now(), client));
    }

    let started = Instant::now();
    let mut offline_at = std::collections::HashMap::new();
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

    assert!(
        false_offlines.is_empty(),
        "heartbeating users shown offline: {false_offlines:?}"
    );
    let timeout = Duration::from_millis(HEARTBEAT_TIMEOUT_MS);
    let bound = timeout + Duration::from_millis(SWEEP_INTERVAL_MS) + Duration::from_millis(1_500);
    for (user, joined, _client) in &silent {
        let at = offline_at
            .get(*user)
            .unwrap_or_else(|| panic!("{user} was never shown offline within {WATCH:?}"));
        let online_for = at.duration_since(*joined);
        assert!(
            online_for <= bound,
            "{user} stayed online {online_for:?}; timeout + sweep is {:?}",
            timeout + Duration::from_millis(SWEEP_INTERVAL_MS)
        );
        assert!(
            online_for + Duration::from_millis(300) >= timeout,
            "{user} went offline after {online_for:?}, before its heartbeat timeout {timeout:?}"
        );
    }
    drop(beating);
}
