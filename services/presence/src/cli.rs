//! Command line: roles as subcommands, every setting from env vars with flags as overrides.

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use presence_aggregator::AggregatorConfig;
use presence_config::{DbArgs, LogArgs, NodeArgs, Secret};
use presence_edge::EdgeConfig;
use presence_persister::PersisterConfig;

use crate::roles;

/// Real-time presence: who is online, pushed to who may see it.
#[derive(Debug, Parser)]
#[command(name = "presence", version, about, after_help = SETTINGS)]
pub(crate) struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Every role in one process with an in-memory event log: no external service needed.
    Standalone {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        edge: EdgeConfig,
        #[command(flatten)]
        aggregator: AggregatorConfig,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        persister: PersisterConfig,
    },
    /// An edge: Socket.io / WebSocket / HTTP in, events to JetStream, changes out to sockets.
    /// With DATABASE_URL it also records users and serves search and check-online-status.
    Edge {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        edge: EdgeConfig,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The aggregator: folds events into presence, sweeps, publishes changes; with
    /// DATABASE_URL it snapshots its state and restarts from the newest snapshot.
    Aggregator {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        aggregator: AggregatorConfig,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The persister: writes debounced presence snapshots to PostgreSQL (needs DATABASE_URL).
    Persister {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        persister: PersisterConfig,
    },
    /// Operator tools over the event stream: rebuild the projection, a user's timeline, a
    /// customer's metrics.
    Replay {
        #[command(flatten)]
        log: LogArgs,
        /// Fold settings (timeout, TTL, alpha) to replay with.
        #[command(flatten)]
        fold: AggregatorConfig,
        #[command(flatten)]
        range: crate::replay::Range,
        #[command(subcommand)]
        command: crate::replay::Replay,
    },
    /// Prints an HS256 token for development and testing.
    Token {
        /// Secret to sign with.
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        secret: Secret,
        /// User id.
        #[arg(long)]
        sub: String,
        /// Gender claim (visibility class).
        #[arg(long)]
        gender: Option<String>,
        /// Tenant claim.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

/// Every setting, for `presence --help`; each role's `--help` details its own.
const SETTINGS: &str = "\
Settings (env var, or the flag in `presence <role> --help`):
  PRESENCE_HTTP_ADDR             public listener (edge, standalone)      [127.0.0.1:3000]
  PRESENCE_ADMIN_ADDR            /metrics, /livez, /readyz               [127.0.0.1:9100]
  NATS_URL                       JetStream server (edge, aggregator)     [nats://127.0.0.1:4222]
  PRESENCE_NAMESPACE             prefix of streams and subjects          [presence]
  PRESENCE_EVENTS_MAX_AGE_HOURS  event stream retention                  [168]
  PRESENCE_EVENTS_MAX_BYTES      event stream size limit                 [1073741824]
  DATABASE_URL                   PostgreSQL (persister; optional for standalone)
  PRESENCE_ONLINE_DEBOUNCE_MS    online writes coalesce for              [2000]
  PRESENCE_SNAPSHOT_INTERVAL_MS  aggregator snapshot period (with DB)    [30000]
  PRESENCE_OFFLINE_RETENTION     offline users leave the fold after      [24h]
  PRESENCE_OFFLINE_FEED_TTL      offline changes leave the online stream [60s]
  JWT_SECRET                     HS256 secret (masked when printed)
  JWT_ALGORITHM                  HS256 | RS256                           [HS256]
  JWT_PUBLIC_KEY_FILE            RSA public key (PEM) for RS256
  JWT_ISSUER, JWT_AUDIENCE       iss / aud tokens must carry             [not checked]
  JWT_KEYS_FILE                  JWKS of keys by kid, reloaded on change
  PRESENCE_ENV                   development | production                [production]
  SOCKET_ALLOW_INSECURE_USERID   auth {userId} in development only       [false]
  PRESENCE_NODE_ID               node name on events                     [<role>-<pid>]
  PRESENCE_HEARTBEAT_TIMEOUT_MS  silent connections swept after          [15000]
  PRESENCE_SWEEP_INTERVAL_MS     longest time between sweeps             [3000]
  PRESENCE_BEAT_FLUSH_MS         heartbeat batch interval per edge       [1000]
  PRESENCE_VISIBILITY_RULES      viewer=seen,...;viewer=*                [male=female;female=*;other=*]
  PRESENCE_SESSION_TTL_MS        active-users session TTL                [180000]
  PRESENCE_METRICS_TICK_MS       active-users count + EMA tick           [5000]
  PRESENCE_EMA_ALPHA             EMA weight of the newest count          [0.2]
  PRESENCE_WS_AUTH_TIMEOUT_MS    /ws/active-users auth deadline          [10000]
  PRESENCE_MAX_CONNECTIONS_PER_USER  Socket.io connections per user, edge [10]
  PRESENCE_MAX_SUBSCRIPTIONS     users one socket may subscribe to       [1000]
  PRESENCE_MAX_QUERY_IDS         users one query / batch read may name   [500]
  PRESENCE_BATCH_MS              window of batched delivery (ms)         [50]
  PRESENCE_RATE_LIMIT_IP_PER_MIN         per client IP                   [100]
  PRESENCE_RATE_LIMIT_CUSTOMER_PER_MIN   per customer                    [5000]
  PRESENCE_TRUSTED_PROXIES       proxies (IPs, CIDR ranges) trusted for X-Forwarded-For (not limited below)
  PRESENCE_CUSTOMER_ORIGINS      sites allowed per customer: c=https://a|https://b;…
  PRESENCE_CUSTOMER_ORIGINS_FILE     more of them, one per line, reloaded on change
  PRESENCE_CUSTOMER_ORIGINS_DEFAULT  any | none, for unlisted customers [any]
  PRESENCE_MAX_PACKET_BYTES      largest Socket.io packet / polling payload [262144]
  PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER  active-users sessions   [50]
  PRESENCE_MAX_SESSIONS_PER_SOURCE   sessions counted per source, cluster [50]
  PRESENCE_MAX_CONNECTIONS_PER_IP    open connections per client address [500]
  PRESENCE_CONNECTS_PER_IP_PER_MIN   new connections per address/min    [600]
  PRESENCE_HTTP_HEADER_TIMEOUT_MS    to send a request's headers        [10000]
  PRESENCE_HTTP_BODY_TIMEOUT_MS      to send and answer a POST/PUT      [10000]
  RUST_LOG                       log filter                              [info]";

impl Cli {
    /// Parses the command line (and the environment), printing the chosen role's effective
    /// settings; exits with clap's message on a bad one.
    pub(crate) fn parse_and_print() -> Self {
        let matches = Self::command().get_matches();
        let cli = Self::from_arg_matches(&matches)
            .unwrap_or_else(|e| e.format(&mut Self::command()).exit());
        cli.print_settings(&matches);
        cli
    }

    fn print_settings(&self, matches: &ArgMatches) {
        let role = match &self.role {
            Role::Standalone { .. } => "standalone",
            Role::Edge { .. } => "edge",
            Role::Aggregator { .. } => "aggregator",
            Role::Persister { .. } => "persister",
            Role::Replay { .. } | Role::Token { .. } => return,
        };
        let settings = crate::settings::effective(&Self::command(), matches);
        eprint!("{}", crate::settings::render(role, &settings));
    }

    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self.role {
            Role::Standalone {
                node,
                log,
                edge,
                aggregator,
                db,
                persister,
            } => roles::standalone(node, log, edge, aggregator, db, persister).await,
            Role::Edge {
                node,
                log,
                edge,
                db,
            } => roles::edge(node, log, edge, db).await,
            Role::Aggregator {
                node,
                log,
                aggregator,
                db,
            } => roles::aggregator(node, log, aggregator, db).await,
            Role::Persister {
                node,
                log,
                db,
                persister,
            } => roles::persister(node, log, db, persister).await,
            Role::Replay {
                log,
                fold,
                range,
                command,
            } => crate::replay::run(&log, &fold, range, command).await,
            Role::Token {
                secret,
                sub,
                gender,
                tenant,
                ttl_secs,
            } => {
                let claims = presence_auth::Claims {
                    sub,
                    exp: presence_events::Millis::now().0 / 1000 + ttl_secs,
                    gender,
                    tenant,
                    ..Default::default()
                };
                let token = presence_auth::sign_hs256(&claims, secret.expose().as_bytes())
                    .context("signing the token")?;
                println!("{token}");
                Ok(())
            }
        }
    }
}
