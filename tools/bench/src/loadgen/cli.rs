//! Command-line flags.

use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

/// What the report means (`--help`).
const FIGURES: &str = "\
Figures (all times are wall-clock, comparable across the processes):
  connect_ms          TCP connect started -> Socket.IO CONNECT received, every successful connection.
  propagation_ms      per (observer, action): arrival of the presence-update at the observer minus
                      the time of the client action that caused it: the start of the connect for
                      online:true (so it includes the handshake), the start of the disconnect of a
                      churn leave for online:false.
  silent -> offline   a silent user's last sign of life (its connect) -> its online:false (the sweep).
  close -> offline    the final close -> online:false (every connection closes at once: a burst).
  missed_updates      (observer, expected transition) pairs never received within
                      action + timeout + sweep + 2 s, by cause.
  ghost_seconds       for each departure (leave, close, drop, silence), the longest time any observer
                      still showed the user online past action + timeout + sweep, summed; counted up
                      to the user's next connect or the end of observation.
  false_offlines      online:false updates matching no departure, received while the user had a
                      connection up and heartbeating.
  rss_kb_per_connection  (RSS after ramp - RSS at start) / connections open after the ramp: the
                         process's own (`presence_connections` of its --metrics of the same NAME)
                         when known, else all of the run's.
  cpu_seconds_hold    utime + stime of /proc/PID/stat over the hold (ticks per second from
                      `getconf CLK_TCK`, 100 if unavailable).
  deliveries per CPU-second  presence_fanout_deliveries_total over the hold / the CPU seconds of the
                      --proc of the same NAME.
  whole run          the same from before the ramp to the end of the drain: the ramp's
                      fan-out included.
";

/// Sockets one worker process holds at most when `--processes` is not given.
pub(crate) const SOCKETS_PER_PROCESS: u64 = 15_000;

/// Load generator for the presence service: simulated Socket.io users (plus optional
/// active-users WebSocket and HTTP clients) spread over worker processes, with observers
/// measuring how fast and how faithfully presence changes reach other users.
///
/// Phases: ramp (open every connection at --ramp-per-sec), hold for --hold-secs (heartbeats,
/// churn, silent users), close everything, wait for the last offline updates (at most
/// --timeout-ms + --sweep-ms + 2 s), report. Results are printed (and written with --json);
/// nothing is asserted.
#[derive(Debug, Parser)]
#[command(
    name = "presence-bench",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_long_help = FIGURES
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// One worker process of a run (started by the coordinator).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// What every process of a run needs to know about the load.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoadArgs {
    /// Public URL of an edge (`http://host:port`); repeat for several edges: connections
    /// are assigned round-robin.
    #[arg(long = "edge", value_name = "URL", required = true, value_parser = edge_url)]
    pub(crate) edges: Vec<String>,

    /// Simulated Socket.io users.
    #[arg(long, default_value_t = 1000)]
    pub(crate) users: u32,

    /// Socket.io connections (tabs, devices) per user.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connections_per_user: u32,

    /// Connections opened per second during the ramp, over all processes and client kinds.
    #[arg(long, default_value_t = 200.0, value_parser = positive)]
    pub(crate) ramp_per_sec: f64,

    /// Interval of `user:heartbeat` (and of active-users pings and HTTP beats), ms.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) heartbeat_ms: u64,

    /// Users per second that, during the hold, disconnect every connection and reconnect
    /// after --churn-pause-ms.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    pub(crate) churn_per_sec: f64,

    /// Pause between a churning user's disconnect and its reconnect, ms.
    #[arg(long, default_value_t = 2000)]
    pub(crate) churn_pause_ms: u64,

    /// Percentage of users that connect and then never heartbeat (the server must sweep
    /// them offline while their sockets stay open).
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    pub(crate) silent_percent: f64,

    /// Percentage of users of gender `female` (the rest are `male`).
    #[arg(long, default_value_t = 10.0, value_parser = percent)]
    pub(crate) female_percent: f64,

    /// HS256 secret the tokens are signed with (the server's `JWT_SECRET`).
    #[arg(
        long,
        env = "PRESENCE_BENCH_JWT_SECRET",
        default_value = presence_e2e::SECRET,
        hide_env_values = true
    )]
    pub(crate) jwt_secret: String,

    /// Active-users WebSocket clients (`/ws/active-users`: auth, then a ping per heartbeat).
    #[arg(long, default_value_t = 0)]
    pub(crate) active_users: u32,

    /// Active-users HTTP clients (`POST /presence/join`, then `/presence/beat` per
    /// heartbeat, on a keep-alive connection).
    #[arg(long, default_value_t = 0)]
    pub(crate) http_users: u32,

    /// Customer ids the active-users and HTTP clients are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) customers: u32,

    /// A connection not established within this long counts as failed, ms.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) connect_timeout_ms: u64,

    /// How the simulated users' sockets receive presence (`auth.delivery`): `broadcast`
    /// (every user they may see) or `subscriptions` (only the ones in --subscribe).
    #[arg(long, default_value = "broadcast", value_parser = ["broadcast", "subscriptions"])]
    pub(crate) delivery: String,

    /// Users' sockets take `presence-updates` frames (`auth.batch: true`).
    #[arg(long)]
    pub(crate) batch: bool,

    /// Subscriptions delivery: users each socket subscribes to (`presence:subscribe`),
    /// chosen at random among the simulated users.
    #[arg(long, default_value_t = 50)]
    pub(crate) subscribe: u32,
}

