//! The edge's view of who is online: a projection of the online stream, answering
//! `presence:query` and the HTTP reads. Built at start-up from the online stream's last
//! message per user (the online, and those gone offline within its time to live), then kept
//! current by the fan-out. Its memory follows the users online: an offline user is kept in a
//! bounded cache of the recently gone ([`GONE_CACHE`]); older ones are answered from
//! PostgreSQL's projection when there is one (batched), else read as never seen.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use presence_events::{
    Details, Millis, PresenceChange, Status, TenantId, UserId, UserKey, ViewerClass, format_rfc3339,
};
use presence_store::Store;

use super::VisibilityPolicy;
use crate::wire::{PresenceUpdate, TenantPresence};

/// Offline users kept in memory (the most recently gone): about 2.5 MB.
pub(crate) const GONE_CACHE: usize = 10_000;

#[derive(Debug, Clone)]
struct Entry {
    class: ViewerClass,
    status: Status,
    online: bool,
    last_seen: Option<Millis>,
    details: Option<Details>,
    seq: u64,
}

impl Entry {
    /// What clients are told of `user`, whose entry this is.
    fn presence_of(&self, user: UserId) -> PresenceUpdate {
        PresenceUpdate {
            user_id: user,
            status: self.status,
            online: self.online,
            last_seen: self.last_seen.map(format_rfc3339),
            details: self.details.clone(),
        }
    }
}

/// The online, and the recently gone (bounded).
#[derive(Default)]
struct Known {
    online: HashMap<UserKey, Entry>,
    gone: HashMap<UserKey, Entry>,
    /// Who went offline, oldest first, with the sequence of that change (an entry replaced
    /// since is not evicted by its old place in the queue).
    gone_order: VecDeque<(UserKey, u64)>,
}

impl Known {
    fn get(&self, key: &UserKey) -> Option<&Entry> {
        self.online.get(key).or_else(|| self.gone.get(key))
    }
}

/// Who is online as this edge knows it, and where to ask about the others.
pub(crate) struct PresenceView {
    users: RwLock<Known>,
    /// Offline users kept at most.
    gone_capacity: usize,
    /// PostgreSQL's projection, for users the view does not hold.
    history: Option<Store>,
}

impl Default for PresenceView {
    fn default() -> Self {
        Self::new(None, GONE_CACHE)
    }
}

impl PresenceView {
    /// A view keeping at most `gone_capacity` offline users, answering older ones from
    /// `history`.
    pub(crate) fn new(history: Option<Store>, gone_capacity: usize) -> Self {
        Self {
            users: RwLock::default(),
            gone_capacity,
            history,
        }
    }

    /// Takes in a change; returns `false` (and changes nothing) if it is not newer than what
    /// is known, as after a resubscription.
    pub(crate) fn apply(&self, change: &PresenceChange) -> bool {
        let key = UserKey {
            tenant: change.tenant.clone(),
            user: change.user.clone(),
        };
        let mut known = self.users.write().unwrap_or_else(|e| e.into_inner());
        if known.get(&key).is_some_and(|k| k.seq >= change.seq) {
            return false;
        }
        let entry = Entry {
            class: change.class.clone(),
            status: change.status,
            online: change.online,
            last_seen: change.last_seen,
            details: change.details.clone(),
            seq: change.seq,
        };
        if change.online {
            known.gone.remove(&key);
            known.online.insert(key, entry);
        } else {
            known.online.remove(&key);
            known.gone_order.push_back((key.clone(), change.seq));
            known.gone.insert(key, entry);
            while known.gone.len() > self.gone_capacity {
                let Some((oldest, seq)) = known.gone_order.pop_front() else {
                    break;
                };
                if known.gone.get(&oldest).is_some_and(|e| e.seq == seq) {
                    known.gone.remove(&oldest);
                }
            }
            // Stale places (users back online, or gone again since) are dropped as they
            // reach the front; the queue stays within twice the cache.
            while known.gone_order.len() > 2 * self.gone_capacity.max(1) {
                known.gone_order.pop_front();
            }
        }
        // A crowd that has left gives its room back.
        if known.online.capacity() > 4 * known.online.len() + 1024 {
            let len = known.online.len();
            known.online.shrink_to(2 * len);
        }
        true
    }

