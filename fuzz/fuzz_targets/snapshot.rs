//! An aggregator's snapshot of a partition's fold, as read back from the database at start,
//! and the events folded into it afterwards. The input is the snapshot's JSON, then events
//! in their log encoding, each after a NUL byte. A snapshot that restores must fold any event,
//! sweep, and save again to the same fold.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use presence_events::{Event, EventBody, Millis, NodeId};
use presence_fold::{Fold, Settings, in_log_time, is_fenced};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let Some(Ok(snapshot)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let settings = Settings {
        heartbeat_timeout_ms: 15_000,
        outage_after_ms: Some(7_500),
        offline_retention_ms: Some(3_600_000),
        session_ttl_ms: 20_000,
        ema_alpha: 0.3,
        sessions_per_source: 3,
        offline_feed_ttl: Duration::from_secs(60),
    };
    // The record's sequence is the state's own when the saver wrote both.
    let Ok(seq) = serde_json::from_str::<Fold>(snapshot).map(|f| f.presence.last_seq()) else {
        return;
    };
    let Ok(mut fold) = Fold::restore(snapshot, seq, &settings) else {
        return;
    };
    let saved = serde_json::to_string(&fold).expect("a restored fold saves");
    let again = Fold::restore(&saved, seq, &settings).expect("a saved fold restores");
    assert_eq!(again, fold);

    let mut next = seq;
    let mut fold_one = |fold: &mut Fold, event: Event| {
        next = next.saturating_add(1);
        if is_fenced(&mut fold.epoch, &event) {
            fold.presence.skip(next);
            return;
        }
        let stored = fold.presence.log_time(event.at);
        let event = in_log_time(event, stored);
        for metrics in fold.active.apply(next, &event) {
            metrics.encode().expect("metrics encode");
        }
        for change in fold.presence.apply(next, &event) {
            change.encode().expect("a change encodes");
        }
        let _ = fold.presence.next_sweep_due();
    };
    for bytes in parts.take(64) {
        if let Ok(event) = Event::decode(bytes) {
            fold_one(&mut fold, event);
        }
    }
    // Long after everything: every connection and session times out, every lease lapses.
    let node = NodeId::parse("fuzz").expect("a valid node id");
    let late = Millis(
        fold.presence
            .log_time(Millis(0))
            .0
            .saturating_add(86_400_000),
    );
    fold_one(&mut fold, Event::new(node.clone(), late, EventBody::Tick));
    fold_one(&mut fold, Event::new(node, late, EventBody::MetricsTick));
    // Whether memory was freed is for the process, not part of the state.
    fold.presence.take_released();
    let saved = serde_json::to_string(&fold).expect("a folded fold saves");
    let last = fold.presence.last_seq();
    assert_eq!(
        Fold::restore(&saved, last, &settings).expect("a saved fold restores"),
        fold
    );
});
