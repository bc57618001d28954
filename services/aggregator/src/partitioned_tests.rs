//! Folding a partitioned log gives what folding the same log unpartitioned gives: the same
//! changes for every user, the same figures for every customer. Each partition sees its own
//! users' and customers' events (beat batches split, as edges split them) and every clock
//! tick, as each partition's owner writes its own ticks at the same cadence.

use std::collections::BTreeMap;

use presence_events::{
    BeatEntry, ConnId, Event, EventBody, LeaveReason, Millis, NodeId, Partition, Partitions,
    PresenceChange, SessionBeatEntry, SessionId, SetStatus, TabId, TenantId, TenantMetrics,
    Transport, UserId, ViewerClass,
};

use crate::consumer::Fold;

/// A small deterministic generator (no dependency, same sequence everywhere).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn node() -> NodeId {
    NodeId::parse("edge-1").unwrap()
}

/// A few thousand events of 60 users in 2 tenants and 40 tabs of 5 customers, with ticks.
fn workload(seed: u64) -> Vec<Event> {
    let mut rng = Lcg(seed);
    let tenants = [TenantId::default_tenant(), TenantId::parse("acme").unwrap()];
    let customers: Vec<TenantId> = (0..5)
        .map(|i| TenantId::parse(format!("shop{i}")).unwrap())
        .collect();
    let mut conns: BTreeMap<(usize, u64), ConnId> = BTreeMap::new();
    let mut events = Vec::new();
    let mut at = 1_000_000u64;
    for _ in 0..3_000 {
        at += 1 + rng.next(400);
        let tenant = rng.next(2) as usize;
        let u = rng.next(60);
        let user = UserId::parse(format!("u{u}")).unwrap();
        let class = ViewerClass::from_gender(Some(if u.is_multiple_of(2) {
            "female"
        } else {
            "male"
        }));
        let body = match rng.next(10) {
            0 | 1 => {
                let conn = ConnId::new();
                conns.insert((tenant, u), conn);
                EventBody::Join {
                    tenant: tenants[tenant].clone(),
                    user,
                    conn,
                    class,
                }
            }
            2 => match conns.remove(&(tenant, u)) {
                Some(conn) => EventBody::Leave {
                    tenant: tenants[tenant].clone(),
                    user,
                    conn,
                    class,
                    reason: LeaveReason::Client,
                },
                None => EventBody::Tick,
            },
            3 => match conns.get(&(tenant, u)) {
                Some(conn) => EventBody::Status {
                    tenant: tenants[tenant].clone(),
                    user,
                    conn: *conn,
                    class,
                    status: if rng.next(2) == 0 {
                        SetStatus::Live
                    } else {
                        SetStatus::InCall
                    },
                    details: None,
                },
                None => EventBody::MetricsTick,
            },
            4 | 5 => {
                // A batch of beats of several users (of both tenants): split per partition.
                let beating: Vec<((usize, u64), ConnId)> =
                    conns.iter().map(|(k, c)| (*k, *c)).collect();
                let mut beats = Vec::new();
                for ((t, u), conn) in beating {
                    if rng.next(3) != 0 {
                        continue;
                    }
                    let gender = if u.is_multiple_of(2) {
                        "female"
                    } else {
                        "male"
                    };
                    beats.push(BeatEntry {
                        tenant: tenants[t].clone(),
                        user: UserId::parse(format!("u{u}")).unwrap(),
                        conn,
                        class: ViewerClass::from_gender(Some(gender)),
                        at: Millis(at - rng.next(50)),
                    });
                }
                EventBody::Beat { beats }
            }
            6 => EventBody::SessionJoin {
                tenant: customers[rng.next(5) as usize].clone(),
                session: SessionId::parse(format!("s{}", rng.next(20))).unwrap(),
                tab: TabId::parse(format!("t{}", rng.next(40))).unwrap(),
                transport: Transport::Http,
                platform: None,
                source: Some(format!("src-{}", rng.next(3))),
            },
            7 => EventBody::SessionBeat {
                beats: (0..rng.next(8))
                    .map(|_| SessionBeatEntry {
                        tenant: customers[rng.next(5) as usize].clone(),
                        session: SessionId::parse(format!("s{}", rng.next(20))).unwrap(),
                        tab: TabId::parse(format!("t{}", rng.next(40))).unwrap(),
                        at: Millis(at),
                        source: (rng.next(2) == 0).then(|| format!("src-{}", rng.next(3))),
                    })
                    .collect(),
            },
            8 => EventBody::MetricsTick,
            _ => EventBody::Tick,
        };
        events.push(Event::new(node(), Millis(at), body));
    }
    events
}

