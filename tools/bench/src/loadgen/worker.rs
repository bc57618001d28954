//! A worker process: owns a slice of the users and their connections, follows the
//! coordinator's commands on stdin and reports on stdout (see the module docs of `bench`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use presence_sio_client::{ConnectOptions, Events, SioClient, SioError};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::cli::WorkerArgs;
use super::common::{
    ACTIVE, ConnRecord, End, HTTP, KINDS, PerKind, Population, Rng, SIO, mix, now_us, slot, token,
};
use super::http1::KeepAlive;
use super::probes;
use super::protocol::{self, FromWorker, RampCounts, ToWorker, WorkerResult};

/// WebSocket read buffer of every client connection: frames here are small, and the
/// default (128 KiB, zero-filled) would make the load generator the memory hog.
const READ_BUFFER: usize = 4096;

/// A command to one client task.
#[derive(Debug)]
enum Cmd {
    /// Disconnect everything, wait this long, reconnect.
    Churn(Duration),
    /// Close everything and return.
    Stop,
}

/// Per-kind counters (indexed by [`SIO`], [`ACTIVE`], [`HTTP`]).
#[derive(Default)]
struct Counters {
    attempted: PerKind<AtomicU64>,
    ok: PerKind<AtomicU64>,
    failed: PerKind<AtomicU64>,
    open: PerKind<AtomicI64>,
    dropped: PerKind<AtomicU64>,
}

impl Counters {
    fn snapshot(list: &PerKind<AtomicU64>) -> PerKind<u64> {
        list.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    fn open(&self) -> PerKind<u64> {
        self.open
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed).max(0) as u64)
    }
}

/// What every client task of this worker shares.
struct Shared {
    pop: Population,
    edges: Vec<String>,
    secret: String,
    heartbeat: Duration,
    connect_timeout: Duration,
    customers: u32,
    counters: Counters,
    failures: Mutex<HashMap<String, u64>>,
    /// Setup time of active-users sockets (to `hello`) and HTTP clients (their join), µs, by
    /// kind (a Socket.io connection's is in its record).
    setup_us: PerKind<Mutex<Vec<u64>>>,
    http_beat_failures: AtomicU64,
    /// Ramp items not yet attempted; `ramped` is notified when it reaches zero.
    ramp_left: AtomicUsize,
    ramped: Notify,
    /// What the users' handshakes ask for besides the token (`delivery`, `batch`).
    delivery: serde_json::Map<String, Value>,
    /// Subscriptions delivery: users each socket subscribes to, among `users`.
    subscribe: u32,
    users: u32,
}

impl Shared {
    fn edge(&self, n: u64) -> &str {
        &self.edges[(n % self.edges.len() as u64) as usize]
    }

    fn ramp_step(&self) {
        if self.ramp_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ramped.notify_one();
        }
    }

    fn failed(&self, kind: usize, reason: String) {
        self.counters.failed[kind].fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *failures
            .entry(format!("{}: {reason}", KINDS[kind]))
            .or_default() += 1;
    }

    fn opened(&self, kind: usize) {
        self.counters.ok[kind].fetch_add(1, Ordering::Relaxed);
        self.counters.open[kind].fetch_add(1, Ordering::Relaxed);
    }

    fn closed(&self, kind: usize, dropped: bool) {
        self.counters.open[kind].fetch_sub(1, Ordering::Relaxed);
        if dropped {
            self.counters.dropped[kind].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets up an active-users socket or HTTP client (`kind`) within the connect timeout,
    /// as one step of the ramp: the client, its setup time recorded; or `None`, its failure
    /// counted.
    async fn set_up<T>(
        &self,
        kind: usize,
        setup: impl Future<Output = anyhow::Result<T>>,
    ) -> Option<T> {
        self.counters.attempted[kind].fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let outcome = tokio::time::timeout(self.connect_timeout, setup).await;
        self.ramp_step();
        match outcome {
            Ok(Ok(client)) => {
                let took = began.elapsed().as_micros() as u64;
                self.setup_us[kind]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(took);
                self.opened(kind);
                Some(client)
            }
            Ok(Err(e)) => {
                self.failed(kind, e.to_string());
                None
            }
            Err(_) => {
                self.failed(kind, "timeout".into());
                None
            }
        }
    }

    /// One Socket.io connection attempt of user `u` (connection number `c` of the run).
    async fn connect_sio(&self, u: u32, c: u64, token: &str) -> (ConnRecord, Option<SioClient>) {
        let mut record = ConnRecord {
            user: u,
            start_us: now_us(),
            connected_us: 0,
            end_us: 0,
            end: End::Open,
        };
        self.counters.attempted[SIO].fetch_add(1, Ordering::Relaxed);
        let options = ConnectOptions {
            events: Events::Discard,
            read_buffer_size: Some(READ_BUFFER),
        };
        let mut auth = self.delivery.clone();
        auth.insert("token".into(), json!(token));
        let attempt = SioClient::connect_with(self.edge(c), Value::Object(auth), options);
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(client)) => {
                record.connected_us = now_us();
                self.opened(SIO);
                if self.subscribe > 0 {
                    self.subscribe(u, c, &client).await;
                }
                (record, Some(client))
            }
            Ok(Err(e)) => {
                self.failed(SIO, sio_reason(&e));
                (record, None)
            }
            Err(_) => {
                self.failed(SIO, "timeout".into());
                (record, None)
            }
        }
    }
}

