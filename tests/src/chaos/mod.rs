//! The chaos suite (`make chaos`): a production-shaped cluster of the suite's own — a 3-node
//! JetStream cluster with every stream at 3 replicas, PostgreSQL, 3 aggregators over 2
//! partitions (so one stands by), 2 persisters, 2 edges behind HAProxy — under a steady
//! workload of heartbeating Socket.io users (with churn and status changes) and active-users
//! tabs, while it causes one fault at a time and measures, from the clients' side and from
//! the database, what each fault cost.
//!
//! | module | what |
//! | --- | --- |
//! | [`analysis`] | journal + observed updates → figures, expected state, losses (pure) |
//! | [`workload`] | the users, the tabs, the observer |
//!
//! For each fault: 5 s of steady load, the fault, its repair (a restart 5 s later, or the
//! end of a 10 s outage), until the cluster is back to normal (a new user connecting through
//! the balancer is shown to the observer and written to PostgreSQL, every partition ticks),
//! 3 s more; then the workload pauses and the final state is compared with what the clients
//! were told, through the HTTP API and in PostgreSQL's rows.

pub mod analysis;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::balancer::Balancer;
use crate::clients::{connect, now_ms, service_token};
use crate::deployment::Deployment;
use crate::http::{bearer, http};
use crate::nats_cluster::NatsCluster;
use crate::postgres::PrivatePostgres;
use crate::readings::{partition_owners, until_all_owned};
use analysis::{Figures, Lost, Timing};
use workload::{Load, Watcher, Workload, start_tabs};

/// Partitions of the suite's cluster: 3 aggregators over 2 leaves one standing by.
const PARTITIONS: usize = 2;
const AGGREGATORS: usize = 3;

/// The suite's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Socket.io users.
    pub users: usize,
    /// Active-users customers, and sessions of each.
    pub customers: usize,
    /// Sessions per customer.
    pub sessions: usize,
    /// Faults to cause, by name (all when empty).
    pub faults: Vec<String>,
}

/// The faults, in the order they are caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of an edge (its users reconnect through the balancer), restarted after 5 s.
    Edge,
    /// SIGKILL of the aggregator owning partition 0, restarted after 5 s.
    Owner,
    /// SIGKILL of an aggregator owning nothing, restarted after 5 s.
    Standby,
    /// SIGKILL of a persister, restarted after 5 s.
    Persister,
    /// SIGKILL of the NATS node leading the events stream, restarted after 5 s.
    StreamLeader,
    /// SIGKILL of a NATS node that does not lead the events stream (it may lead other
    /// streams and buckets), restarted after 5 s.
    Follower,
    /// SIGKILL of all three NATS nodes, restarted after 10 s.
    NatsOutage,
    /// PostgreSQL stopped (fast shutdown) for 10 s.
    Postgres,
}

impl Fault {
    /// Every fault, in order.
    pub const ALL: [Fault; 8] = [
        Fault::Edge,
        Fault::Owner,
        Fault::Standby,
        Fault::Persister,
        Fault::StreamLeader,
        Fault::Follower,
        Fault::NatsOutage,
        Fault::Postgres,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Edge => "edge",
            Fault::Owner => "owner",
            Fault::Standby => "standby",
            Fault::Persister => "persister",
            Fault::StreamLeader => "stream-leader",
            Fault::Follower => "follower",
            Fault::NatsOutage => "nats-outage",
            Fault::Postgres => "postgres",
        }
    }

    /// What it is, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Edge => "an edge SIGKILLed, restarted after 5 s",
            Fault::Owner => "the aggregator owning a partition SIGKILLed, restarted after 5 s",
            Fault::Standby => "a standby aggregator SIGKILLed, restarted after 5 s",
            Fault::Persister => "a persister SIGKILLed, restarted after 5 s",
            Fault::StreamLeader => {
                "the NATS node leading the events stream SIGKILLed, restarted after 5 s"
            }
            Fault::Follower => {
                "a NATS node not leading the events stream SIGKILLed, restarted after 5 s"
            }
            Fault::NatsOutage => "all 3 NATS nodes SIGKILLed, restarted after 10 s",
            Fault::Postgres => "PostgreSQL stopped for 10 s",
        }
    }

    fn hold(self) -> Duration {
        match self {
            Fault::NatsOutage | Fault::Postgres => Duration::from_secs(10),
            _ => Duration::from_secs(5),
        }
    }
}

