//! The public listener's door: what one client address may hold and open before any HTTP is
//! read. A TCP connection over the address' share of concurrent connections
//! (`PRESENCE_MAX_CONNECTIONS_PER_IP`) or of new connections per minute
//! (`PRESENCE_CONNECTS_PER_IP_PER_MIN`) is answered `429` with a JSON body naming the limit and
//! closed; the balancers in `PRESENCE_TRUSTED_PROXIES` are not limited here (behind them, the
//! balancer is where a client's connections are bounded, and the per-IP limits of the
//! endpoints apply by `X-Forwarded-For`). Every connection then gets
//! `PRESENCE_HTTP_HEADER_TIMEOUT_MS` to send each request's headers (see `serve`).
//!
//! The accounting is pure: a [`Ticket`] is the connection's place and gives it back when
//! dropped (it travels with the socket, through a WebSocket upgrade too); the per-minute
//! budget is a GCRA limiter on an injected clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address holds its share of open connections.
    Connections { limit: u32 },
    /// The address opened its share of connections in the last minute.
    Connects { limit: u32, retry_after_secs: u64 },
}

impl Refusal {
    /// The `reason` label of `presence_connections_refused_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Connections { .. } => "ip_connections",
            Refusal::Connects { .. } => "ip_connects",
        }
    }

    /// The whole HTTP answer written to the refused connection before it is closed.
    pub(crate) fn answer(self) -> Vec<u8> {
        let (code, message, retry) = match self {
            Refusal::Connections { limit } => (
                "too_many_connections",
                format!(
                    "this address holds {limit} open connections, the most allowed; close one first"
                ),
                5,
            ),
            Refusal::Connects {
                limit,
                retry_after_secs,
            } => (
                "too_many_connects",
                format!(
                    "this address opened {limit} connections in the last minute, the most allowed; retry in {retry_after_secs} s"
                ),
                retry_after_secs,
            ),
        };
        let body = serde_json::json!({
            "error": "Too Many Requests",
            "code": code,
            "message": message,
        })
        .to_string();
        format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: {retry}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// The limits of the door; 0 turns one off.
#[derive(Debug, Clone)]
pub(crate) struct DoorLimits {
    pub(crate) connections_per_ip: u32,
    pub(crate) connects_per_ip_per_min: u32,
    /// Not limited (the balancers).
    pub(crate) exempt: crate::active_users::Proxies,
}

type Connects<C> =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Open connections and recent connects per client address.
pub(crate) struct Door<C: Clock = DefaultClock> {
    limits: DoorLimits,
    open: Mutex<HashMap<IpAddr, u32>>,
    connects: Option<Connects<C>>,
    clock: C,
}

/// A connection's place at the door, given back when dropped.
pub(crate) struct Ticket<C: Clock = DefaultClock> {
    door: Option<(Arc<Door<C>>, IpAddr)>,
}

impl<C: Clock> Drop for Ticket<C> {
    fn drop(&mut self) {
        if let Some((door, ip)) = self.door.take() {
            let mut open = door.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

impl Door<DefaultClock> {
    pub(crate) fn new(limits: DoorLimits) -> Arc<Self> {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Door<C> {
    pub(crate) fn with_clock(limits: DoorLimits, clock: C) -> Arc<Self> {
        let connects = NonZeroU32::new(limits.connects_per_ip_per_min)
            .map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock.clone()));
        Arc::new(Self {
            limits,
            open: Mutex::new(HashMap::new()),
            connects,
            clock,
        })
    }

    /// Admits a connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket<C>, Refusal> {
        if self.limits.exempt.contains(&ip) {
            return Ok(Ticket { door: None });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.get(&ip).copied().unwrap_or(0);
        let limit = self.limits.connections_per_ip;
        if limit > 0 && held >= limit {
            return Err(Refusal::Connections { limit });
        }
        if let Some(connects) = &self.connects
            && let Err(not_until) = connects.check_key(&ip)
        {
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(Refusal::Connects {
                limit: self.limits.connects_per_ip_per_min,
                retry_after_secs: wait.as_secs() + 1,
            });
        }
        open.insert(ip, held + 1);
        Ok(Ticket {
            door: Some((self.clone(), ip)),
        })
    }

    /// Forgets the per-minute budgets of addresses that have not connected for a minute.
    pub(crate) fn forget_idle(&self) {
        if let Some(connects) = &self.connects {
            connects.retain_recent();
            connects.shrink_to_fit();
        }
    }

    /// Addresses holding connections now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A connection's socket with its [`Ticket`]: the place is given back when the socket is
/// dropped, after the HTTP connection or the WebSocket that took it over.
pub(crate) struct Admitted<S> {
    stream: S,
    _ticket: Ticket,
}

impl<S> Admitted<S> {
    pub(crate) fn new(stream: S, ticket: Ticket) -> Self {
        Self {
            stream,
            _ticket: ticket,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn door(
        connections: u32,
        connects: u32,
        clock: &FakeRelativeClock,
    ) -> Arc<Door<FakeRelativeClock>> {
        Door::with_clock(
            DoorLimits {
                connections_per_ip: connections,
                connects_per_ip_per_min: connects,
                exempt: crate::active_users::Proxies::new(&["10.0.0.1/32".parse().unwrap()]),
            },
            clock.clone(),
        )
    }

    const A: &str = "192.0.2.1";
    const B: &str = "192.0.2.2";

    #[test]
    fn an_address_holds_at_most_its_share_and_a_closed_connection_gives_its_place_back() {
        let clock = FakeRelativeClock::default();
        let door = door(2, 0, &clock);
        let a = A.parse().unwrap();
        let first = door.admit(a).unwrap();
        let _second = door.admit(a).unwrap();
        assert_eq!(door.admit(a).err(), Some(Refusal::Connections { limit: 2 }));
        // Another address has its own share.
        assert!(door.admit(B.parse().unwrap()).is_ok());
        drop(first);
        assert!(door.admit(a).is_ok());
    }

    #[test]
    fn connects_per_minute_are_budgeted_per_address_and_refill_with_time() {
        let clock = FakeRelativeClock::default();
        let door = door(0, 3, &clock);
        let a = A.parse().unwrap();
        for _ in 0..3 {
            drop(door.admit(a).unwrap());
        }
        let Err(Refusal::Connects {
            limit,
            retry_after_secs,
        }) = door.admit(a)
        else {
            panic!("the fourth connect in a minute is refused")
        };
        assert_eq!(limit, 3);
        assert!((1..=21).contains(&retry_after_secs), "{retry_after_secs}");
        assert!(door.admit(B.parse().unwrap()).is_ok());
        // A third of a minute gives one connect back.
        clock.advance(Duration::from_secs(20));
        assert!(door.admit(a).is_ok());
        assert!(door.admit(a).is_err());
    }

    #[test]
    fn the_balancers_are_not_limited_and_nothing_is_kept_of_closed_addresses() {
        let clock = FakeRelativeClock::default();
        let door = door(1, 1, &clock);
        let proxy = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..50).map(|_| door.admit(proxy).unwrap()).collect();
        assert_eq!(door.addresses(), 0);
        let t = door.admit(A.parse().unwrap()).unwrap();
        assert_eq!(door.addresses(), 1);
        drop(t);
        drop(held);
        assert_eq!(door.addresses(), 0);
    }

    #[test]
    fn a_refusal_is_a_complete_http_answer_with_a_json_body() {
        let text = String::from_utf8(
            Refusal::Connects {
                limit: 600,
                retry_after_secs: 3,
            }
            .answer(),
        )
        .unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(head.contains("retry-after: 3"));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "too_many_connects");
        assert_eq!(Refusal::Connections { limit: 1 }.reason(), "ip_connections");
    }
}
