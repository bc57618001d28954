//! An edge's settings (env vars, with flags as overrides) and what can keep it from starting.

use std::path::PathBuf;

use presence_auth::{KeyError, Verifier};
use presence_config::{Environment, Secret};

use crate::active_users::{OriginPolicy, RateLimitConfig, UnlistedOrigins};
use crate::presence::VisibilityPolicy;

/// JWT signature algorithms accepted (one is pinned per deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC with `JWT_SECRET`.
    #[value(name = "HS256")]
    Hs256,
    /// RSA with the public key in `JWT_PUBLIC_KEY_FILE`.
    #[value(name = "RS256")]
    Rs256,
}

/// Settings of an edge.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeConfig {
    /// Public listener: Socket.io, WebSocket and HTTP.
    #[arg(long, env = "PRESENCE_HTTP_ADDR", default_value = "127.0.0.1:3000")]
    pub http_addr: String,
    /// Shared secret of HS256 tokens.
    #[arg(long, env = "JWT_SECRET", default_value = "", hide_env_values = true)]
    pub jwt_secret: Secret,
    /// Token signature algorithm.
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// PEM file with the RSA public key of RS256 tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// JSON Web Key Set of keys chosen by a token's `kid` (HS256 `oct`, RS256 `RSA`), reloaded
    /// when the file changes: keys rotate without a restart.
    #[arg(long, env = "JWT_KEYS_FILE")]
    pub jwt_keys_file: Option<PathBuf>,
    /// Issuer (`iss`) tokens must name; any when unset.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Audience (`aud`) tokens must name; not checked when unset.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Accept `auth: { userId, gender }` without a token (only with PRESENCE_ENV=development).
    #[arg(long, env = "SOCKET_ALLOW_INSECURE_USERID", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_insecure_userid: bool,
    /// How often the edge appends the heartbeats it received, as one batched message (ms).
    #[arg(long, env = "PRESENCE_BEAT_FLUSH_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub beat_flush_ms: u64,
    /// What keeps a Socket.io connection online: `heartbeat` (its client's `user:heartbeat`
    /// events) or `transport` (an open socket whose client answers the transport's pings;
    /// the edge beats for it, so a background tab whose timers are throttled stays online).
    #[arg(long, env = "PRESENCE_LIVENESS", value_enum, default_value_t = Liveness::Heartbeat)]
    pub liveness: Liveness,
    /// Engine.IO ping interval (ms): how often the edge pings each socket. A socket that does
    /// not answer within the interval plus the ping timeout is closed.
    #[arg(long, env = "PRESENCE_PING_INTERVAL_MS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub ping_interval_ms: u64,
    /// Engine.IO ping timeout (ms): how long a ping waits for its answer.
    #[arg(long, env = "PRESENCE_PING_TIMEOUT_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub ping_timeout_ms: u64,
    /// The edge's lease on its connections (ms): renewed every third of it; when it runs out
    /// (the edge died), the aggregator sweeps all of this edge's connections at once. 0 keeps
    /// no lease: each connection waits for its own heartbeat timeout.
    #[arg(long, env = "PRESENCE_EDGE_LEASE_MS", default_value_t = 2_500, value_parser = parse_edge_lease)]
    pub edge_lease_ms: u64,
    /// Visibility rules: `viewer=seen,seen;viewer=*`.
    #[arg(long, env = "PRESENCE_VISIBILITY_RULES", default_value = crate::presence::visibility::DEFAULT_RULES, value_parser = VisibilityPolicy::parse)]
    pub visibility_rules: VisibilityPolicy,
    /// Time an active-users WebSocket has to send `auth` before it is closed (ms).
    #[arg(long, env = "PRESENCE_WS_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_auth_timeout_ms: u64,
    /// Packets queued per Socket.io connection before updates to it are dropped (a burst of
    /// changes, such as a mass disconnect, queues one packet per change on every viewer).
    /// Slots are allocated as they fill: an idle connection costs the same at any size.
    #[arg(long, env = "PRESENCE_SOCKET_BUFFER", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub socket_buffer: u64,
    /// Largest Socket.io packet a client may send (bytes): a WebSocket message over it closes
    /// the socket, a polling POST whose body is over it is answered 413 `too_large`. It must
    /// hold the largest request a client may make: a `presence:subscribe` of
    /// PRESENCE_MAX_SUBSCRIPTIONS (or a `presence:query` of 500) ids of 128 bytes; the edge
    /// refuses to start otherwise.
    #[arg(long, env = "PRESENCE_MAX_PACKET_BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1_024..=16_777_216))]
    pub max_packet_bytes: u64,
    /// Socket.io connections one user may have open on one edge (tabs and devices); the next
    /// is refused with `connect_error` "too many connections for this user".
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS_PER_USER", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_connections_per_user: u32,
    /// Users one `presence:query` or `POST /api/presence/batch` may name; over it the call
    /// is refused (`too_many` / 400).
    #[arg(long, env = "PRESENCE_MAX_QUERY_IDS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_query_ids: u32,
    /// Users one socket may subscribe to (`presence:subscribe`, subscriptions delivery);
    /// over it the request is refused with `too_many_subscriptions` and the set unchanged.
    #[arg(long, env = "PRESENCE_MAX_SUBSCRIPTIONS", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_subscriptions: u32,
    /// Window of batched delivery (ms): a batch socket gets at most one `presence-updates`
    /// frame per window, with the latest state of each user changed in it.
    #[arg(long, env = "PRESENCE_BATCH_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(5..=10_000))]
    pub batch_ms: u64,
    /// Open connections one client address may hold on this edge (Socket.io, WebSockets, HTTP
    /// keep-alive); the next is answered 429 `too_many_connections` and closed. 0: no limit.
    /// The addresses of PRESENCE_TRUSTED_PROXIES (the balancers) are not limited.
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS_PER_IP", default_value_t = 500)]
    pub max_connections_per_ip: u32,
    /// New connections one client address may open per minute on this edge; over it, 429
    /// `too_many_connects` with `Retry-After`. 0: no limit. Balancers are not limited.
    #[arg(long, env = "PRESENCE_CONNECTS_PER_IP_PER_MIN", default_value_t = 600)]
    pub connects_per_ip_per_min: u32,
    /// Time a client has to send a request's headers (ms): a connection that trickles them
    /// (slowloris) is closed.
    #[arg(long, env = "PRESENCE_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub http_header_timeout_ms: u64,
    /// Time a request with a body (POST, PUT) has to be sent and answered (ms); over it, 408
    /// `request_timeout` and the connection is closed.
    #[arg(long, env = "PRESENCE_HTTP_BODY_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub http_body_timeout_ms: u64,
    /// Origins allowed to call the active-users endpoints, per customer:
    /// `shop-42=https://shop42.com|https://www.shop42.com;shop-7=https://seven.example`. A
    /// listed customer is refused (403 / close 4403 `origin_not_allowed`) to any other origin.
    #[arg(long, env = "PRESENCE_CUSTOMER_ORIGINS", default_value = "")]
    pub customer_origins: String,
    /// A file of more such lists, one `customer=origin|origin` per line (`#` comments),
    /// re-read while the edge runs: a customer it names takes the file's list over
    /// PRESENCE_CUSTOMER_ORIGINS's. A file that does not parse stops the edge at start, and
    /// is ignored (logged, counted) on a reload.
    #[arg(long, env = "PRESENCE_CUSTOMER_ORIGINS_FILE")]
    pub customer_origins_file: Option<PathBuf>,
    /// What a customer missing from PRESENCE_CUSTOMER_ORIGINS accepts: `any` origin, or `none`.
    #[arg(long, env = "PRESENCE_CUSTOMER_ORIGINS_DEFAULT", value_enum, default_value_t = UnlistedOrigins::Any)]
    pub unlisted_origins: UnlistedOrigins,
    /// Sessions (browsers) one client address may count for one customer: a join or beat of
    /// one more is answered 429 `too_many_sessions` (WebSocket: close 4429). A session is held
    /// while seen in the last 3 minutes. 0: no limit.
    #[arg(
        long,
        env = "PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER",
        default_value_t = 50
    )]
    pub max_sessions_per_ip_per_customer: u32,
    /// Rate limits of the active-users endpoints.
    #[command(flatten)]
    pub rate_limits: RateLimitConfig,
}

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The token key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// RS256 without a key file.
    #[error("JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY_FILE")]
    NoPublicKey,
    /// The key file could not be read.
    #[error("cannot read JWT public key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// PRESENCE_MAX_PACKET_BYTES cannot hold the largest request a client may make.
    #[error(
        "PRESENCE_MAX_PACKET_BYTES={given} cannot hold a request of {ids} user ids of 128 bytes; set it to at least {needed}"
    )]
    PacketTooSmall {
        /// The setting.
        given: u64,
        /// The most ids one request may carry.
        ids: u64,
        /// What it must be at least.
        needed: u64,
    },
    /// PRESENCE_CUSTOMER_ORIGINS or its file does not parse.
    #[error("{0}")]
    Origins(String),
    /// The OpenAPI description could not be encoded.
    #[error("cannot encode the OpenAPI description: {0}")]
    Description(#[from] serde_json::Error),
    /// The public listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

impl EdgeConfig {
    /// Checks the settings that depend on each other.
    pub(crate) fn check(&self) -> Result<(), EdgeError> {
        // A user id is at most 128 bytes, quoted and separated: 132 a piece, and the rest of
        // the packet.
        let ids = u64::from(self.max_subscriptions).max(u64::from(self.max_query_ids));
        let needed = ids * 132 + 1_024;
        if self.max_packet_bytes < needed {
            return Err(EdgeError::PacketTooSmall {
                given: self.max_packet_bytes,
                ids,
                needed,
            });
        }
        Ok(())
    }
}

/// What keeps a Socket.io connection online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Liveness {
    /// The client's `user:heartbeat` events, every 5 s (the heartbeat timeout sweeps it).
    Heartbeat,
    /// The socket being open and answering the transport's pings.
    Transport,
}

