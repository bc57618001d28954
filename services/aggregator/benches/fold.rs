//! Fold throughput: heartbeats decoded from their log encoding and folded into the presence
//! state, per second, on one core. `cargo bench -p presence-aggregator --bench fold`.
//!
//! The workload is what an aggregator reads from the stream in steady state (the one
//! `presence-bench-aggregator` appends to JetStream, `presence_bench::beats`): N open
//! connections, each beating once per 5 s, batched by edges into `beat` messages of up to
//! 2,000 entries, with a sweep tick after every round.

use std::time::Instant;

use presence_bench::beats::BeatWorkload;
use presence_events::{Event, Millis};
use presence_fold::PresenceState;

fn main() {
    for connections in [10_000usize, 100_000] {
        run(connections);
    }
}

fn run(connections: usize) {
    // Joins, then 60 s of beats (12 rounds of every connection) and ticks, encoded as on the wire.
    let workload = BeatWorkload::new(connections, 12, Millis(0));
    let log: Vec<Vec<u8>> = workload
        .events()
        .map(|e| e.encode().expect("events encode"))
        .collect();
    let (joins, beats) = (workload.joins(), workload.heartbeats());
    let bytes: usize = log[joins..].iter().map(Vec::len).sum();

    let mut state = PresenceState::new(15_000);
    for (i, bytes) in log[..joins].iter().enumerate() {
        let event = Event::decode(bytes).expect("valid event");
        state.apply(i as u64 + 1, &event);
    }
    let started = Instant::now();
    let mut changes = 0usize;
    for (i, bytes) in log.iter().enumerate().skip(joins) {
        let event = Event::decode(bytes).expect("valid event");
        changes += state.apply(i as u64 + 1, &event).len();
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{connections:>7} connections: {beats} heartbeats ({:.1} MB of beat messages) decoded and folded in {took:.3} s = {:.0} heartbeats/s on one core ({changes} changes)",
        bytes as f64 / 1e6,
        beats as f64 / took
    );
}
