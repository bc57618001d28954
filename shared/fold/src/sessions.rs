//! Active users: a pure fold of the session events into each customer's live count and its
//! exponential moving average, computed once in the cluster on every metrics tick.
//!
//! A customer's count is the number of distinct live sessions (browsers): all tabs of one
//! session count once, whichever edge and transport they came through. A session lives while
//! at least one of its tabs is open (joined, not left) and one of them beat within the session
//! TTL: a browser's tabs elect one to beat for all of them, and when that tab closes another
//! takes over without the session dipping. On each tick `ema = alpha * count + (1 - alpha) * ema`, the first
//! tick's EMA being the count. Ticks are events in the log, so a replay (or a restarted
//! aggregator) continues the very same curve.

use std::collections::{BTreeMap, HashMap};

use presence_events::{
    Event, EventBody, Millis, SCHEMA_VERSION, SessionBeatEntry, SessionId, TabId, TenantId,
    TenantMetrics,
};
use serde::{Deserialize, Serialize};

/// A customer is forgotten once nobody is on its site and its EMA has decayed below this.
const FORGET_BELOW: f64 = 0.005;
/// How long a closed tab is remembered.
const CLOSED_KEPT_MS: u64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Customer {
    /// Session -> tab -> time of the tab's latest sign of life.
    sessions: HashMap<SessionId, HashMap<TabId, Millis>>,
    /// Tabs that left, and when: a beat or join of theirs from before that (late, from
    /// another edge or a request still in flight) must not bring them back.
    #[serde(with = "crate::pairs")]
    closed: HashMap<(SessionId, TabId), Millis>,
    /// Session -> latest sign of life of any of its tabs, including tabs that since left.
    #[serde(default)]
    beaten: HashMap<SessionId, Millis>,
    /// Session -> where its client connected from (`presence_events::source_of`), as the
    /// latest join or beat that said so.
    #[serde(default)]
    sources: HashMap<SessionId, String>,
    ema: Option<f64>,
}

impl Customer {
    /// The live sessions, at most `per_source` of them from any one source (0: all).
    fn counted(&self, per_source: u32) -> u64 {
        if per_source == 0 || self.sources.is_empty() {
            return self.sessions.len() as u64;
        }
        let mut from: HashMap<&str, u32> = HashMap::new();
        let mut count = 0;
        for session in self.sessions.keys() {
            match self.sources.get(session) {
                Some(source) => {
                    let n = from.entry(source.as_str()).or_default();
                    if *n < per_source {
                        *n += 1;
                        count += 1;
                    }
                }
                None => count += 1,
            }
        }
        count
    }
}

/// Every customer's live sessions and EMA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveUsers {
    session_ttl_ms: u64,
    alpha: f64,
    /// Sessions counted from any one source per customer (0: no limit).
    #[serde(default)]
    sessions_per_source: u32,
    /// Ordered, so a tick reports customers in the same order in every replay.
    customers: BTreeMap<TenantId, Customer>,
    last_seq: u64,
}

impl ActiveUsers {
    /// No sessions yet; tabs expire after `session_ttl_ms` without a beat; EMA weight `alpha`.
    pub fn new(session_ttl_ms: u64, alpha: f64) -> Self {
        Self {
            session_ttl_ms,
            alpha,
            sessions_per_source: 0,
            customers: BTreeMap::new(),
            last_seq: 0,
        }
    }

