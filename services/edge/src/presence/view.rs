//! The edge's view of everyone's presence: a projection of the changes stream, answering
//! `presence:query` without a round trip. Rebuilt at start-up from the last change of every
//! user (the changes stream keeps one per user), then kept current by the fan-out.

use std::collections::HashMap;
use std::sync::RwLock;

use presence_events::{
    Details, Millis, PresenceChange, Status, TenantId, UserId, UserKey, ViewerClass, format_rfc3339,
};

use super::VisibilityPolicy;
use crate::wire::{PresenceUpdate, TenantPresence};

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

/// Everyone's presence as this edge knows it.
#[derive(Default)]
pub(crate) struct PresenceView {
    users: RwLock<HashMap<UserKey, Entry>>,
}

impl PresenceView {
    /// Takes in a change; returns `false` (and changes nothing) if it is not newer than what
    /// is known, as after a resubscription.
    pub(crate) fn apply(&self, change: &PresenceChange) -> bool {
        let key = UserKey {
            tenant: change.tenant.clone(),
            user: change.user.clone(),
        };
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if users.get(&key).is_some_and(|known| known.seq >= change.seq) {
            return false;
        }
        users.insert(
            key,
            Entry {
                class: change.class.clone(),
                status: change.status,
                online: change.online,
                last_seen: change.last_seen,
                details: change.details.clone(),
                seq: change.seq,
            },
        );
        true
    }

    /// The presence of `users` in `tenant` as a viewer of class `viewer` may see it.
    pub(crate) fn presence_for(
        &self,
        policy: &VisibilityPolicy,
        viewer: &ViewerClass,
        tenant: &TenantId,
        users: Vec<UserId>,
    ) -> Vec<PresenceUpdate> {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .into_iter()
            .map(|user| {
                let key = UserKey {
                    tenant: tenant.clone(),
                    user,
                };
                match known.get(&key) {
                    Some(entry) if policy.can_see(viewer, &entry.class) => {
                        entry.presence_of(key.user)
                    }
                    _ => PresenceUpdate::unknown(key.user),
                }
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
            .iter()
            .filter(|(_, e)| e.online)
            .map(|(k, e)| (k.clone(), e.status))
            .collect()
    }

    /// How many users are online, and the first `limit` of them by tenant and user id.
    pub(crate) fn online_page(&self, limit: usize) -> (usize, Vec<TenantPresence>) {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        let mut online: Vec<(&UserKey, &Entry)> = known.iter().filter(|(_, e)| e.online).collect();
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
        known
            .get(&UserKey {
                tenant: tenant.clone(),
                user: user.clone(),
            })
            .is_some_and(|e| e.online)
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

    #[test]
    fn queries_apply_visibility_and_hide_what_a_viewer_may_not_see() {
        let view = PresenceView::default();
        view.apply(&change("ali", "male", true, 1));
        view.apply(&change("ayse", "female", true, 2));
        let policy = VisibilityPolicy::default();
        let ask = |viewer: &str| {
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
            .into_iter()
            .map(|p| p.online)
            .collect::<Vec<_>>()
        };
        assert_eq!(ask("male"), [false, true, false]);
        assert_eq!(ask("female"), [true, true, false]);
    }

    #[test]
    fn tenants_do_not_see_each_other() {
        let view = PresenceView::default();
        view.apply(&change("ayse", "female", true, 1));
        let other_tenant = TenantId::parse("shop-1").unwrap();
        let answer = view.presence_for(
            &VisibilityPolicy::default(),
            &ViewerClass::other(),
            &other_tenant,
            vec![UserId::parse("ayse").unwrap()],
        );
        assert!(!answer[0].online);
    }
}
