//! `presence-bench-aggregator`: how fast the aggregator folds heartbeats from a pre-filled
//! JetStream stream, and how fast `presence replay` re-reads the same stream.
//!
//! It appends a join for each of N connections, then R rounds of heartbeats from all of
//! them (batched 2,000 per `beat` message, as edges batch them) with a sweep tick per round
//! (the workload of `presence_bench::beats`, which the aggregator's `fold` bench folds too),
//! then starts a `presence aggregator` process on that stream and times it from its first
//! folded event to the last; then it times `presence replay timeline` over the whole stream.
//!
//! With `partitions` (and `aggregators`) it measures the partitioned fold instead: the same
//! workload routed into 4 partitions as edges route it (beat batches split per partition,
//! the workload's ticks in every partition), folded by 1 or 2 aggregators that share the
//! partitions by leases; timed from launch to every pre-filled event consumed.
//!
//! usage: NATS_URL=… presence-bench-aggregator [connections=100000] [rounds=20] [partitions]
//!        [aggregators=1]
//! (`make bench-aggregator` provides the server and runs 1 partition, then 4 partitions over
//! 1 and over 2 aggregators.)

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use presence_bench::beats::BeatWorkload;
use presence_e2e::{Proc, cpu_seconds, metric_total, nats_url, presence_bin, unique_namespace};
use presence_events::{Event, EventBody, Millis, Partition, Partitions, Subjects};
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
    if std::env::args().nth(3).is_some() {
        return partitioned(connections, rounds, arg(3, 4)?, arg(4, 1)?).await;
    }
    let namespace = unique_namespace();
    let subjects = Subjects::new(&namespace);
    let log = JetStreamLog::connect(&nats_url()?, "bench").await?;
    events_stream(&log, &subjects).await?;

    // Times from now on, 5 s a round: the live aggregator's own sweep ticks come after all of
    // it in the stream, and sweep nobody.
    let workload = BeatWorkload::new(connections, rounds as u64, Millis::now());
    let messages: Vec<Outgoing> = workload
        .events()
        .map(|event| Outgoing {
            subject: subjects.event(Partition(0), event.kind()),
            msg_id: event.id.to_string(),
            payload: Bytes::from(event.encode().expect("events encode")),
            ttl: None,
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
        // One partition: the stream is filled as partition 0.
        ("PRESENCE_PARTITIONS", "1".to_owned()),
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

/// Creates the events stream of `subjects`, with room for the whole pre-filled workload.
async fn events_stream(log: &JetStreamLog, subjects: &Subjects) -> anyhow::Result<()> {
    log.ensure_stream(StreamSpec {
        name: subjects.events_stream(),
        subjects: vec![subjects.events_wildcard()],
        max_msgs_per_subject: 0,
        max_age: Duration::ZERO,
        max_bytes: MAX_BYTES,
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        allow_message_ttl: false,
    })
    .await?;
    Ok(())
}

/// The partitioned fold: `partitions` partitions over `aggregators` aggregators.
async fn partitioned(
    connections: usize,
    rounds: usize,
    partitions: usize,
    aggregators: usize,
) -> anyhow::Result<()> {
    let namespace = unique_namespace();
    let parts = Partitions::new(partitions as u64)?;
    let subjects = Subjects::new(&namespace).with_partitions(parts);
    let log = JetStreamLog::connect(&nats_url()?, "bench").await?;
    events_stream(&log, &subjects).await?;
    let workload = BeatWorkload::new(connections, rounds as u64, Millis::now());
    let mut messages: Vec<Outgoing> = Vec::new();
    let mut push = |p: Partition, event: &Event| {
        messages.push(Outgoing {
            subject: subjects.event(p, event.kind()),
            msg_id: format!("{}-{p}", event.id),
            payload: Bytes::from(event.encode().expect("events encode")),
            ttl: None,
        });
    };
    for event in workload.events() {
        match &event.body {
            EventBody::Beat { beats } => {
                for (p, beats) in parts.split_beats(beats.clone()) {
                    let split = Event {
                        body: EventBody::Beat { beats },
                        ..event.clone()
                    };
                    push(p, &split);
                }
            }
            EventBody::Tick | EventBody::MetricsTick => {
                for p in parts.all() {
                    push(p, &event);
                }
            }
            body => push(parts.of_event(body).context("a single-key event")?, &event),
        }
    }
    let total = messages.len();
    let never = tokio_util::sync::CancellationToken::new();
    for chunk in messages.chunks(5_000) {
        ensure!(
            publish_all_durable(&log as &dyn EventLog, chunk, &never).await,
            "could not fill the stream"
        );
    }
    drop(messages);
    let env = [
        ("NATS_URL", nats_url()?),
        ("PRESENCE_NAMESPACE", namespace.clone()),
        ("PRESENCE_HEARTBEAT_TIMEOUT_MS", "15000".to_owned()),
        ("PRESENCE_SWEEP_INTERVAL_MS", "3000".to_owned()),
        ("PRESENCE_PARTITIONS", partitions.to_string()),
        ("PRESENCE_EVENTS_MAX_BYTES", MAX_BYTES.to_string()),
    ];
    let launched = Instant::now();
    let mut procs = Vec::new();
    for n in 0..aggregators {
        let mut env = env.to_vec();
        env.push(("PRESENCE_NODE_ID", format!("agg-{n}")));
        procs.push(Proc::start("aggregator", &env).await?);
    }
    // Every pre-filled message consumed (the aggregators' own live ticks come on top, a few).
    loop {
        let mut consumed = 0.0;
        for p in &procs {
            consumed += metric_total(&p.admin, "presence_events_consumed_total").await;
        }
        if consumed as usize >= total {
            break;
        }
        ensure!(
            launched.elapsed() < Duration::from_secs(300),
            "consumed {consumed} of {total} in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = launched.elapsed().as_secs_f64();
    let mut cpu = 0.0;
    for p in &procs {
        cpu += cpu_seconds(p.pid().context("aggregator pid")?)?;
    }
    println!(
        "partitioned fold: {partitions} partitions over {aggregators} aggregator(s): {total} messages ({connections} joins, {} heartbeats) folded in {took:.2} s from launch: {:.0} heartbeats/s, {cpu:.2} CPU s in all",
        workload.heartbeats(),
        workload.heartbeats() as f64 / took,
    );
    Ok(())
}
