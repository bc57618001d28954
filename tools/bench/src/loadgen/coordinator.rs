//! The coordinator: starts the workers, holds the observers, drives the phases, takes the
//! readings and computes the figures. [`run`] is the list of phases: plan, start workers,
//! read the servers, connect observers, ramp, hold, stop and collect, drain, close observers,
//! analyse, figures, report.

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

use super::analysis::{self, Observed, Outcome};
use super::cli::{RunArgs, SOCKETS_PER_PROCESS};
use super::common::{ConnRecord, Population, now_us, token};
use super::figures::{self, Figures, LoadgenRss, Phases, RunFigures, round, stats};
use super::probes::{self, ProcSample, Reading, Readings, Scrape};
use super::protocol::{self, FromWorker, ToWorker, WorkerResult};
use super::report;

/// Extra wait, past timeout + sweep interval, for the last offline updates.
const SLACK: Duration = Duration::from_secs(2);

/// A run, phase by phase.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let mut workers = start_workers(&args, &plan).await?;
    let start = read_servers(&args, plan.ticks).await;
    let observers = connect_observers(&args, &plan.pop).await?;
    let ramp = ramp(&mut workers).await?;
    let hold = hold(&args, plan.ticks, &mut workers).await?;
    let (closed, conns) = stop_and_collect(&args, workers).await?;
    let drained = drain(&args, plan.ticks, &observers, &conns).await;
    let watched = close_observers(observers).await;
    let loadgen_cpu = loadgen_cpu(&closed.results, plan.ticks);
    let outcome = analyse(&args, &plan.pop, conns, &watched, drained.end_us);
    let measured = Measured {
        start,
        ramp,
        hold,
        closed,
        drained,
        watched,
        loadgen_cpu,
    };
    report(&args, &figures(&args, plan, measured, outcome))
}

/// What a run is: its id and users, how many workers, the clock of `/proc`.
struct Plan {
    run_id: String,
    pop: Population,
    processes: u32,
    ticks: f64,
    began: Instant,
}

/// The run's id, population and worker count (announced on stderr).
fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
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
    Ok(Plan {
        run_id,
        pop,
        processes,
        ticks,
        began,
    })
}

/// Starts the worker processes and waits until every one is ready.
async fn start_workers(args: &RunArgs, plan: &Plan) -> anyhow::Result<Workers> {
    let mut workers = Workers::spawn(args, &plan.run_id, plan.processes)?;
    workers
        .gather("ready", Some(Duration::from_secs(30)), |m| match m {
            FromWorker::Ready => Some(()),
            _ => None,
        })
        .await?;
    Ok(workers)
}

/// The ramp: how long it took and how many connections it left open.
struct Ramp {
    seconds: f64,
    open: u64,
}

/// Has every worker open its connections on the ramp schedule; waits until all were
/// attempted.
async fn ramp(workers: &mut Workers) -> anyhow::Result<Ramp> {
    let began = Instant::now();
    workers.send_all(ToWorker::Start).await?;
    let ramped = workers
        .gather("ramped", None, |m| match m {
            FromWorker::Ramped(counts) => Some(counts),
            _ => None,
        })
        .await?;
    let seconds = began.elapsed().as_secs_f64();
    let open: u64 = ramped.iter().flat_map(|c| c.open).sum();
    eprintln!(
        "ramp: {open} connections open after {seconds:.1} s ({} failed)",
        ramped.iter().flat_map(|c| c.failed).sum::<u64>()
    );
    Ok(Ramp { seconds, open })
}

/// The hold: its length, the servers at its start and end, the load generator's CPU.
struct Hold {
    seconds: f64,
    start: Reading,
    end: Reading,
    loadgen_cpu: f64,
}

/// `--hold-secs` of heartbeats, churn and silence, read at both ends.
async fn hold(args: &RunArgs, ticks: f64, workers: &mut Workers) -> anyhow::Result<Hold> {
    let procs_before = sample_procs(args, ticks);
    let loadgen_cpu_before = workers.cpu_s(ticks) + self_cpu(ticks);
    let metrics_before = scrape_all(args).await;
    workers.send_all(ToWorker::Hold).await?;
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    let metrics_after = scrape_all(args).await;
    let seconds = began.elapsed().as_secs_f64();
    let procs_after = sample_procs(args, ticks);
    let loadgen_cpu = workers.cpu_s(ticks) + self_cpu(ticks) - loadgen_cpu_before;
    eprintln!("hold: {seconds:.1} s; closing every connection");
    Ok(Hold {
        seconds,
        start: Reading {
            procs: procs_before,
            metrics: metrics_before,
        },
        end: Reading {
            procs: procs_after,
            metrics: metrics_after,
        },
        loadgen_cpu,
    })
}

/// The close: how long until every worker reported, and the reports (their connection
/// records taken out).
struct Closed {
    seconds: f64,
    results: Vec<WorkerResult>,
}

/// Has every worker close everything; collects their results and their connection records.
async fn stop_and_collect(
    args: &RunArgs,
    mut workers: Workers,
) -> anyhow::Result<(Closed, Vec<ConnRecord>)> {
    let began = Instant::now();
    workers.send_all(ToWorker::Stop).await?;
    let limit = Duration::from_millis(args.load.connect_timeout_ms) + Duration::from_secs(60);
    let mut results: Vec<WorkerResult> = workers
        .gather("result", Some(limit), |m| match m {
            FromWorker::Result(result) => Some(*result),
            _ => None,
        })
        .await?;
    workers.reap().await;
    let seconds = began.elapsed().as_secs_f64();
    let conns = results
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.conns))
        .collect();
    Ok((Closed { seconds, results }, conns))
}