impl Shared {
    /// Subscribes connection `c` of user `u` to `subscribe` users chosen at random (the same
    /// ones on every run of the same size).
    async fn subscribe(&self, u: u32, c: u64, client: &SioClient) {
        let mut rng = Rng::new(mix((u64::from(u) << 20) | c));
        let ids: Vec<String> = (0..self.subscribe)
            .map(|_| {
                self.pop
                    .user_id(rng.below(self.users.max(1) as usize) as u32)
            })
            .collect();
        let ack = client
            .emit_with_ack(
                "presence:subscribe",
                json!({ "userIds": ids }),
                self.connect_timeout,
            )
            .await;
        match ack {
            Ok(a) if a["ok"] == true => {}
            Ok(a) => self.failed(SIO, format!("presence:subscribe: {}", a["error"])),
            Err(e) => self.failed(SIO, format!("presence:subscribe: {}", sio_reason(&e))),
        }
    }
}

/// A failure reason that groups well (no addresses or ids).
fn sio_reason(e: &SioError) -> String {
    match e {
        SioError::ConnectError(message) => format!("connect_error: {message}"),
        SioError::WebSocket(e) => format!("websocket: {e}"),
        SioError::Protocol(_) => "protocol error".into(),
        SioError::Closed => "closed during the handshake".into(),
        SioError::Timeout(_) => "timeout".into(),
    }
}

/// A client task and how to reach it.
struct Client {
    commands: mpsc::Sender<Cmd>,
    /// Socket.io users only: connected, heartbeating and not churning right now.
    eligible: Option<Arc<AtomicBool>>,
    task: JoinHandle<Vec<ConnRecord>>,
}

