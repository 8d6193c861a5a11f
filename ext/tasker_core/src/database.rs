//! Module functions on TaskerCore::Native for the database (the rake tasks and test
//! suites): migrate it, drop it. Each releases the GVL around its work.

use crate::helpers::nogvl::block_on;
use crate::helpers::runtime::runtime;
use crate::helpers::serialize::to_ruby;
use crate::helpers::CALL_TIMEOUT;
use magnus::{function, RModule, Ruby, Value};
use serde_json::json;
use tasker_shared::database;

pub fn define(native: RModule) -> Result<(), magnus::Error> {
    native.define_module_function("migrate", function!(migrate, 1))?;
    native.define_module_function("drop_database", function!(drop_database, 1))?;
    Ok(())
}

/// `migrate(database_url)`: creates the database if missing, migrates it, installs PGMQ.
fn migrate(ruby: &Ruby, url: String) -> Result<Value, magnus::Error> {
    let rt = runtime()?;
    let (name, created) = block_on(&rt, CALL_TIMEOUT, "migrating the database", async move {
        Ok(database::setup_database(&url).await?)
    })?;
    to_ruby(ruby, &json!({ "database": name, "created": created }))
}

/// `drop_database(database_url)`: drops the URL's database (terminating its connections);
/// for test suites that create one database per run. Returns whether it existed.
fn drop_database(url: String) -> Result<bool, magnus::Error> {
    let rt = runtime()?;
    block_on(&rt, CALL_TIMEOUT, "dropping the database", async move {
        Ok(database::drop_database(&url).await?)
    })
}
