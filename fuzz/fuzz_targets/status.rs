//! What a client or a service sets as a status: the status name and its details object.
//! Arbitrary input is refused with a reason or accepted within the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_events::{Details, SetStatus};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SetStatus::parse(text);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(details) = Details::parse(value)
    {
        let encoded = serde_json::to_vec(&details).expect("details encode");
        assert!(encoded.len() <= Details::MAX_BYTES);
    }
});
