//! Per-customer active-user metrics on this edge: the latest value of each customer (for
//! `GET /metrics`) and a broadcast of every tick to the WebSocket clients of that customer.
//! Fed from the metrics stream, which keeps the last value per customer, so a new edge
//! answers at once. The recent values of up to [`HISTORY_CUSTOMERS`] customers are kept for
//! the dashboard's charts.

use presence_events::{Millis, TenantId, TenantMetrics};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

use crate::wire::{Announcements, MetricsData, ServerMessage};

/// Values kept per customer for the charts: ten minutes of default 5 s ticks.
pub(crate) const HISTORY_POINTS: usize = 120;
/// Customers whose recent values are kept (24 bytes a point: under 3 MB in all).
pub(crate) const HISTORY_CUSTOMERS: usize = 1_000;

/// One tick of one customer, as the dashboard draws it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Point {
    pub(crate) timestamp: Millis,
    pub(crate) count: u64,
    pub(crate) ema: f64,
}

struct Customer {
    latest: Option<MetricsData>,
    /// Ready-to-send `metrics:update` frames.
    updates: broadcast::Sender<Arc<str>>,
    /// The latest ticks, oldest first; `None` for customers past [`HISTORY_CUSTOMERS`].
    history: Option<VecDeque<Point>>,
}

impl Customer {
    fn new() -> Self {
        Self {
            latest: None,
            // Only the newest value matters: a slow client skips, never queues.
            updates: broadcast::channel(4).0,
            history: None,
        }
    }
}

/// A customer's recent values, for the dashboard.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomerHistory {
    pub(crate) customer_id: TenantId,
    pub(crate) points: Vec<Point>,
}

#[derive(Default)]
struct Customers {
    by_id: HashMap<TenantId, Customer>,
    with_history: usize,
}

impl Customers {
    fn entry(&mut self, tenant: &TenantId) -> &mut Customer {
        self.by_id
            .entry(tenant.clone())
            .or_insert_with(Customer::new)
    }
}

/// Latest metrics per customer and their subscribers.
#[derive(Default)]
pub(crate) struct MetricsHub {
    customers: RwLock<Customers>,
    /// Told of every customer's ticks (the dashboard).
    announcements: Announcements,
}

impl MetricsHub {
    /// A hub that announces every tick to `announcements`.
    pub(crate) fn new(announcements: Announcements) -> Self {
        Self {
            customers: RwLock::default(),
            announcements,
        }
    }

    /// Frames of every future tick of `tenant`.
    pub(crate) fn subscribe(&self, tenant: &TenantId) -> broadcast::Receiver<Arc<str>> {
        let mut customers = self.customers.write().unwrap_or_else(|e| e.into_inner());
        customers.entry(tenant).updates.subscribe()
    }

    /// The latest metrics of `tenant`, if it ever ticked.
    pub(crate) fn latest(&self, tenant: &TenantId) -> Option<MetricsData> {
        let customers = self.customers.read().unwrap_or_else(|e| e.into_inner());
        customers.by_id.get(tenant).and_then(|c| c.latest.clone())
    }

    /// Every customer's recent values (only the latest for those without a history).
    pub(crate) fn histories(&self) -> Vec<CustomerHistory> {
        let customers = self.customers.read().unwrap_or_else(|e| e.into_inner());
        customers
            .by_id
            .iter()
            .filter_map(|(tenant, c)| {
                let points: Vec<Point> = match (&c.history, &c.latest) {
                    (Some(history), _) => history.iter().copied().collect(),
                    (None, Some(latest)) => vec![Point::from(latest)],
                    (None, None) => Vec::new(),
                };
                (!points.is_empty()).then(|| CustomerHistory {
                    customer_id: tenant.clone(),
                    points,
                })
            })
            .collect()
    }

    /// Drops customers nobody listens to whose last value is older than `idle` (or who never
    /// ticked): the customer ids clients send cannot grow the map without bound.
    pub(crate) fn forget_idle(&self, now: Millis, idle_ms: u64) {
        let mut customers = self.customers.write().unwrap_or_else(|e| e.into_inner());
        customers.by_id.retain(|_, c| {
            c.updates.receiver_count() > 0
                || c.latest
                    .as_ref()
                    .is_some_and(|m| now.since(m.timestamp) < idle_ms)
        });
        customers.with_history = customers
            .by_id
            .values()
            .filter(|c| c.history.is_some())
            .count();
    }

