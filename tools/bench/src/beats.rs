//! The heartbeat workload of the aggregator benchmarks: what an aggregator reads from the
//! stream in steady state. N open connections (`user-0` … `user-N-1`, one in ten `female`)
//! join, then beat once per 5 s round, batched as edges batch them into `beat` messages of
//! up to 2,000 entries, with a sweep tick after every round.
//!
//! `presence-bench-aggregator` appends it to a JetStream stream for a real aggregator
//! process; the aggregator crate's `fold` bench folds it in memory.

use presence_events::{
    BeatEntry, ConnId, Event, EventBody, Millis, NodeId, TenantId, UserId, ViewerClass,
};

/// Heartbeats per `beat` message.
pub const BATCH: usize = 2_000;
/// Time between two rounds of heartbeats, ms.
pub const ROUND_MS: u64 = 5_000;

/// The connections of the workload and its schedule; [`BeatWorkload::events`] makes the
/// events, in log order.
pub struct BeatWorkload {
    node: NodeId,
    tenant: TenantId,
    conns: Vec<(UserId, ConnId, ViewerClass)>,
    rounds: u64,
    base: Millis,
}

impl BeatWorkload {
    /// `connections` joining at `base`, then `rounds` rounds of heartbeats from all of them,
    /// round `r` at `base + r × ROUND_MS`.
    pub fn new(connections: usize, rounds: u64, base: Millis) -> Self {
        let conns = (0..connections)
            .map(|i| {
                let gender = if i % 10 == 0 { "female" } else { "male" };
                let user = UserId::parse(format!("user-{i}")).expect("a valid user id");
                (user, ConnId::new(), ViewerClass::from_gender(Some(gender)))
            })
            .collect();
        Self {
            node: NodeId::parse("edge-bench").expect("a valid node id"),
            tenant: TenantId::default_tenant(),
            conns,
            rounds,
            base,
        }
    }

    /// The joins: the first [`BeatWorkload::joins`] events.
    pub fn joins(&self) -> usize {
        self.conns.len()
    }

    /// Heartbeats in all the `beat` messages.
    pub fn heartbeats(&self) -> u64 {
        self.conns.len() as u64 * self.rounds
    }

    /// A join for every connection; then, round by round, its `beat` messages and a tick
    /// 1 ms later. Made as they are taken, each with a fresh event id.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        let joins = self.conns.iter().map(|(user, conn, class)| {
            self.event(
                self.base,
                EventBody::Join {
                    tenant: self.tenant.clone(),
                    user: user.clone(),
                    conn: *conn,
                    class: class.clone(),
                },
            )
        });
        let rounds = (1..=self.rounds).flat_map(move |round| {
            let at = self.base.plus(round * ROUND_MS);
            let beats = self.conns.chunks(BATCH).map(move |chunk| {
                let beats = chunk
                    .iter()
                    .map(|(user, conn, class)| BeatEntry {
                        tenant: self.tenant.clone(),
                        user: user.clone(),
                        conn: *conn,
                        class: class.clone(),
                        at,
                    })
                    .collect();
                self.event(at, EventBody::Beat { beats })
            });
            beats.chain(std::iter::once_with(move || {
                self.event(at.plus(1), EventBody::Tick)
            }))
        });
        joins.chain(rounds)
    }

    fn event(&self, at: Millis, body: EventBody) -> Event {
        Event::new(self.node.clone(), at, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_then_rounds_of_batched_beats_and_a_tick() {
        let workload = BeatWorkload::new(4_500, 2, Millis(1_000));
        let events: Vec<Event> = workload.events().collect();
        assert_eq!(workload.joins(), 4_500);
        // 4,500 joins, then per round 3 beat messages (2,000 + 2,000 + 500) and a tick.
        assert_eq!(events.len(), 4_500 + 2 * 4);
        assert!(
            events[..4_500]
                .iter()
                .all(|e| e.kind() == "join" && e.at == Millis(1_000))
        );
        let round: Vec<(&str, Millis, usize)> = events[4_500..4_504]
            .iter()
            .map(|e| match &e.body {
                EventBody::Beat { beats } => ("beat", e.at, beats.len()),
                _ => (e.kind(), e.at, 0),
            })
            .collect();
        assert_eq!(
            round,
            [
                ("beat", Millis(6_000), 2_000),
                ("beat", Millis(6_000), 2_000),
                ("beat", Millis(6_000), 500),
                ("tick", Millis(6_001), 0),
            ]
        );
        let beats: usize = events
            .iter()
            .map(|e| match &e.body {
                EventBody::Beat { beats } => beats.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(beats as u64, workload.heartbeats());
    }
}
