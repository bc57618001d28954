//! The event envelope and every event body (joins, leaves, beat batches, statuses, sessions,
//! leases, clock ticks) as read from the log: decoding arbitrary bytes never panics, and
//! what decodes encodes again to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_events::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::decode(data) {
        let bytes = event.encode().expect("a decoded event encodes");
        let again = Event::decode(&bytes).expect("an encoded event decodes");
        assert_eq!(again, event);
    }
});
