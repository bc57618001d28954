//! How many sessions (browsers) one client address may count for one customer
//! (`PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER`): a script inventing session ids from one
//! machine is counted as that many people at most. A session is held while it joins, beats
//! or keeps its WebSocket, and let go a session TTL after it was last seen. Pure, on the time
//! given.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use presence_events::{Millis, SessionId, TenantId, source_of};

/// The sessions each (address, customer) holds, with when each was last seen.
pub(crate) struct AddressSessions {
    /// 0: no limit.
    limit: usize,
    ttl_ms: u64,
    held: Mutex<HashMap<(IpAddr, TenantId), HashMap<SessionId, Millis>>>,
}

impl AddressSessions {
    pub(crate) fn new(limit: u32, ttl_ms: u64) -> Self {
        Self {
            limit: limit as usize,
            ttl_ms,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Where a session of a client at `ip` comes from, as the aggregators bound it across
    /// edges (`PRESENCE_MAX_SESSIONS_PER_SOURCE`): named only while this cap is on, that is
    /// while the edge sees its clients' own addresses.
    pub(crate) fn source(&self, ip: IpAddr) -> Option<String> {
        (self.limit > 0).then(|| source_of(ip))
    }

    /// Takes (or refreshes) `session` for `ip` and `customer` at `now`; `Err(limit)` when the
    /// address already holds its share of other live sessions of that customer.
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        customer: &TenantId,
        session: &SessionId,
        now: Millis,
    ) -> Result<(), usize> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let sessions = held.entry((ip, customer.clone())).or_default();
        if let Some(seen) = sessions.get_mut(session) {
            *seen = now;
            return Ok(());
        }
        if sessions.len() >= self.limit {
            let ttl = self.ttl_ms;
            sessions.retain(|_, seen| now.since(*seen) < ttl);
            if sessions.len() >= self.limit {
                return Err(self.limit);
            }
        }
        sessions.insert(session.clone(), now);
        Ok(())
    }

    /// Gives back the place of `session` (its tab left).
    pub(crate) fn release(&self, ip: IpAddr, customer: &TenantId, session: &SessionId) {
        if self.limit == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ip, customer.clone());
        if let Some(sessions) = held.get_mut(&key) {
            sessions.remove(session);
            if sessions.is_empty() {
                held.remove(&key);
            }
        }
    }

    /// Lets go of sessions not seen for a TTL, and of addresses left with none.
    pub(crate) fn forget_idle(&self, now: Millis) {
        let ttl = self.ttl_ms;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, sessions| {
            sessions.retain(|_, seen| now.since(*seen) < ttl);
            !sessions.is_empty()
        });
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<SessionId> {
        (0..n)
            .map(|i| SessionId::parse(format!("s-{i}")).unwrap())
            .collect()
    }

    #[test]
    fn an_address_counts_for_a_customer_at_most_its_share_of_live_sessions() {
        let cap = AddressSessions::new(3, 1_000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let shop = TenantId::parse("shop-42").unwrap();
        let s = ids(5);
        for session in &s[..3] {
            assert!(cap.admit(ip, &shop, session, Millis(0)).is_ok());
        }
        assert_eq!(cap.admit(ip, &shop, &s[3], Millis(10)), Err(3));
        // A session already held keeps beating.
        assert!(cap.admit(ip, &shop, &s[0], Millis(600)).is_ok());
        // Another customer, or another address, has its own share.
        let blog = TenantId::parse("blog-7").unwrap();
        assert!(cap.admit(ip, &blog, &s[3], Millis(10)).is_ok());
        assert!(
            cap.admit("192.0.2.2".parse().unwrap(), &shop, &s[3], Millis(10))
                .is_ok()
        );
        // Sessions not seen for a TTL give their place back: s-1 and s-2 at 1,000 ms.
        assert!(cap.admit(ip, &shop, &s[3], Millis(1_000)).is_ok());
        assert!(cap.admit(ip, &shop, &s[4], Millis(1_000)).is_ok());
        assert_eq!(cap.admit(ip, &shop, &s[1], Millis(1_000)), Err(3));
        // A session that left gives its place back at once.
        cap.release(ip, &shop, &s[3]);
        assert!(cap.admit(ip, &shop, &s[1], Millis(1_001)).is_ok());
    }

    #[test]
    fn idle_addresses_are_forgotten_and_zero_means_no_limit() {
        let cap = AddressSessions::new(2, 1_000);
        let shop = TenantId::parse("shop-42").unwrap();
        let s = ids(2);
        cap.admit("192.0.2.1".parse().unwrap(), &shop, &s[0], Millis(0))
            .unwrap();
        cap.admit("192.0.2.2".parse().unwrap(), &shop, &s[1], Millis(500))
            .unwrap();
        cap.forget_idle(Millis(1_200));
        assert_eq!(cap.addresses(), 1);
        cap.forget_idle(Millis(1_600));
        assert_eq!(cap.addresses(), 0);
        let open = AddressSessions::new(0, 1_000);
        for session in ids(100) {
            assert!(
                open.admit("192.0.2.1".parse().unwrap(), &shop, &session, Millis(0))
                    .is_ok()
            );
        }
        assert_eq!(open.addresses(), 0);
    }
}
