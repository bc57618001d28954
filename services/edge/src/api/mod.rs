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
use presence_events::{UserId, ViewerClass};
use presence_store::Store;

use crate::http_auth::HttpAuth;
use crate::http_error::ApiError;
use crate::ingress::EventPublisher;
use crate::presence::{PresenceView, VisibilityPolicy};
use crate::wire::PresenceUpdate;

/// Most users one batch or page may hold.
const MAX_USERS: usize = 500;

/// What the API handlers share.
pub(crate) struct ApiContext {
    pub(crate) auth: Arc<HttpAuth>,
    pub(crate) view: Arc<PresenceView>,
    pub(crate) policy: VisibilityPolicy,
    pub(crate) publisher: EventPublisher,
    pub(crate) store: Option<Store>,
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

/// The JSON body of a call, decoded as `T`, or a 400 saying what was `expected`. Only an
/// object is taken: serde would also decode a struct from an array of its fields, which no
/// client means.
fn object_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, JsonRejection>,
    expected: &str,
) -> Result<T, ApiError> {
    let refuse = |why: String| ApiError::bad_request(format!("expected {expected}: {why}"));
    let Json(value) = body.map_err(|e| refuse(e.body_text()))?;
    if !value.is_object() {
        return Err(refuse("the body is not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| refuse(e.to_string()))
}

fn user_id(raw: String, what: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Entry {
        #[allow(dead_code)]
        username: Option<String>,
        #[allow(dead_code)]
        gender: Option<String>,
    }

    #[test]
    fn an_array_body_is_refused_though_serde_would_read_it_as_the_fields() {
        // Found by schemathesis: `PUT /api/users/{id}` with `[null, null]` was stored.
        assert!(serde_json::from_value::<Entry>(json!([null, null])).is_ok());
        let refused = object_body::<Entry>(Ok(Json(json!([null, null]))), "{...}")
            .expect_err("an array is not an entry");
        assert!(format!("{refused:?}").contains("not a JSON object"));
        assert!(object_body::<Entry>(Ok(Json(json!({"username": "ayse"}))), "{...}").is_ok());
        assert!(object_body::<Entry>(Ok(Json(json!({"username": 5}))), "{...}").is_err());
    }
}
