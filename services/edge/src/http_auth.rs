//! Who is calling an HTTP endpoint of the backend API or the operators' endpoints: the
//! `Authorization: Bearer` JWT, checked with the same keys as Socket.io handshakes. One place
//! decides what a person, a service and an operator may call.

use axum::http::{HeaderMap, StatusCode, header};
use presence_auth::{AuthError, Identity, Verifier};
use presence_config::Environment;

use crate::http_error::ApiError;

/// The guards of the HTTP endpoints.
pub(crate) struct HttpAuth {
    verifier: Option<Verifier>,
    environment: Environment,
}

impl HttpAuth {
    pub(crate) fn new(verifier: Option<Verifier>, environment: Environment) -> Self {
        Self {
            verifier,
            environment,
        }
    }

    /// The caller named by the `Authorization: Bearer` token.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    AuthError::Missing.to_string().replace(
                        "send auth { token: \"<JWT>\" }",
                        "send Authorization: Bearer <JWT>",
                    ),
                )
            })?;
        let verifier = self.verifier.as_ref().ok_or_else(|| {
            ApiError::unavailable("token authentication is not configured on this server")
        })?;
        verifier
            .verify(token)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
    }

    /// A caller with a service-role token (`role: "service"`).
    pub(crate) fn service(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let caller = self.caller(headers)?;
        if !caller.service {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this call needs a service-role token (role: \"service\")",
            ));
        }
        Ok(caller)
    }

    /// Operators' endpoints: open in development, service role otherwise.
    pub(crate) fn operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.environment != Environment::Development {
            self.service(headers)?;
        }
        Ok(())
    }
}
