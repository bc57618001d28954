//! The error answers of the backend API and the operators' endpoints: a status and
//! `{error, message}`, counted by status (`presence_api_rejected_total`). The active-users
//! endpoints answer in their own shape (`{error, code, message, field?}`), see
//! `active_users::http`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer: status and `{error, message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        metrics::counter!("presence_api_rejected_total", "status" => status.as_str().to_owned())
            .increment(1);
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The call reads or writes the database, and the edge has none.
    pub(crate) fn needs_database() -> Self {
        Self::unavailable("this call needs the database: set DATABASE_URL on the edge")
    }

    /// A dependency (the log, the database) did not answer: retry later.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

/// The error answer of the backend API and the operators' endpoints.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ApiErrorBody)]
pub(crate) struct ErrorBody<'a> {
    /// The status' reason phrase, e.g. `Bad Request`.
    error: &'a str,
    /// What was wrong, naming the field or the limit.
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.status.canonical_reason().unwrap_or("Error");
        let body = Json(ErrorBody {
            error,
            message: &self.message,
        });
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

/// What a handler of the backend API or the operators' endpoints answers.
pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;
