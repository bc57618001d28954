//! `GET /api/health`: the cluster's presence figures (summed over the partitions' figures,
//! which each partition's owner publishes), every partition with its owner, epoch and lag,
//! and this edge's sockets; `degraded` when a partition's figures are missing or stale, or
//! when this edge cannot append to the log.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use presence_events::{Millis, format_rfc3339};
use serde::Serialize;
use utoipa::ToSchema;

use super::OpsContext;

/// Figures older than this make the health `degraded`: the aggregator ticks every few seconds.
const STALE_AFTER_MS: u64 = 30_000;

/// The cluster's presence figures, every partition, and this edge's sockets.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Health {
    /// `ok`, or `degraded` when the aggregator's figures are missing or older than 30 s, or
    /// the log is unavailable to this edge.
    #[schema(value_type = String, pattern = "^(ok|degraded)$")]
    status: &'static str,
    /// `available`; `disconnected` while this edge has no connection to the log;
    /// `unavailable` while connected but its appends fail (no quorum, no stream leader).
    /// Connects and writes are refused at once unless `available`.
    #[schema(value_type = String, pattern = "^(available|disconnected|unavailable)$")]
    log: &'static str,
    presence: PresenceFigures,
    partitions: Vec<PartitionFigures>,
    sockets: SocketFigures,
}

/// One partition of the log, as its owner last published it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PartitionFigures {
    partition: u16,
    /// The aggregator folding it (none: no figures yet).
    #[schema(required = true)]
    owner: Option<String>,
    epoch: u64,
    /// Events waiting to be folded at its last tick.
    lag: u64,
    /// Event-log sequence of its last tick.
    seq: u64,
    online_users: u64,
    #[schema(required = true, format = DateTime)]
    last_sweep_at: Option<String>,
    /// `ok`, `stale` (no tick for 30 s) or `missing`.
    #[schema(value_type = String, pattern = "^(ok|stale|missing)$")]
    status: &'static str,
}

/// Presence over the whole cluster (the partitions summed).
#[derive(Serialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PresenceFigures {
    online_users: u64,
    /// The partitions' peaks summed: an upper bound of the cluster's.
    peak_online: u64,
    total_connections: u64,
    total_disconnections: u64,
    total_swepts: u64,
    /// The oldest of the partitions' last sweeps.
    #[schema(required = true, format = DateTime)]
    last_sweep_at: Option<String>,
    uptime_ms: u64,
}

/// This edge's Socket.io connections.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SocketFigures {
    connected: usize,
    connected_users: usize,
}

/// Cluster figures summed over the partitions; socket figures of this edge.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "operations",
    summary = "The cluster's presence figures, its partitions and this edge's sockets",
    description = "Always 200: `status` says `degraded` when a partition's figures are missing \
        or older than 30 s, or this edge cannot append to the log. For a balancer's probe use \
        the admin listener's `/readyz` and `/livez`.",
    responses((status = 200, description = "The figures", body = Health))
)]
pub(super) async fn health(State(cx): State<Arc<OpsContext>>) -> Json<Health> {
    let (connected, connected_users) = cx.presence.local.counts();
    let now = Millis::now();
    let known = cx.cluster.partitions();
    let mut presence = PresenceFigures::default();
    let mut partitions = Vec::with_capacity(usize::from(cx.partitions.count()));
    let mut all_fresh = true;
    let mut oldest_sweep: Option<Millis> = None;
    for partition in cx.partitions.all() {
        let Some(figures) = known.get(&partition) else {
            all_fresh = false;
            partitions.push(PartitionFigures {
                partition: partition.0,
                owner: None,
                epoch: 0,
                lag: 0,
                seq: 0,
                online_users: 0,
                last_sweep_at: None,
                status: "missing",
            });
            continue;
        };
        let s = &figures.presence;
        let fresh = s
            .last_sweep_at
            .is_some_and(|at| now.since(at) < STALE_AFTER_MS);
        all_fresh &= fresh;
        presence.online_users += s.online_users;
        // Partitions peak at different times: their sum is an upper bound of the cluster's.
        presence.peak_online += s.peak_online;
        presence.total_connections += s.total_connections;
        presence.total_disconnections += s.total_disconnections;
        presence.total_swepts += s.total_swepts;
        presence.uptime_ms = presence.uptime_ms.max(now.since(figures.started_at));
        if let Some(at) = s.last_sweep_at {
            oldest_sweep = Some(oldest_sweep.map_or(at, |o| o.min(at)));
        }
        partitions.push(PartitionFigures {
            partition: partition.0,
            owner: figures.owner.as_ref().map(ToString::to_string),
            epoch: figures.epoch,
            lag: figures.lag,
            seq: figures.seq,
            online_users: s.online_users,
            last_sweep_at: s.last_sweep_at.map(format_rfc3339),
            status: if fresh { "ok" } else { "stale" },
        });
    }
    presence.last_sweep_at = oldest_sweep.map(format_rfc3339);
    let log = cx.publisher.log_state();
    Json(Health {
        status: if all_fresh && log == "available" {
            "ok"
        } else {
            "degraded"
        },
        log,
        presence,
        partitions,
        sockets: SocketFigures {
            connected,
            connected_users,
        },
    })
}
