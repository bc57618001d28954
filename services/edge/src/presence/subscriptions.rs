//! Delivery by interest: which sockets subscribed to which users.
//!
//! A socket connected with `auth: {delivery: "subscriptions"}` joins no audience room; it
//! names the users it shows (`presence:subscribe`) and hears of those only. The index maps
//! each user to the sockets subscribed to it, so a change costs one lookup and one step per
//! subscriber, never a scan of the sockets. Visibility is applied per subscriber as a change
//! is delivered: a user a viewer may not see is never pushed to it.

use std::collections::{HashMap, HashSet};

use presence_events::{TenantId, UserId, UserKey, ViewerClass};
use socketioxide::socket::Sid;

use super::VisibilityPolicy;

/// How `presence:subscribe` changes a socket's set (parsed by `presence_events::api_input`).
pub(crate) use presence_events::api_input::SubscriptionChange as SetChange;

/// A request that would take a socket past its limit: the set is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too_many_subscriptions")]
pub(crate) struct TooMany {
    /// Most users one socket may subscribe to.
    pub(crate) limit: usize,
}

/// One subscriptions socket.
#[derive(Debug)]
struct Subscriber {
    tenant: TenantId,
    class: ViewerClass,
    batch: bool,
    users: HashSet<UserId>,
}

/// The sockets a change goes to, by how they take it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Audience {
    /// One `presence-update` per change.
    pub(crate) each: Vec<Sid>,
    /// Coalesced into `presence-updates` frames.
    pub(crate) batched: Vec<Sid>,
}

/// Which sockets of this edge subscribed to which users.
#[derive(Debug)]
pub(crate) struct SubscriptionIndex {
    limit: usize,
    by_user: HashMap<UserKey, Vec<Sid>>,
    sockets: HashMap<Sid, Subscriber>,
}

impl SubscriptionIndex {
    /// An index allowing at most `limit` users per socket.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            by_user: HashMap::new(),
            sockets: HashMap::new(),
        }
    }

    /// A subscriptions socket of a viewer of `class` in `tenant`, with nothing subscribed yet.
    pub(crate) fn register(&mut self, sid: Sid, tenant: TenantId, class: ViewerClass, batch: bool) {
        self.sockets.insert(
            sid,
            Subscriber {
                tenant,
                class,
                batch,
                users: HashSet::new(),
            },
        );
    }

    /// Changes the set of `sid`; returns the users it now holds that the request named (every
    /// one of the set for a replacement, the added ones for an addition, none for a removal).
    /// A socket that is not registered subscribes to nothing.
    pub(crate) fn update(&mut self, sid: Sid, change: SetChange) -> Result<Vec<UserId>, TooMany> {
        let limit = self.limit;
        let Some(socket) = self.sockets.get_mut(&sid) else {
            return Ok(Vec::new());
        };
        let (add, remove, named): (Vec<UserId>, Vec<UserId>, Vec<UserId>) = match change {
            SetChange::Replace(users) => {
                let wanted: HashSet<UserId> = users.iter().cloned().collect();
                if wanted.len() > limit {
                    return Err(TooMany { limit });
                }
                let remove = socket.users.difference(&wanted).cloned().collect();
                let add = wanted.difference(&socket.users).cloned().collect();
                (add, remove, dedup(users))
            }
            SetChange::Add(users) => {
                let users = dedup(users);
                let new = users.iter().filter(|u| !socket.users.contains(*u)).count();
                if socket.users.len() + new > limit {
                    return Err(TooMany { limit });
                }
                let add = users
                    .iter()
                    .filter(|u| !socket.users.contains(*u))
                    .cloned()
                    .collect();
                (add, Vec::new(), users)
            }
            SetChange::Remove(users) => (Vec::new(), users, Vec::new()),
        };
        let tenant = socket.tenant.clone();
        for user in remove {
            if socket.users.remove(&user) {
                unindex(
                    &mut self.by_user,
                    UserKey {
                        tenant: tenant.clone(),
                        user,
                    },
                    sid,
                );
            }
        }
        for user in add {
            if socket.users.insert(user.clone()) {
                self.by_user
                    .entry(UserKey {
                        tenant: tenant.clone(),
                        user,
                    })
                    .or_default()
                    .push(sid);
            }
        }
        Ok(named)
    }

    /// Whether `sid` subscribed to `user`.
    #[cfg(test)]
    pub(crate) fn holds(&self, sid: Sid, user: &UserId) -> bool {
        self.sockets
            .get(&sid)
            .is_some_and(|s| s.users.contains(user))
    }

    /// The users `sid` subscribed to.
    pub(crate) fn subscribed(&self, sid: Sid) -> Vec<UserId> {
        self.sockets
            .get(&sid)
            .map(|s| s.users.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A socket is gone: its subscriptions with it.
    pub(crate) fn drop_socket(&mut self, sid: Sid) {
        if let Some(socket) = self.sockets.remove(&sid) {
            for user in socket.users {
                unindex(
                    &mut self.by_user,
                    UserKey {
                        tenant: socket.tenant.clone(),
                        user,
                    },
                    sid,
                );
            }
        }
    }

    /// The sockets that subscribed to `key` and may see a user of class `class`.
    pub(crate) fn audience(
        &self,
        key: &UserKey,
        class: &ViewerClass,
        policy: &VisibilityPolicy,
    ) -> Audience {
        let mut audience = Audience::default();
        for sid in self.by_user.get(key).into_iter().flatten() {
            let Some(socket) = self.sockets.get(sid) else {
                continue;
            };
            if !policy.can_see(&socket.class, class) {
                continue;
            }
            if socket.batch {
                audience.batched.push(*sid);
            } else {
                audience.each.push(*sid);
            }
        }
        audience
    }

    /// (subscriptions sockets, subscriptions held) on this edge.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.sockets.len(),
            self.by_user.values().map(Vec::len).sum(),
        )
    }
}

