//! What applications send the edge as JSON, parsed on a JSON value alone: the backend API's
//! bodies (a batch of users to read, a status to set, a directory entry) and the Socket.io
//! payloads of the same shape (`presence:query`, `user:status`). Each refusal says which part
//! was wrong; the edge words it for the protocol it came on. No I/O, so it is fuzzed on its
//! own (`fuzz/`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Details, DetailsError, IdError, SetStatus, StatusError, UserId, ViewerClass};

/// Most users one batch read or `presence:query` may name.
pub const MAX_BATCH_USERS: usize = 500;
/// Longest username a directory entry may hold, in characters.
pub const MAX_USERNAME_CHARS: usize = 100;

/// Why a body was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// Not a JSON object, or not of the expected fields and types.
    #[error("{0}")]
    Shape(String),
    /// More users than [`MAX_BATCH_USERS`].
    #[error("at most {MAX_BATCH_USERS} userIds, got {0}")]
    TooMany(usize),
    /// The user id at this place of the list is not one.
    #[error("userIds[{index}]: {error}")]
    UserId { index: usize, error: IdError },
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("details: {0}")]
    Details(#[from] DetailsError),
    #[error("username: at most {MAX_USERNAME_CHARS} characters, no NUL")]
    Username,
}

/// `value` decoded as `T` if it is an object: serde would also decode a struct from an array
/// of its fields (`["live"]` as `{status: "live"}`), which no client means.
fn object<T: DeserializeOwned>(value: Value) -> Result<T, BodyError> {
    if !value.is_object() {
        return Err(BodyError::Shape("the body is not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| BodyError::Shape(e.to_string()))
}

#[derive(serde::Deserialize)]
struct Batch {
    #[serde(rename = "userIds")]
    user_ids: Vec<String>,
}

/// `{userIds: [...]}`: at most [`MAX_BATCH_USERS`] user ids, in the order given.
pub fn parse_batch(value: Value) -> Result<Vec<UserId>, BodyError> {
    let Batch { user_ids } = object(value)?;
    if user_ids.len() > MAX_BATCH_USERS {
        return Err(BodyError::TooMany(user_ids.len()));
    }
    user_ids
        .into_iter()
        .enumerate()
        .map(|(index, raw)| UserId::parse(raw).map_err(|error| BodyError::UserId { index, error }))
        .collect()
}

#[derive(serde::Deserialize)]
struct StatusBody {
    status: String,
    #[serde(default)]
    details: Option<Value>,
}

/// A status to set: `{status, details?}`, `details` an object within [`Details::MAX_BYTES`]
/// (`null` is none).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    pub status: SetStatus,
    pub details: Option<Details>,
}

/// `{status: "online" | "live" | "in_call", details?: {...}}`.
pub fn parse_status_write(value: Value) -> Result<StatusWrite, BodyError> {
    let StatusBody { status, details } = object(value)?;
    let status = SetStatus::parse(&status)?;
    let details = match details {
        None | Some(Value::Null) => None,
        Some(value) => Some(Details::parse(value)?),
    };
    Ok(StatusWrite { status, details })
}

#[derive(serde::Deserialize)]
struct DirectoryBody {
    username: Option<String>,
    gender: Option<String>,
}

/// A directory entry: what search finds, and the visibility class the gender gives.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryEntry {
    pub username: Option<String>,
    pub class: ViewerClass,
}

/// `{username?, gender?}`, the username at most [`MAX_USERNAME_CHARS`] characters with no
/// NUL (which the database cannot store).
pub fn parse_directory_entry(value: Value) -> Result<DirectoryEntry, BodyError> {
    let DirectoryBody { username, gender } = object(value)?;
    if username
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_USERNAME_CHARS || n.contains('\0'))
    {
        return Err(BodyError::Username);
    }
    Ok(DirectoryEntry {
        username,
        class: ViewerClass::from_gender(gender.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_is_an_object_of_at_most_500_valid_ids_kept_in_order() {
        let ids = parse_batch(json!({"userIds": ["b", "a"]})).unwrap();
        assert_eq!(
            ids,
            [UserId::parse("b").unwrap(), UserId::parse("a").unwrap()]
        );
        assert!(matches!(
            parse_batch(json!([["a"]])),
            Err(BodyError::Shape(m)) if m.contains("not a JSON object")
        ));
        assert!(matches!(
            parse_batch(json!({"userIds": "a"})),
            Err(BodyError::Shape(m)) if m.contains("invalid type")
        ));
        let many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
        assert_eq!(
            parse_batch(json!({ "userIds": many })),
            Err(BodyError::TooMany(501))
        );
        let bad = parse_batch(json!({"userIds": ["a", ""]})).unwrap_err();
        assert!(matches!(bad, BodyError::UserId { index: 1, .. }), "{bad:?}");
        assert!(bad.to_string().starts_with("userIds[1]: "), "{bad}");
    }

    #[test]
    fn a_status_write_names_a_settable_status_and_optional_details() {
        let write = parse_status_write(json!({"status": "live", "details": {"t": 1}})).unwrap();
        assert_eq!(write.status, SetStatus::Live);
        assert!(write.details.is_some());
        let plain = parse_status_write(json!({"status": "online", "details": null})).unwrap();
        assert_eq!(plain.details, None);
        assert!(matches!(
            parse_status_write(json!({"status": "offline"})),
            Err(BodyError::Status(_))
        ));
        assert!(matches!(
            parse_status_write(json!({"status": "live", "details": [1]})),
            Err(BodyError::Details(_))
        ));
        assert!(matches!(
            parse_status_write(json!(["live"])),
            Err(BodyError::Shape(_))
        ));
    }

    #[test]
    fn a_directory_entry_bounds_its_username_and_classes_its_gender() {
        let entry = parse_directory_entry(json!({"username": "ayse", "gender": "female"})).unwrap();
        assert_eq!(entry.username.as_deref(), Some("ayse"));
        assert_eq!(entry.class, ViewerClass::from_gender(Some("female")));
        assert_eq!(
            parse_directory_entry(json!({})).unwrap().class,
            ViewerClass::from_gender(None)
        );
        let long = "ş".repeat(MAX_USERNAME_CHARS + 1);
        assert_eq!(
            parse_directory_entry(json!({ "username": long })),
            Err(BodyError::Username)
        );
        assert_eq!(
            parse_directory_entry(json!({"username": "a\u{0}b"})),
            Err(BodyError::Username)
        );
        assert!(parse_directory_entry(json!({"username": "ş".repeat(100)})).is_ok());
        assert!(matches!(
            parse_directory_entry(json!([null, null])),
            Err(BodyError::Shape(_))
        ));
    }
}
