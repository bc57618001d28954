//! A cursor into the changes feed: the sequence of an online-stream message, the same on
//! every edge (they all read the one stream). A client keeps the newest it was given (acks of
//! `presence:subscribe` and `presence:sync`, the second argument of every `presence-update`
//! and `presence-updates`) and sends it back after a reconnect, to any edge, to be told only
//! what changed after it. On the wire it is an opaque string.

use std::fmt;

use serde::{Serialize, Serializer};

/// A position in the changes feed (0: before anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Cursor(pub(crate) u64);

/// Why a cursor sent by a client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("since: {0:?} is not a cursor this service issued (a string of digits)")]
pub(crate) struct BadCursor(pub(crate) String);

impl Cursor {
    /// Reads a cursor a client sent back: the decimal string it was given.
    pub(crate) fn parse(raw: &serde_json::Value) -> Result<Self, BadCursor> {
        let text = match raw {
            serde_json::Value::String(s) => s.as_str(),
            other => return Err(BadCursor(other.to_string())),
        };
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadCursor(text.to_owned()));
        }
        text.parse()
            .map(Cursor)
            .map_err(|_| BadCursor(text.to_owned()))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_cursor_goes_out_as_a_string_and_comes_back_as_itself() {
        let c = Cursor(18_446_744_073_709_551_615);
        let wire = serde_json::to_value(c).unwrap();
        assert_eq!(wire, json!("18446744073709551615"));
        assert_eq!(Cursor::parse(&wire), Ok(c));
    }

    #[test]
    fn anything_else_is_refused_with_what_was_sent() {
        for bad in [
            json!(12),
            json!(""),
            json!("12a"),
            json!("-1"),
            json!(null),
            json!("99999999999999999999"),
        ] {
            assert!(Cursor::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            Cursor::parse(&json!("x")).unwrap_err().to_string(),
            "since: \"x\" is not a cursor this service issued (a string of digits)"
        );
    }
}
