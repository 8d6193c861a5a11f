use std::fmt;

/// Where workers send step results for orchestration.
pub const ORCHESTRATION_RESULTS_QUEUE: &str = "orchestration_step_results";

/// PGMQ prefixes table names (`q_`, `a_`) and index names (`archived_at_idx_`), and
/// Postgres cuts identifiers at 63 bytes.
const MAX_QUEUE_NAME: usize = 47;

/// A queue name known to be a safe SQL identifier fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        validate_identifier(&name, MAX_QUEUE_NAME)
            .map_err(|r| format!("queue name '{name}' {r}"))?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PGMQ table holding the queue's messages, safe to put into SQL text.
    pub fn table(&self) -> String {
        format!("pgmq.q_{}", self.0)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lower-case ASCII letters, digits and underscores, starting with a letter, at most `max`
/// characters. The reason is phrased to follow the value's name.
pub fn validate_identifier(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max {
        return Err(format!(
            "must be at most {max} characters, got {}",
            value.len()
        ));
    }
    let mut chars = value.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Err(format!("'{value}' must start with a lower-case letter"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "'{value}' may only contain lower-case letters, digits and underscores"
        ));
    }
    Ok(())
}

/// `worker_<namespace>_queue`.
pub fn worker_queue(namespace: &str) -> Result<QueueName, String> {
    QueueName::new(format!("worker_{namespace}_queue"))
}

/// `<namespace>_domain_events`, where durable domain events go.
pub fn domain_events_queue(namespace: &str) -> Result<QueueName, String> {
    QueueName::new(format!("{namespace}_domain_events"))
}

/// The LISTEN channel that the queue's insert trigger notifies.
pub fn notify_channel(queue: &QueueName) -> String {
    format!("tasker_q_{}", queue.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(
            worker_queue("ecommerce").unwrap().as_str(),
            "worker_ecommerce_queue"
        );
        assert!(QueueName::new(ORCHESTRATION_RESULTS_QUEUE).is_ok());
    }

    #[test]
    fn refuses_injection_and_bad_identifiers() {
        for bad in [
            "",
            "Upper",
            "a-b",
            "a;drop table x",
            "a b",
            "1abc",
            "é",
            "a\"b",
            &"x".repeat(48),
        ] {
            assert!(QueueName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(worker_queue("x');--").is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_are_safe_identifiers(s in "\\PC{0,60}") {
            if let Ok(q) = QueueName::new(s.clone()) {
                prop_assert!(q.as_str().len() <= 47);
                prop_assert!(q.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            }
        }
    }
}
