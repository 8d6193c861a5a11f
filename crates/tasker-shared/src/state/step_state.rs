use super::{state_enum, IllegalTransition};

state_enum!(
    /// The life of one workflow step.
    StepState, "step", {
        Pending => "pending",
        Enqueued => "enqueued",
        InProgress => "in_progress",
        EnqueuedForOrchestration => "enqueued_for_orchestration",
        EnqueuedAsErrorForOrchestration => "enqueued_as_error_for_orchestration",
        WaitingForRetry => "waiting_for_retry",
        Complete => "complete",
        Error => "error",
        Cancelled => "cancelled",
        ResolvedManually => "resolved_manually",
    }
);

use StepState::*;

/// Every allowed step transition. `in_progress -> enqueued` hands a step back (graceful
/// shutdown, or a claim whose lease expired); `in_progress -> complete` is a success the
/// worker records and applies in one transaction (a step without a decision or batch
/// outcome); `error -> pending` and the `resolved_manually` and `error -> complete` edges
/// are operator actions.
pub const STEP_TRANSITIONS: &[(StepState, StepState)] = &[
    (Pending, Enqueued),
    (Pending, Cancelled),
    (Pending, ResolvedManually),
    (Pending, Complete),
    (Enqueued, InProgress),
    (Enqueued, Cancelled),
    // Its own claim fails every time (claim_failed).
    (Enqueued, Error),
    (InProgress, EnqueuedForOrchestration),
    (InProgress, EnqueuedAsErrorForOrchestration),
    (InProgress, Enqueued),
    (InProgress, Complete),
    // Its worker was lost on its last attempt (worker_lost).
    (InProgress, Error),
    (EnqueuedForOrchestration, Complete),
    (EnqueuedAsErrorForOrchestration, WaitingForRetry),
    (EnqueuedAsErrorForOrchestration, Error),
    (WaitingForRetry, Enqueued),
    (WaitingForRetry, Cancelled),
    (WaitingForRetry, ResolvedManually),
    (WaitingForRetry, Complete),
    (WaitingForRetry, Error),
    (Error, Pending),
    (Error, ResolvedManually),
    (Error, Complete),
];

impl StepState {
    /// No automatic transition leaves these states.
    pub fn is_terminal(self) -> bool {
        matches!(self, Complete | Error | Cancelled | ResolvedManually)
    }

    /// Parents in these states satisfy a child's dependency.
    pub fn satisfies_dependency(self) -> bool {
        matches!(self, Complete | ResolvedManually)
    }

    /// The step is somewhere between being handed to a worker and its result being processed.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            Enqueued | InProgress | EnqueuedForOrchestration | EnqueuedAsErrorForOrchestration
        )
    }

    pub fn can_transition_to(self, to: StepState) -> bool {
        STEP_TRANSITIONS.contains(&(self, to))
    }

    /// Checks a transition against the table; `id` names the step in the error.
    pub fn check_transition(self, to: StepState, id: &str) -> Result<(), IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(IllegalTransition {
                kind: "step",
                id: id.to_string(),
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}
