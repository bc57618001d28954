//! The edge's view of who is online: a projection of the online stream, answering
//! `presence:query` and the HTTP reads. Built at start-up from the online stream's last
//! message per user (the online, and those gone offline within its time to live), then kept
//! current by the fan-out. Its memory follows the users online: an offline user is kept in a
//! bounded cache of the recently gone ([`GONE_CACHE`]); older ones are answered from
//! PostgreSQL's projection when there is one (batched), else read as never seen.
//!
//! Every entry remembers the sequence of the online-stream message it came from (its *feed
//! sequence*, the same on every edge), so a client that reconnects with a [`Cursor`] is told
//! only what changed after it ([`PresenceView::changed_since`]), as long as the view still
//! holds everything after that cursor (see `horizon`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;

use presence_events::{
    Details, Millis, PresenceChange, Status, TenantId, UserId, UserKey, ViewerClass, format_rfc3339,
};
use presence_store::Store;

use super::VisibilityPolicy;
use super::cursor::Cursor;
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
    /// Sequence of the online-stream message this entry came from.
    feed: u64,
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
    /// Every entry held, by feed sequence: what changed after a cursor, without a scan.
    by_feed: BTreeMap<u64, UserKey>,
    /// The view holds every change after this feed sequence: raised to the last message of
    /// the initial load once complete (messages that expired before it are unknown), and
    /// past every entry evicted from the cache of the recently gone.
    horizon: u64,
    /// The newest feed sequence taken in.
    latest: u64,
    /// Whether the initial load is complete (a resubscription later misses nothing).
    completed: bool,
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

    /// Takes in a change, read at `feed` in the online stream; returns `false` (and changes
    /// nothing) if it is not newer than what is known, as after a resubscription.
    pub(crate) fn apply(&self, change: &PresenceChange, feed: u64) -> bool {
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
            feed,
        };
        known.latest = known.latest.max(feed);
        if let Some(before) = known.get(&key).map(|e| e.feed) {
            known.by_feed.remove(&before);
        }
        known.by_feed.insert(feed, key.clone());
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
                if known.gone.get(&oldest).is_some_and(|e| e.seq == seq)
                    && let Some(evicted) = known.gone.remove(&oldest)
                {
                    // A cursor before this change can no longer be answered from here.
                    known.by_feed.remove(&evicted.feed);
                    known.horizon = known.horizon.max(evicted.feed);
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

    /// The view is complete (its initial load taken in): it holds every change after the
    /// newest message read so far, not the ones that expired from the stream before. Only the
    /// first call counts: a resubscription resumes right after the last message taken in.
    pub(crate) fn complete(&self) {
        let mut known = self.users.write().unwrap_or_else(|e| e.into_inner());
        if !known.completed {
            known.completed = true;
            known.horizon = known.horizon.max(known.latest);
        }
    }

    /// A cursor at the newest change taken in.
    pub(crate) fn cursor(&self) -> Cursor {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        Cursor(known.latest)
    }

    /// Cursors at or after this are answered with what changed since them.
    #[cfg(test)]
    pub(crate) fn horizon(&self) -> Cursor {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        Cursor(known.horizon)
    }

    /// The users of `tenant` (among `only`, if given) a viewer of class `viewer` may see whose
    /// presence changed after `since`, with the cursor the answer brings the client to; `None`
    /// if the view no longer holds everything after `since` (the client must take the full
    /// state). Users the viewer may not see are left out.
    pub(crate) fn changed_since(
        &self,
        policy: &VisibilityPolicy,
        viewer: &ViewerClass,
        tenant: &TenantId,
        only: Option<&dyn Fn(&UserId) -> bool>,
        since: Cursor,
    ) -> Option<(Vec<PresenceUpdate>, Cursor)> {
        let known = self.users.read().unwrap_or_else(|e| e.into_inner());
        if since.0 < known.horizon {
            return None;
        }
        let changed = known
            .by_feed
            .range(since.0.saturating_add(1)..)
            .filter(|(_, key)| &key.tenant == tenant && only.is_none_or(|wanted| wanted(&key.user)))
            .filter_map(|(_, key)| {
                let entry = known.get(key)?;
                policy
                    .can_see(viewer, &entry.class)
                    .then(|| entry.presence_of(key.user.clone()))
            })
            .collect();
        Some((changed, Cursor(known.latest)))
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

    /// Feed sequences in the order the test takes changes in.
    fn next_feed() -> u64 {
        static FEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        FEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

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
        assert!(view.apply(&change("ayse", "female", false, 5), next_feed()));
        assert!(!view.apply(&change("ayse", "female", true, 4), next_feed()));
        assert!(view.online_users_with_status().is_empty());
    }

    #[tokio::test]
    async fn queries_apply_visibility_and_hide_what_a_viewer_may_not_see() {
        let view = PresenceView::default();
        view.apply(&change("ali", "male", true, 1), next_feed());
        view.apply(&change("ayse", "female", true, 2), next_feed());
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
        view.apply(&change("ayse", "female", true, 1), next_feed());
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
            view.apply(&change(user, "female", true, seq), next_feed());
            view.apply(&change(user, "female", false, seq + 1), next_feed());
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
        view.apply(&change("b", "female", true, 10), next_feed());
        assert_eq!(view.held(), (1, 1));
        assert!(!view.apply(&change("b", "female", false, 4), next_feed()));
        assert!(view.is_online(&TenantId::default_tenant(), &UserId::parse("b").unwrap()));
    }

    fn ids(updates: &[PresenceUpdate]) -> Vec<(String, bool)> {
        updates
            .iter()
            .map(|u| (u.user_id.as_str().to_owned(), u.online))
            .collect()
    }

    #[test]
    fn a_cursor_answers_exactly_the_users_changed_after_it_once_each_with_their_latest_state() {
        let view = PresenceView::new(None, 100);
        let policy = VisibilityPolicy::default();
        let (tenant, female) = (
            TenantId::default_tenant(),
            ViewerClass::from_gender(Some("female")),
        );
        view.apply(&change("ali", "male", true, 1), 10);
        view.apply(&change("ayse", "female", true, 2), 11);
        view.complete();
        let cursor = view.cursor();
        assert_eq!(cursor, Cursor(11));
        let since = |c: Cursor| view.changed_since(&policy, &female, &tenant, None, c);
        assert_eq!(
            since(cursor).map(|(u, c)| (ids(&u), c)),
            Some((vec![], Cursor(11)))
        );
        // After the cursor: ali left and came back, ayse left, can joined.
        view.apply(&change("ali", "male", false, 3), 12);
        view.apply(&change("ayse", "female", false, 4), 13);
        view.apply(&change("can", "male", true, 5), 14);
        view.apply(&change("ali", "male", true, 6), 15);
        let (changed, to) = since(cursor).unwrap();
        assert_eq!(
            ids(&changed),
            [
                ("ayse".into(), false),
                ("can".into(), true),
                ("ali".into(), true)
            ],
            "in feed order, each once, latest state"
        );
        assert_eq!(to, Cursor(15));
        assert_eq!(ids(&since(Cursor(14)).unwrap().0), [("ali".into(), true)]);
        // A male viewer may only see women: the men's changes are not his to hear of.
        let male = ViewerClass::from_gender(Some("male"));
        let (seen, _) = view
            .changed_since(&policy, &male, &tenant, None, cursor)
            .unwrap();
        assert_eq!(ids(&seen), [("ayse".into(), false)]);
        // Restricted to a subscribed set.
        let only_can = |u: &UserId| u.as_str() == "can";
        let (subscribed, _) = view
            .changed_since(&policy, &female, &tenant, Some(&only_can), cursor)
            .unwrap();
        assert_eq!(ids(&subscribed), [("can".into(), true)]);
        // Another tenant hears nothing of these.
        let other = TenantId::parse("shop-1").unwrap();
        assert!(
            view.changed_since(&policy, &female, &other, None, cursor)
                .unwrap()
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_cursor_from_before_the_view_was_complete_or_before_an_eviction_asks_for_the_full_state() {
        let view = PresenceView::new(None, 1);
        let policy = VisibilityPolicy::default();
        let (tenant, other) = (TenantId::default_tenant(), ViewerClass::other());
        view.apply(&change("a", "female", true, 1), 20);
        view.complete();
        view.apply(&change("z", "female", true, 9), 30);
        view.complete();
        assert_eq!(
            view.horizon(),
            Cursor(20),
            "a resubscription's catch-up misses nothing"
        );
        // Changes that expired from the stream before the load are unknown to it.
        assert!(
            view.changed_since(&policy, &other, &tenant, None, Cursor(19))
                .is_none()
        );
        assert!(
            view.changed_since(&policy, &other, &tenant, None, Cursor(20))
                .is_some()
        );
        view.apply(&change("a", "female", false, 2), 21);
        view.apply(&change("b", "female", true, 3), 22);
        view.apply(&change("b", "female", false, 4), 23);
        // "a" was evicted from the cache of one: a cursor before its departure cannot tell.
        assert_eq!(view.horizon(), Cursor(21));
        assert!(
            view.changed_since(&policy, &other, &tenant, None, Cursor(20))
                .is_none()
        );
        let (changed, _) = view
            .changed_since(&policy, &other, &tenant, None, Cursor(21))
            .unwrap();
        assert_eq!(ids(&changed), [("b".into(), false), ("z".into(), true)]);
    }
}
