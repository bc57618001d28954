//! `GET /api/health`: the cluster's presence figures (from the aggregator, summed by it) and
//! this edge's sockets; `degraded` when the aggregator's figures are missing or stale.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use presence_events::{Millis, format_rfc3339};
use serde::Serialize;

use super::OpsContext;

/// Figures older than this make the health `degraded`: the aggregator ticks every few seconds.
const STALE_AFTER_MS: u64 = 30_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Health {
    /// `ok`, or `degraded` when the aggregator's figures are missing or older than 30 s.
    status: &'static str,
    presence: PresenceFigures,
    sockets: SocketFigures,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct PresenceFigures {
    online_users: u64,
    peak_online: u64,
    total_connections: u64,
    total_disconnections: u64,
    total_swepts: u64,
    last_sweep_at: Option<String>,
    uptime_ms: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SocketFigures {
    connected: usize,
    connected_users: usize,
}

/// Cluster figures from the aggregator; socket figures of this edge.
pub(super) async fn health(State(cx): State<Arc<OpsContext>>) -> Json<Health> {
    let (connected, connected_users) = cx.presence.local.counts();
    let now = Millis::now();
    let (status, presence) = match cx.cluster.latest() {
        Some(cluster) => {
            let s = &cluster.presence;
            let fresh = s
                .last_sweep_at
                .is_some_and(|at| now.since(at) < STALE_AFTER_MS);
            (
                if fresh { "ok" } else { "degraded" },
                PresenceFigures {
                    online_users: s.online_users,
                    peak_online: s.peak_online,
                    total_connections: s.total_connections,
                    total_disconnections: s.total_disconnections,
                    total_swepts: s.total_swepts,
                    last_sweep_at: s.last_sweep_at.map(format_rfc3339),
                    uptime_ms: now.since(cluster.started_at),
                },
            )
        }
        None => ("degraded", PresenceFigures::default()),
    };
    Json(Health {
        status,
        presence,
        sockets: SocketFigures {
            connected,
            connected_users,
        },
    })
}
