//! Example Rust step handlers for the templates in config/tasks. They are registered under
//! the same callable names the Ruby examples use, so one template runs on either worker.

pub mod handlers;

use std::sync::Arc;
use tasker_worker::HandlerRegistry;

/// Every example handler, keyed by its template callable.
pub fn example_registry() -> Arc<HandlerRegistry> {
    let mut r = HandlerRegistry::new();
    r.register("Examples::Math::Compute", handlers::math::Compute)
        .register("Examples::Noop", handlers::util::Noop)
        .register("Examples::Sleep", handlers::util::Sleep)
        .register("Examples::Errors::Flaky", handlers::errors::Flaky)
        .register(
            "Examples::Errors::AlwaysFails",
            handlers::errors::AlwaysFails,
        )
        .register(
            "Examples::Errors::PermanentFailure",
            handlers::errors::PermanentFailure,
        )
        .register("Examples::Errors::Panics", handlers::errors::Panics)
        .register(
            "Examples::Errors::KillsItsWorker",
            handlers::errors::KillsItsWorker,
        )
        .register(
            "Ecommerce::ValidateOrder",
            handlers::ecommerce::ValidateOrder,
        )
        .register(
            "Ecommerce::ReserveInventory",
            handlers::ecommerce::ReserveInventory,
        )
        .register(
            "Ecommerce::ChargePayment",
            handlers::ecommerce::ChargePayment,
        )
        .register("Ecommerce::ShipOrder", handlers::ecommerce::ShipOrder)
        .register("Approvals::Route", handlers::approvals::Route)
        .register("Approvals::Approve", handlers::approvals::Approve)
        .register("Approvals::Finalize", handlers::approvals::Finalize)
        .register("Import::Plan", handlers::import::Plan)
        .register("Import::ProcessBatch", handlers::import::ProcessBatch)
        .register("Import::Aggregate", handlers::import::Aggregate);
    Arc::new(r)
}
