//! The active-users protocol as clients send it, parsed on bytes alone: the JSON bodies of
//! `POST /presence/{join,beat,leave}` and the client messages of `/ws/active-users`. Every
//! refusal names the field and says what was expected. Kept beside the events it produces,
//! with no I/O, so it can be fuzzed on its own (`fuzz/`).

use serde_json::{Map, Value};

use crate::{EventBody, SessionId, TabId, TabKey, TenantId, Transport};

/// Largest accepted WebSocket frame or HTTP body, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// A join / beat / leave request (HTTP) or an `auth` message (WebSocket).
#[derive(Debug, Clone, PartialEq)]
pub struct TabRequest {
    pub tab: TabKey,
    pub platform: Option<String>,
}

impl TabRequest {
    /// The `session_join` of this tab, over `transport`, from `source`
    /// ([`source_of`](crate::source_of) the client's address).
    pub fn join(self, transport: Transport, source: Option<String>) -> EventBody {
        let TabRequest { tab, platform } = self;
        EventBody::SessionJoin {
            tenant: tab.tenant,
            session: tab.session,
            tab: tab.tab,
            transport,
            platform,
            source,
        }
    }
}

/// The `session_leave` of `tab`.
pub fn leave(tab: TabKey) -> EventBody {
    EventBody::SessionLeave {
        tenant: tab.tenant,
        session: tab.session,
        tab: tab.tab,
    }
}

/// A message from an active-users WebSocket client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Auth(TabRequest),
    Ping,
}

/// Why input was refused: a stable `code`, the offending `field` if any, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub code: &'static str,
    pub field: Option<&'static str>,
    pub message: String,
}

impl InputError {
    fn field(code: &'static str, field: &'static str, message: String) -> Self {
        Self {
            code,
            field: Some(field),
            message,
        }
    }

    pub fn general(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            field: None,
            message: message.into(),
        }
    }
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, InputError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(InputError::general(
            "too_large",
            format!(
                "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                bytes.len()
            ),
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(InputError::general(
            "invalid_json",
            "expected a JSON object",
        )),
        Err(e) => Err(InputError::general(
            "invalid_json",
            format!("not valid JSON: {e}"),
        )),
    }
}

fn required_id<T>(
    map: &Map<String, Value>,
    field: &'static str,
    parse: impl FnOnce(String) -> Result<T, crate::IdError>,
) -> Result<T, InputError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(InputError::field(
            "missing_field",
            field,
            format!("{field} is required"),
        )),
        Some(Value::String(s)) if s.is_empty() => Err(InputError::field(
            "missing_field",
            field,
            format!("{field} must not be empty"),
        )),
        Some(Value::String(s)) => {
            parse(s.clone()).map_err(|e| InputError::field("invalid_field", field, e.to_string()))
        }
        Some(_) => Err(InputError::field(
            "invalid_field",
            field,
            format!("{field} must be a string"),
        )),
    }
}

fn optional_text(
    map: &Map<String, Value>,
    field: &'static str,
    keep: usize,
) -> Result<Option<String>, InputError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.chars().take(keep).collect())),
        Some(_) => Err(InputError::field(
            "invalid_field",
            field,
            format!("{field} must be a string"),
        )),
    }
}

fn optional_timestamp(map: &Map<String, Value>) -> Result<(), InputError> {
    match map.get("timestamp") {
        None | Some(Value::Null) | Some(Value::Number(_)) => Ok(()),
        Some(_) => Err(InputError::field(
            "invalid_field",
            "timestamp",
            "timestamp must be a number (ms since the epoch)".into(),
        )),
    }
}

fn tab_request(map: &Map<String, Value>) -> Result<TabRequest, InputError> {
    let tab = TabKey {
        tenant: required_id(map, "customerId", TenantId::parse)?,
        session: required_id(map, "sessionId", SessionId::parse)?,
        tab: required_id(map, "tabId", TabId::parse)?,
    };
    optional_timestamp(map)?;
    optional_text(map, "userAgent", 512)?;
    Ok(TabRequest {
        tab,
        platform: optional_text(map, "platform", 64)?,
    })
}

