use crate::OrchestrationError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Every error the API returns: a status and `{"error": {"message", "field", "code"}}`,
/// plus `reference` for internal errors.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For internal errors: the id under which the cause was logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            reference: None,
        }
    }

    /// A failure of the server's own (database, queue): the cause is logged under a fresh
    /// reference, and the client gets only that reference, never the cause's text (it names
    /// tables, queries and connection details).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4().to_string();
        tracing::error!(%reference, error = %cause, "API request failed");
        let mut err = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error; the server's log has the cause under reference {reference}"),
        );
        err.reference = Some(reference);
        err
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).field(field)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        if status.is_server_error() && self.reference.is_none() {
            tracing::error!(message = %self.message, "API request failed");
        }
        (status, Json(serde_json::json!({ "error": self }))).into_response()
    }
}

impl From<OrchestrationError> for ApiError {
    fn from(e: OrchestrationError) -> Self {
        use OrchestrationError as E;
        let msg = e.to_string();
        match e {
            E::TemplateNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "template_not_found", msg)
            }
            E::InvalidContext { .. } | E::UnstorableContext { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_context", msg)
                    .field("context")
            }
            E::TooManySteps { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_steps", msg)
            }
            E::TaskNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "task_not_found", msg),
            E::StepNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "step_not_found", msg),
            E::TaskFinished { .. } | E::StepActionRefused { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", msg)
            }
            E::Store(tasker_shared::models::StoreError::Removed(removed)) => ApiError::new(
                StatusCode::NOT_FOUND,
                if removed.archived {
                    "task_archived"
                } else {
                    "task_removed"
                },
                msg,
            ),
            E::Store(tasker_shared::models::StoreError::NotFound { .. }) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", msg)
            }
            E::Store(_) | E::Queue(_) | E::Database(_) => ApiError::internal(msg),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let text = r.body_text();
        let status = match r {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut err = ApiError::new(status, "invalid_body", text.clone());
        err.field = field_in(&text);
        err
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let text = r.body_text();
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", text.clone());
        err.field = field_in(&text);
        err
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<tasker_shared::models::StoreError> for ApiError {
    fn from(e: tasker_shared::models::StoreError) -> Self {
        OrchestrationError::from(e).into()
    }
}

/// serde names the offending field in backquotes ("missing field `name`").
fn field_in(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}