/// One fault's row of the table.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The fault.
    pub fault: Fault,
    /// Injection to the first probe that went end to end (ms), if it did within a minute.
    pub normal_after_ms: Option<u64>,
    /// Figures over the fault's window.
    pub figures: Figures,
    /// Accepted events missing from the HTTP API's answers.
    pub lost_api: Lost,
    /// Accepted events missing from PostgreSQL's rows.
    pub lost_db: Lost,
    /// Users whose state was checked.
    pub checked: usize,
    /// Active-users customers whose count was wrong at the end.
    pub miscounted: Vec<String>,
    /// Connect attempts refused during the window.
    pub refused: u64,
}

/// The cluster under test.
struct Cluster {
    nats: NatsCluster,
    pg: PrivatePostgres,
    d: Deployment,
    lb: Balancer,
    /// Public URL of edge B (the observer's), which the suite never kills.
    observed_edge: String,
    timing: Timing,
}

fn free_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

impl Cluster {
    async fn start() -> anyhow::Result<Self> {
        let nats = NatsCluster::start().await?;
        let pg = PrivatePostgres::start().await?;
        let timing = Timing {
            timeout_ms: 10_000,
            sweep_ms: 1_000,
            slack_ms: 3_000,
        };
        let env = [
            ("NATS_URL", nats.url()),
            ("PRESENCE_STREAM_REPLICAS", "3".to_owned()),
            ("PRESENCE_PARTITIONS", PARTITIONS.to_string()),
            (
                "PRESENCE_HEARTBEAT_TIMEOUT_MS",
                timing.timeout_ms.to_string(),
            ),
            ("PRESENCE_SWEEP_INTERVAL_MS", timing.sweep_ms.to_string()),
            ("PRESENCE_SNAPSHOT_INTERVAL_MS", "5000".to_owned()),
            ("PRESENCE_METRICS_TICK_MS", "1000".to_owned()),
            // Every client comes from one loopback address.
            ("PRESENCE_RATE_LIMIT_IP_PER_MIN", "1000000".to_owned()),
            (
                "RUST_LOG",
                std::env::var("E2E_LOG").unwrap_or_else(|_| "error".into()),
            ),
        ];
        let mut d = Deployment::empty(&env, Some(pg.url()))?;
        for i in 0..AGGREGATORS {
            d.add("aggregator", &[("PRESENCE_NODE_ID", format!("agg-{i}"))])
                .await?;
        }
        for i in 0..2 {
            d.add(
                "persister",
                &[("PRESENCE_NODE_ID", format!("persister-{i}"))],
            )
            .await?;
        }
        for name in ["edge-a", "edge-b"] {
            d.add(
                "edge",
                &[
                    ("PRESENCE_NODE_ID", name.to_owned()),
                    ("PRESENCE_HTTP_ADDR", free_addr()?),
                    ("PRESENCE_ADMIN_ADDR", free_addr()?),
                ],
            )
            .await?;
        }
        let edges = d.edges();
        let lb = Balancer::start_with(&edges, "leastconn").await?;
        until_all_owned(&lb.url, PARTITIONS, Duration::from_secs(30)).await;
        Ok(Self {
            nats,
            pg,
            observed_edge: edges[1].0.clone(),
            d,
            lb,
            timing,
        })
    }

    fn events_stream(&self) -> anyhow::Result<String> {
        let ns = self.d.namespace().context("no namespace")?;
        Ok(presence_events::Subjects::new(&ns).events_stream())
    }

    /// Causes `fault`; returns what undoes it.
    async fn inject(&mut self, fault: Fault) -> anyhow::Result<Repair> {
        Ok(match fault {
            Fault::Edge => {
                self.d.nth("edge", 0).kill().await;
                Repair::Respawn("edge", 0)
            }
            Fault::Owner | Fault::Standby => {
                let n = self.aggregator_to_kill(fault).await?;
                self.d.nth("aggregator", n).kill().await;
                Repair::Respawn("aggregator", n)
            }
            Fault::Persister => {
                self.d.nth("persister", 0).kill().await;
                Repair::Respawn("persister", 0)
            }
            Fault::StreamLeader | Fault::Follower => {
                let stream = self.events_stream()?;
                let leader = self
                    .nats
                    .stream_leader(&stream)
                    .await
                    .context("the events stream has no leader")?;
                let node = if fault == Fault::StreamLeader {
                    leader
                } else {
                    self.nats
                        .names()
                        .into_iter()
                        .find(|n| *n != leader)
                        .context("no follower")?
                };
                self.nats.kill(&node).await?;
                Repair::Nats(vec![node])
            }
            Fault::NatsOutage => {
                let nodes = self.nats.names();
                for node in &nodes {
                    self.nats.kill(node).await?;
                }
                Repair::Nats(nodes)
            }
            Fault::Postgres => {
                self.pg.stop()?;
                Repair::Postgres
            }
        })
    }