/// Runs a worker until the coordinator says `stop`.
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let load = args.load;
    let (p, w) = (args.processes.max(1), args.index);
    let pop = Population::new(
        &args.run_id,
        load.users,
        load.female_percent,
        load.silent_percent,
    );
    let ticks = probes::clock_ticks();
    let mut control = control_lines();

    let per_user = u64::from(load.connections_per_user);
    let n = [
        u64::from(load.users) * per_user,
        u64::from(load.active_users),
        u64::from(load.http_users),
    ];
    let total: u64 = n.iter().sum();
    let mine = |count: u64| (u64::from(w)..count).step_by(p as usize);
    let ramp_items = (mine(u64::from(load.users)).count() as u64 * per_user) as usize
        + mine(n[ACTIVE]).count()
        + mine(n[HTTP]).count();

    let shared = Arc::new(Shared {
        pop,
        edges: load.edges.clone(),
        secret: load.jwt_secret.clone(),
        heartbeat: Duration::from_millis(load.heartbeat_ms),
        connect_timeout: Duration::from_millis(load.connect_timeout_ms),
        customers: load.customers,
        counters: Counters::default(),
        failures: Mutex::default(),
        setup_us: Default::default(),
        http_beat_failures: AtomicU64::new(0),
        ramp_left: AtomicUsize::new(ramp_items),
        ramped: Notify::new(),
        delivery: {
            let mut auth = serde_json::Map::new();
            if load.delivery != "broadcast" {
                auth.insert("delivery".into(), json!(load.delivery));
            }
            if load.batch {
                auth.insert("batch".into(), json!(true));
            }
            auth
        },
        subscribe: if load.delivery == "subscriptions" {
            load.subscribe
        } else {
            0
        },
        users: load.users,
    });

    say(&FromWorker::Ready)?;
    expect(&mut control, ToWorker::Start).await?;
    let t0 = Instant::now();
    let at = |i: u64, kind: usize| t0 + slot(i, n[kind], total, load.ramp_per_sec);

    let mut clients = Vec::new();
    for u in mine(u64::from(load.users)) {
        let slots: Vec<(u64, Instant)> = (0..per_user)
            .map(|k| {
                let c = u * per_user + k;
                (c, at(c, SIO))
            })
            .collect();
        let (tx, rx) = mpsc::channel(4);
        let eligible = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(sio_user(
            shared.clone(),
            u as u32,
            slots,
            rx,
            eligible.clone(),
        ));
        clients.push(Client {
            commands: tx,
            eligible: Some(eligible),
            task,
        });
    }
    for (kind, count) in [(ACTIVE, n[ACTIVE]), (HTTP, n[HTTP])] {
        for i in mine(count) {
            let (tx, rx) = mpsc::channel(4);
            let (sh, start) = (shared.clone(), at(i, kind));
            let task = if kind == ACTIVE {
                tokio::spawn(active_user(sh, i as u32, start, rx))
            } else {
                tokio::spawn(http_user(sh, i as u32, start, rx))
            };
            clients.push(Client {
                commands: tx,
                eligible: None,
                task,
            });
        }
    }

    // The ramp, with a progress line every second.
    if ramp_items > 0 {
        let mut progress = tokio::time::interval(Duration::from_secs(1));
        progress.tick().await;
        loop {
            tokio::select! {
                _ = shared.ramped.notified() => break,
                _ = progress.tick() => {
                    let c = &shared.counters;
                    let attempted: u64 = c.attempted.iter().map(|a| a.load(Ordering::Relaxed)).sum();
                    let ok: u64 = c.ok.iter().map(|a| a.load(Ordering::Relaxed)).sum();
                    say(&FromWorker::Progress { attempted, ok })?;
                }
            }
        }
    }
    let c = &shared.counters;
    say(&FromWorker::Ramped(RampCounts {
        attempted: Counters::snapshot(&c.attempted),
        ok: Counters::snapshot(&c.ok),
        failed: Counters::snapshot(&c.failed),
        open: c.open(),
    }))?;

    expect(&mut control, ToWorker::Hold).await?;
    let churn = (load.churn_per_sec > 0.0).then(|| {
        let eligible: Vec<(mpsc::Sender<Cmd>, Arc<AtomicBool>)> = clients
            .iter()
            .filter_map(|c| Some((c.commands.clone(), c.eligible.clone()?)))
            .collect();
        let rate = load.churn_per_sec / f64::from(p);
        let pause = Duration::from_millis(load.churn_pause_ms);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(churn_driver(eligible, rate, pause, u64::from(w), stopped));
        (stop, task)
    });

    expect(&mut control, ToWorker::Stop).await?;
    let churned = match churn {
        Some((stop, task)) => {
            let _ = stop.send(());
            task.await.context("the churn task failed")?
        }
        None => ChurnStats::default(),
    };
    let held = c.open();
    for client in &clients {
        let _ = client.commands.send(Cmd::Stop).await;
    }
    let mut records = Vec::new();
    for client in clients {
        records.extend(client.task.await.context("a client task failed")?);
    }

    let failures = shared
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let setup = |kind: usize| {
        std::mem::take(
            &mut *shared.setup_us[kind]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    };
    say(&FromWorker::Result(Box::new(WorkerResult {
        conns: records,
        attempted: Counters::snapshot(&c.attempted),
        ok: Counters::snapshot(&c.ok),
        failed: Counters::snapshot(&c.failed),
        dropped: Counters::snapshot(&c.dropped),
        held,
        failures,
        active_ws_setup_us: setup(ACTIVE),
        http_join_us: setup(HTTP),
        http_beat_failures: shared.http_beat_failures.load(Ordering::Relaxed),
        churns: churned.churns,
        churn_skipped: churned.skipped,
        cpu_s: probes::sample("self", ticks).cpu_s,
        rss_peak_kb: probes::peak_rss_kb(),
    })))?;
    Ok(())
}

/// Writes one message to the coordinator.
fn say(message: &FromWorker) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", protocol::line(message))?;
    out.flush()?;
    Ok(())
}

/// The coordinator's commands on stdin, read on a thread of their own (blocking reads). If
/// the coordinator goes away before its `stop`, the worker exits at once rather than keep
/// its connections open for nobody.
fn control_lines() -> mpsc::UnboundedReceiver<anyhow::Result<ToWorker>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stopped = false;
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            let command = protocol::parse(&line, "the coordinator");
            stopped |= matches!(command, Ok(ToWorker::Stop));
            if tx.send(command).is_err() {
                return;
            }
        }
        if !stopped {
            eprintln!("presence-bench worker: the coordinator went away; exiting");
            std::process::exit(1);
        }
    });
    rx
}