    /// Users held: (online, recently gone).
    pub(crate) fn held(&self) -> (usize, usize) {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        (known.online.len(), known.gone.len())
    }

    /// The presence of `users` in `tenant` as a viewer of class `viewer` may see it, from
    /// the view alone; `None` for users it does not hold.
    fn answers_held(
        &self,
        policy: &VisibilityPolicy,
        viewer: &ViewerClass,
        tenant: &TenantId,
        users: &[UserId],
    ) -> Vec<Option<PresenceUpdate>> {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .iter()
            .map(|user| {
                let key = UserKey {
                    tenant: tenant.clone(),
                    user: user.clone(),
                };
                known.get(&key).map(|entry| {
                    if policy.can_see(viewer, &entry.class) {
                        entry.presence_of(key.user)
                    } else {
                        PresenceUpdate::unknown(key.user)
                    }
                })
            })
            .collect()
    }

    /// The presence of `users` in `tenant` as a viewer of class `viewer` may see it: from the
    /// view, and for the users it does not hold (offline for longer than it keeps them) from
    /// PostgreSQL in one query. A user nobody knows, or the viewer may not see, reads as a
    /// never-seen offline user.
    pub(crate) async fn presence_for(
        &self,
        policy: &VisibilityPolicy,
        viewer: &ViewerClass,
        tenant: &TenantId,
        users: Vec<UserId>,
    ) -> Vec<PresenceUpdate> {
        let answers = self.answers_held(policy, viewer, tenant, &users);
        let missing: Vec<UserId> = users
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .map(|(u, _)| u.clone())
            .collect();
        let mut rows = HashMap::new();
        if let Some(store) = self.history.as_ref().filter(|_| !missing.is_empty()) {
            metrics::counter!("presence_history_lookups_total").increment(missing.len() as u64);
            match store.rows_of(tenant, &missing).await {
                Ok(found) => rows.extend(found.into_iter().map(|r| (r.user.clone(), r))),
                Err(e) => {
                    metrics::counter!("presence_history_lookup_failures_total").increment(1);
                    tracing::warn!(error = %e, "cannot read the presence of offline users; answering them as never seen");
                }
            }
        }
        users
            .into_iter()
            .zip(answers)
            .map(|(user, answer)| match answer {
                Some(answer) => answer,
                None => match rows.get(&user) {
                    // The view holds everyone online: a row is of a user gone offline.
                    Some(row)
                        if policy.can_see(viewer, &ViewerClass::from_gender(Some(&row.class))) =>
                    {
                        PresenceUpdate {
                            user_id: user,
                            status: Status::Offline,
                            online: false,
                            last_seen: row.last_seen.map(format_rfc3339),
                            details: None,
                        }
                    }
                    _ => PresenceUpdate::unknown(user),
                },
            })
            .collect()
    }

