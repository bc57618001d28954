//! `presence-bench-aggregator`: how fast the aggregator folds heartbeats from a pre-filled
//! JetStream stream, and how fast `presence replay` re-reads the same stream.
//!
//! It appends a join for each of N connections, then R rounds of heartbeats from all of
//! them (batched 2,000 per `beat` message, as edges batch them) with a sweep tick per round
//! (the workload of `presence_bench::beats`, which the aggregator's `fold` bench folds too),
//! then starts a `presence aggregator` process on that stream and times it from its first
//! folded event to the last; then it times `presence replay timeline` over the whole stream.
//!
//! usage: NATS_URL=… presence-bench-aggregator [connections=100000] [rounds=20]
//! (`make bench-aggregator` provides the server.)

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use presence_bench::beats::BeatWorkload;
use presence_e2e::{Proc, cpu_seconds, metric_total, nats_url, presence_bin, unique_namespace};
use presence_events::{Millis, Subjects};
use presence_log::{EventLog, JetStreamLog, Outgoing, StreamSpec, publish_all_durable};

/// Room for the pre-filled stream.
const MAX_BYTES: i64 = 1024 * 1024 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        std::env::args()
            .nth(i)
            .map_or(Ok(default), |v| v.parse().context("a number"))
    };
    let (connections, rounds) = (arg(1, 100_000)?, arg(2, 20)?);
    let namespace = unique_namespace();
    let subjects = Subjects::new(&namespace);
    let log = JetStreamLog::connect(&nats_url()?, "bench").await?;
    log.ensure_stream(StreamSpec {
        name: subjects.events_stream(),
        subjects: vec![subjects.events_wildcard()],
        max_msgs_per_subject: 0,
        max_age: Duration::ZERO,
        max_bytes: MAX_BYTES,
        duplicate_window: Duration::from_secs(120),
    })
    .await?;

    // Times from now on, 5 s a round: the live aggregator's own sweep ticks come after all of
    // it in the stream, and sweep nobody.
    let workload = BeatWorkload::new(connections, rounds as u64, Millis::now());
    let messages: Vec<Outgoing> = workload
        .events()
        .map(|event| Outgoing {
            subject: subjects.event(event.kind()),
            msg_id: event.id.to_string(),
            payload: Bytes::from(event.encode().expect("events encode")),
        })
        .collect();
    let heartbeats = workload.heartbeats();
    let bytes: usize = messages.iter().map(|m| m.payload.len()).sum();
    let never = tokio_util::sync::CancellationToken::new();
    let filling = Instant::now();
    for chunk in messages.chunks(5_000) {
        ensure!(
            publish_all_durable(&log as &dyn EventLog, chunk, &never).await,
            "could not fill the stream"
        );
    }
    let last = log.last_sequence(&subjects.events_stream()).await?;
    println!(
        "stream {}: {} messages ({connections} joins, {heartbeats} heartbeats in {rounds} rounds, {:.0} MB) appended in {:.1} s",
        subjects.events_stream(),
        messages.len(),
        bytes as f64 / 1e6,
        filling.elapsed().as_secs_f64()
    );
    drop(messages);

    let env = [
        ("NATS_URL", nats_url()?),
        ("PRESENCE_NAMESPACE", namespace.clone()),
        ("PRESENCE_HEARTBEAT_TIMEOUT_MS", "15000".to_owned()),
        ("PRESENCE_SWEEP_INTERVAL_MS", "3000".to_owned()),
        // The whole pre-filled stream must stay (the test harness caps streams lower).
        ("PRESENCE_EVENTS_MAX_BYTES", MAX_BYTES.to_string()),
    ];
    let launched = Instant::now();
    let aggregator = Proc::start("aggregator", &env).await?;
    let pid = aggregator.pid().context("aggregator pid")?;
    // The joins (each a change published durably) first, then the heartbeats alone.
    let joins_seq = connections as u64;
    let (mut first, mut joined) = (None, None);
    loop {
        let folded = metric_total(&aggregator.admin, "presence_folded_sequence").await as u64;
        if folded > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if folded >= joins_seq && joined.is_none() {
            joined = Some((Instant::now(), cpu_seconds(pid)?));
        }
        if folded >= last {
            break;
        }
        ensure!(
            launched.elapsed() < Duration::from_secs(300),
            "folded {folded} of {last} in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = (Instant::now(), cpu_seconds(pid)?);
    let first = first.context("nothing folded")?;
    let joined = joined.context("joins not folded")?;
    let beats_took = done.0.duration_since(joined.0).as_secs_f64();
    let beats_cpu = done.1 - joined.1;
    println!(
        "aggregator: {connections} joins folded (and their changes published) in {:.2} s; then {heartbeats} heartbeats in {} messages folded in {beats_took:.2} s: {:.0} heartbeats/s, {:.2} CPU s ({:.2} CPU s per million heartbeats); {:.2} s from launch to the last event",
        joined.0.duration_since(first).as_secs_f64(),
        last - joins_seq,
        heartbeats as f64 / beats_took,
        beats_cpu,
        beats_cpu / (heartbeats as f64 / 1e6),
        done.0.duration_since(launched).as_secs_f64(),
    );
    drop(aggregator);

    let replaying = Instant::now();
    let replay = tokio::process::Command::new(presence_bin()?)
        .args([
            "replay",
            "--to-seq",
            &last.to_string(),
            "timeline",
            "--user",
            "user-1",
        ])
        .env("NATS_URL", nats_url()?)
        .env("PRESENCE_NAMESPACE", &namespace)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .context("running presence replay")?;
    ensure!(
        replay.status.success(),
        "presence replay failed: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let took = replaying.elapsed().as_secs_f64();
    println!(
        "replay: {last} events re-read and folded in {took:.2} s (process start included): {:.0} events/s, {:.0} heartbeats/s",
        last as f64 / took,
        heartbeats as f64 / took
    );
    Ok(())
}
