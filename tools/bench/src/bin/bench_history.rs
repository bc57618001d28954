//! `make bench-history`: what a history of users who came and went costs, on JetStream and
//! PostgreSQL. For each N (users ever seen, appended straight into the events stream as the
//! edges would: a join and a leave each), with `--online` users connected over Socket.io:
//! the aggregator's and an edge's RSS, a new edge's time to a complete view (`/readyz` 200)
//! and its RSS, `presence:query` for 100 offline users (answered from PostgreSQL), and the
//! aggregator's restart with and without a snapshot (to every partition ticking again).
//!
//! usage: presence-bench-history [--online N] N...   (defaults: 10000; 0 100000 1000000)

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use presence_e2e::chaos::workload::{Load, Workload};
use presence_e2e::{
    Deployment, Mode, connect, fill_history, http, metric_total, partition_seqs, rss_bytes,
};
use serde_json::json;

/// Partitions of the bench's cluster (the default).
const PARTITIONS: u64 = 4;

struct Row {
    ever_seen: usize,
    aggregator_kib: u64,
    restarted_kib: u64,
    edge_kib: u64,
    new_edge_ready: Duration,
    new_edge_kib: u64,
    query_ms: f64,
    restart_snapshot: Duration,
    restart_full: Duration,
}

fn kib(pid: Option<u32>) -> anyhow::Result<u64> {
    Ok(rss_bytes(pid.context("process gone")?)? / 1024)
}

