//! What keeps a user online, with the stock `socket.io-client` (`tests/node/hold.mjs`) on
//! JetStream with two edges and production timings (15 s heartbeat timeout, 3 s sweeps):
//! - an edge killed with SIGKILL has every one of its users shown offline to an observer on
//!   the other edge within 3 s (its lease runs out), not at each heartbeat timeout;
//! - a drained edge releases its lease: its users reconnect to the other edge seconds later
//!   (past the lease) and nobody flaps; one who never comes back goes at the heartbeat timeout;
//! - under `PRESENCE_LIVENESS=transport`, a client that sends no `user:heartbeat` for 30 s but
//!   keeps its socket stays online, and one whose process is frozen (SIGSTOP) goes offline
//!   within the transport's ping interval + timeout + a sweep.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use presence_e2e::{Deployment, Mode, connect, expect_update, token};
use presence_sio_client::SioClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Production timings: a connection's own timeout is far from the lease's 2.5 s.
fn production_timings() -> Vec<(&'static str, String)> {
    vec![
        ("PRESENCE_HEARTBEAT_TIMEOUT_MS", "15000".to_owned()),
        ("PRESENCE_SWEEP_INTERVAL_MS", "3000".to_owned()),
    ]
}

/// Stock clients of `users` (all female) held on `url` by `tests/node/hold.mjs`.
struct Held {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Held {
    async fn start(
        url: &str,
        fallback: Option<&str>,
        reconnect_after: Duration,
        heartbeat: Duration,
        users: &[&str],
    ) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
        assert!(
            dir.join("node_modules/socket.io-client").exists(),
            "socket.io-client is not installed: run `make interop-deps` (npm ci in tests/node)"
        );
        let tokens: serde_json::Map<String, Value> = users
            .iter()
            .map(|u| ((*u).to_owned(), Value::String(token(u, "female"))))
            .collect();
        let mut child = Command::new("node")
            .arg(dir.join("hold.mjs"))
            .arg(url)
            .arg(fallback.unwrap_or("-"))
            .arg(reconnect_after.as_millis().to_string())
            .arg(heartbeat.as_millis().to_string())
            .arg(Value::Object(tokens).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("running node");
        let stdout = child.stdout.take().expect("node's stdout");
        let mut held = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        assert_eq!(held.line(Duration::from_secs(20)).await, "ready");
        held
    }

