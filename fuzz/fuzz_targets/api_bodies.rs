//! What applications send the backend API and the Socket.io events of the same shape: a batch
//! of users to read (`POST /api/presence/batch`, `presence:query`), a status to set
//! (`PUT /api/presence/{id}/status`, `user:status`), a directory entry (`PUT /api/users/{id}`),
//! a subscription (`presence:subscribe`) and a catch-up (`presence:sync`) with their cursors.
//! Any JSON is refused with a reason or parsed within the limits; a cursor read back is the
//! one written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_events::Details;
use presence_events::api_input::{
    MAX_BATCH_USERS, MAX_USERNAME_CHARS, parse_batch, parse_cursor, parse_directory_entry,
    parse_status_write, parse_subscribe, parse_sync,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(users) = parse_batch(value.clone(), MAX_BATCH_USERS) {
        assert!(users.len() <= MAX_BATCH_USERS);
        assert!(value.is_object());
    }
    if let Ok(write) = parse_status_write(value.clone())
        && let Some(details) = write.details
    {
        let encoded = serde_json::to_vec(&details).expect("details encode");
        assert!(encoded.len() <= Details::MAX_BYTES);
    }
    for since in [
        parse_subscribe(value.clone()).ok().and_then(|s| s.since),
        parse_sync(value.clone()).ok().flatten(),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(parse_cursor(&Value::String(since.to_string())), Ok(since));
    }
    if let Ok(cursor) = parse_cursor(&value) {
        assert_eq!(Value::String(cursor.to_string()), value);
    }
    if let Ok(entry) = parse_directory_entry(value)
        && let Some(name) = entry.username
    {
        assert!(name.chars().count() <= MAX_USERNAME_CHARS && !name.contains('\0'));
    }
});