/// Waits for the coordinator's next command, which must be `want`.
async fn expect(
    control: &mut mpsc::UnboundedReceiver<anyhow::Result<ToWorker>>,
    want: ToWorker,
) -> anyhow::Result<()> {
    match control.recv().await {
        Some(Ok(command)) if command == want => Ok(()),
        Some(Ok(command)) => bail!("the coordinator sent {command:?} while {want:?} was due"),
        Some(Err(e)) => Err(e),
        None => bail!("the coordinator went away (waiting for {want:?})"),
    }
}

#[derive(Debug, Default)]
struct ChurnStats {
    churns: u64,
    skipped: u64,
}

/// Every `1 / rate` seconds, sends a random eligible user a churn command.
async fn churn_driver(
    users: Vec<(mpsc::Sender<Cmd>, Arc<AtomicBool>)>,
    rate: f64,
    pause: Duration,
    seed: u64,
    mut stop: oneshot::Receiver<()>,
) -> ChurnStats {
    let mut stats = ChurnStats::default();
    if users.is_empty() {
        return stats;
    }
    let mut rng = Rng::new(mix(seed ^ now_us()));
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut timer = interval_at(Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = &mut stop => return stats,
            _ = timer.tick() => {}
        }
        // A few random picks: a user that is churning already, silent or offline is skipped.
        let picked = (0..32).map(|_| rng.below(users.len())).find(|&i| {
            users[i]
                .1
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        match picked {
            Some(i) if users[i].0.try_send(Cmd::Churn(pause)).is_ok() => stats.churns += 1,
            Some(i) => {
                users[i].1.store(true, Ordering::Release);
                stats.skipped += 1;
            }
            None => stats.skipped += 1,
        }
    }
}

/// One simulated Socket.io user: its connections over the run, as records.
async fn sio_user(
    sh: Arc<Shared>,
    u: u32,
    slots: Vec<(u64, Instant)>,
    mut commands: mpsc::Receiver<Cmd>,
    eligible: Arc<AtomicBool>,
) -> Vec<ConnRecord> {
    let silent = sh.pop.silent(u);
    let mut records = Vec::with_capacity(slots.len());
    let token = match token(&sh.secret, sh.pop.user_id(u), sh.pop.gender(u)) {
        Ok(token) => token,
        Err(e) => {
            for _ in &slots {
                sh.failed(SIO, e.to_string());
                sh.ramp_step();
            }
            return records;
        }
    };
    let mut live: Vec<(usize, SioClient)> = Vec::with_capacity(slots.len());
    let first = futures::future::join_all(slots.iter().map(|&(c, at)| {
        let (sh, token) = (&sh, &token);
        async move {
            sleep_until(at).await;
            let attempt = sh.connect_sio(u, c, token).await;
            sh.ramp_step();
            attempt
        }
    }))
    .await;
    keep(first, &mut records, &mut live);
    eligible.store(!silent && !live.is_empty(), Ordering::Release);

    let mut beat = heartbeats(sh.heartbeat);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Cmd::Churn(pause)) => {
                    if silent || live.is_empty() {
                        continue;
                    }
                    eligible.store(false, Ordering::Release);
                    close_all(&sh, &mut live, &mut records, End::Leave).await;
                    if !pause_unless_stopped(&mut commands, pause).await {
                        break;
                    }
                    let again = futures::future::join_all(
                        slots.iter().map(|&(c, _)| sh.connect_sio(u, c, &token)),
                    )
                    .await;
                    keep(again, &mut records, &mut live);
                    beat.reset();
                    eligible.store(!live.is_empty(), Ordering::Release);
                }
                Some(Cmd::Stop) | None => {
                    eligible.store(false, Ordering::Release);
                    close_all(&sh, &mut live, &mut records, End::Close).await;
                    break;
                }
            },
            _ = beat.tick(), if !silent && !live.is_empty() => {
                for (_, client) in &live {
                    let _ = client.heartbeat();
                }
            }
            i = first_closed(&live), if !live.is_empty() => {
                let (record, _client) = live.swap_remove(i);
                records[record].end_us = now_us();
                records[record].end = End::Drop;
                sh.closed(SIO, true);
                if live.is_empty() {
                    eligible.store(false, Ordering::Release);
                }
            }
        }
    }
    records
}

