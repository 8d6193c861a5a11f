use super::ApiError;
use crate::OrchestrationCore;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// When `[orchestration] api_key` is set, every /v1 request must carry it in `X-API-Key`.
pub async fn require_api_key(
    State(core): State<OrchestrationCore>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let expected = core.config.orchestration.api_key.as_bytes();
    if expected.is_empty() {
        return Ok(next.run(request).await);
    }
    let given = request
        .headers()
        .get("x-api-key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(given, expected) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-API-Key header",
        ))
    }
}

/// Compares without stopping at the first difference, so timing does not leak the key.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
