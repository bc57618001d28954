//! Per-customer active-user metrics on this edge: the latest value of each customer (for
//! `GET /metrics`) and a broadcast of every tick to the WebSocket clients of that customer.
//! Fed from the metrics stream, which keeps the last value per customer, so a new edge
//! answers at once.

use presence_events::{Millis, Subjects, TenantId, TenantMetrics};
use presence_log::{EventLog, StartAt};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::active_protocol::{MetricsData, ServerMessage};

struct Customer {
    latest: Option<MetricsData>,
    /// Ready-to-send `metrics:update` frames.
    updates: broadcast::Sender<Arc<str>>,
}

impl Customer {
    fn new() -> Self {
        Self {
            latest: None,
            // Only the newest value matters: a slow client skips, never queues.
            updates: broadcast::channel(4).0,
        }
    }
}

/// Latest metrics per customer and their subscribers.
#[derive(Default)]
pub(crate) struct MetricsHub {
    customers: RwLock<HashMap<TenantId, Customer>>,
}

impl MetricsHub {
    /// Frames of every future tick of `tenant`.
    pub(crate) fn subscribe(&self, tenant: &TenantId) -> broadcast::Receiver<Arc<str>> {
        let mut customers = self.customers.write().unwrap_or_else(|e| e.into_inner());
        customers
            .entry(tenant.clone())
            .or_insert_with(Customer::new)
            .updates
            .subscribe()
    }

    /// The latest metrics of `tenant`, if it ever ticked.
    pub(crate) fn latest(&self, tenant: &TenantId) -> Option<MetricsData> {
        let customers = self.customers.read().unwrap_or_else(|e| e.into_inner());
        customers.get(tenant).and_then(|c| c.latest.clone())
    }

    /// Drops customers nobody listens to whose last value is older than `idle` (or who never
    /// ticked): the customer ids clients send cannot grow the map without bound.
    pub(crate) fn forget_idle(&self, now: Millis, idle_ms: u64) {
        let mut customers = self.customers.write().unwrap_or_else(|e| e.into_inner());
        customers.retain(|_, c| {
            c.updates.receiver_count() > 0
                || c.latest
                    .as_ref()
                    .is_some_and(|m| now.since(m.timestamp) < idle_ms)
        });
    }

    fn update(&self, metrics: &TenantMetrics) {
        let data = MetricsData::from_metrics(metrics);
        let frame: Arc<str> = ServerMessage::MetricsUpdate { data: &data }
            .to_text()
            .into();
        let mut customers = self.customers.write().unwrap_or_else(|e| e.into_inner());
        let customer = customers
            .entry(metrics.tenant.clone())
            .or_insert_with(Customer::new);
        if customer
            .latest
            .as_ref()
            .is_some_and(|known| known.timestamp > data.timestamp)
        {
            return;
        }
        customer.latest = Some(data);
        let receivers = customer.updates.send(frame).unwrap_or(0);
        metrics::counter!("presence_metrics_updates_delivered_total").increment(receivers as u64);
    }

    /// Follows the metrics stream until `shutdown`.
    pub(crate) async fn follow(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        subjects: Subjects,
        shutdown: CancellationToken,
    ) {
        let stream = subjects.metrics_stream();
        presence_log::follow_stream(
            log.as_ref(),
            &stream,
            StartAt::LastPerSubject,
            &shutdown,
            || {},
            |delivered| {
                match TenantMetrics::decode(&delivered.payload) {
                    Ok(m) => self.update(&m),
                    Err(e) => tracing::error!(error = %e, "skipping undecodable metrics"),
                }
                std::future::ready(())
            },
        )
        .await;
    }
}
