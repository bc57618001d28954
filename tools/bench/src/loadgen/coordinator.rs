//! The coordinator: starts the workers, holds the observers, drives the phases, takes the
//! readings and computes the figures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use presence_sio_client::{ConnectOptions, Events, SioClient};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::analysis::{self, Observed};
use super::cli::{RunArgs, SOCKETS_PER_PROCESS};
use super::common::{ConnRecord, KINDS, PerKind, Population, now_us, token};
use super::probes::{self, ProcSample};
use super::protocol::{self, FromWorker, ToWorker, WorkerResult};
use super::report;

/// Extra wait, past timeout + sweep interval, for the last offline updates.
const SLACK: Duration = Duration::from_secs(2);

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let load = &args.load;
    let sockets = load.sockets();
    if sockets == 0 {
        bail!("nothing to simulate: --users, --active-users and --http-users are all 0");
    }
    let processes = args
        .processes
        .unwrap_or_else(|| sockets.div_ceil(SOCKETS_PER_PROCESS).max(1) as u32);
    if sockets.div_ceil(u64::from(processes)) > SOCKETS_PER_PROCESS {
        eprintln!(
            "warning: {} sockets per worker process; past about 19,000 the open-files limit (20,000 here) is hit",
            sockets.div_ceil(u64::from(processes))
        );
    }
    let run_id = Population::new_run_id();
    let pop = Population::new(
        &run_id,
        load.users,
        load.female_percent,
        load.silent_percent,
    );
    let ticks = probes::clock_ticks();
    let began = Instant::now();
    eprintln!(
        "presence-bench run {run_id}: {} users x {} connections, {} active-users sockets, {} HTTP clients, {} observers, {processes} worker process(es), ramp {}/s, hold {} s",
        load.users,
        load.connections_per_user,
        load.active_users,
        load.http_users,
        args.observers,
        load.ramp_per_sec,
        args.hold_secs
    );

    let mut workers = Workers::spawn(&args, &run_id, processes)?;
    workers
        .gather("ready", Some(Duration::from_secs(30)), |m| match m {
            FromWorker::Ready => Some(()),
            _ => None,
        })
        .await?;

    let samples_start = sample_procs(&args, ticks);
    let metrics_start = scrape_all(&args).await;
    let observers = connect_observers(&args, &pop).await?;
    // Let the observers' own online updates pass before the users come.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Ramp.
    let ramp_began = Instant::now();
    workers.send_all(ToWorker::Start).await?;
    let ramped = workers
        .gather("ramped", None, |m| match m {
            FromWorker::Ramped(counts) => Some(counts),
            _ => None,
        })
        .await?;
    let ramp_s = ramp_began.elapsed().as_secs_f64();
    let held_after_ramp: u64 = ramped.iter().flat_map(|c| c.open).sum();
    eprintln!(
        "ramp: {held_after_ramp} connections open after {ramp_s:.1} s ({} failed)",
        ramped.iter().flat_map(|c| c.failed).sum::<u64>()
    );

    // Hold.
    let samples_ramped = sample_procs(&args, ticks);
    let loadgen_cpu_hold_start = workers.cpu_s(ticks) + self_cpu(ticks);
    let metrics_before = scrape_all(&args).await;
    workers.send_all(ToWorker::Hold).await?;
    let hold_began = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    let metrics_after = scrape_all(&args).await;
    let hold_s = hold_began.elapsed().as_secs_f64();
    let samples_held = sample_procs(&args, ticks);
    let loadgen_cpu_hold = workers.cpu_s(ticks) + self_cpu(ticks) - loadgen_cpu_hold_start;
    eprintln!("hold: {hold_s:.1} s; closing every connection");

    // Close.
    let close_began = Instant::now();
    workers.send_all(ToWorker::Stop).await?;
    let limit = Duration::from_millis(load.connect_timeout_ms) + Duration::from_secs(60);
    let mut results: Vec<WorkerResult> = workers
        .gather("result", Some(limit), |m| match m {
            FromWorker::Result(result) => Some(*result),
            _ => None,
        })
        .await?;
    workers.reap().await;
    let close_s = close_began.elapsed().as_secs_f64();

    let conns: Vec<ConnRecord> = results
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.conns))
        .collect();

    // Drain: wait for the last offline updates.
    let drain_began = Instant::now();
    let last_action = conns
        .iter()
        .map(|c| c.end_us)
        .max()
        .unwrap_or_default()
        .max(now_us());
    let grace = Duration::from_millis(args.timeout_ms + args.sweep_ms) + SLACK;
    let drain_until = last_action + grace.as_micros() as u64;
    while now_us() < drain_until && observers.iter().any(|o| o.shows_anyone()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end_us = now_us();
    let drain_s = drain_began.elapsed().as_secs_f64();
    let samples_end = sample_procs(&args, ticks);
    let metrics_end = scrape_all(&args).await;

    let observers_dropped = observers.iter().filter(|o| o.client.is_closed()).count();
    let observed: Vec<Vec<Observed>> = observers.iter().map(Observer::updates).collect();
    let observers_connected = observers.len();
    for o in observers {
        o.client.disconnect().await;
    }
    let workers_cpu: f64 = results.iter().filter_map(|r| r.cpu_s).sum();
    let loadgen_cpu = workers_cpu + self_cpu(ticks);

    let outcome = analysis::analyse(analysis::Inputs {
        pop: &pop,
        conns,
        observers: &observed,
        timeout_us: args.timeout_ms * 1000,
        sweep_us: args.sweep_ms * 1000,
        slack_us: SLACK.as_micros() as u64,
        end_us,
    });

    // Connections, per kind and in all.
    let per_kind = |field: fn(&WorkerResult) -> &PerKind<u64>, kind: usize| -> u64 {
        results.iter().map(|r| field(r)[kind]).sum()
    };
    let total = |field: fn(&WorkerResult) -> &PerKind<u64>| -> u64 {
        (0..KINDS.len()).map(|k| per_kind(field, k)).sum()
    };
    let mut by_kind = serde_json::Map::new();
    for (k, name) in KINDS.iter().enumerate() {
        by_kind.insert(
            (*name).to_owned(),
            json!({
                "attempted": per_kind(|r| &r.attempted, k),
                "ok": per_kind(|r| &r.ok, k),
                "failed": per_kind(|r| &r.failed, k),
                "dropped": per_kind(|r| &r.dropped, k),
                "held": per_kind(|r| &r.held, k),
            }),
        );
    }
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        for (reason, n) in &r.failures {
            *reasons.entry(reason.clone()).or_default() += n;
        }
    }
    let setup = |times: fn(&WorkerResult) -> &Vec<u64>| -> Vec<f64> {
        results
            .iter()
            .flat_map(times)
            .map(|&us| us as f64 / 1000.0)
            .collect()
    };

    // Server processes.
    let processes_json: Vec<Value> = args
        .procs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (start, ramped, held, end) = (
                samples_start[i],
                samples_ramped[i],
                samples_held[i],
                samples_end[i],
            );
            let mb = |s: ProcSample| s.rss_kb.map(|kb| round(kb as f64 / 1024.0, 1));
            // The connections this process holds, when its `/metrics` says (an edge of
            // several); otherwise all of the run's.
            let own = metrics_before
                .get(&p.name)
                .and_then(|m| m.as_ref().ok())
                .and_then(|m| m.get(probes::COUNTERS[3]).copied())
                .filter(|c| *c > 0.0)
                .map(|c| c as u64);
            let conns = own.unwrap_or(held_after_ramp);
            let per_conn = match (start.rss_kb, ramped.rss_kb) {
                (Some(a), Some(b)) if conns > 0 => {
                    Some(round((b as f64 - a as f64) / conns as f64, 2))
                }
                _ => None,
            };
            let cpu = |a: ProcSample, b: ProcSample| match (a.cpu_s, b.cpu_s) {
                (Some(a), Some(b)) => Some(round(b - a, 2)),
                _ => None,
            };
            let hold_cpu = cpu(ramped, held);
            json!({
                "name": p.name,
                "pid": p.value,
                "rss_mb_start": mb(start),
                "rss_mb_after_ramp": mb(ramped),
                "rss_mb_end": mb(end),
                "rss_kb_per_connection": per_conn,
                "connections_after_ramp": conns,
                "cpu_seconds_ramp": cpu(start, ramped),
                "cpu_seconds_hold": hold_cpu,
                "cpu_percent_hold": hold_cpu.map(|c| round(100.0 * c / hold_s.max(1e-9), 1)),
                "cpu_seconds_total": cpu(start, end),
            })
        })
        .collect();

    // Counters over the hold.
    let mut counters = serde_json::Map::new();
    for m in &args.metrics {
        let (Some(Ok(before)), Some(Ok(after))) =
            (metrics_before.get(&m.name), metrics_after.get(&m.name))
        else {
            let why = [metrics_before.get(&m.name), metrics_after.get(&m.name)]
                .into_iter()
                .flatten()
                .find_map(|r| r.as_ref().err().map(ToString::to_string))
                .unwrap_or_default();
            counters.insert(m.name.clone(), json!({ "error": why }));
            continue;
        };
        let delta = |name: &str| {
            after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
        };
        let published = delta(probes::COUNTERS[0]);
        let heartbeats = delta(probes::COUNTERS[1]);
        let deliveries = delta(probes::COUNTERS[2]);
        let process = args.procs.iter().position(|p| p.name == m.name);
        let cpu = process.and_then(|i| processes_json[i]["cpu_seconds_hold"].as_f64());
        // The whole run (ramp, hold, close, drain): where a ramp's fan-out is.
        let run_deliveries = match (metrics_start.get(&m.name), metrics_end.get(&m.name)) {
            (Some(Ok(a)), Some(Ok(b))) => Some(
                b.get(probes::COUNTERS[2]).copied().unwrap_or(0.0)
                    - a.get(probes::COUNTERS[2]).copied().unwrap_or(0.0),
            ),
            _ => None,
        };
        let run_cpu = process.and_then(|i| processes_json[i]["cpu_seconds_total"].as_f64());
        counters.insert(
            m.name.clone(),
            json!({
                "seconds": round(hold_s, 2),
                "events_published": published,
                "events_published_per_sec": round(published / hold_s.max(1e-9), 2),
                "heartbeats_received": heartbeats,
                "heartbeats_received_per_sec": round(heartbeats / hold_s.max(1e-9), 2),
                "fanout_deliveries": deliveries,
                "fanout_deliveries_per_sec": round(deliveries / hold_s.max(1e-9), 1),
                "deliveries_per_cpu_second": cpu.filter(|c| *c > 0.0).map(|c| round(deliveries / c, 0)),
                "run_fanout_deliveries": run_deliveries,
                "run_deliveries_per_cpu_second": run_deliveries
                    .zip(run_cpu.filter(|c| *c > 0.0))
                    .map(|(d, c)| round(d / c, 0)),
            }),
        );
    }

    let sum_field = |field: fn(&WorkerResult) -> u64| -> u64 { results.iter().map(field).sum() };
    let figures = json!({
        "run": {
            "id": run_id,
            "edges": load.edges,
            "users": load.users,
            "connections_per_user": load.connections_per_user,
            "ramp_per_sec": load.ramp_per_sec,
            "heartbeat_ms": load.heartbeat_ms,
            "churn_per_sec": load.churn_per_sec,
            "churn_pause_ms": load.churn_pause_ms,
            "silent_percent": load.silent_percent,
            "female_percent": load.female_percent,
            "active_users": load.active_users,
            "http_users": load.http_users,
            "customers": load.customers,
            "observers": args.observers,
            "observers_connected": observers_connected,
            "observers_dropped": observers_dropped,
            "hold_secs": args.hold_secs,
            "timeout_ms": args.timeout_ms,
            "sweep_ms": args.sweep_ms,
            "worker_processes": processes,
            "clock_ticks_per_sec": ticks,
        },
        "phases_s": {
            "ramp": round(ramp_s, 2),
            "hold": round(hold_s, 2),
            "close": round(close_s, 2),
            "drain": round(drain_s, 2),
            "total": round(began.elapsed().as_secs_f64(), 2),
        },
        "connections": {
            "attempted": total(|r| &r.attempted),
            "held": total(|r| &r.held),
            "failed": total(|r| &r.failed),
            "dropped": total(|r| &r.dropped),
            "held_after_ramp": held_after_ramp,
            "by_kind": by_kind,
            "failure_reasons": reasons,
        },
        "connect_ms": report::stats(outcome.connect_ms.clone()),
        "active_ws_setup_ms": report::stats(setup(|r| &r.active_ws_setup_us)),
        "http_join_ms": report::stats(setup(|r| &r.http_join_us)),
        "propagation_ms": report::stats(outcome.propagation_ms.clone()),
        "propagation_online_ms": report::stats(outcome.online_ms.clone()),
        "propagation_leave_ms": report::stats(outcome.leave_ms.clone()),
        "silent_offline_ms": report::stats(outcome.sweep_ms.clone()),
        "shutdown_offline_ms": report::stats(outcome.shutdown_ms.clone()),
        "expected_updates": outcome.expected,
        "missed_updates": outcome.missed(),
        "missed_by_cause": by_cause(&outcome.missed_by),
        "expected_by_cause": by_cause(&outcome.expected_by),
        "ghost_seconds": round(outcome.ghost_seconds, 3),
        "ghost_departures": outcome.ghost_departures,
        "departures": outcome.departures,
        "false_offlines": outcome.false_offlines,
        "unexpected_updates": outcome.unexpected,
        "inconsistent_updates": outcome.inconsistent,
        "churns": sum_field(|r| r.churns),
        "churn_skipped": sum_field(|r| r.churn_skipped),
        "http_beat_failures": sum_field(|r| r.http_beat_failures),
        "processes": processes_json,
        "loadgen_cpu_seconds": round(loadgen_cpu, 2),
        "loadgen_cpu_seconds_hold": round(loadgen_cpu_hold, 2),
        "loadgen_rss_mb_peak": {
            "coordinator": probes::peak_rss_kb().map(|kb| round(kb as f64 / 1024.0, 1)),
            "worker_max": results
                .iter()
                .filter_map(|r| r.rss_peak_kb)
                .max()
                .map(|kb| round(kb as f64 / 1024.0, 1)),
        },
        "counters": counters,
    });

    print!("{}", report::table(&figures));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&figures)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