    /// Online users of `tenant` a viewer of class `viewer` may see, by user id, after `after`.
    pub(crate) fn online_visible(
        &self,
        policy: &VisibilityPolicy,
        viewer: &ViewerClass,
        tenant: &TenantId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Vec<PresenceUpdate> {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        let mut visible: Vec<(&UserKey, &Entry)> = known
            .online
            .iter()
            .filter(|(k, e)| {
                e.online
                    && &k.tenant == tenant
                    && after.is_none_or(|a| &k.user > a)
                    && policy.can_see(viewer, &e.class)
            })
            .collect();
        visible.sort_unstable_by(|a, b| a.0.user.cmp(&b.0.user));
        visible
            .into_iter()
            .take(limit)
            .map(|(k, e)| e.presence_of(k.user.clone()))
            .collect()
    }

    /// Every online user with their status (for comparing with the database).
    pub(crate) fn online_users_with_status(&self) -> Vec<(UserKey, Status)> {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        known
            .online
            .iter()
            .map(|(k, e)| (k.clone(), e.status))
            .collect()
    }

    /// How many users are online, and the first `limit` of them by tenant and user id.
    pub(crate) fn online_page(&self, limit: usize) -> (usize, Vec<TenantPresence>) {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        let mut online: Vec<(&UserKey, &Entry)> = known.online.iter().collect();
        let total = online.len();
        // Only the page is sorted: the read lock is held here, and fan-out waits for it.
        if online.len() > limit {
            online.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            online.truncate(limit);
        }
        online.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let page = online
            .into_iter()
            .take(limit)
            .map(|(k, e)| TenantPresence {
                tenant: k.tenant.clone(),
                presence: e.presence_of(k.user.clone()),
            })
            .collect();
        (total, page)
    }

    /// Whether the user is known and online.
    pub(crate) fn is_online(&self, tenant: &TenantId, user: &UserId) -> bool {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        known.online.contains_key(&UserKey {
            tenant: tenant.clone(),
            user: user.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use presence_events::{Cause, SCHEMA_VERSION};

    use super::*;

    fn change(user: &str, class: &str, online: bool, seq: u64) -> PresenceChange {
        PresenceChange {
            v: SCHEMA_VERSION,
            tenant: TenantId::default_tenant(),
            user: UserId::parse(user).unwrap(),
            class: ViewerClass::from_gender(Some(class)),
            status: if online {
                Status::Online
            } else {
                Status::Offline
            },
            online,
            last_seen: Some(Millis(1_000)),
            details: None,
            cause: if online { Cause::Join } else { Cause::Leave },
            at: Millis(1_000),
            seq,
            epoch: 0,
        }
    }

    #[test]
    fn older_changes_never_overwrite_newer_ones() {
        let view = PresenceView::default();
        assert!(view.apply(&change("ayse", "female", false, 5)));
        assert!(!view.apply(&change("ayse", "female", true, 4)));
        assert!(view.online_users_with_status().is_empty());
    }

    #[tokio::test]
    async fn queries_apply_visibility_and_hide_what_a_viewer_may_not_see() {
        let view = PresenceView::default();
        view.apply(&change("ali", "male", true, 1));
        view.apply(&change("ayse", "female", true, 2));
        let policy = VisibilityPolicy::default();
        let ask = async |viewer: &str| {
            view.presence_for(
                &policy,
                &ViewerClass::from_gender(Some(viewer)),
                &TenantId::default_tenant(),
                vec![
                    UserId::parse("ali").unwrap(),
                    UserId::parse("ayse").unwrap(),
                    UserId::parse("nobody").unwrap(),
                ],
            )
            .await
            .into_iter()
            .map(|p| p.online)
            .collect::<Vec<_>>()
        };
        assert_eq!(ask("male").await, [false, true, false]);
        assert_eq!(ask("female").await, [true, true, false]);
    }

    #[tokio::test]
    async fn tenants_do_not_see_each_other() {
        let view = PresenceView::default();
        view.apply(&change("ayse", "female", true, 1));
        let other_tenant = TenantId::parse("shop-1").unwrap();
        let answer = view
            .presence_for(
                &VisibilityPolicy::default(),
                &ViewerClass::other(),
                &other_tenant,
                vec![UserId::parse("ayse").unwrap()],
            )
            .await;
        assert!(!answer[0].online);
    }

    #[tokio::test]
    async fn offline_users_are_kept_up_to_the_cache_then_read_as_never_seen_without_a_database() {
        let view = PresenceView::new(None, 2);
        for (i, user) in ["a", "b", "c"].iter().enumerate() {
            let seq = i as u64 * 2 + 1;
            view.apply(&change(user, "female", true, seq));
            view.apply(&change(user, "female", false, seq + 1));
        }
        assert_eq!(view.held(), (0, 2));
        let answers = view
            .presence_for(
                &VisibilityPolicy::default(),
                &ViewerClass::other(),
                &TenantId::default_tenant(),
                ["a", "b", "c"]
                    .iter()
                    .map(|u| UserId::parse(*u).unwrap())
                    .collect(),
            )
            .await;
        let last_seen: Vec<bool> = answers.iter().map(|a| a.last_seen.is_some()).collect();
        // The oldest gone ("a") was evicted; "b" and "c" still have their lastSeen.
        assert_eq!(last_seen, [false, true, true]);
        // Coming back moves a user out of the cache; an old change cannot undo that.
        view.apply(&change("b", "female", true, 10));
        assert_eq!(view.held(), (1, 1));
        assert!(!view.apply(&change("b", "female", false, 4)));
        assert!(view.is_online(&TenantId::default_tenant(), &UserId::parse("b").unwrap()));
    }
}
