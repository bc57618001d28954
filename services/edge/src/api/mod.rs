//! The presence API for application backends (Bearer JWT, visibility applied to the caller):
//! one user's presence, many at once, a paged list of who is online ([`reads`]), username
//! search with presence ([`search`]), and service-role calls that set a user's status or
//! directory entry ([`writes`]).

mod reads;
mod search;
mod writes;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};
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

fn user_id(raw: String, what: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}
