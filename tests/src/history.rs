//! A history of users who came and went, appended straight into a cluster's events stream as
//! the edges would append it (one join and one leave each), for the tests and benchmarks of
//! cost that must follow who is online, not everyone ever seen.

use bytes::Bytes;
use presence_events::{
    ConnId, Event, EventBody, LeaveReason, Millis, NodeId, Partitions, Subjects, TenantId, UserId,
    ViewerClass,
};
use presence_log::{JetStreamLog, Outgoing, publish_all_durable};

use crate::process::nats_url;

/// Appends the joins and leaves of `n` users `{prefix}{i}` (class `female`) to the events
/// stream of `namespace`, partitioned in `partitions`; returns once all are durable.
pub async fn fill_history(
    namespace: &str,
    partitions: u64,
    prefix: &str,
    n: usize,
) -> anyhow::Result<()> {
    let log = JetStreamLog::connect(&nats_url()?, "history-fill").await?;
    let subjects = Subjects::new(namespace).with_partitions(Partitions::new(partitions)?);
    let node = NodeId::parse("edge-fill")?;
    let tenant = TenantId::default_tenant();
    let class = ViewerClass::from_gender(Some("female"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    // In slices, so a million users do not sit in memory twice.
    for start in (0..n).step_by(50_000) {
        let mut messages = Vec::with_capacity(100_000);
        for i in start..(start + 50_000).min(n) {
            let user = UserId::parse(format!("{prefix}{i}"))?;
            let conn = ConnId::new();
            for body in [
                EventBody::Join {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    conn,
                    class: class.clone(),
                },
                EventBody::Leave {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    conn,
                    class: class.clone(),
                    reason: LeaveReason::Client,
                },
            ] {
                let partition = subjects
                    .partitions()
                    .of_event(&body)
                    .ok_or_else(|| anyhow::anyhow!("a {} has no partition", body.kind()))?;
                let event = Event::new(node.clone(), Millis::now(), body);
                messages.push(Outgoing {
                    subject: subjects.event(partition, event.kind()),
                    msg_id: event.id.to_string(),
                    payload: Bytes::from(event.encode()?),
                    ttl: None,
                });
            }
        }
        anyhow::ensure!(
            publish_all_durable(&log, &messages, &shutdown).await,
            "the history was not appended"
        );
    }
    Ok(())
}
