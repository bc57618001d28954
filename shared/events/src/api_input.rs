//! What applications send the edge as JSON, parsed on a JSON value alone: the backend API's
//! bodies (a batch of users to read, a status to set, a directory entry) and the Socket.io
//! payloads (`presence:query`, `user:status`, `presence:subscribe`, `presence:sync`). Each refusal says which part
//! was wrong; the edge words it for the protocol it came on. No I/O, so it is fuzzed on its
//! own (`fuzz/`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Details, DetailsError, IdError, SetStatus, StatusError, UserId, ViewerClass};

/// Most users one batch read or `presence:query` may name by default
/// (`PRESENCE_MAX_QUERY_IDS`).
pub const MAX_BATCH_USERS: usize = 500;
/// Longest username a directory entry may hold, in characters.
pub const MAX_USERNAME_CHARS: usize = 100;

/// Why a body was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// Not a JSON object, or not of the expected fields and types.
    #[error("{0}")]
    Shape(String),
    /// More users than the limit.
    #[error("at most {limit} userIds, got {got}")]
    TooMany { got: usize, limit: usize },
    /// The user id at this place of list `field` is not one.
    #[error("{field}[{index}]: {error}")]
    UserId {
        field: &'static str,
        index: usize,
        error: IdError,
    },
    /// This place of list `field` holds something other than a string.
    #[error("{field}[{index}]: a user id is a string, got {got}")]
    NotAUserId {
        field: &'static str,
        index: usize,
        got: String,
    },
    /// A `presence:subscribe` with none or several of `userIds`, `add` and `remove`.
    #[error("expected exactly one of userIds, add or remove")]
    OneChange,
    /// A `since` that is not a cursor this service gives out.
    #[error("since: {0:?} is not a cursor this service issued (a string of digits)")]
    Cursor(String),
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

/// `{userIds: [...]}`: at most `limit` user ids, in the order given.
pub fn parse_batch(value: Value, limit: usize) -> Result<Vec<UserId>, BodyError> {
    let Batch { user_ids } = object(value)?;
    if user_ids.len() > limit {
        return Err(BodyError::TooMany {
            got: user_ids.len(),
            limit,
        });
    }
    user_ids
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            UserId::parse(raw).map_err(|error| BodyError::UserId {
                field: "userIds",
                index,
                error,
            })
        })
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

/// How `presence:subscribe` changes a socket's set of users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// `{userIds}`: the set becomes these.
    Replace(Vec<UserId>),
    /// `{add}`: these join the set.
    Add(Vec<UserId>),
    /// `{remove}`: these leave it.
    Remove(Vec<UserId>),
}

/// A `presence:subscribe`: the change, and the cursor of a resubscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub change: SubscriptionChange,
    pub since: Option<u64>,
}

#[derive(serde::Deserialize)]
struct SubscribeBody {
    #[serde(rename = "userIds")]
    user_ids: Option<Vec<Value>>,
    add: Option<Vec<Value>>,
    remove: Option<Vec<Value>>,
    since: Option<Value>,
}

#[derive(serde::Deserialize)]
struct SyncBody {
    since: Option<Value>,
}

/// The user ids of list `field`, or the error of the first that is not one.
fn user_ids(field: &'static str, raw: Vec<Value>) -> Result<Vec<UserId>, BodyError> {
    raw.into_iter()
        .enumerate()
        .map(|(index, value)| match value {
            Value::String(id) => UserId::parse(id).map_err(|error| BodyError::UserId {
                field,
                index,
                error,
            }),
            other => Err(BodyError::NotAUserId {
                field,
                index,
                got: other.to_string().chars().take(100).collect(),
            }),
        })
        .collect()
}

/// A cursor a client sends back: the decimal string of a feed sequence it was given, as it
/// was given (no sign, no leading zero).
pub fn parse_cursor(raw: &Value) -> Result<u64, BodyError> {
    let text = match raw {
        Value::String(s) => s.as_str(),
        other => {
            return Err(BodyError::Cursor(
                other.to_string().chars().take(100).collect(),
            ));
        }
    };
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(BodyError::Cursor(text.chars().take(100).collect()));
    }
    text.parse().map_err(|_| BodyError::Cursor(text.to_owned()))
}

/// `{userIds: [...]}`, `{add: [...]}` or `{remove: [...]}` (exactly one), and `since?`.
pub fn parse_subscribe(value: Value) -> Result<Subscribe, BodyError> {
    let SubscribeBody {
        user_ids: replace,
        add,
        remove,
        since,
    } = object(value)?;
    let change = match (replace, add, remove) {
        (Some(ids), None, None) => SubscriptionChange::Replace(user_ids("userIds", ids)?),
        (None, Some(ids), None) => SubscriptionChange::Add(user_ids("add", ids)?),
        (None, None, Some(ids)) => SubscriptionChange::Remove(user_ids("remove", ids)?),
        _ => return Err(BodyError::OneChange),
    };
    let since = since.as_ref().map(parse_cursor).transpose()?;
    Ok(Subscribe { change, since })
}

