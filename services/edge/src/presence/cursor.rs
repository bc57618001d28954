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
    use presence_events::api_input::parse_cursor;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_cursor_goes_out_as_a_string_and_comes_back_as_itself() {
        let c = Cursor(18_446_744_073_709_551_615);
        let wire = serde_json::to_value(c).unwrap();
        assert_eq!(wire, json!("18446744073709551615"));
        assert_eq!(parse_cursor(&wire).map(Cursor), Ok(c));
    }
}
