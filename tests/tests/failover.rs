//! Aggregators that scale out and fail over, end to end on a real JetStream and PostgreSQL,
//! with 2 edges, a persister, several `presence aggregator` processes over 4 partitions, real
//! clients (the Rust client for the users) and an observer on the stock `socket.io-client`.
//! What counts is what the observer received (each transition exactly once, none lost) and
//! what PostgreSQL holds (`check-online-status`), never the logs.
//!
//! - an owner SIGKILLed under a steady workload: transitions resume within 5 s;
//! - an owner paused (SIGSTOP) past its lease and resumed: it steps down, and nothing it
//!   writes after losing the lease is in the log;
//! - a fourth aggregator joining and one stopping cleanly: partitions move, nothing is lost
//!   or repeated;
//! - two persisters sharing the changes, one SIGKILLed: PostgreSQL still ends up right.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use presence_e2e::{
    Deployment, Mode, Observer, connect, http, nats_url, now_ms, partition_owners, token,
    until_consistent,
};
use presence_events::{Event, EventBody, PresenceChange, Subjects};
use presence_log::{EventLog, JetStreamLog, StartAt};
use presence_sio_client::SioClient;

const PARTITIONS: usize = 4;
/// Shorter than the default 3 s so the suite stays quick; the failover benchmark measures the
/// default.
const LEASE_TTL_MS: u64 = 2_000;
const SEEN_WITHIN: Duration = Duration::from_secs(15);

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("PRESENCE_PARTITIONS", PARTITIONS.to_string()),
        ("PRESENCE_LEASE_TTL_MS", LEASE_TTL_MS.to_string()),
        ("PRESENCE_SNAPSHOT_INTERVAL_MS", "500".to_owned()),
        ("PRESENCE_ONLINE_DEBOUNCE_MS", "200".to_owned()),
    ]
}

/// A cluster with persistence and `aggregators` aggregators, named `agg-0`, `agg-1`, …
async fn cluster(aggregators: usize) -> Deployment {
    let mut base = env();
    base.push(("PRESENCE_NODE_ID", "agg-0".to_owned()));
    let mut d = Deployment::with_persistence(Mode::Cluster, &base)
        .await
        .unwrap();
    for n in 1..aggregators {
        d.add("aggregator", &[("PRESENCE_NODE_ID", format!("agg-{n}"))])
            .await
            .unwrap();
    }
    d
}

