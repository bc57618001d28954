//! Rate limits of the active-users endpoints (HTTP and WebSocket auth): per client IP and per
//! customer, GCRA limiters from `governor`, with the `X-RateLimit-*` headers on every answer
//! and a `429` naming what blocked the request.
//!
//! Limits are kept per edge: behind a load balancer spreading a client over N edges, the
//! effective limit is up to N times the configured one (see `docs/active-users.md`).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use presence_events::TenantId;
use serde::Serialize;

/// Settings of the rate limits.
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitConfig {
    /// Requests per minute from one client IP (HTTP active-users endpoints and WebSocket auth).
    #[arg(long, env = "PRESENCE_RATE_LIMIT_IP_PER_MIN", default_value_t = NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN))]
    pub ip_per_min: NonZeroU32,
    /// Requests per minute for one customer.
    #[arg(long, env = "PRESENCE_RATE_LIMIT_CUSTOMER_PER_MIN", default_value_t = NonZeroU32::new(5000).unwrap_or(NonZeroU32::MIN))]
    pub customer_per_min: NonZeroU32,
    /// Proxies whose `X-Forwarded-For` is trusted for the client IP: comma-separated
    /// addresses or CIDR ranges (`10.0.0.7,10.244.0.0/16,fd00::/8`).
    #[arg(long, env = "PRESENCE_TRUSTED_PROXIES", value_delimiter = ',', num_args = 0..,
          value_parser = parse_proxy)]
    pub trusted_proxies: Vec<IpNet>,
}

/// An address (one host) or a CIDR range of proxies.
fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range"))
}

/// The trusted proxies, as the edge checks a peer against them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proxies(Vec<IpNet>);

impl Proxies {
    pub(crate) fn new(ranges: &[IpNet]) -> Self {
        Self(ranges.to_vec())
    }

    /// Whether `ip` is one of them.
    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>;

/// What blocked a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BlockedBy {
    Ip,
    Customer,
    /// The address counts its share of sessions for the customer
    /// (`PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER`).
    Sessions,
}

/// The figures of the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateInfo {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// Seconds until the limit is whole again.
    pub(crate) reset_secs: u64,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed(RateInfo),
    Blocked {
        by: BlockedBy,
        info: RateInfo,
        retry_after_secs: u64,
    },
}

/// Per-IP and per-customer limiters.
pub(crate) struct RateLimits<C: Clock = DefaultClock> {
    ip: Keyed<IpAddr, C>,
    customer: Keyed<TenantId, C>,
    clock: C,
    trusted_proxies: Proxies,
}

fn keyed<K: std::hash::Hash + Eq + Clone, C: Clock + Clone>(
    per_min: NonZeroU32,
    clock: &C,
) -> Keyed<K, C> {
    Keyed::<K, C>::new(
        Quota::per_minute(per_min),
        DashMapStateStore::default(),
        clock.clone(),
    )
}

impl RateLimits<DefaultClock> {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub(crate) fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        Self {
            ip: keyed(config.ip_per_min, &clock),
            customer: keyed(config.customer_per_min, &clock),
            clock,
            trusted_proxies: Proxies::new(&config.trusted_proxies),
        }
    }

    /// The client's IP: the peer's, or the nearest untrusted hop of `X-Forwarded-For` when the
    /// peer is a trusted proxy.
    pub(crate) fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip();
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|hop| !self.trusted_proxies.contains(hop))
            .unwrap_or(peer)
    }

    /// Counts one request of `ip` (and `customer`, once known) against the limits.
    pub(crate) fn check(&self, ip: IpAddr, customer: Option<&TenantId>) -> Verdict {
        let by_ip = self.check_one(&self.ip, &ip, BlockedBy::Ip);
        let Verdict::Allowed(ip_info) = by_ip else {
            return by_ip;
        };
        let Some(customer) = customer else {
            return by_ip;
        };
        match self.check_one(&self.customer, customer, BlockedBy::Customer) {
            Verdict::Allowed(c) if c.remaining < ip_info.remaining => Verdict::Allowed(c),
            Verdict::Allowed(_) => by_ip,
            blocked => blocked,
        }
    }

    /// Forgets keys whose limits are whole again (bounded memory).
    pub(crate) fn forget_idle(&self) {
        self.ip.retain_recent();
        self.customer.retain_recent();
    }

    fn check_one<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Keyed<K, C>,
        key: &K,
        by: BlockedBy,
    ) -> Verdict {
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let quota = snapshot.quota();
                let limit = quota.burst_size().get();
                let remaining = snapshot.remaining_burst_capacity();
                let refill = quota.replenish_interval() * (limit - remaining);
                Verdict::Allowed(RateInfo {
                    limit,
                    remaining,
                    reset_secs: ceil_secs(refill),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let limit = not_until.quota().burst_size().get();
                Verdict::Blocked {
                    by,
                    info: RateInfo {
                        limit,
                        remaining: 0,
                        reset_secs: ceil_secs(wait),
                    },
                    retry_after_secs: ceil_secs(wait).max(1),
                }
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The `X-RateLimit-*` headers of `info`.
pub(crate) fn rate_headers(info: RateInfo) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(info.limit),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(info.remaining),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(info.reset_secs),
        ),
    ]
}