impl LoadArgs {
    /// Every Socket.io connection, active-users socket and HTTP client of the run.
    pub(crate) fn sockets(&self) -> u64 {
        u64::from(self.users) * u64::from(self.connections_per_user)
            + u64::from(self.active_users)
            + u64::from(self.http_users)
    }

    /// These flags as a worker's command line (the secret goes through the environment).
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for edge in &self.edges {
            args.push("--edge".to_owned());
            args.push(edge.clone());
        }
        let pairs = [
            ("--users", self.users.to_string()),
            (
                "--connections-per-user",
                self.connections_per_user.to_string(),
            ),
            ("--ramp-per-sec", self.ramp_per_sec.to_string()),
            ("--heartbeat-ms", self.heartbeat_ms.to_string()),
            ("--churn-per-sec", self.churn_per_sec.to_string()),
            ("--churn-pause-ms", self.churn_pause_ms.to_string()),
            ("--silent-percent", self.silent_percent.to_string()),
            ("--female-percent", self.female_percent.to_string()),
            ("--active-users", self.active_users.to_string()),
            ("--http-users", self.http_users.to_string()),
            ("--customers", self.customers.to_string()),
            ("--connect-timeout-ms", self.connect_timeout_ms.to_string()),
            ("--delivery", self.delivery.clone()),
            ("--subscribe", self.subscribe.to_string()),
        ];
        for (flag, value) in pairs {
            args.push(flag.to_owned());
            args.push(value);
        }
        if self.batch {
            args.push("--batch".to_owned());
        }
        args
    }
}

/// The coordinator's flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) load: LoadArgs,

    /// Observer connections (gender `female`, who see everyone under the default visibility
    /// rules) recording every `presence-update`.
    #[arg(long, default_value_t = 10)]
    pub(crate) observers: u32,

    /// Length of the hold phase, seconds.
    #[arg(long, default_value_t = 30.0, value_parser = non_negative)]
    pub(crate) hold_secs: f64,

    /// The server's heartbeat timeout (`PRESENCE_HEARTBEAT_TIMEOUT_MS`), ms.
    #[arg(long, default_value_t = 15_000)]
    pub(crate) timeout_ms: u64,

    /// The server's sweep interval (`PRESENCE_SWEEP_INTERVAL_MS`), ms.
    #[arg(long, default_value_t = 3_000)]
    pub(crate) sweep_ms: u64,

    /// Worker processes (default: enough that none holds more than 15,000 sockets).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) processes: Option<u32>,

    /// A server process to read memory and CPU of, from `/proc/PID` (repeatable).
    #[arg(long = "proc", value_name = "NAME=PID")]
    pub(crate) procs: Vec<Named<u32>>,

    /// A role's Prometheus `/metrics` URL to read counters from before and after the hold
    /// (repeatable); give it the same NAME as its `--proc` for deliveries per CPU-second.
    #[arg(long = "metrics", value_name = "NAME=URL")]
    pub(crate) metrics: Vec<Named<String>>,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<std::path::PathBuf>,
}

/// A worker's flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    /// This worker's number, from 0.
    #[arg(long)]
    pub(crate) index: u32,
    /// How many workers the run has.
    #[arg(long)]
    pub(crate) processes: u32,
    /// The run's id: the prefix of every user id.
    #[arg(long)]
    pub(crate) run_id: String,
}

/// `NAME=VALUE`.
#[derive(Debug, Clone)]
pub(crate) struct Named<T> {
    pub(crate) name: String,
    pub(crate) value: T,
}

impl<T: FromStr> FromStr for Named<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
        if name.is_empty() {
            return Err(format!("empty NAME in {s:?}"));
        }
        let value = value.parse().map_err(|e| format!("in {s:?}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            value,
        })
    }
}

/// `http://host:port`, without a trailing slash.
fn edge_url(s: &str) -> Result<String, String> {
    let url = s.trim_end_matches('/');
    match url.strip_prefix("http://") {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(url.to_owned()),
        _ => Err(format!("expected http://host:port, got {s:?}")),
    }
}

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s:?} is not a finite number"))
    }
}

fn positive(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err("must be greater than 0".into())
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err("must not be negative".into())
    }
}

fn percent(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 100".into())
    }
}
