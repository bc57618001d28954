//! Identifiers, parsed once at the edge so nothing deeper handles raw strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The identifier was empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// The identifier was longer than allowed.
    #[error("{kind} is longer than {max} bytes")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// Its limit.
        max: usize,
    },
    /// The identifier held a character outside its alphabet.
    #[error("{kind} may only contain {allowed}")]
    BadCharacter {
        /// Which identifier.
        kind: &'static str,
        /// The characters it may hold.
        allowed: &'static str,
    },
}

fn check_free_text(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(kind));
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::BadCharacter {
            kind,
            allowed: "printable characters",
        });
    }
    Ok(())
}

fn check_token(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(kind));
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(IdError::BadCharacter {
            kind,
            allowed: "ASCII letters, digits, '-' and '_'",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Box<str>);

        impl $name {
            /// Longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Parses a raw value, refusing what the system cannot carry.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                $check($kind, &raw, $max)?;
                Ok(Self(raw.into_boxed_str()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A customer: isolates everything (`customerId`; the social app is `default`).
    TenantId,
    "tenant",
    check_token,
    64
);
string_id!(
    /// A person (`sub` of the JWT).
    UserId,
    "userId",
    check_free_text,
    128
);
string_id!(
    /// A process of the cluster, stamped on every event it publishes.
    NodeId,
    "node id",
    check_token,
    64
);
string_id!(
    /// A visibility class (`male`, `female`, `other` by default): decides which viewers see a user.
    ViewerClass,
    "visibility class",
    check_token,
    32
);

string_id!(
    /// One browser (`sessionId`), shared by its tabs: active-user counts count these.
    SessionId,
    "sessionId",
    check_token,
    128
);
string_id!(
    /// One tab (`tabId`) of a browser session.
    TabId,
    "tabId",
    check_token,
    128
);

impl TenantId {
    /// The tenant of the social app, used when a token names none.
    pub fn default_tenant() -> Self {
        Self("default".into())
    }
}

impl ViewerClass {
    /// The class of users whose token gives no usable gender.
    pub fn other() -> Self {
        Self("other".into())
    }

    /// The class a `gender` claim maps to: `male`, `female`, anything else is `other`.
    pub fn from_gender(gender: Option<&str>) -> Self {
        match gender.map(|g| g.trim().to_ascii_lowercase()) {
            Some(g) if g == "male" || g == "female" => Self(g.into_boxed_str()),
            _ => Self::other(),
        }
    }
}

/// One connection (a socket or tab), unique across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub uuid::Uuid);

impl ConnId {
    /// A fresh, time-ordered connection id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for ConnId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user within its tenant: the key of everything presence keeps per person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
}

/// One tab of one browser session of one customer: what active users keep per tab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TabKey {
    /// The customer.
    pub tenant: TenantId,
    /// The browser session.
    pub session: SessionId,
    /// The tab.
    pub tab: TabId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_refuse_subject_metacharacters() {
        for bad in ["a.b", "a*", ">", "a b", ""] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(TenantId::parse("shop-42_x").unwrap().as_str(), "shop-42_x");
    }

    #[test]
    fn user_ids_accept_any_printable_text_but_not_control_characters() {
        assert!(UserId::parse("ayşe.yılmaz@example.com").is_ok());
        assert!(UserId::parse("a\u{0}b").is_err());
        assert!(UserId::parse("x".repeat(129)).is_err());
    }

    #[test]
    fn gender_claims_map_to_classes() {
        assert_eq!(ViewerClass::from_gender(Some("Male")).as_str(), "male");
        assert_eq!(ViewerClass::from_gender(Some("female")).as_str(), "female");
        assert_eq!(ViewerClass::from_gender(Some("robot")).as_str(), "other");
        assert_eq!(ViewerClass::from_gender(None).as_str(), "other");
    }
}