async fn until<F, Fut>(what: &str, within: Duration, mut ok: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !ok().await {
        if started.elapsed() > within {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// From a kill of the aggregator to every partition ticking again on `edge`.
async fn restart_aggregator(d: &mut Deployment, edge: &str) -> anyhow::Result<Duration> {
    let before = partition_seqs(edge).await;
    let started = Instant::now();
    d.kill_and_restart_aggregator().await?;
    let edge = edge.to_owned();
    until("every partition ticking", Duration::from_secs(600), || {
        let (edge, before) = (edge.clone(), before.clone());
        async move {
            let now = partition_seqs(&edge).await;
            now.len() == before.len()
                && now
                    .iter()
                    .all(|(p, seq)| before.get(p).is_some_and(|b| seq > b))
        }
    })
    .await?;
    Ok(started.elapsed())
}

async fn measure(ever_seen: usize, online: usize) -> anyhow::Result<Row> {
    let env = [
        ("PRESENCE_PARTITIONS", PARTITIONS.to_string()),
        ("PRESENCE_OFFLINE_RETENTION", "5s".to_owned()),
        ("PRESENCE_OFFLINE_FEED_TTL", "1s".to_owned()),
        ("PRESENCE_SNAPSHOT_INTERVAL_MS", "5000".to_owned()),
        ("PRESENCE_HEARTBEAT_TIMEOUT_MS", "30000".to_owned()),
        ("PRESENCE_SWEEP_INTERVAL_MS", "1000".to_owned()),
        ("PRESENCE_EVENTS_MAX_BYTES", (2_u64 << 30).to_string()),
        (
            "RUST_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "error".into()),
        ),
    ];
    let mut d = Deployment::with_persistence(Mode::Cluster, &env).await?;
    let db = sqlx::PgPool::connect(d.database_url.as_deref().context("no database")?).await?;
    let (a, b) = (d.a.clone(), d.b.clone());
    let aggregator_admin = d.proc("aggregator").admin.clone();
    // The history, folded and written: every change derived, the fold down to the online
    // once the retention has run, every row in PostgreSQL.
    let filling = Instant::now();
    fill_history(
        &d.namespace().context("namespace")?,
        PARTITIONS,
        "past-",
        ever_seen,
    )
    .await?;
    until("the history folded", Duration::from_secs(1800), || async {
        metric_total(&aggregator_admin, "presence_changes_total").await >= (2 * ever_seen) as f64
    })
    .await?;
    until("the history written", Duration::from_secs(1800), || async {
        let rows: Result<(i64,), _> = sqlx::query_as("SELECT count(*) FROM presence")
            .fetch_one(&db)
            .await;
        rows.is_ok_and(|(n,)| n as usize >= ever_seen)
    })
    .await?;
    eprintln!(
        "history of {ever_seen}: appended, folded and written in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    // The online users, over Socket.io on edge A.
    let workload = Workload::start(&Load {
        url: a.clone(),
        users: online,
        female_every: 10,
        heartbeat: Duration::from_secs(10),
        ramp_per_sec: 1_000,
    })
    .await?;
    until(
        "the fold down to the online",
        Duration::from_secs(120),
        || async { metric_total(&aggregator_admin, "presence_fold_users").await <= online as f64 },
    )
    .await?;
    // The closed connections of the history forgotten too (twice the heartbeat timeout),
    // and the memory they held handed back (a release runs within 5 s of being asked for);
    // past the online stream's time to live for the last offline changes.
    until(
        "the closed connections forgotten",
        Duration::from_secs(180),
        || async {
            metric_total(&aggregator_admin, "presence_fold_closed_connections").await < 1.0
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let aggregator_kib = kib(d.proc("aggregator").pid())?;
    let edge_kib = kib(d.nth("edge", 0).pid())?;

    eprintln!("history of {ever_seen}: {online} online; a new edge");
    // A new edge: time to a complete view, and what it holds.
    let started = Instant::now();
    let n = d
        .add("edge", &[("PRESENCE_NODE_ID", "edge-new".to_owned())])
        .await?;
    let (new_url, new_admin) = d.edges()[n].clone();
    until("the new edge ready", Duration::from_secs(120), || async {
        http("GET", &format!("{new_admin}/readyz"), &[], None)
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await?;
    let new_edge_ready = started.elapsed();
    let new_edge_kib = kib(d.nth("edge", n).pid())?;

    // `presence:query` for 100 offline users on the new edge: PostgreSQL answers them.
    let viewer = connect(&new_url, "viewer", "female").await?;
    let asked: Vec<String> = (0..100)
        .map(|i| format!("past-{}", i * ever_seen.max(100) / 100))
        .collect();
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let ack = viewer
            .emit_with_ack(
                "presence:query",
                json!({ "userIds": asked }),
                Duration::from_secs(10),
            )
            .await?;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
        if ack["ok"] != true {
            bail!("presence:query: {ack}");
        }
        if ever_seen > 0 && !ack["presence"][0]["lastSeen"].is_string() {
            bail!("an offline user without lastSeen: {}", ack["presence"][0]);
        }
    }
    took.sort_by(f64::total_cmp);
    let query_ms = took[took.len() / 2];
    viewer.disconnect().await;

    // The aggregator restarted: from its snapshot, then from the whole log.
    tokio::time::sleep(Duration::from_secs(6)).await; // a snapshot after the online joined
    eprintln!("history of {ever_seen}: restarting the aggregator (snapshot)");
    let restart_snapshot = restart_aggregator(&mut d, &b).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let restarted_kib = kib(d.proc("aggregator").pid())?;
    eprintln!("history of {ever_seen}: restarting the aggregator (whole log)");
    sqlx::query("DELETE FROM aggregator_snapshots")
        .execute(&db)
        .await?;
    let restart_full = restart_aggregator(&mut d, &b).await?;
    workload.stop();
    Ok(Row {
        ever_seen,
        aggregator_kib,
        restarted_kib,
        edge_kib,
        new_edge_ready,
        new_edge_kib,
        query_ms,
        restart_snapshot,
        restart_full,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut online = 10_000;
    if let Some(i) = args.iter().position(|a| a == "--online") {
        online = args
            .get(i + 1)
            .context("--online needs a number")?
            .parse()
            .context("--online")?;
        args.drain(i..=i + 1);
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![0, 100_000, 1_000_000]
    } else {
        args.iter()
            .map(|a| a.parse().with_context(|| format!("not a number: {a}")))
            .collect::<anyhow::Result<_>>()?
    };
    let mut rows = Vec::new();
    for n in sizes {
        rows.push(measure(n, online).await?);
    }
    println!(
        "\n{online} users online over Socket.io; N users ever seen besides (a join and a leave each), \
         offline retention 5 s, offline changes in the online stream for 1 s\n"
    );
    println!(
        "| ever seen | aggregator RSS | after its restart from the snapshot | edge RSS (holding the {online}) | new edge: ready | new edge RSS | presence:query, 100 offline (p50) | aggregator restart: snapshot | whole log |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let base = rows.first().map(|r| (r.aggregator_kib, r.edge_kib));
    for r in &rows {
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} s | {:.1} MiB | {:.1} ms | {:.1} s | {:.1} s |",
            r.ever_seen,
            r.aggregator_kib as f64 / 1024.0,
            r.restarted_kib as f64 / 1024.0,
            r.edge_kib as f64 / 1024.0,
            r.new_edge_ready.as_secs_f64(),
            r.new_edge_kib as f64 / 1024.0,
            r.query_ms,
            r.restart_snapshot.as_secs_f64(),
            r.restart_full.as_secs_f64(),
        );
    }
    if let Some((agg0, edge0)) = base {
        for r in rows.iter().filter(|r| r.ever_seen > 0) {
            println!(
                "N = {}: edge RSS {:.2}x of N = {}, aggregator {:+.0} bytes per user ever seen",
                r.ever_seen,
                r.edge_kib as f64 / edge0.max(1) as f64,
                rows[0].ever_seen,
                (r.aggregator_kib as f64 - agg0 as f64) * 1024.0 / r.ever_seen as f64,
            );
        }
    }
    Ok(())
}