/// `presence:sync`'s `{since?}`.
pub fn parse_sync(value: Value) -> Result<Option<u64>, BodyError> {
    let SyncBody { since } = object(value)?;
    since.as_ref().map(parse_cursor).transpose()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_is_an_object_of_at_most_500_valid_ids_kept_in_order() {
        let ids = parse_batch(json!({"userIds": ["b", "a"]}), MAX_BATCH_USERS).unwrap();
        assert_eq!(
            ids,
            [UserId::parse("b").unwrap(), UserId::parse("a").unwrap()]
        );
        assert!(matches!(
            parse_batch(json!([["a"]]), MAX_BATCH_USERS),
            Err(BodyError::Shape(m)) if m.contains("not a JSON object")
        ));
        assert!(matches!(
            parse_batch(json!({"userIds": "a"}), MAX_BATCH_USERS),
            Err(BodyError::Shape(m)) if m.contains("invalid type")
        ));
        let many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
        assert_eq!(
            parse_batch(json!({ "userIds": many.clone() }), MAX_BATCH_USERS),
            Err(BodyError::TooMany {
                got: 501,
                limit: 500
            })
        );
        assert_eq!(
            parse_batch(json!({ "userIds": many }), 501).unwrap().len(),
            501
        );
        let bad = parse_batch(json!({"userIds": ["a", ""]}), MAX_BATCH_USERS).unwrap_err();
        assert!(matches!(bad, BodyError::UserId { index: 1, .. }), "{bad:?}");
        assert!(matches!(
            parse_batch(json!({"userIds": ["a", 5]}), MAX_BATCH_USERS),
            Err(BodyError::Shape(_))
        ));
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

    #[test]
    fn a_subscription_names_exactly_one_change_of_valid_ids_and_maybe_a_cursor() {
        let a = || UserId::parse("a").unwrap();
        assert_eq!(
            parse_subscribe(json!({"userIds": ["a"]})),
            Ok(Subscribe {
                change: SubscriptionChange::Replace(vec![a()]),
                since: None
            })
        );
        assert_eq!(
            parse_subscribe(json!({"add": ["a"], "since": "42"}))
                .unwrap()
                .since,
            Some(42)
        );
        assert_eq!(
            parse_subscribe(json!({"remove": []})).unwrap().change,
            SubscriptionChange::Remove(vec![])
        );
        for two in [json!({}), json!({"add": [], "remove": []})] {
            assert_eq!(parse_subscribe(two), Err(BodyError::OneChange));
        }
        let e = parse_subscribe(json!({"add": ["a", 42]})).unwrap_err();
        assert_eq!(e.to_string(), "add[1]: a user id is a string, got 42");
        let e = parse_subscribe(json!({"userIds": [""]})).unwrap_err();
        assert!(e.to_string().starts_with("userIds[0]: "), "{e}");
        assert!(matches!(
            parse_subscribe(json!({"userIds": [], "since": 42})),
            Err(BodyError::Cursor(_))
        ));
        assert!(matches!(
            parse_subscribe(json!({"userIds": "a"})),
            Err(BodyError::Shape(_))
        ));
    }

    #[test]
    fn a_cursor_is_the_decimal_string_it_was_given_and_nothing_else() {
        assert_eq!(parse_cursor(&json!("18446744073709551615")), Ok(u64::MAX));
        assert_eq!(parse_cursor(&json!("0")), Ok(0));
        for bad in [
            json!(""),
            json!("-1"),
            json!("1e3"),
            json!(" 1"),
            json!("18446744073709551616"),
            json!(7),
            json!(null),
        ] {
            let e = parse_cursor(&bad).unwrap_err();
            assert!(
                e.to_string().contains("not a cursor this service issued"),
                "{bad}: {e}"
            );
        }
        assert_eq!(parse_sync(json!({})), Ok(None));
        assert_eq!(parse_sync(json!({"since": "9"})), Ok(Some(9)));
        assert!(matches!(parse_sync(json!("9")), Err(BodyError::Shape(_))));
    }

    /// Found by the `api_bodies` fuzz target: "000000000000000000" was read as cursor 0,
    /// which this service writes as "0".
    #[test]
    fn a_cursor_with_leading_zeros_is_not_one_this_service_issued() {
        for bad in ["000000000000000000", "00", "042"] {
            assert!(
                matches!(parse_cursor(&json!(bad)), Err(BodyError::Cursor(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_cursor(&json!("0")), Ok(0));
        assert_eq!(parse_cursor(&json!("420")), Ok(420));
    }
}