    async fn line(&mut self, within: Duration) -> String {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("hold.mjs said nothing within {within:?}: {other:?}"),
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("hold.mjs runs");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

/// Waits until `observer` has been told (or can read) that every one of `users` is online.
async fn all_online(observer: &mut SioClient, users: &[&str]) {
    for user in users {
        let ack = observer
            .emit_with_ack(
                "presence:query",
                json!({ "userIds": [user] }),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        if ack["presence"][0]["online"] != true {
            expect_update(observer, user, "online", Duration::from_secs(10))
                .await
                .unwrap();
        }
    }
}

/// The offline updates `observer` hears within `window` from `since`, with when they came.
async fn offlines(
    observer: &mut SioClient,
    since: Instant,
    window: Duration,
) -> Vec<(Duration, String)> {
    let mut seen = Vec::new();
    while since.elapsed() < window {
        for (event, v) in observer.drain_for(Duration::from_millis(50)).await {
            if event == "presence-update" && v["online"] == false {
                let user = v["userId"].as_str().unwrap_or_default().to_owned();
                seen.push((since.elapsed(), user));
            }
        }
    }
    seen
}

#[tokio::test]
async fn the_users_of_an_edge_killed_with_sigkill_are_offline_within_3_s() {
    let mut d = Deployment::start(Mode::Cluster, &production_timings())
        .await
        .unwrap();
    let users = ["k0", "k1", "k2", "k3", "k4"];
    let _held = Held::start(&d.a, None, Duration::ZERO, Duration::from_secs(5), &users).await;
    let mut observer = connect(&d.b, "watcher", "female").await.unwrap();
    all_online(&mut observer, &users).await;

    let a = d.a.clone();
    d.kill_edge(&a).await;
    let killed = Instant::now();
    let limit = Duration::from_secs(3);
    let mut gone = std::collections::BTreeMap::new();
    while gone.len() < users.len() && killed.elapsed() < Duration::from_secs(20) {
        for (at, user) in offlines(
            &mut observer,
            killed,
            killed.elapsed() + Duration::from_millis(100),
        )
        .await
        {
            gone.entry(user).or_insert(at);
        }
    }
    assert_eq!(gone.len(), users.len(), "shown offline: {gone:?}");
    let last = gone.values().max().copied().unwrap_or_default();
    assert!(
        last <= limit,
        "the last of the killed edge's users went offline {last:?} after the kill: {gone:?}"
    );
}

#[tokio::test]
async fn a_drained_edge_releases_its_lease_and_nobody_flaps() {
    let d = Deployment::start(Mode::Cluster, &production_timings())
        .await
        .unwrap();
    // They come back to the other edge 5 s after the drain: twice the lease.
    let moving = ["m0", "m1", "m2"];
    let mut held = Held::start(
        &d.a,
        Some(&d.b),
        Duration::from_secs(5),
        Duration::from_secs(5),
        &moving,
    )
    .await;
    let _away = Held::start(
        &d.a,
        None,
        Duration::ZERO,
        Duration::from_secs(5),
        &["away"],
    )
    .await;
    let mut observer = connect(&d.b, "watcher", "female").await.unwrap();
    let everyone = ["m0", "m1", "m2", "away"];
    all_online(&mut observer, &everyone).await;

    let mut d = d;
    d.proc("edge").signal_term().unwrap();
    let drained = Instant::now();
    // Past the heartbeat timeout and a sweep, with a margin.
    let seen = offlines(&mut observer, drained, Duration::from_secs(15 + 3 + 2)).await;
    let flapped: Vec<_> = seen.iter().filter(|(_, u)| u != "away").collect();
    assert!(
        flapped.is_empty(),
        "flapped during the hand-over: {flapped:?}"
    );
    let away: Vec<_> = seen.iter().filter(|(_, u)| u == "away").collect();
    assert_eq!(away.len(), 1, "the user who never came back: {seen:?}");
    assert!(
        away[0].0 >= Duration::from_secs(5),
        "went offline {:?} after the drain: at the lease, not at its heartbeat timeout",
        away[0].0
    );
    let mut back = Vec::new();
    for _ in moving {
        back.push(held.line(Duration::from_secs(1)).await);
    }
    back.sort();
    assert_eq!(back, ["back m0", "back m1", "back m2"]);
}

#[tokio::test]
async fn transport_liveness_keeps_a_quiet_socket_online_and_drops_a_frozen_one() {
    let mut env = production_timings();
    env.extend([
        ("PRESENCE_LIVENESS", "transport".to_owned()),
        ("PRESENCE_PING_INTERVAL_MS", "1000".to_owned()),
        ("PRESENCE_PING_TIMEOUT_MS", "1000".to_owned()),
    ]);
    let d = Deployment::start(Mode::Cluster, &env).await.unwrap();
    // Neither ever sends a `user:heartbeat`.
    let _quiet = Held::start(&d.a, None, Duration::ZERO, Duration::ZERO, &["quiet"]).await;
    let frozen = Held::start(&d.a, None, Duration::ZERO, Duration::ZERO, &["frozen"]).await;
    let mut observer = connect(&d.b, "watcher", "female").await.unwrap();
    all_online(&mut observer, &["quiet", "frozen"]).await;

    let start = Instant::now();
    let seen = offlines(&mut observer, start, Duration::from_secs(30)).await;
    assert!(seen.is_empty(), "offline without heartbeats: {seen:?}");

    frozen.signal("STOP");
    let stopped = Instant::now();
    // Ping interval + ping timeout, a sweep, and a margin.
    let limit = Duration::from_millis(1_000 + 1_000 + 3_000 + 1_000);
    let seen = offlines(&mut observer, stopped, limit).await;
    frozen.signal("CONT");
    assert_eq!(
        seen.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(),
        ["frozen"],
        "within {limit:?} of the SIGSTOP"
    );
    let ack = observer
        .emit_with_ack(
            "presence:query",
            json!({ "userIds": ["quiet", "frozen"] }),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let online: Vec<bool> = ack["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["online"] == true)
        .collect();
    assert_eq!(online, [true, false], "{ack}");
}
