//! What the coordinator and the workers agree on: clocks, who the users are, the ramp
//! schedule and the record of a connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Wall-clock microseconds since the epoch: comparable across processes.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Client kinds, as indexes of per-kind counters.
pub(crate) const SIO: usize = 0;
/// Active-users WebSocket clients.
pub(crate) const ACTIVE: usize = 1;
/// Active-users HTTP clients.
pub(crate) const HTTP: usize = 2;
/// Names of the kinds, by index.
pub(crate) const KINDS: [&str; 3] = ["socketio", "active_ws", "http"];
/// One value for each client kind, indexed by [`SIO`], [`ACTIVE`], [`HTTP`].
pub(crate) type PerKind<T> = [T; KINDS.len()];

/// The simulated users of one run: every attribute is a function of the user's number, so
/// all processes agree without talking.
#[derive(Debug, Clone)]
pub(crate) struct Population {
    /// The run's id, the prefix of every id (so runs against one server never mix).
    pub(crate) run: String,
    pub(crate) users: u32,
    female_per_10k: u64,
    silent_per_10k: u64,
}

impl Population {
    pub(crate) fn new(run: &str, users: u32, female_percent: f64, silent_percent: f64) -> Self {
        Self {
            run: run.to_owned(),
            users,
            female_per_10k: (female_percent * 100.0).round() as u64,
            silent_per_10k: (silent_percent * 100.0).round() as u64,
        }
    }

    /// A fresh run id.
    pub(crate) fn new_run_id() -> String {
        let id = uuid::Uuid::now_v7().simple().to_string();
        format!("b{}", &id[id.len() - 8..])
    }

    pub(crate) fn user_id(&self, u: u32) -> String {
        format!("{}u{u}", self.run)
    }

    pub(crate) fn observer_id(&self, i: u32) -> String {
        format!("{}o{i}", self.run)
    }

    /// The number of a simulated user from its id (`None` for anyone else).
    pub(crate) fn parse_user(&self, id: &str) -> Option<u32> {
        id.strip_prefix(self.run.as_str())?
            .strip_prefix('u')?
            .parse()
            .ok()
            .filter(|u| *u < self.users)
    }

    pub(crate) fn female(&self, u: u32) -> bool {
        mix(u64::from(u) ^ 0xfe3a_1e00) % 10_000 < self.female_per_10k
    }

    pub(crate) fn gender(&self, u: u32) -> &'static str {
        if self.female(u) { "female" } else { "male" }
    }

    pub(crate) fn silent(&self, u: u32) -> bool {
        mix(u64::from(u) ^ 0x0005_11e7) % 10_000 < self.silent_per_10k
    }

    /// Customer, session and tab of active-users client `i` of `kind`.
    pub(crate) fn tab(&self, kind: usize, i: u32, customers: u32) -> Value {
        let prefix = if kind == HTTP { "h" } else { "w" };
        json!({
            "customerId": format!("{}c{}", self.run, i % customers.max(1)),
            "sessionId": format!("{}{prefix}{i}", self.run),
            "tabId": format!("t{i}"),
            "platform": "web",
        })
    }
}

/// A token for `sub` of `gender`, valid for a day.
pub(crate) fn token(secret: &str, sub: String, gender: &str) -> anyhow::Result<String> {
    let claims = presence_auth::Claims {
        sub,
        exp: presence_e2e::now_secs() + 24 * 3600,
        gender: Some(gender.to_owned()),
        ..Default::default()
    };
    presence_auth::sign_hs256(&claims, secret.as_bytes()).context("signing a token")
}

/// The splitmix64 finalizer: a well-mixed 64-bit function of `x`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A small pseudo-random generator (splitmix64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (mix(self.0) % n.max(1) as u64) as usize
    }
}

/// The ramp: `total` connections at `rate` per second overall; each client kind ramps at its
/// share of the rate, so all kinds finish together. Item `i` of a kind with `of` items
/// starts this long after the ramp began.
pub(crate) fn slot(i: u64, of: u64, total: u64, rate: f64) -> Duration {
    if of == 0 {
        return Duration::ZERO;
    }
    let kind_rate = rate * of as f64 / total.max(1) as f64;
    Duration::from_secs_f64(i as f64 / kind_rate)
}

/// How a connection ended (its code in a [`ConnRecord`] on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub(crate) enum End {
    /// Still open (or never opened).
    Open = 0,
    /// Closed by the client while churning.
    Leave = 1,
    /// Closed by the client at the end of the run.
    Close = 2,
    /// Closed by the server, or broken.
    Drop = 3,
}

impl From<End> for u8 {
    fn from(end: End) -> u8 {
        end as u8
    }
}

impl TryFrom<u8> for End {
    type Error = String;

    fn try_from(code: u8) -> Result<Self, String> {
        match code {
            0 => Ok(End::Open),
            1 => Ok(End::Leave),
            2 => Ok(End::Close),
            3 => Ok(End::Drop),
            _ => Err(format!("no connection end has the code {code}")),
        }
    }
}

/// What a worker logs about one Socket.io connection attempt; on the wire, the array
/// `[user, start_us, connected_us, end_us, end]` (a worker sends thousands of them).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(from = "(u32, u64, u64, u64, End)", into = "(u32, u64, u64, u64, End)")]
pub(crate) struct ConnRecord {
    pub(crate) user: u32,
    /// The connect started (TCP).
    pub(crate) start_us: u64,
    /// The Socket.IO CONNECT arrived; 0 if the attempt failed.
    pub(crate) connected_us: u64,
    /// The client closed it, or noticed it closed; 0 while open.
    pub(crate) end_us: u64,
    pub(crate) end: End,
}

impl ConnRecord {
    pub(crate) fn ok(&self) -> bool {
        self.connected_us != 0
    }
}

impl From<(u32, u64, u64, u64, End)> for ConnRecord {
    fn from((user, start_us, connected_us, end_us, end): (u32, u64, u64, u64, End)) -> Self {
        Self {
            user,
            start_us,
            connected_us,
            end_us,
            end,
        }
    }
}

impl From<ConnRecord> for (u32, u64, u64, u64, End) {
    fn from(c: ConnRecord) -> Self {
        (c.user, c.start_us, c.connected_us, c.end_us, c.end)
    }
}
