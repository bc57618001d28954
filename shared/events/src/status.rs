//! A user's presence status and the details `live` / `in_call` may carry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the presence of a user says about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connected.
    Online,
    /// No live connection.
    Offline,
    /// Streaming.
    Live,
    /// Busy in a call.
    InCall,
}

impl Status {
    /// The wire name (`online`, `offline`, `live`, `in_call`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Live => "live",
            Status::InCall => "in_call",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status a connected user may choose. `offline` is not one: it follows from disconnecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetStatus {
    /// Plain connected.
    Online,
    /// Streaming.
    Live,
    /// Busy in a call.
    InCall,
}

/// Why a requested status was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatusError {
    /// `offline` was asked for.
    #[error("status 'offline' cannot be set: a user goes offline by disconnecting")]
    Offline,
    /// Not a status at all.
    #[error("unknown status {0:?}: expected one of online, live, in_call")]
    Unknown(String),
}

impl SetStatus {
    /// Parses a status name sent by a client.
    pub fn parse(raw: &str) -> Result<Self, StatusError> {
        match raw {
            "online" => Ok(SetStatus::Online),
            "live" => Ok(SetStatus::Live),
            "in_call" => Ok(SetStatus::InCall),
            "offline" => Err(StatusError::Offline),
            other => Err(StatusError::Unknown(other.chars().take(64).collect())),
        }
    }
}

impl From<SetStatus> for Status {
    fn from(s: SetStatus) -> Status {
        match s {
            SetStatus::Online => Status::Online,
            SetStatus::Live => Status::Live,
            SetStatus::InCall => Status::InCall,
        }
    }
}

/// Client-supplied details of a status (e.g. stream details of `live`): a JSON object,
/// opaque to the system, stored and forwarded as it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Details(serde_json::Map<String, serde_json::Value>);

/// Why status details were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DetailsError {
    /// Not a JSON object.
    #[error("details must be a JSON object")]
    NotAnObject,
    /// Too large once encoded.
    #[error("details are {size} bytes encoded; the limit is {max}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl Details {
    /// Largest accepted encoded size, in bytes.
    pub const MAX_BYTES: usize = 4096;

    /// Accepts a JSON value as details if it is an object within the size limit.
    pub fn parse(value: serde_json::Value) -> Result<Self, DetailsError> {
        let serde_json::Value::Object(map) = value else {
            return Err(DetailsError::NotAnObject);
        };
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > Self::MAX_BYTES {
            return Err(DetailsError::TooLarge {
                size,
                max: Self::MAX_BYTES,
            });
        }
        Ok(Self(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_may_set_only_online_live_and_in_call() {
        assert_eq!(SetStatus::parse("live"), Ok(SetStatus::Live));
        assert_eq!(SetStatus::parse("offline"), Err(StatusError::Offline));
        assert!(matches!(
            SetStatus::parse("away"),
            Err(StatusError::Unknown(_))
        ));
    }

    #[test]
    fn details_must_be_a_small_object() {
        assert!(Details::parse(serde_json::json!({"title": "hi"})).is_ok());
        assert_eq!(
            Details::parse(serde_json::json!([1, 2])),
            Err(DetailsError::NotAnObject)
        );
        let big = serde_json::json!({ "x": "y".repeat(5000) });
        assert!(matches!(
            Details::parse(big),
            Err(DetailsError::TooLarge { .. })
        ));
    }
}
