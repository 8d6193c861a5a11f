//! Task and step state machines.
//!
//! The allowed transitions are written out as explicit tables so that the Rust code, the SQL
//! functions (which enforce the same table with compare-and-swap) and the documentation can
//! be checked against one another.

mod step_state;
mod task_state;

pub use step_state::{StepState, STEP_TRANSITIONS};
pub use task_state::{TaskState, TASK_TRANSITIONS};

/// A state name that is not one of the known states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state '{value}'")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {id}: transition {from} -> {to} is not allowed")]
pub struct IllegalTransition {
    pub kind: &'static str,
    pub id: String,
    pub from: String,
    pub to: String,
}

macro_rules! state_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::state::UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::state::UnknownState { kind: $kind, value: other.to_string() }),
                }
            }
        }
    };
}
pub(crate) use state_enum;
