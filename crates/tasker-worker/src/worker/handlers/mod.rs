pub mod completion_processor;
pub mod dispatch_service;
pub mod ffi_dispatch_channel;
pub mod ffi_loopback;
pub mod registry;
