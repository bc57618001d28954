//! Fold throughput: heartbeats decoded from their log encoding and folded into the presence
//! state, per second, on one core. `cargo bench -p presence-aggregator --bench fold`.
//!
//! The workload is what an aggregator reads from the stream in steady state: N open
//! connections, each beating once per 5 s, batched by edges into `beat` messages of up to
//! 2,000 entries, with a sweep tick every 3 s.

use std::time::Instant;

use presence_aggregator::PresenceState;
use presence_events::{
    BeatEntry, ConnId, Event, EventBody, Millis, NodeId, TenantId, UserId, ViewerClass,
};

fn main() {
    for connections in [10_000usize, 100_000] {
        run(connections);
    }
}

fn run(connections: usize) {
    let node = NodeId::parse("edge-bench").expect("valid node");
    let tenant = TenantId::default_tenant();
    let conns: Vec<(UserId, ConnId, ViewerClass)> = (0..connections)
        .map(|i| {
            let class = ViewerClass::from_gender(Some(if i % 10 == 0 { "female" } else { "male" }));
            (
                UserId::parse(format!("user-{i}")).expect("valid user"),
                ConnId::new(),
                class,
            )
        })
        .collect();
    // Joins, then 60 s of beats (12 rounds of every connection) and ticks, encoded as on the wire.
    let mut log: Vec<Vec<u8>> = Vec::new();
    for (user, conn, class) in &conns {
        log.push(
            Event::new(
                node.clone(),
                Millis(0),
                EventBody::Join {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    conn: *conn,
                    class: class.clone(),
                },
            )
            .encode()
            .expect("events encode"),
        );
    }
    let joins = log.len();
    let mut beats = 0u64;
    for round in 1..=12u64 {
        let at = Millis(round * 5_000);
        for chunk in conns.chunks(2_000) {
            let entries: Vec<BeatEntry> = chunk
                .iter()
                .map(|(user, conn, class)| BeatEntry {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    conn: *conn,
                    class: class.clone(),
                    at,
                })
                .collect();
            beats += entries.len() as u64;
            log.push(
                Event::new(node.clone(), at, EventBody::Beat { beats: entries })
                    .encode()
                    .expect("events encode"),
            );
        }
        log.push(
            Event::new(node.clone(), at.plus(1), EventBody::Tick)
                .encode()
                .expect("events encode"),
        );
    }
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