/// Waits until every partition is owned, by exactly the aggregators `expected` (each with
/// its fair share when `fair`); returns the owners.
async fn until_owned(
    edge: &str,
    expected: &[&str],
    within: Duration,
) -> BTreeMap<u64, (String, u64)> {
    let want: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    let share = PARTITIONS.div_ceil(expected.len());
    let started = Instant::now();
    loop {
        let got = partition_owners(edge).await;
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for (owner, _) in got.values() {
            *per.entry(owner.as_str()).or_default() += 1;
        }
        let holders: BTreeSet<String> = per.keys().map(|s| (*s).to_owned()).collect();
        if got.len() == PARTITIONS && holders == want && per.values().all(|n| *n <= share) {
            return got;
        }
        assert!(
            started.elapsed() < within,
            "partitions never owned by {want:?} within {within:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A user of the workload: connected to one of the edges, heartbeating.
struct User {
    name: String,
    client: SioClient,
    /// When it connected (ms since the epoch).
    joined_at: u64,
}

async fn join(edges: &[&str], names: impl Iterator<Item = String>) -> Vec<User> {
    let mut users = Vec::new();
    for (i, name) in names.enumerate() {
        let joined_at = now_ms();
        let client = connect(edges[i % edges.len()], &name, "male")
            .await
            .unwrap();
        users.push(User {
            name,
            client,
            joined_at,
        });
    }
    users
}

/// Disconnects `users`; returns (name, when) of each leave.
async fn leave(users: Vec<User>) -> Vec<(String, u64)> {
    let mut left = Vec::new();
    for u in users {
        let at = now_ms();
        u.client.disconnect().await;
        left.push((u.name, at));
    }
    left
}

/// Every user was shown online exactly once, and offline exactly once if it left (never
/// otherwise).
fn exactly_once(observer: &Observer, online: &[String], left: &[String]) {
    let mut wrong = Vec::new();
    for u in online.iter().chain(left) {
        let on = observer.count(u, "online");
        let off = observer.count(u, "offline");
        let want_off = usize::from(left.contains(u));
        if on != 1 || off != want_off {
            wrong.push(format!("{u}: online x{on}, offline x{off}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "transitions not seen exactly once: {wrong:?}"
    );
}

/// Waits until the observer has seen every one of `users` online and every one of `left`
/// offline; then each exactly once, and PostgreSQL in agreement (the watcher online too).
async fn settled_exactly_once(
    observer: &Observer,
    edge: &str,
    users: &[User],
    left: &[(String, u64)],
) {
    let online: Vec<String> = users.iter().map(|u| u.name.clone()).collect();
    let left: Vec<String> = left.iter().map(|(u, _)| u.clone()).collect();
    observer
        .until_all(&online, "online", SEEN_WITHIN)
        .await
        .unwrap();
    observer
        .until_all(&left, "offline", SEEN_WITHIN)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    exactly_once(observer, &online, &left);
    until_consistent(edge, online.len() as u64 + 1, Duration::from_secs(15)).await;
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> + use<> {
    let prefix = prefix.to_owned();
    range.map(move |i| format!("{prefix}{i}"))
}

/// The worst delay from making a transition to the observer receiving it.
fn worst_delay(observer: &Observer, made: &[(String, u64)], status: &str) -> u64 {
    made.iter()
        .map(|(u, at)| {
            observer
                .first(u, status)
                .map_or(u64::MAX, |seen| seen.saturating_sub(*at))
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn with_three_aggregators_each_transition_reaches_an_observer_exactly_once() {
    let d = cluster(3).await;
    let (a, b) = (d.a.clone(), d.b.clone());
    until_owned(&a, &["agg-0", "agg-1", "agg-2"], Duration::from_secs(15)).await;
    let observer = Observer::start(&b, &token("watcher", "female"))
        .await
        .unwrap();
    let mut users = join(&[&a, &b], names("e", 0..50)).await;
    let left = leave(users.drain(..20).collect()).await;
    // Those who left were shown online once too, before their one offline.
    settled_exactly_once(&observer, &a, &users, &left).await;
}

#[tokio::test]
async fn an_owner_killed_under_load_is_covered_within_5_s_and_nothing_is_lost_or_repeated() {
    let mut d = cluster(3).await;
    let (a, b) = (d.a.clone(), d.b.clone());
    until_owned(&a, &["agg-0", "agg-1", "agg-2"], Duration::from_secs(15)).await;
    let observer = Observer::start(&b, &token("watcher", "female"))
        .await
        .unwrap();

    // 30 users online across both edges.
    let mut first = join(&[&a, &b], names("k", 0..30)).await;
    let first_names: Vec<String> = first.iter().map(|u| u.name.clone()).collect();
    observer
        .until_all(&first_names, "online", SEEN_WITHIN)
        .await
        .unwrap();

    // SIGKILL the aggregator owning the most partitions; the workload goes on at once.
    let before = partition_owners(&a).await;
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for (owner, _) in before.values() {
        *per.entry(owner.clone()).or_default() += 1;
    }
    let victim = per
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(o, _)| o.clone())
        .unwrap();
    let n: usize = victim.trim_start_matches("agg-").parse().unwrap();
    d.nth("aggregator", n).kill().await;
    let killed_at = now_ms();
    let second = join(&[&a, &b], names("k", 30..50)).await;
    let leavers: Vec<User> = first.drain(..10).collect();
    let left = leave(leavers).await;

    let second_names: Vec<String> = second.iter().map(|u| u.name.clone()).collect();
    let left_names: Vec<String> = left.iter().map(|(u, _)| u.clone()).collect();
    observer
        .until_all(&second_names, "online", SEEN_WITHIN)
        .await
        .unwrap();
    observer
        .until_all(&left_names, "offline", SEEN_WITHIN)
        .await
        .unwrap();
    let joins: Vec<(String, u64)> = second
        .iter()
        .map(|u| (u.name.clone(), u.joined_at))
        .collect();
    let worst =
        worst_delay(&observer, &joins, "online").max(worst_delay(&observer, &left, "offline"));
    eprintln!(
        "killed {victim} (owner of {} partitions); the slowest of {} transitions made during the failover reached the observer after {worst} ms; all seen {} ms after the kill",
        per[&victim],
        joins.len() + left.len(),
        observer
            .seen()
            .iter()
            .map(|s| s.at)
            .max()
            .unwrap_or(0)
            .saturating_sub(killed_at)
    );
    assert!(
        worst < 5_000,
        "a transition took {worst} ms to reach the observer"
    );

    // The survivors share every partition; ten more leave.
    let survivors: Vec<String> = (0..3)
        .map(|i| format!("agg-{i}"))
        .filter(|o| *o != victim)
        .collect();
    let survivors: Vec<&str> = survivors.iter().map(String::as_str).collect();
    until_owned(&a, &survivors, Duration::from_secs(10)).await;
    let mut second = second;
    let more_left = leave(second.drain(..10).collect()).await;
    let mut all_left = left_names.clone();
    all_left.extend(more_left.iter().map(|(u, _)| u.clone()));
    observer
        .until_all(&all_left, "offline", SEEN_WITHIN)
        .await
        .unwrap();

    // Exactly once each, on the client's side; PostgreSQL agrees with the live state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still: Vec<String> = first
        .iter()
        .chain(second.iter())
        .map(|u| u.name.clone())
        .collect();
    exactly_once(&observer, &still, &all_left);
    until_consistent(&a, still.len() as u64 + 1, Duration::from_secs(15)).await;
}

/// Reads a whole stream of `namespace` from the start: (stored ms, payload) of each message.
async fn read_all(stream: &str) -> Vec<(u64, bytes::Bytes)> {
    let log = JetStreamLog::connect(&nats_url().unwrap(), "failover-test")
        .await
        .unwrap();
    let last = log.last_sequence(stream).await.unwrap();
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let mut deliveries = log
        .subscribe(stream, None, StartAt::Sequence(1))
        .await
        .unwrap();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_secs(5), deliveries.next()).await
    {
        let done = d.seq >= last || d.pending == 0;
        out.push((d.stored_ms, d.payload));
        if done {
            break;
        }
    }
    out
}

#[tokio::test]
async fn an_owner_paused_past_its_lease_steps_down_and_nothing_it_writes_after_is_in_the_log() {
    let mut d = cluster(2).await;
    let (a, b) = (d.a.clone(), d.b.clone());
    let namespace = d.namespace().unwrap();
    until_owned(&a, &["agg-0", "agg-1"], Duration::from_secs(15)).await;
    let observer = Observer::start(&b, &token("watcher", "female"))
        .await
        .unwrap();
    let mut first = join(&[&a, &b], names("s", 0..10)).await;
    let first_names: Vec<String> = first.iter().map(|u| u.name.clone()).collect();
    observer
        .until_all(&first_names, "online", SEEN_WITHIN)
        .await
        .unwrap();

    // Pause agg-0 until agg-1 has taken all of its partitions over.
    let before = partition_owners(&a).await;
    let paused_epochs: BTreeSet<u64> = before
        .values()
        .filter(|(o, _)| o == "agg-0")
        .map(|(_, e)| *e)
        .collect();
    assert!(!paused_epochs.is_empty());
    d.nth("aggregator", 0).signal("STOP").unwrap();
    until_owned(&a, &["agg-1"], Duration::from_secs(10)).await;
    let second = join(&[&a, &b], names("s", 10..20)).await;
    let mut left = leave(first.drain(..5).collect()).await;
    let second_names: Vec<String> = second.iter().map(|u| u.name.clone()).collect();
    observer
        .until_all(&second_names, "online", SEEN_WITHIN)
        .await
        .unwrap();

    // Wake it: it must find its leases gone, step down and write nothing under them.
    let resumed_at = now_ms();
    d.nth("aggregator", 0).signal("CONT").unwrap();
    let admin = d.nth("aggregator", 0).admin.clone();
    let started = Instant::now();
    loop {
        let text = http("GET", &format!("{admin}/metrics"), &[], None)
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        let lost = text
            .lines()
            .find(|l| l.starts_with("presence_lease_transitions_total{transition=\"lost\"}"))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if lost >= paused_epochs.len() as f64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "agg-0 never stepped down from its {} leases",
            paused_epochs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It rejoins as a member: the partitions are shared again, under new epochs.
    let after = until_owned(&a, &["agg-0", "agg-1"], Duration::from_secs(15)).await;
    assert!(after.values().all(|(_, e)| !paused_epochs.contains(e)));
    let third = join(&[&a, &b], names("s", 20..25)).await;
    let mut second = second;
    left.extend(leave(second.drain(..3).collect()).await);
    let third_names: Vec<String> = third.iter().map(|u| u.name.clone()).collect();
    let left_names: Vec<String> = left.iter().map(|(u, _)| u.clone()).collect();
    observer
        .until_all(&third_names, "online", SEEN_WITHIN)
        .await
        .unwrap();
    observer
        .until_all(&left_names, "offline", SEEN_WITHIN)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still: Vec<String> = first
        .iter()
        .chain(second.iter())
        .chain(third.iter())
        .map(|u| u.name.clone())
        .collect();
    exactly_once(&observer, &still, &left_names);
    until_consistent(&a, still.len() as u64 + 1, Duration::from_secs(15)).await;

    // The log: no tick and no change of the paused owner's old epochs stored after it woke.
    let subjects = Subjects::new(&namespace);
    let late_ticks = read_all(&subjects.events_stream())
        .await
        .into_iter()
        .filter(|(stored, _)| *stored > resumed_at)
        .filter_map(|(_, payload)| Event::decode(&payload).ok())
        .filter(|e| matches!(e.body, EventBody::Tick | EventBody::MetricsTick))
        .filter(|e| e.epoch.is_some_and(|epoch| paused_epochs.contains(&epoch)))
        .count();
    let late_changes = read_all(&subjects.changes_stream())
        .await
        .into_iter()
        .filter(|(stored, _)| *stored > resumed_at)
        .filter_map(|(_, payload)| PresenceChange::decode(&payload).ok())
        .filter(|c| paused_epochs.contains(&c.epoch))
        .count();
    assert_eq!(
        (late_ticks, late_changes),
        (0, 0),
        "the deposed owner wrote ticks / changes after it woke"
    );
}

#[tokio::test]
async fn partitions_move_cleanly_when_an_aggregator_joins_and_when_one_stops() {
    let mut d = cluster(3).await;
    let (a, b) = (d.a.clone(), d.b.clone());
    until_owned(&a, &["agg-0", "agg-1", "agg-2"], Duration::from_secs(15)).await;
    let observer = Observer::start(&b, &token("watcher", "female"))
        .await
        .unwrap();
    let mut users = join(&[&a, &b], names("r", 0..10)).await;

    // A fourth joins: one partition each.
    d.add("aggregator", &[("PRESENCE_NODE_ID", "agg-3".to_owned())])
        .await
        .unwrap();
    users.extend(join(&[&a, &b], names("r", 10..20)).await);
    until_owned(
        &a,
        &["agg-0", "agg-1", "agg-2", "agg-3"],
        Duration::from_secs(15),
    )
    .await;
    users.extend(join(&[&a, &b], names("r", 20..25)).await);

    // One stops cleanly (SIGTERM): its partition is handed over.
    let status = d.nth("aggregator", 1).terminate().await.unwrap();
    assert!(status.success(), "agg-1 exited with {status}");
    let left = leave(users.drain(..8).collect()).await;
    users.extend(join(&[&a, &b], names("r", 25..30)).await);
    until_owned(&a, &["agg-0", "agg-2", "agg-3"], Duration::from_secs(10)).await;

    settled_exactly_once(&observer, &a, &users, &left).await;
}

#[tokio::test]
async fn several_persisters_share_the_changes_and_a_killed_one_loses_nothing() {
    let mut d = cluster(1).await;
    d.add(
        "persister",
        &[("PRESENCE_NODE_ID", "persister-1".to_owned())],
    )
    .await
    .unwrap();
    let (a, b) = (d.a.clone(), d.b.clone());
    let mut users = join(&[&a, &b], names("w", 0..20)).await;
    until_consistent(&a, 20, Duration::from_secs(15)).await;
    // Changes in flight, then one persister vanishes with whatever it held.
    leave(users.drain(..8).collect()).await;
    users.extend(join(&[&a, &b], names("w", 20..30)).await);
    d.nth("persister", 0).kill().await;
    leave(users.drain(..4).collect()).await;
    users.extend(join(&[&a, &b], names("w", 30..35)).await);
    // The survivor writes everything, including what the dead one was given and never
    // acknowledged (delivered again after the subscription's 10 s acknowledgement wait).
    until_consistent(&a, users.len() as u64, Duration::from_secs(30)).await;
}
