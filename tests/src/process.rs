//! The `presence` processes under test: where the binary is, the settings every test process
//! starts with, the run's NATS server and fresh stream namespaces, and [`Proc`], one running
//! process started with its role and environment.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The JWT secret every test process uses.
pub const SECRET: &str = "e2e-secret";

/// Short timings so sweeps happen within a test.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 1_500;
/// Sweep interval used by the tests.
pub const SWEEP_INTERVAL_MS: u64 = 250;

/// The `presence` binary under test.
pub fn presence_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("PRESENCE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target directory")?;
    let bin = profile_dir.join("presence");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build -p presence) or set PRESENCE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The NATS server of the test run.
pub fn nats_url() -> anyhow::Result<String> {
    std::env::var("NATS_URL")
        .context("NATS_URL is not set: run the tests with `make test`, which starts nats-server")
}

/// A fresh namespace: streams and subjects no other test sees.
pub fn unique_namespace() -> String {
    // The tail of a UUID v7 is random.
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("t{}", &id[id.len() - 20..])
}

/// A running `presence` process, killed when dropped.
pub struct Proc {
    child: Child,
    /// `http://addr` of its public listener, if it has one.
    pub public: Option<String>,
    /// `http://addr` of its admin listener.
    pub admin: String,
}

impl Proc {
    /// The process id, while it runs (for reading `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts `presence <role>` with `env` and waits for its ready banner.
    pub async fn start(role: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(presence_bin()?);
        // Only what the test asks for: the run's own server URLs are not for every process.
        cmd.arg(role)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .env("PRESENCE_HTTP_ADDR", "127.0.0.1:0")
            .env("PRESENCE_ADMIN_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", SECRET)
            .env(
                "PRESENCE_HEARTBEAT_TIMEOUT_MS",
                HEARTBEAT_TIMEOUT_MS.to_string(),
            )
            .env("PRESENCE_SWEEP_INTERVAL_MS", SWEEP_INTERVAL_MS.to_string())
            .env("PRESENCE_BEAT_FLUSH_MS", "100")
            .env("PRESENCE_EVENTS_MAX_BYTES", (64 * 1024 * 1024).to_string())
            // Every test client connects from 127.0.0.1; the tests of these limits set them.
            .env("PRESENCE_MAX_CONNECTIONS_PER_IP", "0")
            .env("PRESENCE_CONNECTS_PER_IP_PER_MIN", "0")
            .env("PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER", "0")
            .env(
                "RUST_LOG",
                std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting presence {role}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("presence ") && line.contains(" ready: ") {
                    return Ok(line);
                }
            }
            bail!("presence {role} exited before it was ready")
        })
        .await
        .with_context(|| format!("presence {role} not ready within 20 s"))??;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |name: &str| {
            banner
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(|addr| format!("http://{addr}"))
        };
        Ok(Self {
            public: field("public"),
            admin: field("admin").context("banner without admin address")?,
            child,
        })
    }

    /// The public base URL (panics for roles without one: a test bug).
    pub fn url(&self) -> &str {
        self.public
            .as_deref()
            .expect("this role has no public listener")
    }

    /// SIGKILL: the process vanishes without a goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, …) without waiting for anything.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn signal_term(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }
}