fn by_cause(counts: &[u64; 5]) -> Value {
    analysis::CAUSES
        .iter()
        .zip(counts)
        .map(|(cause, n)| ((*cause).to_owned(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn self_cpu(ticks: f64) -> f64 {
    probes::sample("self", ticks).cpu_s.unwrap_or(0.0)
}

fn sample_procs(args: &RunArgs, ticks: f64) -> Vec<ProcSample> {
    args.procs
        .iter()
        .map(|p| probes::sample(&p.value.to_string(), ticks))
        .collect()
}

async fn scrape_all(args: &RunArgs) -> HashMap<String, anyhow::Result<HashMap<&'static str, f64>>> {
    let mut out = HashMap::new();
    for m in &args.metrics {
        out.insert(m.name.clone(), probes::scrape(&m.value).await);
    }
    out
}

/// The worker processes and their standard streams.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    pids: Vec<u32>,
    lines: mpsc::UnboundedReceiver<(usize, Option<String>)>,
}

impl Workers {
    fn spawn(args: &RunArgs, run_id: &str, processes: u32) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let (tx, lines) = mpsc::unbounded_channel();
        let mut workers = Self {
            children: Vec::new(),
            stdins: Vec::new(),
            pids: Vec::new(),
            lines,
        };
        for index in 0..processes {
            // The soft open-files limit is raised to the hard one, then the shell becomes
            // the worker (same pid).
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#)
                .arg(&exe)
                .arg("worker")
                .args(["--index", &index.to_string()])
                .args(["--processes", &processes.to_string()])
                .args(["--run-id", run_id])
                .args(args.load.to_args())
                .env("PRESENCE_BENCH_JWT_SECRET", &args.load.jwt_secret)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let stdout = child.stdout.take().context("worker without stdout")?;
            let stdin = child.stdin.take().context("worker without stdin")?;
            workers.pids.push(child.id().unwrap_or_default());
            workers.children.push(child);
            workers.stdins.push(stdin);
            let tx = tx.clone();
            let i = index as usize;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send((i, Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
        }
        Ok(workers)
    }

    async fn send_all(&mut self, command: ToWorker) -> anyhow::Result<()> {
        let line = protocol::line(&command) + "\n";
        for (i, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(line.as_bytes())
                .await
                .with_context(|| format!("worker {i} is gone"))?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// One `want` message from every worker, as `take` picks it out (by worker), printing
    /// the ramp's progress meanwhile. Any other message is an error.
    async fn gather<T>(
        &mut self,
        want: &str,
        limit: Option<Duration>,
        take: impl Fn(FromWorker) -> Option<T>,
    ) -> anyhow::Result<Vec<T>> {
        let n = self.children.len();
        let mut got: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
        let mut progress = vec![(0u64, 0u64); n];
        let started = Instant::now();
        let mut last_print = Instant::now();
        while got.iter().any(Option::is_none) {
            let next = match limit {
                Some(limit) => {
                    let left = limit.saturating_sub(started.elapsed());
                    tokio::time::timeout(left, self.lines.recv())
                        .await
                        .with_context(|| {
                            format!("workers did not report {want:?} within {limit:?}")
                        })?
                }
                None => self.lines.recv().await,
            };
            let Some((i, line)) = next else {
                bail!("lost every worker");
            };
            let Some(line) = line else {
                if got[i].is_none() {
                    bail!("worker {i} exited before reporting {want:?}");
                }
                continue;
            };
            let message: FromWorker = protocol::parse(&line, format_args!("worker {i}"))?;
            if let FromWorker::Progress { attempted, ok } = message {
                progress[i] = (attempted, ok);
                if last_print.elapsed() >= Duration::from_secs(5) {
                    last_print = Instant::now();
                    let (attempted, ok) = progress
                        .iter()
                        .fold((0, 0), |(a, o), (x, y)| (a + x, o + y));
                    eprintln!(
                        "ramp: {attempted} attempted, {ok} connected ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                continue;
            }
            let name = message.name();
            match take(message) {
                Some(payload) if got[i].is_none() => got[i] = Some(payload),
                _ => bail!("worker {i} sent {name:?} while {want:?} was due"),
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// CPU seconds of every worker so far.
    fn cpu_s(&self, ticks: f64) -> f64 {
        self.pids
            .iter()
            .filter_map(|pid| probes::sample(&pid.to_string(), ticks).cpu_s)
            .sum()
    }

    async fn reap(&mut self) {
        for child in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

/// An observer connection and what it saw.
struct Observer {
    client: SioClient,
    log: Arc<Mutex<ObserverLog>>,
}

#[derive(Default)]
struct ObserverLog {
    updates: Vec<Observed>,
    /// Simulated users this observer currently shows online.
    online: HashSet<u32>,
}

impl Observer {
    fn shows_anyone(&self) -> bool {
        !self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .online
            .is_empty()
    }

    fn updates(&self) -> Vec<Observed> {
        std::mem::take(&mut self.log.lock().unwrap_or_else(|e| e.into_inner()).updates)
    }
}

async fn connect_observers(args: &RunArgs, pop: &Population) -> anyhow::Result<Vec<Observer>> {
    let timeout = Duration::from_millis(args.load.connect_timeout_ms);
    let attempts = (0..args.observers).map(|i| async move {
        let log = Arc::new(Mutex::new(ObserverLog::default()));
        let handler = {
            let (log, pop) = (log.clone(), pop.clone());
            Arc::new(move |name: &str, data: Value| {
                if name != "presence-update" {
                    return;
                }
                let at_us = now_us();
                let Some(user) = data["userId"].as_str().and_then(|id| pop.parse_user(id)) else {
                    return;
                };
                let Some(online) = data["online"].as_bool() else {
                    return;
                };
                let consistent = (data["status"].as_str() == Some("offline")) != online;
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.updates.push(Observed {
                    user,
                    online,
                    consistent,
                    at_us,
                });
                if online {
                    log.online.insert(user);
                } else {
                    log.online.remove(&user);
                }
            })
        };
        let token = token(&args.load.jwt_secret, pop.observer_id(i), "female")?;
        let edge = &args.load.edges[i as usize % args.load.edges.len()];
        let options = ConnectOptions {
            events: Events::Handler(handler),
            read_buffer_size: Some(64 * 1024),
        };
        let client = tokio::time::timeout(
            timeout,
            SioClient::connect_with(edge, json!({ "token": token }), options),
        )
        .await
        .context("timed out")??;
        anyhow::Ok(Observer { client, log })
    });
    let mut observers = Vec::new();
    for (i, attempt) in futures::future::join_all(attempts)
        .await
        .into_iter()
        .enumerate()
    {
        match attempt {
            Ok(o) => observers.push(o),
            Err(e) => eprintln!("observer {i} could not connect: {e:#}"),
        }
    }
    if observers.is_empty() && args.observers > 0 {
        bail!("no observer could connect");
    }
    Ok(observers)
}