/// Parses the body of `POST /presence/{join,beat,leave}`.
pub fn parse_tab_request(body: &[u8]) -> Result<TabRequest, InputError> {
    tab_request(&object(body)?)
}

/// Parses one text frame of `/ws/active-users`.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, InputError> {
    let map = object(text.as_bytes())?;
    match map.get("type") {
        Some(Value::String(t)) if t == "auth" => Ok(ClientMessage::Auth(tab_request(&map)?)),
        Some(Value::String(t)) if t == "ping" => {
            optional_timestamp(&map)?;
            Ok(ClientMessage::Ping)
        }
        Some(Value::String(t)) => Err(InputError::field(
            "unknown_type",
            "type",
            format!(
                "unknown message type {:?}: expected \"auth\" or \"ping\"",
                t.chars().take(32).collect::<String>()
            ),
        )),
        _ => Err(InputError::field(
            "missing_field",
            "type",
            "type is required: \"auth\" or \"ping\"".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> InputError {
        parse_client_message(text).unwrap_err()
    }

    #[test]
    fn an_auth_message_names_the_tab() {
        let msg = parse_client_message(
            r#"{"type":"auth","customerId":"shop-1","sessionId":"s-1","tabId":"t-1","timestamp":1}"#,
        )
        .unwrap();
        let ClientMessage::Auth(req) = msg else {
            panic!("not auth")
        };
        assert_eq!(req.tab.tenant.as_str(), "shop-1");
        assert_eq!(req.tab.session.as_str(), "s-1");
        assert_eq!(
            parse_client_message(r#"{"type":"ping","timestamp":5}"#).unwrap(),
            ClientMessage::Ping
        );
    }

    #[test]
    fn bad_input_is_refused_field_by_field() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("not json", "invalid_json", None),
            ("[1,2]", "invalid_json", None),
            (r#"{"customerId":"a"}"#, "missing_field", Some("type")),
            (r#"{"type":"subscribe"}"#, "unknown_type", Some("type")),
            (
                r#"{"type":"auth","sessionId":"s","tabId":"t"}"#,
                "missing_field",
                Some("customerId"),
            ),
            (
                r#"{"type":"auth","customerId":"","sessionId":"s","tabId":"t"}"#,
                "missing_field",
                Some("customerId"),
            ),
            (
                r#"{"type":"auth","customerId":7,"sessionId":"s","tabId":"t"}"#,
                "invalid_field",
                Some("customerId"),
            ),
            (
                r#"{"type":"auth","customerId":"a.b","sessionId":"s","tabId":"t"}"#,
                "invalid_field",
                Some("customerId"),
            ),
            (
                r#"{"type":"auth","customerId":"a","sessionId":"s"}"#,
                "missing_field",
                Some("tabId"),
            ),
            (
                r#"{"type":"auth","customerId":"a","sessionId":"s","tabId":"t","timestamp":"x"}"#,
                "invalid_field",
                Some("timestamp"),
            ),
            (
                r#"{"type":"auth","customerId":"a","sessionId":"s","tabId":"t","platform":5}"#,
                "invalid_field",
                Some("platform"),
            ),
        ];
        for (text, code, field) in cases {
            let e = err(text);
            assert_eq!((e.code, e.field), (*code, *field), "{text}: {}", e.message);
        }
        let huge = format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(err(&huge).code, "too_large");
    }

    #[test]
    fn http_bodies_use_the_same_rules() {
        let ok = parse_tab_request(
            br#"{"customerId":"a","sessionId":"s","tabId":"t","platform":"web"}"#,
        )
        .unwrap();
        assert_eq!(ok.platform.as_deref(), Some("web"));
        let e = parse_tab_request(br#"{"customerId":"a","tabId":"t"}"#).unwrap_err();
        assert_eq!(e.field, Some("sessionId"));
    }
}
