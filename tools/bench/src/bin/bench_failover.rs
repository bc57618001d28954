//! `presence-bench-failover`: how long presence stops when an aggregator dies. Three
//! `presence aggregator` processes share 4 partitions (default lease, 3 s) behind one edge,
//! with an observer on the stock `socket.io-client`. Each round SIGKILLs the aggregator
//! owning the most partitions, connects at once a probe user whose partition the victim
//! owned, and times the kill to the observer receiving the probe's `online`; the victim is
//! then restarted and the partitions settle before the next round.
//!
//! usage: NATS_URL=… presence-bench-failover [kills=20]
//! (`make bench-failover` provides the server.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use presence_e2e::{
    Observer, Proc, connect, nats_url, now_ms, partition_owners, token, unique_namespace,
};
use presence_events::{Partitions, TenantId, UserId};

const PARTITIONS: u64 = 4;
const AGGREGATORS: usize = 3;

/// Partition -> owner, for the partitions whose figures are current.
async fn owners(edge: &str) -> BTreeMap<u16, String> {
    partition_owners(edge)
        .await
        .into_iter()
        .filter_map(|(p, (owner, _))| Some((u16::try_from(p).ok()?, owner)))
        .collect()
}

/// Waits until every partition is owned and every aggregator owns some.
async fn settled(edge: &str) -> anyhow::Result<BTreeMap<u16, String>> {
    let started = Instant::now();
    loop {
        let got = owners(edge).await;
        let holders: std::collections::BTreeSet<&String> = got.values().collect();
        if got.len() == PARTITIONS as usize && holders.len() == AGGREGATORS {
            return Ok(got);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("partitions did not settle within 30 s: {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kills: usize = std::env::args()
        .nth(1)
        .map_or(Ok(20), |v| v.parse().context("kills: a number"))?;
    let namespace = unique_namespace();
    let env = |node: &str| {
        vec![
            ("NATS_URL", nats_url().unwrap_or_default()),
            ("PRESENCE_NAMESPACE", namespace.clone()),
            ("PRESENCE_PARTITIONS", PARTITIONS.to_string()),
            // Production timings (the harness's defaults are the tests' short ones).
            ("PRESENCE_HEARTBEAT_TIMEOUT_MS", "15000".to_owned()),
            ("PRESENCE_SWEEP_INTERVAL_MS", "3000".to_owned()),
            ("PRESENCE_NODE_ID", node.to_owned()),
            ("RUST_LOG", "error".to_owned()),
        ]
    };
    let mut aggregators = Vec::new();
    for n in 0..AGGREGATORS {
        aggregators.push(Proc::start("aggregator", &env(&format!("agg-{n}"))).await?);
    }
    let edge = Proc::start("edge", &env("edge-1")).await?;
    let url = edge.url().to_owned();
    let observer = Observer::start(&url, &token("watcher", "female")).await?;
    let partitions = Partitions::new(PARTITIONS)?;
    let tenant = TenantId::default_tenant();

    let mut took = Vec::new();
    for round in 0..kills {
        let before = settled(&url).await?;
        let mut per: BTreeMap<&String, usize> = BTreeMap::new();
        for owner in before.values() {
            *per.entry(owner).or_default() += 1;
        }
        let victim = per
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(o, _)| (*o).clone())
            .context("no owner")?;
        let owned: Vec<u16> = before
            .iter()
            .filter(|(_, o)| **o == victim)
            .map(|(p, _)| *p)
            .collect();
        // A probe user in one of the victim's partitions.
        let probe = (0..)
            .map(|j| format!("probe-{round}-{j}"))
            .find(|name| {
                UserId::parse(name.clone())
                    .is_ok_and(|u| owned.contains(&partitions.of_user(&tenant, &u).0))
            })
            .context("no probe name")?;
        let n: usize = victim.trim_start_matches("agg-").parse()?;
        aggregators[n].kill().await;
        let killed_at = now_ms();
        let client = connect(&url, &probe, "male").await?;
        let started = Instant::now();
        let seen = loop {
            if let Some(at) = observer.first(&probe, "online") {
                break at;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("round {round}: {probe} never shown online");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let ms = seen.saturating_sub(killed_at);
        println!(
            "kill {:>2}: {victim} (partitions {owned:?}) -> a join in its partition reached the observer after {ms} ms",
            round + 1
        );
        took.push(ms);
        client.disconnect().await;
        aggregators[n] = Proc::start("aggregator", &env(&victim)).await?;
    }
    took.sort_unstable();
    let p50 = took[took.len() / 2];
    let max = took.last().copied().unwrap_or(0);
    println!(
        "failover over {} kills (lease 3 s, 3 aggregators, {PARTITIONS} partitions): p50 {p50} ms, max {max} ms, min {} ms",
        took.len(),
        took.first().copied().unwrap_or(0)
    );
    drop(edge);
    Ok(())
}