    /// Takes in a tick of the metrics stream.
    pub(super) fn update(&self, metrics: &TenantMetrics) {
        let data = MetricsData::from_metrics(metrics);
        let frame: Option<Arc<str>> = ServerMessage::MetricsUpdate { data: &data }
            .to_text()
            .map(Arc::from);
        let mut customers = self.customers.write().unwrap_or_else(|e| e.into_inner());
        // A history place goes to a customer that ticks, never to an id a client only asked for.
        let room_for_history = customers.with_history < HISTORY_CUSTOMERS;
        let customer = customers.entry(&metrics.tenant);
        // Redelivered (as after a resubscription) or older: already known.
        if customer
            .latest
            .as_ref()
            .is_some_and(|known| known.timestamp >= data.timestamp)
        {
            return;
        }
        let mut history_added = false;
        if customer.history.is_none() && room_for_history {
            customer.history = Some(VecDeque::new());
            history_added = true;
        }
        if let Some(history) = &mut customer.history {
            if history.len() == HISTORY_POINTS {
                history.pop_front();
            }
            history.push_back(Point::from(&data));
        }
        self.announcements.metrics(&data);
        customer.latest = Some(data);
        let receivers = frame.map_or(0, |frame| customer.updates.send(frame).unwrap_or(0));
        if history_added {
            customers.with_history += 1;
        }
        metrics::counter!("presence_metrics_updates_delivered_total").increment(receivers as u64);
    }
}

impl From<&MetricsData> for Point {
    fn from(m: &MetricsData) -> Self {
        Self {
            timestamp: m.timestamp,
            count: m.count,
            ema: m.ema,
        }
    }
}

#[cfg(test)]
mod tests {
    use presence_events::SCHEMA_VERSION;

    use super::*;

    fn tick(tenant: &str, at: u64, count: u64) -> TenantMetrics {
        TenantMetrics {
            v: SCHEMA_VERSION,
            tenant: TenantId::parse(tenant).unwrap(),
            at: Millis(at),
            count,
            ema: count as f64,
            seq: at,
            epoch: 0,
        }
    }

    #[test]
    fn the_history_keeps_the_latest_points_in_order() {
        let hub = MetricsHub::default();
        for i in 0..(HISTORY_POINTS as u64 + 5) {
            hub.update(&tick("shop", 1_000 + i, i));
        }
        let histories = hub.histories();
        let points = &histories[0].points;
        assert_eq!(points.len(), HISTORY_POINTS);
        assert_eq!(points[0].count, 5);
        assert_eq!(points[HISTORY_POINTS - 1].count, HISTORY_POINTS as u64 + 4);
        // An older tick arriving late is not drawn.
        hub.update(&tick("shop", 10, 9_999));
        assert_eq!(hub.histories()[0].points.len(), HISTORY_POINTS);
        assert!(hub.histories()[0].points.iter().all(|p| p.count != 9_999));
    }

    #[test]
    fn only_a_bounded_number_of_customers_keep_a_history() {
        let hub = MetricsHub::default();
        // Ids clients merely subscribe to take no place.
        for i in 0..HISTORY_CUSTOMERS {
            let _updates = hub.subscribe(&TenantId::parse(format!("asked-{i}")).unwrap());
        }
        for i in 0..(HISTORY_CUSTOMERS + 10) {
            hub.update(&tick(&format!("c{i}"), 1_000, 1));
            hub.update(&tick(&format!("c{i}"), 2_000, 2));
        }
        let histories = hub.histories();
        assert_eq!(histories.len(), HISTORY_CUSTOMERS + 10);
        let full = histories.iter().filter(|h| h.points.len() == 2).count();
        assert_eq!(full, HISTORY_CUSTOMERS);
        // Redelivering a known tick adds no point.
        hub.update(&tick("c0", 2_000, 2));
        assert_eq!(
            hub.histories()
                .iter()
                .find(|h| h.customer_id.as_str() == "c0")
                .map(|h| h.points.len()),
            Some(2)
        );
        // Forgetting idle customers frees their places.
        hub.forget_idle(Millis(2_000 + 600_001), 600_000);
        assert!(hub.histories().is_empty());
        hub.update(&tick("late", 700_000, 3));
        hub.update(&tick("late", 705_000, 4));
        assert_eq!(hub.histories()[0].points.len(), 2);
    }
}
