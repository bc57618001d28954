//! The coordinator: starts the workers, holds the observers, drives the phases, takes the
//! readings and computes the figures.

use std::collections::{HashMap, HashSet};
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
use super::common::{ConnRecord, Population, now_us, token};
use super::figures::{self, Figures, LoadgenRss, Phases, RunFigures, round, stats};
use super::probes::{self, ProcSample, Reading, Readings, Scrape};
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

    let readings = Readings {
        start: Reading {
            procs: samples_start,
            metrics: metrics_start,
        },
        hold_start: Reading {
            procs: samples_ramped,
            metrics: metrics_before,
        },
        hold_end: Reading {
            procs: samples_held,
            metrics: metrics_after,
        },
        end: Reading {
            procs: samples_end,
            metrics: metrics_end,
        },
    };
    let processes_figures = figures::processes(&args.procs, &readings, held_after_ramp, hold_s);
    let counters = figures::counters(
        &args.metrics,
        &args.procs,
        &processes_figures,
        &readings,
        hold_s,
    );
    let mb = |kb: u64| round(kb as f64 / 1024.0, 1);
    let missed_updates = outcome.missed();
    let figures = Figures {
        run: RunFigures {
            id: run_id,
            edges: load.edges.clone(),
            users: load.users,
            connections_per_user: load.connections_per_user,
            ramp_per_sec: load.ramp_per_sec,
            heartbeat_ms: load.heartbeat_ms,
            churn_per_sec: load.churn_per_sec,
            churn_pause_ms: load.churn_pause_ms,
            silent_percent: load.silent_percent,
            female_percent: load.female_percent,
            active_users: load.active_users,
            http_users: load.http_users,
            customers: load.customers,
            observers: args.observers,
            observers_connected,
            observers_dropped,
            hold_secs: args.hold_secs,
            timeout_ms: args.timeout_ms,
            sweep_ms: args.sweep_ms,
            worker_processes: processes,
            clock_ticks_per_sec: ticks,
        },
        phases_s: Phases {
            ramp: round(ramp_s, 2),
            hold: round(hold_s, 2),
            close: round(close_s, 2),
            drain: round(drain_s, 2),
            total: round(began.elapsed().as_secs_f64(), 2),
        },
        connections: figures::connections(&results, held_after_ramp),
        connect_ms: stats(outcome.connect_ms),
        active_ws_setup_ms: stats(figures::setup_ms(&results, |r| &r.active_ws_setup_us)),
        http_join_ms: stats(figures::setup_ms(&results, |r| &r.http_join_us)),
        propagation_ms: stats(outcome.propagation_ms),
        propagation_online_ms: stats(outcome.online_ms),
        propagation_leave_ms: stats(outcome.leave_ms),
        silent_offline_ms: stats(outcome.sweep_ms),
        shutdown_offline_ms: stats(outcome.shutdown_ms),
        expected_updates: outcome.expected,
        missed_updates,
        missed_by_cause: figures::by_cause(&outcome.missed_by),
        expected_by_cause: figures::by_cause(&outcome.expected_by),
        ghost_seconds: round(outcome.ghost_seconds, 3),
        ghost_departures: outcome.ghost_departures,
        departures: outcome.departures,
        false_offlines: outcome.false_offlines,
        unexpected_updates: outcome.unexpected,
        inconsistent_updates: outcome.inconsistent,
        churns: figures::sum_of(&results, |r| r.churns),
        churn_skipped: figures::sum_of(&results, |r| r.churn_skipped),
        http_beat_failures: figures::sum_of(&results, |r| r.http_beat_failures),
        processes: processes_figures,
        loadgen_cpu_seconds: round(loadgen_cpu, 2),
        loadgen_cpu_seconds_hold: round(loadgen_cpu_hold, 2),
        loadgen_rss_mb_peak: LoadgenRss {
            coordinator: probes::peak_rss_kb().map(mb),
            worker_max: results.iter().filter_map(|r| r.rss_peak_kb).max().map(mb),
        },
        counters,
    };

    print!("{}", report::table(&figures));
    if let Some(path) = &args.json {
        std::fs::write(path, report::json(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
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

async fn scrape_all(args: &RunArgs) -> HashMap<String, Scrape> {
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