/// The events of `partition`: its own, its share of each batch, and every tick.
fn route(partitions: Partitions, event: &Event) -> Vec<(Partition, Event)> {
    let with_body = |body: EventBody| Event {
        body,
        ..event.clone()
    };
    match &event.body {
        EventBody::Beat { beats } => partitions
            .split_beats(beats.clone())
            .into_iter()
            .map(|(p, beats)| (p, with_body(EventBody::Beat { beats })))
            .collect(),
        EventBody::SessionBeat { beats } => partitions
            .split_tab_beats(beats.clone())
            .into_iter()
            .map(|(p, beats)| (p, with_body(EventBody::SessionBeat { beats })))
            .collect(),
        EventBody::Tick | EventBody::MetricsTick => {
            partitions.all().map(|p| (p, event.clone())).collect()
        }
        body => vec![(
            partitions
                .of_event(body)
                .expect("single-key events have a partition"),
            event.clone(),
        )],
    }
}

type Outputs = (
    BTreeMap<String, Vec<PresenceChange>>,
    BTreeMap<String, Vec<TenantMetrics>>,
);

fn fresh() -> Fold {
    Fold::new(&presence_fold::Settings {
        heartbeat_timeout_ms: 15_000,
        outage_after_ms: None,
        offline_retention_ms: None,
        session_ttl_ms: 20_000,
        ema_alpha: 0.3,
        sessions_per_source: 2,
        offline_feed_ttl: std::time::Duration::from_secs(60),
    })
}

fn fold_all(partitions: Partitions, events: &[Event]) -> (Outputs, BTreeMap<Partition, Fold>) {
    let mut folds: BTreeMap<Partition, Fold> = BTreeMap::new();
    let (mut changes, mut metrics): Outputs = Default::default();
    for (i, event) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        for (p, event) in route(partitions, event) {
            let fold = folds.entry(p).or_insert_with(fresh);
            for c in fold.presence.apply(seq, &event) {
                changes
                    .entry(format!("{}/{}", c.tenant, c.user))
                    .or_default()
                    .push(c);
            }
            for m in fold.active.apply(seq, &event) {
                metrics.entry(m.tenant.to_string()).or_default().push(m);
            }
        }
    }
    ((changes, metrics), folds)
}

#[test]
fn a_partitioned_fold_gives_the_same_users_and_counts_as_one_fold() {
    for seed in [1, 7, 42] {
        let events = workload(seed);
        let ((one_changes, one_metrics), one) = fold_all(Partitions::one(), &events);
        let whole = &one[&Partition(0)];
        for count in [2, 4, 7] {
            let partitions = Partitions::new(count).unwrap();
            let ((changes, metrics), folds) = fold_all(partitions, &events);
            assert!(one_changes.len() > 50, "the workload changes most users");
            assert_eq!(
                changes, one_changes,
                "changes, seed {seed}, {count} partitions"
            );
            assert_eq!(
                metrics, one_metrics,
                "metrics, seed {seed}, {count} partitions"
            );
            // Every user's state is where its partition is, and equal to the single fold's.
            for (key, presence) in whole.presence.users() {
                let p = partitions.of_user(&key.tenant, &key.user);
                assert_eq!(
                    folds[&p].presence.user(&key.tenant, &key.user),
                    Some(presence),
                    "{key:?}"
                );
            }
            let online: u64 = folds
                .values()
                .map(|f| f.presence.stats().online_users)
                .sum();
            assert_eq!(online, whole.presence.stats().online_users);
            let swept: u64 = folds
                .values()
                .map(|f| f.presence.stats().total_swepts)
                .sum();
            assert_eq!(swept, whole.presence.stats().total_swepts);
        }
    }
}

#[test]
fn ticks_of_an_older_epoch_are_not_folded() {
    let mut fold = fresh();
    let tick = |epoch: Option<u64>| {
        let mut e = Event::new(node(), Millis(5_000), EventBody::Tick);
        e.epoch = epoch;
        e
    };
    assert!(!presence_fold::is_fenced(&mut fold.epoch, &tick(Some(5))));
    assert!(!presence_fold::is_fenced(&mut fold.epoch, &tick(Some(9))));
    assert!(presence_fold::is_fenced(&mut fold.epoch, &tick(Some(5))));
    assert!(!presence_fold::is_fenced(&mut fold.epoch, &tick(None)));
    assert!(!presence_fold::is_fenced(&mut fold.epoch, &tick(Some(9))));
    // Events of users are never fenced: they are the edges', not the owner's.
    let mut join = Event::new(
        node(),
        Millis(5_000),
        EventBody::Join {
            tenant: TenantId::default_tenant(),
            user: UserId::parse("a").unwrap(),
            conn: ConnId::new(),
            class: ViewerClass::other(),
        },
    );
    join.epoch = Some(1);
    assert!(!presence_fold::is_fenced(&mut fold.epoch, &join));
    assert_eq!(fold.epoch, 9);
}
