//! `presence-loadgen`: holds N Socket.IO connections heartbeating at a steady interval and
//! reports what the edge appended to the log meanwhile (from the edge's own Prometheus
//! counters), e.g. to check that heartbeat traffic to JetStream is batched.
//!
//! usage: presence-loadgen <edge-url> <edge-admin-url> [connections=1000] [heartbeat-ms=5000] [seconds=30]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use presence_e2e::connect;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!(
            "usage: presence-loadgen <edge-url> <edge-admin-url> [connections] [heartbeat-ms] [seconds]"
        );
    }
    let (url, admin) = (&args[0], &args[1]);
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map_or(Ok(default), |v| v.parse().context("numeric argument"))
    };
    let (connections, heartbeat_ms, seconds) = (arg(2, 1000)?, arg(3, 5000)?, arg(4, 30)?);

    let started = Instant::now();
    let mut clients = Vec::with_capacity(connections as usize);
    for i in 0..connections {
        let gender = if i % 10 == 0 { "female" } else { "male" };
        let mut client = connect(url, &format!("load-{i}"), gender)
            .await
            .with_context(|| format!("connection {i}"))?;
        client.start_heartbeat(Duration::from_millis(heartbeat_ms));
        clients.push(client);
    }
    println!(
        "{connections} connections open in {:.1} s, heartbeating every {heartbeat_ms} ms",
        started.elapsed().as_secs_f64()
    );
    // Let the connect burst settle into the steady heartbeat pattern.
    tokio::time::sleep(Duration::from_millis(heartbeat_ms + 1000)).await;
    let before = published(admin).await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = published(admin).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let heartbeats = after.heartbeats - before.heartbeats;
    let messages = after.all - before.all;
    println!(
        "over {elapsed:.1} s: {heartbeats} heartbeats received ({:.0}/s), {messages} JetStream messages published by the edge ({:.2}/s; beat batches {:.2}/s)",
        heartbeats / elapsed,
        messages / elapsed,
        (after.beats - before.beats) / elapsed,
    );
    drop(clients);
    Ok(())
}

struct Counters {
    heartbeats: f64,
    beats: f64,
    all: f64,
}

/// Reads the edge's counters from its Prometheus text.
async fn published(admin: &str) -> anyhow::Result<Counters> {
    let text = presence_e2e::http("GET", &format!("{admin}/metrics"), &[], None)
        .await?
        .body;
    let mut c = Counters {
        heartbeats: 0.0,
        beats: 0.0,
        all: 0.0,
    };
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name.starts_with("presence_heartbeats_received_total") {
            c.heartbeats += value;
        } else if name.starts_with("presence_events_published_total") {
            c.all += value;
            if name.contains("kind=\"beat\"") {
                c.beats += value;
            }
        }
    }
    Ok(c)
}
