use crate::OrchestrationError;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tasker_shared::models::{RemovedTask, StoreError};

/// Everything a dashboard request can fail with; shown to the operator as an error page.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("{what} not found")]
    NotFound { what: String },
    /// A task retention removed: the page says so and when.
    #[error("{0}")]
    Removed(RemovedTask),
    #[error("invalid {field}: {message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error("refused: {0}")]
    Forbidden(String),
    #[error("the API key is missing or wrong; log in at /ui/login")]
    Unauthorized,
    #[error(transparent)]
    Operation(#[from] OrchestrationError),
    #[error("reading the database: {0}")]
    Store(#[from] StoreError),
    #[error("querying the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("rendering the page: {0}")]
    Render(#[from] askama::Error),
}

impl UiError {
    pub fn not_found(what: impl Into<String>) -> Self {
        UiError::NotFound { what: what.into() }
    }

    /// For a task [`tasker_shared::models::TaskRow::get`] did not find.
    pub fn missing_task(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, id } => UiError::not_found(format!("{what} {id}")),
            StoreError::Removed(removed) => UiError::Removed(removed),
            other => other.into(),
        }
    }

    fn status(&self) -> StatusCode {
        use OrchestrationError as O;
        match self {
            UiError::NotFound { .. } => StatusCode::NOT_FOUND,
            UiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::Unauthorized => StatusCode::UNAUTHORIZED,
            UiError::Operation(
                O::TaskNotFound(_) | O::StepNotFound { .. } | O::Store(StoreError::Removed(_)),
            )
            | UiError::Removed(_) => StatusCode::NOT_FOUND,
            UiError::Operation(O::TaskFinished { .. } | O::StepActionRefused { .. }) => {
                StatusCode::CONFLICT
            }
            UiError::Operation(_)
            | UiError::Store(_)
            | UiError::Database(_)
            | UiError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage {
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // The cause of a server failure (database text naming tables and queries) goes to
        // the log only; the page shows the reference it was logged under.
        let message = if status.is_server_error() {
            let reference = uuid::Uuid::new_v4();
            tracing::error!(%reference, error = %self, "dashboard request failed");
            format!("internal error; the server's log has the cause under reference {reference}")
        } else {
            self.to_string()
        };
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error").to_string(),
            message: message.clone(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}
