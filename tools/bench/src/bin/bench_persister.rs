//! `presence-bench-persister`: the persister's write rate on a burst of changes, on the real
//! path: a `presence persister` process reading a JetStream changes stream into PostgreSQL.
//! It appends N presence changes (distinct users, offline, so none waits in the debounce)
//! and times them until every row is in the database.
//!
//! usage: NATS_URL=… DATABASE_URL=… presence-bench-persister [changes=10000]
//! (`make bench-persister` provides both servers.)

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use presence_e2e::{Proc, fresh_database, nats_url, unique_namespace};
use presence_events::{
    Cause, Millis, PresenceChange, SCHEMA_VERSION, Status, Subjects, TenantId, UserId, ViewerClass,
};
use presence_log::{EventLog, JetStreamLog, Outgoing, publish_all_durable};
use sqlx::PgPool;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(10_000), |v| v.parse())
        .context("changes: a number")?;
    let namespace = unique_namespace();
    let database = fresh_database().await?;
    let env = [
        ("NATS_URL", nats_url()?),
        ("PRESENCE_NAMESPACE", namespace.clone()),
        ("DATABASE_URL", database.clone()),
    ];
    // The persister creates the streams and the schema, then waits for changes.
    let _persister = Proc::start("persister", &env).await?;
    let log = JetStreamLog::connect(&nats_url()?, "bench").await?;
    let subjects = Subjects::new(&namespace);
    let now = Millis::now();
    let messages: Vec<Outgoing> = (1..=n)
        .map(|i| {
            let change = PresenceChange {
                v: SCHEMA_VERSION,
                tenant: TenantId::default_tenant(),
                user: UserId::parse(format!("bench-{i}")).expect("valid id"),
                class: ViewerClass::other(),
                status: Status::Offline,
                online: false,
                last_seen: Some(now),
                details: None,
                cause: Cause::Leave,
                at: now,
                seq: i,
                epoch: 0,
            };
            Outgoing {
                subject: subjects.change(&change.tenant, &change.user),
                msg_id: change.msg_id(),
                payload: Bytes::from(change.encode().expect("changes encode")),
                ttl: None,
            }
        })
        .collect();
    let pool = PgPool::connect(&database).await?;
    let started = Instant::now();
    let never = tokio_util::sync::CancellationToken::new();
    if !publish_all_durable(&log as &dyn EventLog, &messages, &never).await {
        anyhow::bail!("could not append the changes");
    }
    let appended = started.elapsed();
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM presence")
            .fetch_one(&pool)
            .await?;
        if rows as u64 >= n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "only {rows} of {n} rows after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = started.elapsed();
    println!(
        "persister: {n} changes appended in {:.2} s; all {n} rows in PostgreSQL after {:.2} s: {:.0} rows/s end to end",
        appended.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    Ok(())
}
