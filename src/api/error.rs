//! The one place that maps domain errors to MLflow's `{"error_code", "message"}` JSON and
//! HTTP statuses. Client mistakes are never answered with 408/429/5xx: the mlflow client
//! retries those for minutes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store;

/// MLflow's error codes (`databricks.proto`) that this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidParameterValue,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    BadRequest,
    EndpointNotFound,
    InvalidState,
    PermissionDenied,
    Unauthenticated,
    InternalError,
    NotImplemented,
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// MLflow's `ERROR_CODE_TO_HTTP_STATUS`.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidParameterValue
            | ErrorCode::ResourceAlreadyExists
            | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::ResourceDoesNotExist | ErrorCode::EndpointNotFound => StatusCode::NOT_FOUND,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidState | ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answered to an API client.
#[derive(Debug, Serialize)]
pub struct ApiError {
    pub error_code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(error_code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error_code,
            message: message.into(),
        }
    }

    /// INVALID_PARAMETER_VALUE with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    /// MLflow's message for a required field that is absent.
    pub fn missing(field: &str) -> Self {
        Self::invalid(format!(
            "Missing value for required parameter '{field}'. See the API docs for more information about request parameters."
        ))
    }
}

impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> Self {
        use store::Error;
        match error {
            Error::NotFound { message, .. } => {
                ApiError::new(ErrorCode::ResourceDoesNotExist, message)
            }
            // MLflow 3.17 answers an unknown alias with INVALID_PARAMETER_VALUE.
            alias @ Error::AliasNotFound { .. } => ApiError::invalid(alias.to_string()),
            Error::AlreadyExists(message) => {
                ApiError::new(ErrorCode::ResourceAlreadyExists, message)
            }
            Error::Invalid(message) => ApiError::invalid(message),
            Error::BadRequest(message) => ApiError::new(ErrorCode::BadRequest, message),
            Error::InvalidState(message) => ApiError::new(ErrorCode::InvalidState, message),
            // 403 PERMISSION_DENIED: the request is well-formed but this caller may not make
            // it here. The mlflow client neither retries 403 nor branches on the code, so the
            // user sees the message naming the owning resource at once.
            owned @ Error::OwnedElsewhere { .. } => {
                ApiError::new(ErrorCode::PermissionDenied, owned.to_string())
            }
            // A promotion policy's refusal is the same kind of answer (not MLflow's
            // INVALID_STATE, which is a 500 the client retries).
            Error::PolicyDenied(message) => ApiError::new(ErrorCode::PermissionDenied, message),
            // 503: an outage, not a bug; clients (the mlflow client included) and load
            // balancers retry it.
            unavailable if unavailable.is_unavailable() => {
                tracing::warn!(error = ?unavailable, "store unavailable");
                ApiError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "The backend store is temporarily unavailable; retry later.",
                )
            }
            other => {
                // The detail is for the operator's log, not the client.
                tracing::error!(error = ?other, "store failure");
                ApiError::new(ErrorCode::InternalError, format!("{other}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.error_code.status(), Json(self)).into_response()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// How handlers read a field MLflow requires: `request.name.required("name")?` answers
/// [`ApiError::missing`] when it is absent. Wrap it in [`non_empty`] where an empty string
/// counts as absent too.
pub trait Required<T> {
    fn required(self, field: &str) -> ApiResult<T>;
}

impl<T> Required<T> for Option<T> {
    fn required(self, field: &str) -> ApiResult<T> {
        self.ok_or_else(|| ApiError::missing(field))
    }
}

/// `value`, with an empty string counted as absent (MLflow's `_assert_required`).
pub fn non_empty<S: AsRef<str>>(value: Option<S>) -> Option<S> {
    value.filter(|value| !value.as_ref().is_empty())
}
