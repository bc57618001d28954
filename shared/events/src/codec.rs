//! JSON encoding of everything that travels through the log (events, changes, metrics,
//! cluster figures): one way to encode and one way to decode, with the schema version checked
//! on the way in.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::SCHEMA_VERSION;

/// Why bytes from the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON of the schema.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a newer build.
    #[error("schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    UnsupportedVersion(u16),
}

/// Why a value could not be encoded for the log. The types of this crate hold only strings,
/// numbers and JSON objects with string keys, so this means a bug; it is still reported,
/// never turned into an empty payload.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {what}: {source}")]
pub struct EncodeError {
    /// What was being encoded (`event`, `change`, `metrics`, `stats`).
    pub what: &'static str,
    /// Why.
    #[source]
    pub source: serde_json::Error,
}

/// A message carrying the schema version it was written with.
pub(crate) trait Versioned {
    fn version(&self) -> u16;
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|source| EncodeError { what, source })
}

/// Decodes a message, refusing versions this build does not know.
pub(crate) fn decode<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let value: T = serde_json::from_slice(bytes)?;
    if value.version() > SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion(value.version()));
    }
    Ok(value)
}
