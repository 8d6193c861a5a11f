use magnus::{Error, Ruby};
#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let _ = ruby.define_module("TaskerCore")?;
    Ok(())
}