    /// The aggregator owning partition 0 (`Owner`), or one owning nothing (`Standby`),
    /// waiting up to 30 s for the ownership to settle.
    async fn aggregator_to_kill(&self, fault: Fault) -> anyhow::Result<usize> {
        let started = Instant::now();
        loop {
            let owners = partition_owners(&self.lb.url).await;
            if owners.len() == PARTITIONS {
                let owning: Vec<&str> = owners.values().map(|(o, _)| o.as_str()).collect();
                let pick = if fault == Fault::Owner {
                    owners.get(&0).map(|(o, _)| o.clone())
                } else {
                    (0..AGGREGATORS)
                        .map(|i| format!("agg-{i}"))
                        .find(|a| !owning.contains(&a.as_str()))
                };
                if let Some(name) = pick {
                    return name
                        .trim_start_matches("agg-")
                        .parse()
                        .with_context(|| format!("aggregator {name}"));
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "no aggregator to kill for {fault:?}: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn repair(&mut self, repair: Repair) -> anyhow::Result<()> {
        match repair {
            Repair::Respawn(role, n) => self.d.respawn(role, n).await,
            Repair::Nats(nodes) => {
                for node in nodes {
                    self.nats.restart(&node)?;
                }
                Ok(())
            }
            Repair::Postgres => self.pg.resume(),
        }
    }
}

/// What undoes a fault.
enum Repair {
    Respawn(&'static str, usize),
    Nats(Vec<String>),
    Postgres,
}

/// One user of each partition, new: `probe-{tag}-{k}-{j}` for the first `j` that falls on
/// each partition.
fn probe_names(tag: &str, k: usize) -> Vec<String> {
    let Ok(partitions) = presence_events::Partitions::new(PARTITIONS as u64) else {
        return Vec::new();
    };
    let Ok(tenant) = presence_events::TenantId::parse("default") else {
        return Vec::new();
    };
    let mut found: BTreeMap<u16, String> = BTreeMap::new();
    for j in 0..1_000 {
        let name = format!("probe-{tag}-{k}-{j}");
        if let Ok(user) = presence_events::UserId::parse(name.clone()) {
            found
                .entry(partitions.of_user(&tenant, &user).0)
                .or_insert(name);
        }
        if found.len() == PARTITIONS {
            break;
        }
    }
    found.into_values().collect()
}

/// One probe: a new user of each partition connecting through the balancer. It went end
/// to end at normal speed when each was admitted within [`PROBE_CONNECT`], shown to the
/// observer within [`PROBE_SHOWN`] of that, and written to PostgreSQL as online within
/// [`PROBE_WRITTEN`] (the online debounce is 2 s).
async fn probe(lb: &str, watcher: &Watcher, db: &sqlx::PgPool, names: Vec<String>) -> bool {
    let connects = names.iter().map(|name| connect(lb, name, "male"));
    let Ok(clients) =
        tokio::time::timeout(PROBE_CONNECT, futures::future::join_all(connects)).await
    else {
        return false;
    };
    let admitted = now_ms();
    let all_admitted = clients.iter().all(Result::is_ok);
    let mut shown = false;
    let mut written = false;
    let deadline = Instant::now() + PROBE_WRITTEN;
    while all_admitted && !written && Instant::now() < deadline {
        if !shown {
            shown = names.iter().all(|n| {
                watcher.shown_since(
                    n,
                    "online",
                    admitted.saturating_sub(PROBE_CONNECT.as_millis() as u64),
                )
            });
            if !shown && now_ms() > admitted + PROBE_SHOWN.as_millis() as u64 {
                break;
            }
        }
        if shown {
            let left = deadline.saturating_duration_since(Instant::now());
            let query =
                sqlx::query_as::<_, (bool,)>("SELECT online FROM presence WHERE user_id = ANY($1)")
                    .bind(&names)
                    .fetch_all(db);
            // Written in time: an answer that comes after the deadline does not count.
            written = tokio::time::timeout(left, query).await.is_ok_and(|rows| {
                rows.is_ok_and(|r| r.len() == names.len() && r.iter().all(|(on,)| *on))
            }) && Instant::now() < deadline;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for client in clients.into_iter().flatten() {
        client.disconnect().await;
    }
    all_admitted && shown && written
}

/// A probe's users admitted within this…
const PROBE_CONNECT: Duration = Duration::from_secs(2);
/// … shown to the observer within this of being admitted…
const PROBE_SHOWN: Duration = Duration::from_secs(1);
/// … and written to PostgreSQL within this.
const PROBE_WRITTEN: Duration = Duration::from_secs(3);

/// Starts a probe every 500 ms from now; returns when the first that went end to end at
/// normal speed started, in ms since the epoch (or `None` after `within`).
async fn until_normal(
    lb: &str,
    watcher: &Arc<Watcher>,
    db: &sqlx::PgPool,
    tag: &str,
    within: Duration,
) -> Option<u64> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let started = Instant::now();
    let mut k = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut first: Option<u64> = None;
    let mut in_flight = tokio::task::JoinSet::new();
    while started.elapsed() < within && first.is_none() {
        tokio::select! {
            _ = ticker.tick() => {
                let (lb, watcher, db, tx) = (lb.to_owned(), watcher.clone(), db.clone(), tx.clone());
                let names = probe_names(tag, k);
                k += 1;
                in_flight.spawn(async move {
                    let at = now_ms();
                    if probe(&lb, &watcher, &db, names).await {
                        let _ = tx.send(at);
                    }
                });
            }
            Some(at) = rx.recv() => first = Some(at),
        }
    }
    // Probes started earlier may still succeed: the earliest start wins.
    while in_flight.join_next().await.is_some() {}
    drop(tx);
    while let Ok(at) = rx.try_recv() {
        first = Some(first.map_or(at, |f| f.min(at)));
    }
    first
}

/// Every user's (online, status) as the HTTP API answers it.
async fn api_state(lb: &str, users: &[String]) -> anyhow::Result<BTreeMap<String, (bool, String)>> {
    let mut out = BTreeMap::new();
    let auth = bearer(&service_token());
    for chunk in users.chunks(500) {
        let body = json!({ "userIds": chunk }).to_string();
        let r = http(
            "POST",
            &format!("{lb}/api/presence/batch"),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            Some(body.as_bytes()),
        )
        .await?;
        anyhow::ensure!(r.status == 200, "batch query: {} {}", r.status, r.body);
        for p in r.json()["presence"].as_array().into_iter().flatten() {
            let user = p["userId"].as_str().unwrap_or_default().to_owned();
            let online = p["online"] == true;
            let status = p["status"].as_str().unwrap_or_default().to_owned();
            out.insert(user, (online, status));
        }
    }
    Ok(out)
}

/// Every user's (online, status) in PostgreSQL's rows.
async fn db_state(db: &sqlx::PgPool) -> anyhow::Result<BTreeMap<String, (bool, String)>> {
    let rows: Vec<(String, bool, String)> =
        sqlx::query_as("SELECT user_id, online, status FROM presence")
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(user, online, status)| (user, (online, status)))
        .collect())
}

/// Customers whose active-users count is not `sessions`.
async fn miscounted(lb: &str, customers: &[String], sessions: usize) -> Vec<String> {
    let mut out = Vec::new();
    for c in customers {
        let count = http("GET", &format!("{lb}/metrics?customerId={c}"), &[], None)
            .await
            .ok()
            .and_then(|r| r.json()["count"].as_u64());
        if count != Some(sessions as u64) {
            out.push(format!("{c}: {count:?}"));
        }
    }
    out
}

/// Runs the suite; returns one outcome per fault.
pub async fn run(settings: &Settings) -> anyhow::Result<Vec<Outcome>> {
    let faults: Vec<Fault> = if settings.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        settings
            .faults
            .iter()
            .map(|name| {
                Fault::ALL
                    .into_iter()
                    .find(|f| f.name() == name)
                    .with_context(|| format!("no fault {name:?}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    eprintln!("chaos: starting the cluster");
    let mut cluster = Cluster::start().await?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&cluster.pg.url())
        .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = Arc::new(Watcher::start(&cluster.observed_edge, stop.clone()).await);
    let customers = start_tabs(
        &cluster.lb.url,
        settings.customers,
        settings.sessions,
        Duration::from_secs(5),
        stop.clone(),
    );
    eprintln!("chaos: connecting {} users", settings.users);
    let workload = Arc::new(
        Workload::start(&Load {
            url: cluster.lb.url.clone(),
            users: settings.users,
            female_every: 10,
            heartbeat: Duration::from_secs(3),
            ramp_per_sec: 200,
        })
        .await?,
    );
    let driver = workload.drive(Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let names = workload.names();
    let mut outcomes = Vec::new();
    for fault in faults {
        eprintln!("chaos: {}", fault.describe());
        workload.resume();
        let from = now_ms();
        let refused_before = workload
            .journal
            .refused
            .load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let fault_at = now_ms();
        let repair = cluster.inject(fault).await?;
        eprintln!("chaos: fault at {fault_at}");
        let hold = fault.hold();
        let normal = {
            let lb = cluster.lb.url.clone();
            let (watcher, db) = (watcher.clone(), db.clone());
            let tag = fault.name();
            tokio::spawn(async move {
                until_normal(&lb, &watcher, &db, tag, Duration::from_secs(90)).await
            })
        };
        tokio::time::sleep(hold).await;
        cluster.repair(repair).await?;
        eprintln!("chaos: repaired at {}", now_ms());
        let normal_at = normal.await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The final state: the workload pauses, what was in flight lands.
        workload.pause();
        tokio::time::sleep(Duration::from_millis(cluster.timing.slack_ms + 1_000)).await;
        let to = now_ms();
        let journal = workload.journal.entries();
        let expected = analysis::expected(&journal, to, &cluster.timing);
        let api = api_state(&cluster.lb.url, &names).await?;
        let rows = db_state(&db).await?;
        let outcome = Outcome {
            fault,
            normal_after_ms: normal_at.map(|at| at.saturating_sub(fault_at)),
            figures: analysis::figures(&journal, &watcher.seen(), from, to, &cluster.timing),
            lost_api: analysis::lost(&expected, &api),
            lost_db: analysis::lost(&expected, &rows),
            checked: expected.online.len() + expected.offline.len(),
            miscounted: miscounted(&cluster.lb.url, &customers, settings.sessions).await,
            refused: workload
                .journal
                .refused
                .load(std::sync::atomic::Ordering::Relaxed)
                - refused_before,
        };
        eprintln!("chaos: {}", row(&outcome));
        if !outcome.figures.duplicate_samples.is_empty() {
            eprintln!("chaos: duplicates {:?}", outcome.figures.duplicate_samples);
            for sample in &outcome.figures.duplicate_samples {
                let user = sample.split(' ').next().unwrap_or_default();
                let acts: Vec<String> = journal
                    .iter()
                    .filter(|e| e.user == user)
                    .map(|e| format!("{} {:?}", e.at, e.act))
                    .collect();
                let seen: Vec<String> = watcher
                    .seen()
                    .iter()
                    .filter(|s| s.user == user)
                    .map(|s| format!("{} {}", s.at, s.status))
                    .collect();
                eprintln!("chaos:   {user}: did {acts:?}; shown {seen:?}");
            }
        }
        if outcome.lost_api.total() + outcome.lost_db.total() > 0 {
            eprintln!(
                "chaos: lost (API) {:?}\nchaos: lost (database) {:?}",
                outcome.lost_api, outcome.lost_db
            );
        }
        outcomes.push(outcome);
    }
    workload.stop();
    stop.cancel();
    driver.abort();
    Ok(outcomes)
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// One fault's row, in Markdown.
pub fn row(o: &Outcome) -> String {
    let f = &o.figures;
    format!(
        "| {} | {} | {} / {} of {} | {} | {:.1} | {} | {} | {} | {} |",
        o.fault.describe(),
        o.normal_after_ms.map_or("not within 90 s".to_owned(), secs),
        o.lost_api.total(),
        o.lost_db.total(),
        o.checked,
        o.miscounted.len(),
        f.ghost_seconds,
        f.false_offlines,
        f.duplicates,
        f.superseded,
        o.refused,
    )
}

/// The table of every outcome, in Markdown.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| fault | back to normal after | accepted events lost (API / database, of users checked) | active-users counts wrong | ghost-seconds | false offlines | duplicates delivered | transitions superseded | connects refused (retried) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for o in outcomes {
        let _ = writeln!(out, "{}", row(o));
    }
    out
}