impl EdgeConfig {
    /// The customers' allowed origins: PRESENCE_CUSTOMER_ORIGINS, then the file's lists.
    pub(crate) fn origins(&self) -> Result<OriginPolicy, EdgeError> {
        let file = match &self.customer_origins_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                EdgeError::Origins(format!(
                    "PRESENCE_CUSTOMER_ORIGINS_FILE {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        OriginPolicy::load(
            &self.customer_origins,
            file.as_deref(),
            self.unlisted_origins,
        )
        .map_err(EdgeError::Origins)
    }

    /// The token verifier of this configuration: the configured key for tokens without a
    /// `kid`, and the keys of `JWT_KEYS_FILE` by `kid`. `None` only where tokens are not
    /// needed (no key at all, in development with insecure user ids allowed).
    pub(crate) fn verifier(&self, environment: Environment) -> Result<Option<Verifier>, EdgeError> {
        let default = match self.jwt_algorithm {
            JwtAlgorithm::Hs256 if !self.jwt_secret.is_set() => None,
            JwtAlgorithm::Hs256 => Some(Verifier::hs256(self.jwt_secret.expose().as_bytes())?),
            JwtAlgorithm::Rs256 => match &self.jwt_public_key_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|source| EdgeError::KeyFile {
                        path: path.clone(),
                        source,
                    })?;
                    Some(Verifier::rs256_pem(&pem)?)
                }
                None if self.jwt_keys_file.is_some() => None,
                None => return Err(EdgeError::NoPublicKey),
            },
        };
        let verifier = match (default, &self.jwt_keys_file) {
            (Some(verifier), _) => verifier,
            (None, Some(_)) => Verifier::keyed_only(),
            (None, None) if self.insecure(environment) => return Ok(None),
            (None, None) => return Err(KeyError::EmptySecret.into()),
        };
        if let Some(path) = &self.jwt_keys_file {
            let jwks = std::fs::read(path).map_err(|source| EdgeError::KeyFile {
                path: path.clone(),
                source,
            })?;
            verifier.replace_keys(&jwks)?;
        }
        Ok(Some(verifier.expecting(
            self.jwt_issuer.as_deref(),
            self.jwt_audience.as_deref(),
        )))
    }

    /// Whether `auth: { userId }` handshakes are accepted: in development, when allowed.
    pub(crate) fn insecure(&self, environment: Environment) -> bool {
        environment == Environment::Development && self.allow_insecure_userid
    }
}

/// An edge lease of 0 (none) or at least 300 ms (renewed every 100 ms).
fn parse_edge_lease(raw: &str) -> Result<u64, String> {
    let ms: u64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of milliseconds"))?;
    if ms != 0 && ms < 300 {
        return Err(format!(
            "an edge lease is 0 (none) or at least 300 ms, got {ms}"
        ));
    }
    Ok(ms)
}
