//! A viewer on the stock `socket.io-client` from npm (`tests/node/observe.mjs`) that records
//! every `presence-update` it receives, so a test counts what reached a client: each
//! transition exactly once, none lost, none repeated.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One `presence-update` as the observer received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// When it arrived, in ms since the epoch.
    pub at: u64,
    /// The user it is about.
    pub user: String,
    /// Its status.
    pub status: String,
}

/// A running observer, stopped when dropped.
pub struct Observer {
    _child: Child,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Observer {
    /// Connects an observer with `token` to the edge at `url`; returns once it is connected.
    pub async fn start(url: &str, token: &str) -> anyhow::Result<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
        if !dir.join("node_modules/socket.io-client").exists() {
            bail!(
                "socket.io-client is not installed: run `make interop-deps` (npm ci in tests/node)"
            );
        }
        let mut child = Command::new("node")
            .arg(dir.join("observe.mjs"))
            .args([url, token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("running node")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the observer did not connect within 10 s")??
            .context("the observer exited before it connected")?;
        if !first.contains("\"ready\":true") {
            bail!("the observer said {first:?} instead of ready");
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let update = Seen {
                    at: v["at"].as_u64().unwrap_or_default(),
                    user: v["userId"].as_str().unwrap_or_default().to_owned(),
                    status: v["status"].as_str().unwrap_or_default().to_owned(),
                };
                keep.lock().unwrap_or_else(|e| e.into_inner()).push(update);
            }
        });
        Ok(Self {
            _child: child,
            seen,
        })
    }

    /// Everything received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many updates of `user` with `status` were received.
    pub fn count(&self, user: &str, status: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.user == user && s.status == status)
            .count()
    }

    /// When the first update of `user` with `status` arrived.
    pub fn first(&self, user: &str, status: &str) -> Option<u64> {
        self.seen()
            .iter()
            .find(|s| s.user == user && s.status == status)
            .map(|s| s.at)
    }

    /// Waits until every one of `users` has had an update with `status`.
    pub async fn until_all(
        &self,
        users: &[String],
        status: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let missing: Vec<&String> = users
                .iter()
                .filter(|u| self.count(u, status) == 0)
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if started.elapsed() > within {
                bail!(
                    "{} of {} users never shown {status} within {within:?}: {missing:?}",
                    missing.len(),
                    users.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
