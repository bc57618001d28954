//! The edge's lease on its connections: one small `edge_lease` event in every partition,
//! every third of the lease, listing nothing per connection. The aggregator sweeps all of
//! this edge's connections once the lease runs out, so the users of an edge that died go
//! offline in about the lease rather than at each connection's heartbeat timeout. A drain
//! releases it: the connections then wait for their heartbeat timeout, as their clients
//! reconnect elsewhere, and nobody flaps.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use presence_events::EventBody;
use presence_log::publish_all_durable;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::EventPublisher;

/// A renewal is sent every `lease / RENEWALS`.
const RENEWALS: u32 = 3;

/// This edge's lease.
#[derive(Clone)]
pub(crate) struct EdgeLease {
    publisher: EventPublisher,
    incarnation: u64,
    ttl: Duration,
}

impl EdgeLease {
    /// The lease of this run of the process (`ttl` of at least 300 ms).
    pub(crate) fn new(publisher: EventPublisher, ttl: Duration) -> Self {
        // A number no other run of this node id has used: the standard library's per-process
        // random hasher keys, mixed with the time.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self {
            publisher,
            incarnation: hasher.finish(),
            ttl,
        }
    }

    fn body(&self, released: bool) -> EventBody {
        EventBody::EdgeLease {
            incarnation: self.incarnation,
            ttl_ms: self.ttl.as_millis() as u64,
            released,
        }
    }

    /// Appends the lease (or its release) to every partition; whether all of them were stored
    /// before `give_up`.
    async fn append(&self, released: bool, give_up: &CancellationToken) -> bool {
        let partitions = self.publisher.partitions();
        let messages: Vec<_> = partitions
            .all()
            .filter_map(|p| self.publisher.message_in(p, self.body(released)).ok())
            .collect();
        let stored = messages.len() == usize::from(partitions.count())
            && publish_all_durable(self.publisher.log(), &messages, give_up).await;
        let outcome = if stored { "ok" } else { "abandoned" };
        metrics::counter!("presence_events_published_total", "kind" => "edge_lease", "outcome" => outcome)
            .increment(messages.len() as u64);
        stored
    }

    /// Appends the first lease, waiting at most `within`: taken before the edge accepts a
    /// connection, so that the lease of a restarted process comes before its joins.
    pub(crate) async fn take(&self, within: Duration) -> bool {
        let give_up = CancellationToken::new();
        let stored = tokio::time::timeout(within, self.append(false, &give_up)).await;
        give_up.cancel();
        stored.unwrap_or(false)
    }

    /// Renews the lease until `stop`, then releases it. A renewal that is not stored within
    /// one renewal period is abandoned for the next one.
    pub(crate) async fn hold(self, stop: CancellationToken) {
        let every = self.ttl / RENEWALS;
        let mut timer = tokio::time::interval(every);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = timer.tick() => {}
            }
            let give_up = CancellationToken::new();
            let renewed = tokio::select! {
                stored = self.append(false, &give_up) => stored,
                _ = tokio::time::sleep(every) => false,
                _ = stop.cancelled() => false,
            };
            give_up.cancel();
            if !renewed {
                tracing::warn!("could not renew the edge lease");
            }
        }
        // Released, or the aggregator would sweep the connections the drain handed back.
        let give_up = CancellationToken::new();
        let released = tokio::time::timeout(Duration::from_secs(5), self.append(true, &give_up))
            .await
            .unwrap_or(false);
        give_up.cancel();
        if released {
            tracing::info!("released the edge lease");
        } else {
            tracing::warn!(
                "could not release the edge lease: this edge's connections are swept when it runs out"
            );
        }
    }
}
