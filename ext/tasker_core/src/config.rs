//! The module function on TaskerCore::Native for configuration: the merged configuration a
//! worker would run with.

use crate::error::NativeError;
use crate::helpers::convert::from_ruby;
use crate::helpers::serialize::to_ruby;
use magnus::{function, prelude::*, RHash, RModule, Ruby, Value};
use tasker_shared::config::ConfigOptions;

pub fn define(native: RModule) -> Result<(), magnus::Error> {
    native.define_module_function("load_config", function!(load_config, 1))?;
    Ok(())
}

/// `load_config(options)`: the merged configuration as a Hash (what a worker would use).
fn load_config(ruby: &Ruby, options_value: Value) -> Result<Value, magnus::Error> {
    let opts: ConfigOptions = if options_value.is_nil() {
        ConfigOptions::default()
    } else {
        from_ruby(ruby, options_value, "options")?
    };
    let config = opts.load().map_err(NativeError::from)?;
    let value = serde_json::to_value(&config)
        .map_err(|e| NativeError::native(format!("serializing configuration: {e}")))?;
    let hash: RHash = RHash::from_value(to_ruby(ruby, &value)?)
        .ok_or_else(|| NativeError::native("configuration is not a Hash"))?;
    hash.aset("environment", opts.environment())?;
    Ok(hash.as_value())
}
