pub mod ecommerce;
pub mod errors;
pub mod math;
pub mod util;