/// The drain: when observation stopped, how long it waited, the servers then.
struct Drained {
    end_us: u64,
    seconds: f64,
    reading: Reading,
}

/// Waits for the last offline updates: until no observer shows anyone online, at most
/// timeout + sweep + [`SLACK`] after the last action.
async fn drain(
    args: &RunArgs,
    ticks: f64,
    observers: &[Observer],
    conns: &[ConnRecord],
) -> Drained {
    let began = Instant::now();
    let last_action = conns
        .iter()
        .map(|c| c.end_us)
        .max()
        .unwrap_or_default()
        .max(now_us());
    let grace = Duration::from_millis(args.timeout_ms + args.sweep_ms) + SLACK;
    let until = last_action + grace.as_micros() as u64;
    while now_us() < until && observers.iter().any(|o| o.shows_anyone()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end_us = now_us();
    let seconds = began.elapsed().as_secs_f64();
    Drained {
        end_us,
        seconds,
        reading: read_servers(args, ticks).await,
    }
}

/// What the observers saw, and how many of them there were to the end.
struct Watched {
    updates: Vec<Vec<Observed>>,
    connected: usize,
    dropped: usize,
}

/// Takes the observers' updates and disconnects them.
async fn close_observers(observers: Vec<Observer>) -> Watched {
    let dropped = observers.iter().filter(|o| o.client.is_closed()).count();
    let updates = observers.iter().map(Observer::updates).collect();
    let connected = observers.len();
    for o in observers {
        o.client.disconnect().await;
    }
    Watched {
        updates,
        connected,
        dropped,
    }
}

/// CPU seconds of the whole load generator: the workers' own, and the coordinator's so far.
fn loadgen_cpu(results: &[WorkerResult], ticks: f64) -> f64 {
    let workers: f64 = results.iter().filter_map(|r| r.cpu_s).sum();
    workers + self_cpu(ticks)
}

/// The workers' records matched with the observers' updates.
fn analyse(
    args: &RunArgs,
    pop: &Population,
    conns: Vec<ConnRecord>,
    watched: &Watched,
    end_us: u64,
) -> Outcome {
    analysis::analyse(analysis::Inputs {
        pop,
        conns,
        observers: &watched.updates,
        timeout_us: args.timeout_ms * 1000,
        sweep_us: args.sweep_ms * 1000,
        slack_us: SLACK.as_micros() as u64,
        end_us,
    })
}

/// What the phases measured, for the figures.
struct Measured {
    start: Reading,
    ramp: Ramp,
    hold: Hold,
    closed: Closed,
    drained: Drained,
    watched: Watched,
    loadgen_cpu: f64,
}

/// The run's figures.
fn figures(args: &RunArgs, plan: Plan, m: Measured, outcome: Outcome) -> Figures {
    let load = &args.load;
    let (held_after_ramp, hold_s, results) = (m.ramp.open, m.hold.seconds, &m.closed.results);
    let readings = Readings {
        start: m.start,
        hold_start: m.hold.start,
        hold_end: m.hold.end,
        end: m.drained.reading,
    };
    let processes = figures::processes(&args.procs, &readings, held_after_ramp, hold_s);
    let counters = figures::counters(&args.metrics, &args.procs, &processes, &readings, hold_s);
    let mb = |kb: u64| round(kb as f64 / 1024.0, 1);
    let missed_updates = outcome.missed();
    Figures {
        run: RunFigures {
            id: plan.run_id,
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
            observers_connected: m.watched.connected,
            observers_dropped: m.watched.dropped,
            hold_secs: args.hold_secs,
            timeout_ms: args.timeout_ms,
            sweep_ms: args.sweep_ms,
            worker_processes: plan.processes,
            clock_ticks_per_sec: plan.ticks,
        },
        phases_s: Phases {
            ramp: round(m.ramp.seconds, 2),
            hold: round(hold_s, 2),
            close: round(m.closed.seconds, 2),
            drain: round(m.drained.seconds, 2),
            total: round(plan.began.elapsed().as_secs_f64(), 2),
        },
        connections: figures::connections(results, held_after_ramp),
        connect_ms: stats(outcome.connect_ms),
        active_ws_setup_ms: stats(figures::setup_ms(results, |r| &r.active_ws_setup_us)),
        http_join_ms: stats(figures::setup_ms(results, |r| &r.http_join_us)),
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
        churns: figures::sum_of(results, |r| r.churns),
        churn_skipped: figures::sum_of(results, |r| r.churn_skipped),
        http_beat_failures: figures::sum_of(results, |r| r.http_beat_failures),
        processes,
        loadgen_cpu_seconds: round(m.loadgen_cpu, 2),
        loadgen_cpu_seconds_hold: round(m.hold.loadgen_cpu, 2),
        loadgen_rss_mb_peak: LoadgenRss {
            coordinator: probes::peak_rss_kb().map(mb),
            worker_max: results.iter().filter_map(|r| r.rss_peak_kb).max().map(mb),
        },
        counters,
    }
}

/// Prints the table, and writes the JSON file when asked.
fn report(args: &RunArgs, figures: &Figures) -> anyhow::Result<()> {
    print!("{}", report::table(figures));
    if let Some(path) = &args.json {
        std::fs::write(path, report::json(figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// What every `--proc` and `--metrics` says now.
async fn read_servers(args: &RunArgs, ticks: f64) -> Reading {
    let procs = sample_procs(args, ticks);
    Reading {
        procs,
        metrics: scrape_all(args).await,
    }
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

/// Connects `--observers` observers (those that fail are reported and left out), then lets
/// their own online updates pass.
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
    // Let the observers' own online updates pass before the users come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(observers)
}
