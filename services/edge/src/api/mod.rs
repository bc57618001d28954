//! The presence API for application backends (Bearer JWT, visibility applied to the caller):
//! one user's presence, many at once, a paged list of who is online ([`reads`]), username
//! search with presence ([`search`]), and service-role calls that set a user's status or
//! directory entry ([`writes`]).

mod reads;
mod search;
mod writes;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use presence_auth::Identity;
use presence_events::api_input::{BodyError, MAX_BATCH_USERS};
use presence_events::{UserId, ViewerClass};
use presence_store::Store;

use crate::http_auth::HttpAuth;
use crate::http_error::ApiError;
use crate::ingress::EventPublisher;
use crate::presence::{PresenceView, VisibilityPolicy};
use crate::wire::PresenceUpdate;

/// Most users one batch or page may hold.
const MAX_USERS: usize = MAX_BATCH_USERS;

/// What the API handlers share.
pub(crate) struct ApiContext {
    pub(crate) auth: Arc<HttpAuth>,
    pub(crate) view: Arc<PresenceView>,
    pub(crate) policy: VisibilityPolicy,
    pub(crate) publisher: EventPublisher,
    pub(crate) store: Option<Store>,
    /// Users one batch read may name (PRESENCE_MAX_QUERY_IDS).
    pub(crate) max_batch: usize,
}

/// The routes of the backend API.
pub(crate) fn routes(cx: ApiContext) -> Router {
    Router::new()
        .route("/api/presence/online", get(reads::online))
        .route("/api/presence/batch", post(reads::batch))
        .route("/api/presence/{user}", get(reads::get_presence))
        .route("/api/presence/{user}/status", put(writes::set_status))
        .route("/api/users/search", get(search::search))
        .route("/api/users/{user}", put(writes::put_user))
        .with_state(Arc::new(cx))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    reads::get_presence,
    reads::batch,
    reads::online,
    writes::set_status,
    search::search,
    writes::put_user
))]
struct Described;

/// The description of the backend API.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    Described::openapi()
}

impl ApiContext {
    fn store(&self) -> Result<&Store, ApiError> {
        self.store.as_ref().ok_or_else(ApiError::needs_database)
    }

    /// What the caller may see: a service sees everyone, a person what its class may.
    fn sight(&self, caller: &Identity) -> (VisibilityPolicy, ViewerClass) {
        if caller.service {
            (VisibilityPolicy::everyone(), ViewerClass::other())
        } else {
            (self.policy.clone(), caller.class.clone())
        }
    }

    async fn presence_of(&self, caller: &Identity, users: Vec<UserId>) -> Vec<PresenceUpdate> {
        let (policy, viewer) = self.sight(caller);
        self.view
            .presence_for(&policy, &viewer, &caller.tenant, users)
            .await
    }
}

/// The JSON body of a call, parsed by `parse` (a parser of `presence_events::api_input`), or
/// a 400 saying what was `expected` and what was wrong.
fn api_body<T>(
    body: Result<Json<serde_json::Value>, JsonRejection>,
    expected: &str,
    parse: impl FnOnce(serde_json::Value) -> Result<T, BodyError>,
) -> Result<T, ApiError> {
    let Json(value) =
        body.map_err(|e| ApiError::bad_request(format!("expected {expected}: {}", e.body_text())))?;
    parse(value).map_err(|e| {
        ApiError::bad_request(match e {
            BodyError::Shape(why) => format!("expected {expected}: {why}"),
            BodyError::TooMany { got, limit } => {
                format!("at most {limit} userIds per call, got {got}")
            }
            other => other.to_string(),
        })
    })
}

fn user_id(raw: String, what: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use presence_events::api_input::{parse_batch, parse_directory_entry, parse_status_write};
    use serde_json::{Value, json};
    use utoipa::PartialSchema;

    use super::*;

    #[test]
    fn an_array_body_is_refused_though_serde_would_read_it_as_the_fields() {
        // Found by schemathesis: `PUT /api/users/{id}` with `[null, null]` was stored.
        let refused = api_body(
            Ok(Json(json!([null, null]))),
            "{...}",
            parse_directory_entry,
        )
        .expect_err("an array is not an entry");
        assert!(format!("{refused:?}").contains("expected {...}: the body is not a JSON object"));
        assert!(
            api_body(
                Ok(Json(json!({"username": "ayse"}))),
                "{...}",
                parse_directory_entry
            )
            .is_ok()
        );
        assert!(
            api_body(
                Ok(Json(json!({"username": 5}))),
                "{...}",
                parse_directory_entry
            )
            .is_err()
        );
    }

    /// The schema's example, and its required fields.
    fn described<T: PartialSchema>() -> (Value, Vec<String>) {
        let schema = serde_json::to_value(T::schema()).expect("encodes");
        let mut required: Vec<String> = schema["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        required.sort_unstable();
        (schema["example"].clone(), required)
    }

    #[test]
    fn each_described_body_is_one_its_parser_takes_with_the_same_required_fields() {
        let (example, required) = described::<reads::BatchRequest>();
        let parsed = parse_batch(example.clone(), MAX_BATCH_USERS).expect("the example parses");
        assert_eq!(parsed.len(), 2);
        assert_eq!(required, ["userIds"]);
        assert!(parse_batch(json!({}), MAX_BATCH_USERS).is_err());

        let (example, required) = described::<writes::StatusRequest>();
        assert!(
            parse_status_write(example)
                .expect("the example parses")
                .details
                .is_some()
        );
        assert_eq!(required, ["status"]);
        assert!(parse_status_write(json!({})).is_err());

        let (example, required) = described::<writes::UserRequest>();
        let entry = parse_directory_entry(example).expect("the example parses");
        assert_eq!(entry.username.as_deref(), Some("ayse"));
        assert!(required.is_empty(), "{required:?}");
        assert!(parse_directory_entry(json!({})).is_ok());
    }
}
