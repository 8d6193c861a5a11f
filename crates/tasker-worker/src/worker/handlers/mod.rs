pub(crate) mod completion_processor;
pub(crate) mod dispatch_service;
pub(crate) mod ffi_dispatch_channel;
pub(crate) mod ffi_loopback;
mod ready_queue;
pub(crate) mod registry;
