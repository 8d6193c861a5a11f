pub mod step_executor_actor;
