//! `limit` and `offset` of the list endpoints, checked alike.

use super::ApiError;

const MAX_PAGE: i64 = 500;
/// The deepest page an offset may ask for: the database reads and discards every row before
/// it, so a huge offset costs a scan of the table. Filters reach older rows cheaply.
const MAX_OFFSET: i64 = 10_000;

/// The page asked for (default 50 rows from the start), or why it is refused; `narrow`
/// says how to reach rows past the deepest offset.
pub(super) fn page(
    limit: Option<i64>,
    offset: Option<i64>,
    narrow: &str,
) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let offset = offset.unwrap_or(0);
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ApiError::bad_request(
            "offset",
            format!("offset must be between 0 and {MAX_OFFSET}; {narrow}"),
        ));
    }
    Ok((limit, offset))
}
