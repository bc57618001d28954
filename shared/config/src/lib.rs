//! Settings shared by several roles: where the event log is, who this node is, which
//! environment it runs in. Each role adds its own `clap::Args` struct next to its code; all of
//! them read env vars (names from the specification) with CLI flags as overrides.

use std::fmt;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// The deployment environment (`PRESENCE_ENV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Local development: insecure conveniences may be enabled, debug endpoints are open.
    Development,
    /// Anything else.
    Production,
}

/// Identity and admin listener of a process.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Name stamped on every event this process writes (default: `<role>-<pid>`).
    #[arg(long, env = "PRESENCE_NODE_ID")]
    pub node_id: Option<String>,
    /// Deployment environment.
    #[arg(
        long = "env",
        env = "PRESENCE_ENV",
        value_enum,
        default_value = "production"
    )]
    pub environment: Environment,
    /// Admin listener: Prometheus `/metrics`, `/livez`, `/readyz`.
    #[arg(long, env = "PRESENCE_ADMIN_ADDR", default_value = "127.0.0.1:9100")]
    pub admin_addr: String,
}

/// Where the event log lives.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// NATS server with JetStream.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Prefix of every stream and subject, so several clusters can share one NATS server.
    #[arg(long, env = "PRESENCE_NAMESPACE", default_value = "presence", value_parser = parse_namespace)]
    pub namespace: String,
    /// How long the event stream keeps events, in hours.
    #[arg(long, env = "PRESENCE_EVENTS_MAX_AGE_HOURS", default_value_t = 168)]
    pub events_max_age_hours: u64,
    /// Most bytes the event stream keeps (oldest dropped first).
    #[arg(long, env = "PRESENCE_EVENTS_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub events_max_bytes: i64,
    /// Partitions of the event log, 1 to 256: fixed when the cluster's streams are first
    /// created (every role must be given the same number; changing it means a new namespace,
    /// filled by replay).
    #[arg(long, env = "PRESENCE_PARTITIONS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub partitions: u64,
    /// Copies of every stream and bucket, on as many nodes of the JetStream cluster: 1 for a
    /// single server, 3 for a 3-node cluster (applied when a stream is created or updated).
    #[arg(long, env = "PRESENCE_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub stream_replicas: u64,
}

impl LogArgs {
    /// Retention of the event stream.
    pub fn events_max_age(&self) -> Duration {
        Duration::from_secs(self.events_max_age_hours.saturating_mul(3600))
    }
}

fn parse_namespace(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("use 1-32 lower-case letters, digits, '-' or '_'".into())
    }
}

/// Where PostgreSQL is (persistence is off without it, where a role allows that).
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL URL, e.g. `postgres://user:password@127.0.0.1:5432/presence` (masked when printed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
}

/// A value that must never be printed: shows as `****` (or `<unset>`) in effective-config output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether a value was given.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "****" } else { "<unset>" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?} {s}"), "**** ****");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "<unset>");
    }

    #[test]
    fn namespaces_must_be_subject_safe() {
        assert!(parse_namespace("presence").is_ok());
        assert!(parse_namespace("t_42-a").is_ok());
        assert!(parse_namespace("a.b").is_err());
        assert!(parse_namespace("UP").is_err());
    }
}
