//! The fold of one partition of the event log, without I/O: presence state ([`state`]),
//! active-user metrics ([`sessions`]), edge leases ([`edges`]), event time on the log's clock
//! ([`event_time`]), and the snapshot of it all that an aggregator saves and restores
//! ([`Fold`]). The aggregator and the replay command fold through it, so a replay re-runs
//! exactly what the live cluster ran.

pub mod edges;
pub mod event_time;
mod pairs;
pub mod sessions;
pub mod state;

use std::time::Duration;

use presence_events::{Event, EventBody};
use serde::{Deserialize, Serialize};

pub use event_time::in_log_time;
pub use sessions::ActiveUsers;
pub use state::PresenceState;

/// The settings a fold runs with. A snapshot carries the ones it was made with; restoring it
/// applies the current ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub heartbeat_timeout_ms: u64,
    /// A partition silent this long was the log being away, not its edges dying (`None`:
    /// never assumed).
    pub outage_after_ms: Option<u64>,
    /// How long an offline user is remembered (`None`: for ever).
    pub offline_retention_ms: Option<u64>,
    pub session_ttl_ms: u64,
    pub ema_alpha: f64,
    /// Sessions a customer's count takes from any one source (0: no limit).
    pub sessions_per_source: u32,
    /// How long an offline change stays in the online stream.
    pub offline_feed_ttl: Duration,
}

/// Everything one partition's log is folded into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    pub presence: PresenceState,
    pub active: ActiveUsers,
    /// The newest owner epoch seen on the partition's clock ticks.
    #[serde(default)]
    pub epoch: u64,
    /// How long an offline change stays in the online stream. A setting; not part of the
    /// state.
    #[serde(skip, default = "default_offline_feed_ttl")]
    pub offline_feed_ttl: Duration,
}

fn default_offline_feed_ttl() -> Duration {
    Duration::from_secs(60)
}

/// Why a saved snapshot was not restored (the partition is then folded from the start of
/// its log, which gives the same state, only later).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("unreadable snapshot: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("the snapshot's state is of sequence {state}, its record says {recorded}")]
    SequenceMismatch { state: u64, recorded: u64 },
}

impl Fold {
    /// An empty fold.
    pub fn new(settings: &Settings) -> Self {
        let mut presence = PresenceState::new(settings.heartbeat_timeout_ms);
        presence.set_outage_after(settings.outage_after_ms);
        presence.set_offline_retention(settings.offline_retention_ms);
        let mut active = ActiveUsers::new(settings.session_ttl_ms, settings.ema_alpha);
        active.set_sessions_per_source(settings.sessions_per_source);
        Self {
            presence,
            active,
            epoch: 0,
            offline_feed_ttl: settings.offline_feed_ttl,
        }
    }

    /// The fold saved as `snapshot` (JSON) at log sequence `seq`, running with `settings`.
    pub fn restore(snapshot: &str, seq: u64, settings: &Settings) -> Result<Self, SnapshotError> {
        let mut fold: Fold = serde_json::from_str(snapshot)?;
        let state = fold.presence.last_seq();
        if state != seq {
            return Err(SnapshotError::SequenceMismatch {
                state,
                recorded: seq,
            });
        }
        fold.presence
            .set_heartbeat_timeout(settings.heartbeat_timeout_ms);
        fold.presence.set_outage_after(settings.outage_after_ms);
        fold.presence
            .set_offline_retention(settings.offline_retention_ms);
        fold.active
            .set_settings(settings.session_ttl_ms, settings.ema_alpha);
        fold.active
            .set_sessions_per_source(settings.sessions_per_source);
        fold.offline_feed_ttl = settings.offline_feed_ttl;
        Ok(fold)
    }
}

