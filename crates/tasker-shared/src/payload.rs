//! Limits on the JSON Tasker stores (step results, task contexts): what Postgres can hold
//! and what a reader can walk. A payload past them is refused with a [`PayloadProblem`]
//! that says where it went wrong, before it reaches the database.

use serde_json::Value;
use std::fmt::Write;

/// Deepest nesting of arrays and objects a payload may have. Deeper values are almost
/// always a bug (a cycle unrolled, a recursive structure) and cost stack to walk.
pub const MAX_DEPTH: usize = 64;

/// `max_payload_bytes`'s default: 8 MiB of JSON per result or context.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadProblem {
    #[error("{at}: nested deeper than {MAX_DEPTH} levels")]
    TooDeep { at: String },
    #[error("{at}: contains a NUL character (\\u0000), which Postgres cannot store")]
    NulCharacter { at: String },
    #[error("{what}: about {bytes} bytes of JSON, more than max_payload_bytes ({limit})")]
    TooLarge {
        what: String,
        bytes: usize,
        limit: usize,
    },
}

/// Checks `value` (named `what` in the problem, e.g. `result`) against [`MAX_DEPTH`], NUL
/// characters and `max_bytes` of serialized JSON (estimated, without serializing).
pub fn check(value: &Value, what: &str, max_bytes: usize) -> Result<(), PayloadProblem> {
    let mut bytes = 0;
    walk(value, 0, &mut bytes, max_bytes).map_err(|e| e.into_problem(what, bytes, max_bytes))
}

/// Where a walk stopped: the path is built on the way back up, only once something is
/// wrong.
struct Stop {
    kind: StopKind,
    path: Vec<Segment>,
}

enum StopKind {
    Deep,
    Nul,
    Large,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl Stop {
    fn new(kind: StopKind) -> Self {
        Self {
            kind,
            path: Vec::new(),
        }
    }

    fn at(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }

    fn into_problem(self, what: &str, bytes: usize, limit: usize) -> PayloadProblem {
        let mut at = what.to_string();
        for segment in self.path.iter().rev() {
            match segment {
                Segment::Key(k) if is_plain_key(k) => {
                    let _ = write!(at, ".{k}");
                }
                Segment::Key(k) => {
                    let _ = write!(at, "[{}]", Value::String(k.replace('\0', "\\0")));
                }
                Segment::Index(i) => {
                    let _ = write!(at, "[{i}]");
                }
            }
        }
        match self.kind {
            StopKind::Deep => PayloadProblem::TooDeep { at },
            StopKind::Nul => PayloadProblem::NulCharacter { at },
            StopKind::Large => PayloadProblem::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
            },
        }
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Recursion is bounded by [`MAX_DEPTH`]: the walk stops one level below it.
fn walk(value: &Value, depth: usize, bytes: &mut usize, max: usize) -> Result<(), Stop> {
    match value {
        Value::Null | Value::Bool(_) => *bytes += 5,
        Value::Number(_) => *bytes += 20,
        Value::String(s) => {
            if s.contains('\0') {
                return Err(Stop::new(StopKind::Nul));
            }
            *bytes += s.len() + 2;
        }
        Value::Array(items) => {
            if depth == MAX_DEPTH {
                return Err(Stop::new(StopKind::Deep));
            }
            *bytes += 2;
            for (i, item) in items.iter().enumerate() {
                walk(item, depth + 1, bytes, max).map_err(|e| e.at(Segment::Index(i)))?;
                *bytes += 1;
            }
        }
        Value::Object(map) => {
            if depth == MAX_DEPTH {
                return Err(Stop::new(StopKind::Deep));
            }
            *bytes += 2;
            for (k, v) in map {
                if k.contains('\0') {
                    return Err(Stop::new(StopKind::Nul).at(Segment::Key(k.clone())));
                }
                *bytes += k.len() + 4;
                walk(v, depth + 1, bytes, max).map_err(|e| e.at(Segment::Key(k.clone())))?;
            }
        }
    }
    if *bytes > max {
        return Err(Stop::new(StopKind::Large));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn accepts_ordinary_payloads() {
        let v = json!({"order": {"items": [1, 2.5, "three", null, true]}});
        assert_eq!(check(&v, "result", 1024), Ok(()));
        assert_eq!(check(&nested(MAX_DEPTH), "result", 1 << 20), Ok(()));
    }

    #[test]
    fn names_the_path_to_a_nul() {
        let v = json!({"order": {"lines": ["ok", "bad\u{0}"]}});
        let problem = check(&v, "result", 1024).unwrap_err();
        assert_eq!(
            problem,
            PayloadProblem::NulCharacter {
                at: "result.order.lines[1]".into()
            }
        );
        let key = json!({"we ird\u{0}": 1});
        assert_eq!(
            check(&key, "context", 1024).unwrap_err().to_string(),
            "context[\"we ird\\\\0\"]: contains a NUL character (\\u0000), which Postgres cannot store"
        );
    }

    #[test]
    fn refuses_nesting_past_the_limit() {
        let problem = check(&nested(MAX_DEPTH + 1), "result", 1 << 20).unwrap_err();
        let PayloadProblem::TooDeep { at } = problem else {
            panic!("expected TooDeep, got {problem:?}")
        };
        assert_eq!(at, format!("result{}", ".a".repeat(MAX_DEPTH)));
    }

    #[test]
    fn refuses_a_payload_over_the_size_limit() {
        let v = json!({"blob": "x".repeat(2000)});
        assert_eq!(check(&v, "result", 4096), Ok(()));
        let problem = check(&v, "result", 1000).unwrap_err();
        assert!(
            matches!(problem, PayloadProblem::TooLarge { bytes, limit: 1000, .. } if bytes > 2000),
            "{problem:?}"
        );
        assert!(problem.to_string().contains("max_payload_bytes (1000)"));
    }
}
