use super::{state_enum, IllegalTransition};

state_enum!(
    /// The life of one task.
    TaskState, "task", {
        Pending => "pending",
        Initializing => "initializing",
        EnqueuingSteps => "enqueuing_steps",
        StepsInProcess => "steps_in_process",
        EvaluatingResults => "evaluating_results",
        WaitingForDependencies => "waiting_for_dependencies",
        WaitingForRetry => "waiting_for_retry",
        BlockedByFailures => "blocked_by_failures",
        Complete => "complete",
        Error => "error",
        Cancelled => "cancelled",
        ResolvedManually => "resolved_manually",
    }
);

use TaskState::*;

/// Every allowed task transition. The finalizer moves a task straight to the state that
/// `get_task_execution_context` implies (no intermediate hop per result, which would cost a
/// write per step), so each active state can reach each outcome. `evaluating_results` is where
/// an operator's reset or resolution of a failed step reopens a task; `error` is terminal for
/// the engine, and only that operator action leaves it.
pub const TASK_TRANSITIONS: &[(TaskState, TaskState)] = &[
    (Pending, Initializing),
    (Pending, Cancelled),
    (Initializing, EnqueuingSteps),
    (Initializing, Error),
    (Initializing, Cancelled),
    (EnqueuingSteps, StepsInProcess),
    (EnqueuingSteps, WaitingForDependencies),
    (EnqueuingSteps, Complete),
    (EnqueuingSteps, Error),
    (EnqueuingSteps, Cancelled),
    (StepsInProcess, EvaluatingResults),
    (StepsInProcess, WaitingForDependencies),
    (StepsInProcess, WaitingForRetry),
    (StepsInProcess, BlockedByFailures),
    (StepsInProcess, Complete),
    (StepsInProcess, Cancelled),
    (EvaluatingResults, StepsInProcess),
    (EvaluatingResults, WaitingForDependencies),
    (EvaluatingResults, WaitingForRetry),
    (EvaluatingResults, BlockedByFailures),
    (EvaluatingResults, Complete),
    (EvaluatingResults, Cancelled),
    (WaitingForDependencies, StepsInProcess),
    (WaitingForDependencies, WaitingForRetry),
    (WaitingForDependencies, BlockedByFailures),
    (WaitingForDependencies, Complete),
    (WaitingForDependencies, Cancelled),
    (WaitingForRetry, StepsInProcess),
    (WaitingForRetry, WaitingForDependencies),
    (WaitingForRetry, BlockedByFailures),
    (WaitingForRetry, Complete),
    (WaitingForRetry, Cancelled),
    (BlockedByFailures, Error),
    (BlockedByFailures, EvaluatingResults),
    (BlockedByFailures, Cancelled),
    (Error, EvaluatingResults),
    (Error, ResolvedManually),
];

impl TaskState {
    /// No automatic transition leaves these states (an operator may still reopen `error`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Complete | Error | Cancelled | ResolvedManually)
    }

    pub fn can_transition_to(self, to: TaskState) -> bool {
        TASK_TRANSITIONS.contains(&(self, to))
    }

    pub fn check_transition(self, to: TaskState, id: &str) -> Result<(), IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(IllegalTransition {
                kind: "task",
                id: id.to_string(),
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}