/// Whether `event` is a clock tick of a deposed owner: older than the newest epoch the
/// partition's ticks have carried (which it then becomes). Ticks without an epoch are
/// folded. Deterministic on the log, so a replay ignores the same ticks.
pub fn is_fenced(newest_epoch: &mut u64, event: &Event) -> bool {
    if !matches!(event.body, EventBody::Tick | EventBody::MetricsTick) {
        return false;
    }
    match event.epoch {
        Some(epoch) if epoch < *newest_epoch => true,
        Some(epoch) => {
            *newest_epoch = epoch;
            false
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use presence_events::{
        ConnId, EventBody, Millis, NodeId, SessionId, TabId, TenantId, Transport, UserId,
        ViewerClass,
    };

    use super::*;

    fn event(at: u64, body: EventBody) -> Event {
        Event::new(NodeId::parse("n").unwrap(), Millis(at), body)
    }

    fn settings() -> Settings {
        Settings {
            heartbeat_timeout_ms: 15_000,
            outage_after_ms: Some(7_500),
            offline_retention_ms: Some(3_600_000),
            session_ttl_ms: 180_000,
            ema_alpha: 0.2,
            sessions_per_source: 50,
            offline_feed_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_snapshot_restores_the_fold_bit_for_bit_and_folding_continues_identically() {
        let mut fold = Fold::new(&settings());
        let mut events = Vec::new();
        for i in 0..40u64 {
            events.push(event(
                i * 700,
                EventBody::Join {
                    tenant: TenantId::default_tenant(),
                    user: UserId::parse(format!("u{}", i % 9)).unwrap(),
                    conn: ConnId::new(),
                    class: ViewerClass::from_gender(Some("female")),
                },
            ));
            events.push(event(
                i * 700 + 1,
                EventBody::SessionJoin {
                    tenant: TenantId::parse("shop").unwrap(),
                    session: SessionId::parse(format!("s{}", i % 7)).unwrap(),
                    tab: TabId::parse(format!("t{}", i % 3)).unwrap(),
                    transport: Transport::Http,
                    platform: None,
                    source: None,
                },
            ));
            if i % 3 == 0 {
                events.push(event(i * 700 + 2, EventBody::MetricsTick));
                events.push(event(i * 700 + 3, EventBody::Tick));
            }
        }
        let (first, rest) = events.split_at(events.len() / 2);
        let apply = |fold: &mut Fold, from: usize, events: &[Event]| {
            let mut out = Vec::new();
            for (i, e) in events.iter().enumerate() {
                let seq = (from + i + 1) as u64;
                out.extend(
                    fold.presence
                        .apply(seq, e)
                        .into_iter()
                        .map(|c| c.encode().unwrap()),
                );
                out.extend(
                    fold.active
                        .apply(seq, e)
                        .into_iter()
                        .map(|m| m.encode().unwrap()),
                );
            }
            out
        };
        apply(&mut fold, 0, first);
        let snapshot = serde_json::to_string(&fold).unwrap();
        let restored = Fold::restore(&snapshot, fold.presence.last_seq(), &settings()).unwrap();
        assert_eq!(restored, fold);
        let mut live = fold;
        let mut resumed = restored;
        assert_eq!(
            apply(&mut live, first.len(), rest),
            apply(&mut resumed, first.len(), rest)
        );
        assert_eq!(live, resumed);
    }

    #[test]
    fn a_snapshot_is_restored_only_at_its_own_sequence_and_with_the_current_settings() {
        let mut fold = Fold::new(&settings());
        let join = EventBody::SessionJoin {
            tenant: TenantId::parse("shop").unwrap(),
            session: SessionId::parse("s").unwrap(),
            tab: TabId::parse("t").unwrap(),
            transport: Transport::Http,
            platform: None,
            source: None,
        };
        fold.presence.apply(1, &event(10, join.clone()));
        fold.active.apply(1, &event(10, join));
        let snapshot = serde_json::to_string(&fold).unwrap();
        assert!(matches!(
            Fold::restore(&snapshot, 2, &settings()),
            Err(SnapshotError::SequenceMismatch {
                state: 1,
                recorded: 2
            })
        ));
        assert!(matches!(
            Fold::restore("{\"presence\": 1}", 1, &settings()),
            Err(SnapshotError::Unreadable(_))
        ));
        let now = Settings {
            heartbeat_timeout_ms: 9_000,
            session_ttl_ms: 60_000,
            ema_alpha: 0.5,
            offline_feed_ttl: Duration::from_secs(5),
            ..settings()
        };
        let restored = Fold::restore(&snapshot, 1, &now).unwrap();
        assert_eq!(restored.presence.heartbeat_timeout_ms(), 9_000);
        assert_eq!(restored.active.session_ttl_ms(), 60_000);
        assert_eq!(restored.active.alpha(), 0.5);
        assert_eq!(restored.offline_feed_ttl, Duration::from_secs(5));
        assert_eq!(
            restored.active.sessions(&TenantId::parse("shop").unwrap()),
            1
        );
    }
}