/// The users in the order named, each once.
fn dedup(users: Vec<UserId>) -> Vec<UserId> {
    let mut seen = HashSet::with_capacity(users.len());
    users
        .into_iter()
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

fn unindex(by_user: &mut HashMap<UserKey, Vec<Sid>>, key: UserKey, sid: Sid) {
    if let Some(sockets) = by_user.get_mut(&key) {
        sockets.retain(|s| *s != sid);
        if sockets.is_empty() {
            by_user.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(names: &[&str]) -> Vec<UserId> {
        names.iter().map(|n| UserId::parse(*n).unwrap()).collect()
    }

    fn key(user: &str) -> UserKey {
        UserKey {
            tenant: TenantId::default_tenant(),
            user: UserId::parse(user).unwrap(),
        }
    }

    fn class(c: &str) -> ViewerClass {
        ViewerClass::from_gender(Some(c))
    }

    fn sorted(mut v: Vec<UserId>) -> Vec<String> {
        let mut names: Vec<String> = v.drain(..).map(|u| u.as_str().to_owned()).collect();
        names.sort();
        names
    }

    fn index_with(sid: Sid, viewer: &str, batch: bool) -> SubscriptionIndex {
        let mut index = SubscriptionIndex::new(3);
        index.register(sid, TenantId::default_tenant(), class(viewer), batch);
        index
    }

    #[test]
    fn replace_add_and_remove_change_the_set_and_the_index_together() {
        let sid = Sid::new();
        let mut index = index_with(sid, "female", false);
        let policy = VisibilityPolicy::default();
        assert_eq!(
            sorted(
                index
                    .update(sid, SetChange::Replace(users(&["a", "b", "a"])))
                    .unwrap()
            ),
            ["a", "b"]
        );
        assert_eq!(
            index.audience(&key("a"), &class("male"), &policy).each,
            [sid]
        );
        assert_eq!(
            sorted(
                index
                    .update(sid, SetChange::Add(users(&["b", "c"])))
                    .unwrap()
            ),
            ["b", "c"]
        );
        assert_eq!(sorted(index.subscribed(sid)), ["a", "b", "c"]);
        assert!(
            index
                .update(sid, SetChange::Remove(users(&["a", "zz"])))
                .unwrap()
                .is_empty()
        );
        assert_eq!(sorted(index.subscribed(sid)), ["b", "c"]);
        assert!(
            index
                .audience(&key("a"), &class("male"), &policy)
                .each
                .is_empty()
        );
        // Replacing drops what the new set does not name.
        index
            .update(sid, SetChange::Replace(users(&["d"])))
            .unwrap();
        assert_eq!(sorted(index.subscribed(sid)), ["d"]);
        for gone in ["b", "c"] {
            assert_eq!(
                index.audience(&key(gone), &class("female"), &policy),
                Audience::default()
            );
        }
        assert_eq!(index.counts(), (1, 1));
        index.drop_socket(sid);
        assert_eq!(index.counts(), (0, 0));
        assert!(
            index
                .audience(&key("d"), &class("female"), &policy)
                .each
                .is_empty()
        );
    }

    #[test]
    fn past_the_limit_a_request_is_refused_and_the_set_is_unchanged() {
        let sid = Sid::new();
        let mut index = index_with(sid, "female", false);
        index
            .update(sid, SetChange::Replace(users(&["a", "b"])))
            .unwrap();
        assert_eq!(
            index.update(sid, SetChange::Replace(users(&["a", "b", "c", "d"]))),
            Err(TooMany { limit: 3 })
        );
        assert_eq!(
            index.update(sid, SetChange::Add(users(&["c", "d"]))),
            Err(TooMany { limit: 3 })
        );
        assert_eq!(sorted(index.subscribed(sid)), ["a", "b"]);
        // Names already held do not count twice.
        assert!(
            index
                .update(sid, SetChange::Add(users(&["a", "b", "c"])))
                .is_ok()
        );
        assert_eq!(index.counts(), (1, 3));
    }

    #[test]
    fn a_change_reaches_only_the_subscribers_who_may_see_it_each_in_its_own_way() {
        let policy = VisibilityPolicy::default();
        let (woman, man, batching) = (Sid::new(), Sid::new(), Sid::new());
        let mut index = SubscriptionIndex::new(10);
        let tenant = TenantId::default_tenant();
        index.register(woman, tenant.clone(), class("female"), false);
        index.register(man, tenant.clone(), class("male"), false);
        index.register(batching, tenant.clone(), class("other"), true);
        for sid in [woman, man, batching] {
            index
                .update(sid, SetChange::Replace(users(&["ali", "ayse"])))
                .unwrap();
        }
        // Men see only women: ali's changes are not pushed to the man.
        let ali = index.audience(&key("ali"), &class("male"), &policy);
        assert_eq!((ali.each, ali.batched), (vec![woman], vec![batching]));
        let mut ayse = index.audience(&key("ayse"), &class("female"), &policy).each;
        ayse.sort();
        let mut expected = vec![woman, man];
        expected.sort();
        assert_eq!(ayse, expected);
        // Another tenant's ali is someone else.
        let elsewhere = UserKey {
            tenant: TenantId::parse("shop-1").unwrap(),
            user: UserId::parse("ali").unwrap(),
        };
        assert_eq!(
            index.audience(&elsewhere, &class("male"), &policy),
            Audience::default()
        );
        assert!(index.holds(woman, &UserId::parse("ali").unwrap()));
    }
}
