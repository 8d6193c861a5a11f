//! Rust step handlers, registered by callable name.

use crate::step::{HandlerError, HandlerOutput, StepContext};
use std::collections::HashMap;
use std::sync::Arc;

/// A step handler written in Rust. The callable name in a template selects it.
#[async_trait::async_trait]
pub trait StepHandler: Send + Sync + 'static {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError>;
}

#[derive(Default, Clone)]
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<dyn StepHandler>>,
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRegistry")
            .field("callables", &self.callables())
            .finish()
    }
}

impl HandlerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(
        &mut self,
        callable: impl Into<String>,
        handler: impl StepHandler,
    ) -> &mut Self {
        self.handlers.insert(callable.into(), Arc::new(handler));
        self
    }

    pub fn get(&self, callable: &str) -> Option<Arc<dyn StepHandler>> {
        self.handlers.get(callable).cloned()
    }

    pub fn contains(&self, callable: &str) -> bool {
        self.handlers.contains_key(callable)
    }

    pub fn callables(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}
