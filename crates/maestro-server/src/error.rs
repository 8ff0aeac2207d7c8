//! Every error the API answers: a status and a JSON body `{"error": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to do about it.
    pub error: String,
    /// The job concerned, when there is one (e.g. a job denied by policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Its state, when there is a job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Every policy's verdict, when policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub verdicts: Option<serde_json::Value>,
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) body: ErrorBody,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: message.to_string(),
                job_id: None,
                state: None,
                verdicts: None,
            },
        }
    }

    pub(crate) fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn forbidden(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(%message, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<maestro_core::state::StateError> for ApiError {
    fn from(error: maestro_core::state::StateError) -> Self {
        match error {
            maestro_core::state::StateError::NotFound {
                job_id,
                pruned: true,
                ..
            } => Self::new(
                StatusCode::NOT_FOUND,
                format!("job {job_id} was pruned (`mc prune`); the audit log keeps its records"),
            ),
            maestro_core::state::StateError::NotFound { job_id, .. } => Self::new(
                StatusCode::NOT_FOUND,
                format!("no job {job_id}; GET /v1/jobs lists the jobs"),
            ),
            other => Self::internal(other),
        }
    }
}
