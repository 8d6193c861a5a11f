pub(crate) mod step_executor_actor;