/// The `429` answer's body.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TooManyRequests {
    /// `Too Many Requests`.
    error: &'static str,
    /// The limit and when to retry.
    message: String,
    /// Which budget ran out.
    blocked_by: BlockedBy,
}

/// The `429` answer.
pub(crate) fn too_many_requests(by: BlockedBy, info: RateInfo, retry_after_secs: u64) -> Response {
    metrics::counter!("presence_rate_limited_total", "blocked_by" => match by {
        BlockedBy::Ip => "ip",
        BlockedBy::Customer => "customer",
        BlockedBy::Sessions => "sessions",
    })
    .increment(1);
    let who = match by {
        BlockedBy::Ip => "this IP address",
        BlockedBy::Customer | BlockedBy::Sessions => "this customer",
    };
    let body = TooManyRequests {
        error: "Too Many Requests",
        message: format!(
            "rate limit of {} requests per minute exceeded for {who}; retry in {retry_after_secs} s",
            info.limit
        ),
        blocked_by: by,
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        rate_headers(info),
        [(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs),
        )],
        Json(body),
    )
        .into_response()
}

/// The `429` answer to one more session than an address may count for `customer`.
pub(crate) fn too_many_sessions(customer: &TenantId, limit: usize, info: RateInfo) -> Response {
    metrics::counter!("presence_rate_limited_total", "blocked_by" => "sessions").increment(1);
    let body = TooManyRequests {
        error: "Too Many Requests",
        message: format!(
            "this address already counts {limit} sessions for customer {customer}, the most allowed; a session is let go 3 minutes after it was last seen"
        ),
        blocked_by: BlockedBy::Sessions,
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        rate_headers(info),
        [(axum::http::header::RETRY_AFTER, HeaderValue::from(60u32))],
        Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limits(ip: u32, customer: u32, clock: &FakeRelativeClock) -> RateLimits<FakeRelativeClock> {
        let config = RateLimitConfig {
            ip_per_min: NonZeroU32::new(ip).unwrap(),
            customer_per_min: NonZeroU32::new(customer).unwrap(),
            trusted_proxies: vec![parse_proxy("10.0.0.1").unwrap()],
        };
        RateLimits::with_clock(&config, clock.clone())
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let proxies = Proxies::new(&[
            parse_proxy("10.0.0.7").unwrap(),
            parse_proxy(" 10.244.0.0/16").unwrap(),
            parse_proxy("fd00::/8").unwrap(),
        ]);
        for inside in ["10.0.0.7", "10.244.3.9", "::ffff:10.244.0.1", "fd12::1"] {
            assert!(proxies.contains(&ip(inside)), "{inside}");
        }
        for outside in ["10.0.0.8", "10.245.0.1", "fe80::1", "203.0.113.7"] {
            assert!(!proxies.contains(&ip(outside)), "{outside}");
        }
        let e = parse_proxy("10.0.0.0/33").unwrap_err();
        assert!(e.contains("neither an IP address nor a CIDR range"), "{e}");
        assert!(parse_proxy("balancer").is_err());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_101st_request_of_a_minute_is_blocked_and_other_ips_are_not() {
        let clock = FakeRelativeClock::default();
        let limits = limits(100, 5000, &clock);
        for n in 0..100 {
            let Verdict::Allowed(info) = limits.check(ip("1.1.1.1"), None) else {
                panic!("request {n} blocked");
            };
            assert_eq!((info.limit, info.remaining), (100, 99 - n));
        }
        let Verdict::Blocked {
            by,
            info,
            retry_after_secs,
        } = limits.check(ip("1.1.1.1"), None)
        else {
            panic!("101st allowed");
        };
        assert_eq!((by, info.remaining), (BlockedBy::Ip, 0));
        assert!((1..=60).contains(&retry_after_secs));
        assert!(matches!(
            limits.check(ip("2.2.2.2"), None),
            Verdict::Allowed(_)
        ));
        // A minute later the budget is whole again.
        clock.advance(Duration::from_secs(60));
        assert!(matches!(
            limits.check(ip("1.1.1.1"), None),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn the_customer_limit_trips_independently_of_ips() {
        let clock = FakeRelativeClock::default();
        let limits = limits(100, 3, &clock);
        let shop = TenantId::parse("shop").unwrap();
        for n in 0..3 {
            let from = ip(&format!("1.1.1.{n}"));
            assert!(matches!(
                limits.check(from, Some(&shop)),
                Verdict::Allowed(_)
            ));
        }
        assert!(matches!(
            limits.check(ip("9.9.9.9"), Some(&shop)),
            Verdict::Blocked {
                by: BlockedBy::Customer,
                ..
            }
        ));
        let other = TenantId::parse("other").unwrap();
        assert!(matches!(
            limits.check(ip("9.9.9.9"), Some(&other)),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_configured_proxies() {
        let clock = FakeRelativeClock::default();
        let limits = limits(1, 1, &clock);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("7.7.7.7, 10.0.0.1"),
        );
        let proxy: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "8.8.8.8:5000".parse().unwrap();
        assert_eq!(limits.client_ip(proxy, &headers), ip("7.7.7.7"));
        assert_eq!(limits.client_ip(stranger, &headers), ip("8.8.8.8"));
    }
}
