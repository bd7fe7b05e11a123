//! Errors as the API server reports them: a `Status` object with the HTTP code, a `reason`
//! clients switch on (`NotFound`, `Conflict`, `Invalid`, ...) and a message kubectl prints.
//! Every failure of a request is mapped to one here.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{admission::Denied, kinds::ResourceType};

/// An error as the API server reports it: a `Status` object.
pub(crate) struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    pub(super) fn new(
        code: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// The same error with `details` (which object, and each cause).
    pub(super) fn with_details(self, details: Value) -> ApiError {
        ApiError { details, ..self }
    }

    /// An error about one object of `t`.
    pub(super) fn about(
        t: &ResourceType,
        name: &str,
        code: StatusCode,
        reason: &'static str,
        message: String,
    ) -> ApiError {
        ApiError::new(code, reason, message)
            .with_details(json!({"name": name, "group": t.group, "kind": t.plural}))
    }

    /// A path that names nothing served.
    pub(super) fn path_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", "not found")
    }

    pub(super) fn not_found(t: &ResourceType, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", qualified(t));
        ApiError::about(t, name, StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// The object changed since the version the request was based on.
    pub(super) fn conflict(t: &ResourceType, name: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(t)
        );
        ApiError::about(t, name, StatusCode::CONFLICT, "Conflict", message)
    }

    /// The message kubectl prints.
    pub(super) fn message(&self) -> &str {
        &self.message
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// `422 Invalid` listing every field error.
    pub(super) fn invalid(t: &ResourceType, name: &str, errors: Vec<(String, String)>) -> ApiError {
        let list: Vec<String> = errors
            .iter()
            .map(|(f, m)| {
                if f.is_empty() {
                    m.clone()
                } else {
                    format!("{f}: {m}")
                }
            })
            .collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{}.{} \"{name}\" is invalid: {joined}", t.kind, t.group)
                .replace(". \"", " \""),
        )
        .with_details(json!({
            "name": name, "group": t.group, "kind": t.kind,
            "causes": errors.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f})).collect::<Vec<_>>(),
        }))
    }
}

/// A webhook's denial, with the webhook's code; reasons other than the few kubectl knows are
/// reported as `BadRequest`.
impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        ApiError::new(
            StatusCode::from_u16(d.code).unwrap_or(StatusCode::BAD_REQUEST),
            match d.reason.as_str() {
                "Invalid" => "Invalid",
                "Forbidden" => "Forbidden",
                "NotFound" => "NotFound",
                "InternalError" => "InternalError",
                _ => "BadRequest",
            },
            d.message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if !self.details.is_null() {
            status["details"] = self.details;
        }
        (self.code, axum::Json(status)).into_response()
    }
}

/// `virtualservices.networking.istio.io` or `services`.
pub(super) fn qualified(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}
