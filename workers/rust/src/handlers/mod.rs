pub mod approvals;
pub mod ecommerce;
pub mod errors;
pub mod import;
pub mod math;
pub mod util;
