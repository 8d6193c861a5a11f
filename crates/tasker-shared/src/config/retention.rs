//! `[retention]`: how long finished tasks are kept, and what happens to them after.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Whether the orchestrator runs retention on its own (`tasker retention run` always can).
    pub enabled: bool,
    pub mode: RetentionMode,
    /// How long a task is kept after it completed.
    pub complete_after: Period,
    /// How long a task is kept after it failed (error, and resolved_manually, which only an
    /// error reaches).
    pub error_after: Period,
    /// How long a task is kept after it was cancelled.
    pub cancelled_after: Period,
    /// How long a removed task's id is remembered, so asking for it says it was removed.
    pub tombstone_after: Period,
    /// How long a durable domain event stays in its `<namespace>_domain_events` queue (and
    /// that queue's archive) for consumers that have not read it.
    pub domain_events_after: Period,
    /// How often the orchestrator runs it.
    pub interval_seconds: u64,
    /// Tasks removed per transaction.
    pub batch_size: u32,
}

impl RetentionConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }

    /// How long tasks in the final state `state` are kept; `None` for a state that is not
    /// final.
    pub fn period_of(&self, state: &str) -> Option<Period> {
        match state {
            "complete" => Some(self.complete_after),
            "error" | "resolved_manually" => Some(self.error_after),
            "cancelled" => Some(self.cancelled_after),
            _ => None,
        }
    }
}

/// What retention does with a task whose period is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionMode {
    /// Its rows are deleted.
    Delete,
    /// Its rows move to the `tasker_archive` schema (same tables and columns).
    Archive,
}

impl RetentionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionMode::Delete => "delete",
            RetentionMode::Archive => "archive",
        }
    }
}

/// A retention period, written as a whole number and a unit: `"7d"`, `"12h"`, `"30m"`,
/// `"90s"`. Kept in the configuration as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    amount: u64,
    unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl Unit {
    fn seconds(self) -> u64 {
        match self {
            Unit::Seconds => 1,
            Unit::Minutes => 60,
            Unit::Hours => 3600,
            Unit::Days => 86400,
        }
    }

    fn suffix(self) -> char {
        match self {
            Unit::Seconds => 's',
            Unit::Minutes => 'm',
            Unit::Hours => 'h',
            Unit::Days => 'd',
        }
    }
}

/// Shortest period: anything shorter would remove tasks their submitter may still be
/// waiting on or about to read.
pub const MIN_PERIOD_SECONDS: u64 = 60;
/// Longest period, ten years: longer is "forever", which `enabled = false` says plainly.
pub const MAX_PERIOD_SECONDS: u64 = 3650 * 86400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("'{0}' is not a period: write a whole number and a unit, d, h, m or s (\"7d\", \"12h\", \"30m\")")]
    Malformed(String),
    #[error("'{0}' is too short: retention periods are at least 1m")]
    TooShort(String),
    #[error("'{0}' is too long: retention periods are at most 3650d (disable retention instead)")]
    TooLong(String),
}

impl Period {
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.amount * self.unit.seconds())
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(text: &str) -> Result<Self, PeriodError> {
        let malformed = || PeriodError::Malformed(text.to_string());
        if !text.is_ascii() {
            return Err(malformed());
        }
        let (digits, unit) = text.split_at(text.len().saturating_sub(1));
        let unit = match unit {
            "s" => Unit::Seconds,
            "m" => Unit::Minutes,
            "h" => Unit::Hours,
            "d" => Unit::Days,
            _ => return Err(malformed()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let amount: u64 = digits
            .parse()
            .map_err(|_| PeriodError::TooLong(text.to_string()))?;
        let seconds = amount.checked_mul(unit.seconds());
        match seconds {
            Some(s) if s < MIN_PERIOD_SECONDS => Err(PeriodError::TooShort(text.to_string())),
            Some(s) if s <= MAX_PERIOD_SECONDS => Ok(Period { amount, unit }),
            _ => Err(PeriodError::TooLong(text.to_string())),
        }
    }
}

impl TryFrom<String> for Period {
    type Error = PeriodError;

    fn try_from(text: String) -> Result<Self, PeriodError> {
        text.parse()
    }
}

impl From<Period> for String {
    fn from(p: Period) -> String {
        p.to_string()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_as_written() {
        for (text, seconds) in [
            ("7d", 7 * 86400),
            ("12h", 12 * 3600),
            ("30m", 1800),
            ("90s", 90),
        ] {
            let p: Period = text.parse().unwrap();
            assert_eq!(p.as_duration(), Duration::from_secs(seconds));
            assert_eq!(p.to_string(), text);
        }
    }

    #[test]
    fn bad_periods_are_refused_with_the_value() {
        for text in ["", "d", "7", "7w", "-1d", "1.5d", " 7d", "7 d", "7D", "7дн"] {
            let err = text.parse::<Period>().unwrap_err();
            assert_eq!(err, PeriodError::Malformed(text.to_string()), "{text}");
        }
        assert_eq!(
            "59s".parse::<Period>(),
            Err(PeriodError::TooShort("59s".into()))
        );
        assert_eq!(
            "3651d".parse::<Period>(),
            Err(PeriodError::TooLong("3651d".into()))
        );
        assert!(matches!(
            "99999999999999999999999d".parse::<Period>(),
            Err(PeriodError::TooLong(_))
        ));
        assert!("3650d".parse::<Period>().is_ok());
    }
}
