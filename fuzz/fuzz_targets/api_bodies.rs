//! What applications send the backend API and the Socket.io events of the same shape: a batch
//! of users to read (`POST /api/presence/batch`, `presence:query`), a status to set
//! (`PUT /api/presence/{id}/status`, `user:status`), a directory entry (`PUT /api/users/{id}`).
//! Any JSON is refused with a reason or parsed within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_events::Details;
use presence_events::api_input::{
    MAX_BATCH_USERS, MAX_USERNAME_CHARS, parse_batch, parse_directory_entry, parse_status_write,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(users) = parse_batch(value.clone()) {
        assert!(users.len() <= MAX_BATCH_USERS);
        assert!(value.is_object());
    }
    if let Ok(write) = parse_status_write(value.clone())
        && let Some(details) = write.details
    {
        let encoded = serde_json::to_vec(&details).expect("details encode");
        assert!(encoded.len() <= Details::MAX_BYTES);
    }
    if let Ok(entry) = parse_directory_entry(value)
        && let Some(name) = entry.username
    {
        assert!(name.chars().count() <= MAX_USERNAME_CHARS && !name.contains('\0'));
    }
});
