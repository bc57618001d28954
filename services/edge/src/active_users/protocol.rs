//! The active-users protocol as clients send it: parsed by `presence_events::tab_input`
//! (bytes in, events or a field-by-field refusal out); described here for the OpenAPI
//! document. What the server sends is in [`crate::wire`].

pub(crate) use presence_events::tab_input::{
    ClientMessage, InputError, MAX_MESSAGE_BYTES, TabRequest, leave, parse_client_message,
    parse_tab_request,
};

/// The body of `POST /presence/{join,beat,leave}` as described to integrators; it is parsed
/// by [`parse_tab_request`], which says field by field what was wrong.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"customerId": "shop-42", "sessionId": "b7f3c2", "tabId": "t-1"}))]
#[allow(dead_code)]
pub(crate) struct TabRequestBody {
    /// The customer whose site the tab shows.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    customer_id: String,
    /// The browser, shared by its tabs (kept in the browser's storage): counts count these.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$")]
    session_id: String,
    /// The tab.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$")]
    tab_id: String,
    /// The client's clock, ms since the epoch (informative only).
    timestamp: Option<f64>,
    /// Kept to its first 512 characters.
    user_agent: Option<String>,
    /// Kept to its first 64 characters.
    platform: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use utoipa::PartialSchema;

    use super::*;

    #[test]
    fn the_described_example_is_a_request_the_parser_takes() {
        let schema = serde_json::to_value(TabRequestBody::schema()).expect("encodes");
        let example = &schema["example"];
        assert!(example.is_object(), "{schema}");
        let parsed = parse_tab_request(example.to_string().as_bytes()).expect("the example parses");
        assert_eq!(parsed.tab.tenant.as_str(), example["customerId"]);
        // And the parser's required fields are the schema's.
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["customerId", "sessionId", "tabId"]);
    }
}
