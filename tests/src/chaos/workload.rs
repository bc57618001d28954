//! The chaos suite's steady workload, through the load balancer: heartbeating Socket.io
//! users that churn (leave and come back) and change their status on command, and reconnect
//! at once when their connection is lost; active-users WebSocket tabs that ping and reconnect;
//! and an observer on one edge recording every `presence-update`. Everything a client was
//! told (admitted, status acknowledged) or did (left) goes into the journal, with its time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use presence_sio_client::{ConnectOptions, Events, SioClient};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::analysis::{Act, Entry};
use crate::clients::{now_ms, token};
use crate::observer::Seen;

/// What a user is told to do next.
#[derive(Debug)]
enum Command {
    /// Disconnect, wait, connect again.
    Churn(Duration),
    /// Set this status.
    Status(&'static str),
}

/// Shared records of the run.
#[derive(Default)]
pub struct Journal {
    entries: Mutex<Vec<Entry>>,
    /// Connect attempts refused (the cluster said no, or the balancer had no edge).
    pub refused: AtomicU64,
}

impl Journal {
    fn push(&self, user: &str, act: Act) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Entry {
                at: now_ms(),
                user: user.to_owned(),
                act,
            });
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct User {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    connected: Arc<AtomicBool>,
}

/// The running workload.
pub struct Workload {
    users: Vec<User>,
    /// What happened.
    pub journal: Arc<Journal>,
    stop: tokio_util::sync::CancellationToken,
    /// While set, the driver sends nothing.
    paused: AtomicBool,
    rng: Mutex<u64>,
}

/// How the users behave.
#[derive(Debug, Clone)]
pub struct Load {
    /// Where they connect (the balancer).
    pub url: String,
    /// How many.
    pub users: usize,
    /// Every how many users one is `female` (seen by everyone; the others see only them).
    pub female_every: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Users opened per second at the start.
    pub ramp_per_sec: u64,
}

impl Workload {
    /// Starts every user (ramped); returns once all are connected.
    pub async fn start(load: &Load) -> anyhow::Result<Self> {
        let journal = Arc::new(Journal::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let mut users = Vec::with_capacity(load.users);
        let pace = Duration::from_micros(1_000_000 / load.ramp_per_sec.max(1));
        for i in 0..load.users {
            let name = format!("c{i}");
            let gender = if i % load.female_every.max(1) == 0 {
                "female"
            } else {
                "male"
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let connected = Arc::new(AtomicBool::new(false));
            tokio::spawn(run_user(
                load.url.clone(),
                name.clone(),
                gender,
                load.heartbeat,
                rx,
                connected.clone(),
                journal.clone(),
                stop.clone(),
            ));
            users.push(User {
                name,
                commands: tx,
                connected,
            });
            tokio::time::sleep(pace).await;
        }
        let w = Self {
            users,
            journal,
            stop,
            paused: AtomicBool::new(false),
            rng: Mutex::new(now_ms() | 1),
        };
        let started = std::time::Instant::now();
        while w.connected() < load.users {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "only {} of {} users connected after 120 s",
                w.connected(),
                load.users
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(w)
    }

    /// Users connected right now.
    pub fn connected(&self) -> usize {
        self.users
            .iter()
            .filter(|u| u.connected.load(Ordering::Relaxed))
            .count()
    }

    /// Every user's name.
    pub fn names(&self) -> Vec<String> {
        self.users.iter().map(|u| u.name.clone()).collect()
    }

    fn random(&self, n: usize) -> usize {
        let mut x = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        // xorshift64
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x % n.max(1) as u64) as usize
    }

    /// A connected user, at random.
    fn pick(&self) -> Option<&User> {
        for _ in 0..20 {
            let u = &self.users[self.random(self.users.len())];
            if u.connected.load(Ordering::Relaxed) {
                return Some(u);
            }
        }
        None
    }

    /// Drives churn and status changes until `stop` is cancelled: every `every`, one user
    /// leaves (and is back after a second) and another changes its status.
    pub fn drive(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let w = self.clone();
        tokio::spawn(async move {
            const STATUSES: [&str; 3] = ["live", "in_call", "online"];
            let mut n = 0usize;
            while !w.stop.is_cancelled() {
                tokio::time::sleep(every).await;
                if w.paused.load(Ordering::Relaxed) {
                    continue;
                }
                if let Some(u) = w.pick() {
                    let _ = u.commands.send(Command::Churn(Duration::from_secs(1)));
                }
                if let Some(u) = w.pick() {
                    let _ = u
                        .commands
                        .send(Command::Status(STATUSES[n % STATUSES.len()]));
                }
                n += 1;
            }
        })
    }

    /// Holds churn and status changes (to read a settled state).
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    /// Lets the driver go on.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Stops driving and disconnects everyone.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_user(
    url: String,
    name: String,
    gender: &'static str,
    heartbeat: Duration,
    mut commands: mpsc::UnboundedReceiver<Command>,
    connected: Arc<AtomicBool>,
    journal: Arc<Journal>,
    stop: tokio_util::sync::CancellationToken,
) {
    let options = ConnectOptions {
        events: Events::Discard,
        read_buffer_size: Some(4096),
    };
    while !stop.is_cancelled() {
        let auth = json!({ "token": token(&name, gender) });
        let mut client = match SioClient::connect_with(&url, auth, options.clone()).await {
            Ok(client) => client,
            Err(_) => {
                journal.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        journal.push(&name, Act::Connected);
        connected.store(true, Ordering::Relaxed);
        client.start_heartbeat(heartbeat);
        let pause = loop {
            tokio::select! {
                _ = client.closed() => {
                    journal.push(&name, Act::Dropped);
                    break None;
                }
                _ = stop.cancelled() => {
                    journal.push(&name, Act::Left);
                    client.disconnect().await;
                    connected.store(false, Ordering::Relaxed);
                    return;
                }
                command = commands.recv() => match command {
                    Some(Command::Churn(pause)) => {
                        journal.push(&name, Act::Left);
                        client.disconnect().await;
                        break Some(pause);
                    }
                    Some(Command::Status(status)) => {
                        let ack = client
                            .emit_with_ack("user:status", json!({"status": status}), Duration::from_secs(5))
                            .await;
                        if ack.is_ok_and(|a| a["ok"] == true) {
                            journal.push(&name, Act::Status(status.to_owned()));
                        }
                    }
                    None => return,
                },
            }
        };
        connected.store(false, Ordering::Relaxed);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Active-users tabs: `per_customer` sessions (one tab each) of each of `customers`, over
/// the WebSocket endpoint, pinging every `every` and reconnecting with the same ids when
/// their socket ends.
pub fn start_tabs(
    url: &str,
    customers: usize,
    per_customer: usize,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<String> {
    let mut names = Vec::new();
    for c in 0..customers {
        let customer = format!("chaos-shop-{c}");
        for s in 0..per_customer {
            let (url, customer, stop) = (url.to_owned(), customer.clone(), stop.clone());
            tokio::spawn(async move {
                let session = format!("session-{s}");
                while !stop.is_cancelled() {
                    let _ = run_tab(&url, &customer, &session, every, &stop).await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
        }
        names.push(customer);
    }
    names
}

async fn run_tab(
    url: &str,
    customer: &str,
    session: &str,
    every: Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let ws_url = format!("{}/ws/active-users", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let auth = json!({"type": "auth", "customerId": customer, "sessionId": session, "tabId": "t"});
    ws.send(Message::text(auth.to_string())).await?;
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            _ = ticker.tick() => {
                let ping = json!({"type": "ping", "timestamp": now_ms()});
                ws.send(Message::text(ping.to_string())).await?;
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// An observer on one edge (a `female` user: it sees everyone), recording every update, and
/// connecting again (after a pause) if its connection is lost.
pub struct Watcher {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Times its connection was lost.
    pub gaps: Arc<AtomicU64>,
}

impl Watcher {
    /// Starts watching `url` until `stop`.
    pub async fn start(url: &str, stop: tokio_util::sync::CancellationToken) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let gaps = Arc::new(AtomicU64::new(0));
        let (url, keep, lost) = (url.to_owned(), seen.clone(), gaps.clone());
        let (ready_tx, mut ready) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let sink = keep.clone();
                let options = ConnectOptions {
                    events: Events::Handler(Arc::new(move |name: &str, v: Value| {
                        if name != "presence-update" {
                            return;
                        }
                        let update = Seen {
                            at: now_ms(),
                            user: v["userId"].as_str().unwrap_or_default().to_owned(),
                            status: v["status"].as_str().unwrap_or_default().to_owned(),
                        };
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(update);
                    })),
                    read_buffer_size: None,
                };
                let auth = json!({ "token": token("watcher", "female") });
                match SioClient::connect_with(&url, auth, options).await {
                    Ok(mut client) => {
                        let _ = ready_tx.try_send(());
                        client.start_heartbeat(Duration::from_secs(1));
                        tokio::select! {
                            _ = client.closed() => { lost.fetch_add(1, Ordering::Relaxed); }
                            _ = stop.cancelled() => { client.disconnect().await; return; }
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), ready.recv()).await;
        Self { seen, gaps }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `user` has been shown `status` at or after `since`.
    pub fn shown_since(&self, user: &str, status: &str, since: u64) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|s| s.user == user && s.status == status && s.at >= since)
    }
}