fn keep(
    attempts: Vec<(ConnRecord, Option<SioClient>)>,
    records: &mut Vec<ConnRecord>,
    live: &mut Vec<(usize, SioClient)>,
) {
    for (record, client) in attempts {
        records.push(record);
        if let Some(client) = client {
            live.push((records.len() - 1, client));
        }
    }
}

/// Closes every connection of a user, noting when each close began.
async fn close_all(
    sh: &Shared,
    live: &mut Vec<(usize, SioClient)>,
    records: &mut [ConnRecord],
    end: End,
) {
    for (record, client) in live.drain(..) {
        records[record].end_us = now_us();
        records[record].end = end;
        client.disconnect().await;
        sh.closed(SIO, false);
    }
}

/// Sleeps `pause`; `false` if a stop came meanwhile.
async fn pause_unless_stopped(commands: &mut mpsc::Receiver<Cmd>, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    loop {
        tokio::select! {
            _ = sleep_until(until) => return true,
            command = commands.recv() => match command {
                Some(Cmd::Churn(_)) => {}
                Some(Cmd::Stop) | None => return false,
            },
        }
    }
}

/// The position in `live` of the first connection to end.
async fn first_closed(live: &[(usize, SioClient)]) -> usize {
    let closing = live.iter().map(|(_, client)| Box::pin(client.closed()));
    futures::future::select_all(closing).await.1
}

/// One active-users WebSocket client (a browser tab): auth, then a ping per heartbeat.
async fn active_user(
    sh: Arc<Shared>,
    i: u32,
    start: Instant,
    mut commands: mpsc::Receiver<Cmd>,
) -> Vec<ConnRecord> {
    sleep_until(start).await;
    let url = format!(
        "{}/ws/active-users",
        sh.edge(u64::from(i)).replacen("http", "ws", 1)
    );
    let mut auth = sh.pop.tab(ACTIVE, i, sh.customers);
    auth["type"] = json!("auth");
    let setup = async {
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), false).await?;
        ws.send(Message::text(auth.to_string())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("hello") => return Ok(ws),
                        Some("error") => bail!("error {}", v["code"]),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    bail!("closed: {}", frame.map_or(0, |f| u16::from(f.code)))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("websocket: {e}"),
                None => bail!("closed"),
            }
        }
    };
    let Some(mut ws) = sh.set_up(ACTIVE, setup).await else {
        return Vec::new();
    };
    let mut ping = heartbeats(sh.heartbeat);
    loop {
        tokio::select! {
            _ = commands.recv() => {
                let _ = ws.close(None).await;
                sh.closed(ACTIVE, false);
                break;
            }
            _ = ping.tick() => {
                let ping = json!({"type": "ping", "timestamp": now_us() / 1000}).to_string();
                if ws.send(Message::text(ping)).await.is_err() {
                    sh.closed(ACTIVE, true);
                    break;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    sh.closed(ACTIVE, true);
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    Vec::new()
}

/// One active-users HTTP client: join, a beat per heartbeat, leave at the end.
async fn http_user(
    sh: Arc<Shared>,
    i: u32,
    start: Instant,
    mut commands: mpsc::Receiver<Cmd>,
) -> Vec<ConnRecord> {
    sleep_until(start).await;
    let body = sh.pop.tab(HTTP, i, sh.customers).to_string();
    let setup = async {
        let mut client = KeepAlive::new(sh.edge(u64::from(i)))?;
        match client.post("/presence/join", &body).await {
            Ok(200) => Ok(client),
            Ok(status) => bail!("join answered {status}"),
            Err(e) => bail!("join: {e}"),
        }
    };
    let Some(mut client) = sh.set_up(HTTP, setup).await else {
        return Vec::new();
    };
    let mut beat = heartbeats(sh.heartbeat);
    loop {
        tokio::select! {
            _ = commands.recv() => {
                let leave = client.post("/presence/leave", &body);
                let _ = tokio::time::timeout(Duration::from_secs(5), leave).await;
                sh.closed(HTTP, false);
                break;
            }
            _ = beat.tick() => {
                let beat = client.post("/presence/beat", &body);
                let ok = matches!(tokio::time::timeout(sh.connect_timeout, beat).await, Ok(Ok(200)));
                if !ok {
                    sh.http_beat_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Vec::new()
}

/// A client's heartbeat clock: the first tick one period from now, late ticks delayed rather
/// than bunched.
fn heartbeats(period: Duration) -> tokio::time::Interval {
    let mut timer = interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}
