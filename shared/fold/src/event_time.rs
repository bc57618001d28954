//! Event time from one clock: the log's. An event's own `at` (and the `at` of each beat in a
//! batch) is stamped by the machine that wrote it; two machines' clocks may be seconds or
//! minutes apart. Before an event is folded its times are moved onto the time the log stored
//! it with (JetStream's, one clock for the whole cluster), so sweeps, `lastSeen` and session
//! expiry never compare one machine's clock with another's. The writer's own times are kept
//! where they are finer than the log's: a batch of heartbeats keeps the spacing between its
//! beats, shifted by how far the writer's clock was from the log's when it wrote the batch.
//! Replays read the same stored times, so they fold to the same state.

use presence_events::{Event, EventBody, Millis};

/// `event` as the fold sees it: stamped at `stored` (the log's time of the message), each
/// batched beat at its own time shifted onto the log's clock and never after `stored`.
pub fn in_log_time(mut event: Event, stored: Millis) -> Event {
    let written = event.at;
    let onto_log = |at: Millis| -> Millis {
        // The beat came `written - at` before its batch was written, by the writer's clock.
        Millis(stored.0.saturating_sub(written.0.saturating_sub(at.0)))
    };
    match &mut event.body {
        EventBody::Beat { beats } => {
            for beat in beats {
                beat.at = onto_log(beat.at);
            }
        }
        EventBody::SessionBeat { beats } => {
            for beat in beats {
                beat.at = onto_log(beat.at);
            }
        }
        _ => {}
    }
    event.at = stored;
    event
}

#[cfg(test)]
mod tests {
    use presence_events::{
        BeatEntry, ConnId, NodeId, SessionBeatEntry, SessionId, TabId, TenantId, UserId,
        ViewerClass,
    };

    use super::*;

    fn beat_batch(written: u64, beats_at: &[u64]) -> Event {
        let beats = beats_at
            .iter()
            .map(|at| BeatEntry {
                tenant: TenantId::default_tenant(),
                user: UserId::parse("ayse").unwrap(),
                conn: ConnId::new(),
                class: ViewerClass::other(),
                at: Millis(*at),
            })
            .collect();
        Event::new(
            NodeId::parse("edge").unwrap(),
            Millis(written),
            EventBody::Beat { beats },
        )
    }

    fn beat_times(event: &Event) -> Vec<u64> {
        match &event.body {
            EventBody::Beat { beats } => beats.iter().map(|b| b.at.0).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn an_event_is_stamped_with_the_time_the_log_stored_it() {
        let join = Event::new(
            NodeId::parse("edge").unwrap(),
            Millis(5_000),
            EventBody::Tick,
        );
        assert_eq!(in_log_time(join, Millis(1_000_000)).at, Millis(1_000_000));
    }

    #[test]
    fn a_writer_clock_behind_or_ahead_keeps_the_spacing_of_its_beats_on_the_log_clock() {
        // Beats 900 and 100 ms before their batch was written; the writer's clock is 30 s
        // behind the log's (and then 30 s ahead): the beats land at the same log times.
        let stored = Millis(100_000);
        for written in [70_000 + 50, 130_000 + 50] {
            let batch = beat_batch(written, &[written - 900, written - 100]);
            let folded = in_log_time(batch, stored);
            assert_eq!(folded.at, stored);
            assert_eq!(beat_times(&folded), [99_100, 99_900]);
        }
    }

    #[test]
    fn a_beat_is_never_later_than_its_batch() {
        // A beat stamped after its batch (impossible, but input) is put at the batch's time.
        let folded = in_log_time(beat_batch(10_000, &[12_000]), Millis(50_000));
        assert_eq!(beat_times(&folded), [50_000]);
    }

    #[test]
    fn tab_beats_move_onto_the_log_clock_too() {
        let beats = vec![SessionBeatEntry {
            tenant: TenantId::parse("shop").unwrap(),
            session: SessionId::parse("s").unwrap(),
            tab: TabId::parse("t").unwrap(),
            at: Millis(9_000),
            source: None,
        }];
        let batch = Event::new(
            NodeId::parse("edge").unwrap(),
            Millis(10_000),
            EventBody::SessionBeat { beats },
        );
        let folded = in_log_time(batch, Millis(500_000));
        let EventBody::SessionBeat { beats } = folded.body else {
            panic!("not a session beat");
        };
        assert_eq!(beats[0].at, Millis(499_000));
    }
}