    /// Folds in the event at log sequence `seq`; a metrics tick returns every customer's
    /// metrics. Redelivered events (at or below the last sequence) change nothing.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Vec<TenantMetrics> {
        if seq <= self.last_seq {
            return Vec::new();
        }
        self.last_seq = seq;
        match &event.body {
            EventBody::SessionJoin {
                tenant,
                session,
                tab,
                source,
                ..
            } => self.touch(tenant, session, tab, event.at, source.as_ref()),
            EventBody::SessionBeat { beats } => {
                for SessionBeatEntry {
                    tenant,
                    session,
                    tab,
                    at,
                    source,
                } in beats
                {
                    self.touch(tenant, session, tab, *at, source.as_ref());
                }
            }
            EventBody::SessionLeave {
                tenant,
                session,
                tab,
            } => self.close(tenant, session, tab, event.at),
            EventBody::MetricsTick => return self.tick(seq, event.at),
            _ => {}
        }
        Vec::new()
    }

    /// Applies the current TTL and alpha (a restored snapshot carries the ones it was made with).
    pub fn set_settings(&mut self, session_ttl_ms: u64, alpha: f64) {
        self.session_ttl_ms = session_ttl_ms;
        self.alpha = alpha;
    }

    /// Counts at most `n` sessions of a customer from any one source (0: no limit), so one
    /// machine inventing sessions counts as a few people whichever edges it goes through.
    pub fn set_sessions_per_source(&mut self, n: u32) {
        self.sessions_per_source = n;
    }

    /// The session TTL in force.
    pub fn session_ttl_ms(&self) -> u64 {
        self.session_ttl_ms
    }

    /// The EMA weight in force.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The customer's live session count as of the last tick's bookkeeping (tests, health).
    pub fn sessions(&self, tenant: &TenantId) -> usize {
        self.customers.get(tenant).map_or(0, |c| c.sessions.len())
    }

    fn touch(
        &mut self,
        tenant: &TenantId,
        session: &SessionId,
        tab: &TabId,
        at: Millis,
        source: Option<&String>,
    ) {
        let customer = self.customers.entry(tenant.clone()).or_default();
        let key = (session.clone(), tab.clone());
        if customer.closed.get(&key).is_some_and(|left| at <= *left) {
            return;
        }
        let tabs = customer.sessions.entry(session.clone()).or_default();
        let seen = tabs.entry(tab.clone()).or_insert(at);
        *seen = (*seen).max(at);
        let beaten = customer.beaten.entry(session.clone()).or_insert(at);
        *beaten = (*beaten).max(at);
        if let Some(source) = source {
            customer.sources.insert(session.clone(), source.clone());
        }
    }

    fn close(&mut self, tenant: &TenantId, session: &SessionId, tab: &TabId, at: Millis) {
        let Some(customer) = self.customers.get_mut(tenant) else {
            return;
        };
        customer.closed.insert((session.clone(), tab.clone()), at);
        if let Some(tabs) = customer.sessions.get_mut(session) {
            tabs.remove(tab);
            if tabs.is_empty() {
                customer.sessions.remove(session);
                customer.beaten.remove(session);
                customer.sources.remove(session);
            }
        }
    }

    fn tick(&mut self, seq: u64, now: Millis) -> Vec<TenantMetrics> {
        let ttl = self.session_ttl_ms;
        let alpha = self.alpha;
        let per_source = self.sessions_per_source;
        let mut out = Vec::with_capacity(self.customers.len());
        self.customers.retain(|tenant, customer| {
            let beaten = &mut customer.beaten;
            let sources = &mut customer.sources;
            customer.sessions.retain(|session, tabs| {
                let last = tabs
                    .values()
                    .copied()
                    .chain(beaten.get(session).copied())
                    .max();
                let alive = !tabs.is_empty() && last.is_some_and(|at| now.since(at) < ttl);
                if !alive {
                    beaten.remove(session);
                    sources.remove(session);
                }
                alive
            });
            // A late message arrives within seconds; a minute is a wide margin.
            customer
                .closed
                .retain(|_, left| now.since(*left) < CLOSED_KEPT_MS);
            let count = customer.counted(per_source);
            let mut ema = match customer.ema {
                None => count as f64,
                Some(previous) => alpha * count as f64 + (1.0 - alpha) * previous,
            };
            let forget = count == 0 && ema < FORGET_BELOW;
            if forget {
                ema = 0.0;
            }
            customer.ema = Some(ema);
            out.push(TenantMetrics {
                v: SCHEMA_VERSION,
                tenant: tenant.clone(),
                at: now,
                count,
                ema,
                seq,
                // Stamped by the owner that publishes it.
                epoch: 0,
            });
            !forget
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use presence_events::{NodeId, Transport};

    use super::*;

    const TTL: u64 = 180_000;

    struct Script {
        state: ActiveUsers,
        seq: u64,
    }

    impl Script {
        fn new() -> Self {
            Self {
                state: ActiveUsers::new(TTL, 0.2),
                seq: 0,
            }
        }

        fn apply(&mut self, at: u64, body: EventBody) -> Vec<TenantMetrics> {
            self.seq += 1;
            let event = Event::new(NodeId::parse("edge").unwrap(), Millis(at), body);
            self.state.apply(self.seq, &event)
        }

        fn tick(&mut self, at: u64) -> Vec<(String, u64, f64)> {
            self.apply(at, EventBody::MetricsTick)
                .into_iter()
                .map(|m| (m.tenant.to_string(), m.count, m.ema))
                .collect()
        }
    }

    fn shop(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn join(tenant: &str, session: &str, tab: &str) -> EventBody {
        EventBody::SessionJoin {
            tenant: shop(tenant),
            session: SessionId::parse(session).unwrap(),
            tab: TabId::parse(tab).unwrap(),
            transport: Transport::Websocket,
            platform: None,
            source: None,
        }
    }

    fn leave(tenant: &str, session: &str, tab: &str) -> EventBody {
        EventBody::SessionLeave {
            tenant: shop(tenant),
            session: SessionId::parse(session).unwrap(),
            tab: TabId::parse(tab).unwrap(),
        }
    }

    fn beat(tenant: &str, session: &str, tab: &str, at: u64) -> EventBody {
        EventBody::SessionBeat {
            beats: vec![SessionBeatEntry {
                tenant: shop(tenant),
                session: SessionId::parse(session).unwrap(),
                tab: TabId::parse(tab).unwrap(),
                at: Millis(at),
                source: None,
            }],
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn from(mut body: EventBody, from: &str) -> EventBody {
        match &mut body {
            EventBody::SessionJoin { source, .. } => *source = Some(from.to_owned()),
            EventBody::SessionBeat { beats } => {
                for beat in beats {
                    beat.source = Some(from.to_owned());
                }
            }
            _ => {}
        }
        body
    }

    #[test]
    fn one_source_counts_at_most_its_share_of_sessions_whichever_edges_it_went_through() {
        let mut s = Script::new();
        s.state.set_sessions_per_source(3);
        // One machine invents 10 sessions, through joins and through beats alone.
        for i in 0..6 {
            s.apply(0, from(join("shop", &format!("bot{i}"), "t"), "machine"));
        }
        for i in 6..10 {
            s.apply(0, from(beat("shop", &format!("bot{i}"), "t", 0), "machine"));
        }
        // Two people behind another address, and one whose edge names no source.
        s.apply(0, from(join("shop", "ann", "t"), "office"));
        s.apply(0, from(join("shop", "bob", "t"), "office"));
        s.apply(0, join("shop", "cem", "t"));
        // The machine's sessions on another customer's site are counted there, apart.
        s.apply(0, from(join("blog", "bot0", "t"), "machine"));
        assert_eq!(
            s.tick(5_000),
            [("blog".into(), 1, 1.0), ("shop".into(), 3 + 2 + 1, 6.0)]
        );
        // As the machine's sessions leave, the others still count up to the share.
        for i in 0..7 {
            s.apply(6_000, leave("shop", &format!("bot{i}"), "t"));
        }
        assert_eq!(s.tick(10_000)[1].1, 3 + 2 + 1);
        s.apply(11_000, leave("shop", "bot7", "t"));
        assert_eq!(s.tick(15_000)[1].1, 2 + 2 + 1);
        // With no limit, every session counts.
        s.state.set_sessions_per_source(0);
        for i in 0..6 {
            s.apply(
                16_000,
                from(join("shop", &format!("bot{i}"), "t"), "machine"),
            );
        }
        assert_eq!(s.tick(20_000)[1].1, 8 + 2 + 1);
    }

    #[test]
    fn the_ema_follows_its_formula_exactly_from_the_first_tick() {
        let mut s = Script::new();
        for i in 0..10 {
            s.apply(0, join("shop", &format!("s{i}"), "t"));
        }
        assert_eq!(s.tick(5_000), [("shop".into(), 10, 10.0)]);
        for i in 10..20 {
            s.apply(6_000, join("shop", &format!("s{i}"), "t"));
        }
        let second = s.tick(10_000);
        assert_eq!(second[0].1, 20);
        assert!(close(second[0].2, 12.0), "{second:?}");
        for i in 0..20 {
            s.apply(11_000, leave("shop", &format!("s{i}"), "t"));
        }
        let third = s.tick(15_000);
        assert_eq!(third[0].1, 0);
        assert!(close(third[0].2, 9.6), "{third:?}");
    }

    #[test]
    fn all_tabs_of_one_session_count_once() {
        let mut s = Script::new();
        for tab in ["t1", "t2", "t3"] {
            s.apply(0, join("shop", "browser-1", tab));
        }
        s.apply(0, join("shop", "browser-2", "t1"));
        assert_eq!(s.tick(1_000)[0].1, 2);
        // Closing two of three tabs keeps the session.
        s.apply(2_000, leave("shop", "browser-1", "t1"));
        s.apply(2_000, leave("shop", "browser-1", "t2"));
        assert_eq!(s.tick(3_000)[0].1, 2);
        s.apply(4_000, leave("shop", "browser-1", "t3"));
        assert_eq!(s.tick(5_000)[0].1, 1);
    }

    #[test]
    fn a_session_expires_after_the_ttl_without_a_beat() {
        let mut s = Script::new();
        s.apply(0, join("shop", "quiet", "t"));
        s.apply(0, join("shop", "busy", "t"));
        s.apply(100_000, beat("shop", "busy", "t", 100_000));
        assert_eq!(s.tick(179_999)[0].1, 2);
        assert_eq!(
            s.tick(180_000)[0].1,
            1,
            "the quiet session should have expired"
        );
        assert_eq!(s.tick(279_999)[0].1, 1);
        assert_eq!(s.tick(280_000)[0].1, 0);
    }

    #[test]
    fn one_beating_tab_keeps_every_open_tab_of_its_session() {
        let mut s = Script::new();
        // Three tabs open at 0; only the leader (t1) beats.
        for tab in ["t1", "t2", "t3"] {
            s.apply(0, join("shop", "browser", tab));
        }
        s.apply(170_000, beat("shop", "browser", "t1", 170_000));
        // The leader closes; t2 has not beaten for 200 s but the session beat 30 s ago.
        s.apply(171_000, leave("shop", "browser", "t1"));
        assert_eq!(s.tick(200_000)[0].1, 1, "the followers keep the session");
        // t2 takes over and beats: the session goes on past the old leader's TTL.
        s.apply(201_000, beat("shop", "browser", "t2", 201_000));
        assert_eq!(s.tick(360_000)[0].1, 1);
        // Nobody beats any more: the session ends one TTL after the last beat.
        assert_eq!(s.tick(381_000)[0].1, 0);
    }

    #[test]
    fn a_session_whose_tabs_all_left_ends_at_once_even_if_it_beat_recently() {
        let mut s = Script::new();
        s.apply(0, join("shop", "browser", "t1"));
        s.apply(0, join("shop", "browser", "t2"));
        s.apply(1_000, beat("shop", "browser", "t1", 1_000));
        s.apply(2_000, leave("shop", "browser", "t1"));
        s.apply(2_000, leave("shop", "browser", "t2"));
        assert_eq!(s.tick(3_000)[0].1, 0);
        // A new tab of the same browser starts afresh.
        s.apply(4_000, join("shop", "browser", "t3"));
        assert_eq!(s.tick(5_000)[0].1, 1);
    }

    #[test]
    fn a_late_beat_of_a_tab_that_left_does_not_bring_it_back() {
        let mut s = Script::new();
        s.apply(0, join("shop", "x", "t"));
        s.apply(1_000, leave("shop", "x", "t"));
        // A beat sent before the leave, arriving after it.
        s.apply(1_001, beat("shop", "x", "t", 900));
        assert_eq!(s.tick(2_000)[0].1, 0);
        // A tab that comes back later counts again.
        s.apply(3_000, join("shop", "x", "t"));
        assert_eq!(s.tick(4_000)[0].1, 1);
    }

    #[test]
    fn customers_are_counted_apart() {
        let mut s = Script::new();
        s.apply(0, join("a", "x", "t"));
        s.apply(0, join("b", "x", "t"));
        s.apply(0, join("b", "y", "t"));
        assert_eq!(s.tick(1), [("a".into(), 1, 1.0), ("b".into(), 2, 2.0)]);
    }

    #[test]
    fn an_idle_customer_decays_to_zero_and_is_then_forgotten() {
        let mut s = Script::new();
        s.apply(0, join("shop", "x", "t"));
        assert_eq!(s.tick(1), [("shop".into(), 1, 1.0)]);
        s.apply(2, leave("shop", "x", "t"));
        // 0.8^n falls below 0.005 at the 24th tick, which reports a final 0.
        let mut last = Vec::new();
        for ticks in 1..=24 {
            last = s.tick(10 + ticks);
            assert_eq!(last.len(), 1, "forgotten too early, at tick {ticks}");
        }
        assert_eq!(last, [("shop".into(), 0, 0.0)]);
        assert!(s.tick(100).is_empty());
    }

    #[test]
    fn a_restarted_fold_continues_the_same_curve() {
        // Folding the log again from the start (what a restarted aggregator does) gives the
        // same EMA values, so the curve continues instead of restarting at zero.
        let mut events = Vec::new();
        for i in 0..30u64 {
            events.push(Event::new(
                NodeId::parse("e").unwrap(),
                Millis(i * 1_000),
                join("shop", &format!("s{}", i % 7), &format!("t{}", i % 3)),
            ));
            if i % 5 == 4 {
                events.push(Event::new(
                    NodeId::parse("agg").unwrap(),
                    Millis(i * 1_000 + 1),
                    EventBody::MetricsTick,
                ));
            }
        }
        let fold = |events: &[Event]| {
            let mut state = ActiveUsers::new(TTL, 0.2);
            let out: Vec<TenantMetrics> = events
                .iter()
                .enumerate()
                .flat_map(|(i, e)| state.apply(i as u64 + 1, e))
                .collect();
            (state, out)
        };
        let (live, live_out) = fold(&events);
        let (replayed, replayed_out) = fold(&events);
        assert_eq!(live, replayed);
        assert_eq!(live_out, replayed_out);
        assert!(live_out.last().unwrap().ema > 0.0);
    }
}
