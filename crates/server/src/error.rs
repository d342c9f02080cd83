//! The API's error answer: a status and a JSON body `{code, message, details}`. `code` is stable
//! and machine-readable, `message` is English for engineers and logs; a workflow's rejection also
//! carries its Vietnamese message in `details`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use giamsat_cases::CaseError;
use giamsat_documents::register::RegisterError;
use giamsat_engine::Rejection;
use giamsat_store::StoreError;
use serde_json::{Value, json};

/// Rejection codes that mean "this actor may not do this" rather than "the case does not allow
/// it now": answered with 403.
const FORBIDDEN_REJECTIONS: &[&str] = &["role_not_allowed", "not_own_unit"];

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn forbidden(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// The case does not exist, or the caller may not know that it does (a unit token asking
    /// for a case its unit is not part of gets the same answer).
    pub fn case_not_found(case: &str) -> ApiError {
        ApiError::not_found("case_not_found", format!("case {case:?} does not exist"))
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .with_details(json!({ "limit_bytes": limit }))
    }

    /// A workflow's rejection: 403 when the actor's role or unit is not allowed, 404 for a
    /// command the workflow does not have, 422 otherwise. The body carries the rejection code
    /// and both messages.
    pub fn rejection(r: &Rejection) -> ApiError {
        let status = if FORBIDDEN_REJECTIONS.contains(&r.code.as_str()) {
            StatusCode::FORBIDDEN
        } else if r.code == "unknown_command" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, &r.code, r.message_en.clone()).with_details(json!({
            "rejected": true,
            "command": r.command,
            "stage": r.stage,
            "entity": r.entity,
            "entity_state": r.entity_state,
            "message_vi": r.message_vi,
            "message_en": r.message_en,
        }))
    }

    pub fn is_server_error(&self) -> bool {
        self.status.is_server_error()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.is_server_error() {
            tracing::error!(code = %self.code, error = %self.message, "request failed");
        }
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let body = json!({
            "code": self.code,
            "message": self.message,
            "details": self.details,
        });
        let mut response = (self.status, Json(body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"giamsat\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => ApiError::conflict(
                "version_conflict",
                format!(
                    "stream {stream} changed: expected version {expected}, actual version {actual}"
                ),
            )
            .with_details(json!({
                "stream": stream,
                "expected_version": expected.to_string(),
                "actual_version": actual,
            })),
            StoreError::EventIdConflict { .. } | StoreError::PartialDuplicate { .. } => {
                ApiError::conflict("event_id_conflict", e.to_string())
            }
            StoreError::Invalid(v) => ApiError::bad_request("invalid_event", v.to_string()),
            e if e.is_transient() => ApiError::unavailable("store_unavailable", e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> ApiError {
        match e {
            CaseError::Rejected(r) => ApiError::rejection(&r),
            CaseError::NotFound(id) => ApiError::case_not_found(&id),
            CaseError::InvalidId { id, reason } => {
                ApiError::bad_request("invalid_case_id", format!("case id {id:?}: {reason}"))
            }
            CaseError::Contended(id) => ApiError::conflict(
                "case_contended",
                format!("case {id:?} kept changing while the command was retried; try again"),
            ),
            CaseError::Store(s) => s.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> ApiError {
        match e {
            RegisterError::UnknownDocument { .. } => {
                ApiError::not_found("document_not_found", e.to_string())
            }
            RegisterError::Invalid(message) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "document_not_numberable",
                message,
            ),
            RegisterError::Contended(series) => ApiError::conflict(
                "register_contended",
                format!("the register series {series} kept changing while numbering; try again"),
            ),
            RegisterError::Store(s) => s.into(),
        }
    }
}
