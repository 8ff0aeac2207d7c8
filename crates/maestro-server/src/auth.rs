//! Who is asking: the bearer token's identity and roles, and the request's trace id.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use maestro_core::trace::TraceId;

use crate::AppState;
use crate::error::ApiError;
use crate::tokens::{Role, TokenEntry};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) TokenEntry);

impl Caller {
    pub(crate) fn identity(&self) -> &str {
        &self.0.identity
    }

    /// Refuse (403) unless the caller has `role`.
    pub(crate) fn require(&self, role: Role, action: &str) -> Result<(), ApiError> {
        if self.0.has_role(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{:?} may not {action}: that needs the {role} role (this token has: {}); `mc tokens add {} --roles {role}` makes one that may",
                self.0.identity,
                self.0
                    .roles
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.0.identity,
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(unauthorized(
                "missing Authorization header: send `Authorization: Bearer <token>` (`mc tokens add IDENTITY --roles ...` makes a token)",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        match state.tokens.authenticate(token) {
            Ok(Some(entry)) => Ok(Caller(entry)),
            Ok(None) => Err(unauthorized(
                "unknown or revoked token; `mc tokens list` shows the tokens of the server's state root",
            )),
            Err(error) => Err(ApiError::internal(error)),
        }
    }
}

/// The request's trace id: `X-Trace-Id` when given (and valid), else a new one.
#[derive(Debug, Clone)]
pub(crate) struct RequestTrace(pub(crate) TraceId);

impl<S: Send + Sync> FromRequestParts<S> for RequestTrace {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let given = parts
            .headers
            .get("x-trace-id")
            .map(|value| value.to_str().unwrap_or("\u{fffd}"));
        TraceId::resolve(given, None)
            .map(RequestTrace)
            .map_err(|error| ApiError::bad_request(format!("invalid X-Trace-Id header: {error}")))
    }
}
