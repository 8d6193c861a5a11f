//! The stylesheet and script, compiled into the binary so the dashboard needs no network
//! and no build step.

use super::UiError;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("../../static/dashboard.css");
const JS: &str = include_str!("../../static/dashboard.js");

pub async fn file(Path(file): Path<String>) -> Result<Response, UiError> {
    let (body, content_type) = match file.as_str() {
        "dashboard.css" => (CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(UiError::not_found(format!("static file '{file}'"))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small, and a new binary may change them: always revalidated.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response())
}
