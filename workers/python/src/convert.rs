//! Python <-> JSON conversions, with errors that name where the value was wrong.

use crate::error::NativeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tasker_worker::ffi::PolledStep;

/// The longest timeout a call takes from Python: a day. Longer ones would overflow the
/// deadline arithmetic they feed, and nothing here should wait longer.
pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// Deepest nesting accepted: what `tasker_shared::payload` accepts after conversion, plus
/// the dict that carries the payload (a result's `{"success", "result"}`, a task request).
const MAX_DEPTH: usize = tasker_shared::payload::MAX_DEPTH + 1;

/// A Python value as JSON: None, bool, int (64-bit), finite float, str (no NUL), list and
/// tuple, dict (str keys). Anything else (a cycle, nesting deeper than [`MAX_DEPTH`], NaN
/// or Infinity, an object with no JSON form) is refused with a message naming where in
/// `what` it sits, e.g. `result.when`. Walked by hand with an explicit bound: a cyclic dict
/// must be refused, never overflow the stack.
pub fn to_json(value: &Bound<'_, PyAny>, what: &str) -> Result<serde_json::Value, NativeError> {
    let mut walk = Walk { open: Vec::new() };
    walk.value(value).map_err(|stop| {
        let mut at = what.to_string();
        for segment in stop.path.iter().rev() {
            at.push_str(segment);
        }
        NativeError::conversion(format!("{at}: {}", stop.reason))
    })
}

struct Walk {
    /// The lists and dicts being walked, outermost first: one met again is a cycle.
    open: Vec<usize>,
}

/// Why a conversion stopped, and where: path segments innermost first.
struct Stop {
    reason: String,
    path: Vec<String>,
}

impl Stop {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            path: Vec::new(),
        }
    }

    fn at(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }
}

impl Walk {
    fn value(&mut self, v: &Bound<'_, PyAny>) -> Result<serde_json::Value, Stop> {
        use serde_json::Value as J;
        if v.is_none() {
            return Ok(J::Null);
        }
        // Before int: bool is a subclass of int.
        if let Ok(b) = v.cast::<PyBool>() {
            return Ok(J::Bool(b.is_true()));
        }
        if v.cast::<PyInt>().is_ok() {
            if let Ok(n) = v.extract::<i64>() {
                return Ok(J::from(n));
            }
            if let Ok(n) = v.extract::<u64>() {
                return Ok(J::from(n));
            }
            return Err(Stop::new(format!(
                "the int {} does not fit in 64 bits, the most a JSON number carries here",
                repr(v)
            )));
        }
        if let Ok(f) = v.cast::<PyFloat>() {
            let n = f.value();
            return serde_json::Number::from_f64(n)
                .map(J::Number)
                .ok_or_else(|| {
                    let name = match n {
                        n if n.is_nan() => "NaN",
                        n if n > 0.0 => "Infinity",
                        _ => "-Infinity",
                    };
                    Stop::new(format!(
                        "{name} is not a JSON number (NaN and Infinity have no JSON form)"
                    ))
                });
        }
        if let Ok(s) = v.cast::<PyString>() {
            return Ok(J::String(text(s)?));
        }
        if let Ok(list) = v.cast::<PyList>() {
            self.enter(v)?;
            let mut items = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                items.push(self.value(&item).map_err(|e| e.at(format!("[{i}]")))?);
            }
            self.open.pop();
            return Ok(J::Array(items));
        }
        if let Ok(tuple) = v.cast::<PyTuple>() {
            self.enter(v)?;
            let mut items = Vec::with_capacity(tuple.len());
            for (i, item) in tuple.iter().enumerate() {
                items.push(self.value(&item).map_err(|e| e.at(format!("[{i}]")))?);
            }
            self.open.pop();
            return Ok(J::Array(items));
        }
        if let Ok(dict) = v.cast::<PyDict>() {
            self.enter(v)?;
            let mut map = serde_json::Map::new();
            for (k, item) in dict.iter() {
                let key = match k.cast::<PyString>() {
                    Ok(s) => text(s).map_err(|e| e.at(format!("[{}]", repr(&k))))?,
                    Err(_) => {
                        return Err(Stop::new(format!(
                            "a {} cannot be a JSON object key (use a str)",
                            type_name(&k)
                        ))
                        .at(format!("[{}]", repr(&k))))
                    }
                };
                let item = self.value(&item).map_err(|e| e.at(segment(&key)))?;
                map.insert(key, item);
            }
            self.open.pop();
            return Ok(J::Object(map));
        }
        Err(Stop::new(format!(
            "a {} is not a JSON value (None, bool, int, float, str, list, tuple or dict); convert it first, e.g. with str() or dict()",
            type_name(v)
        )))
    }

    /// Opens a list, tuple or dict, refusing one already open (a cycle) or one level too
    /// deep.
    fn enter(&mut self, v: &Bound<'_, PyAny>) -> Result<(), Stop> {
        let id = v.as_ptr() as usize;
        if self.open.contains(&id) {
            return Err(Stop::new(format!(
                "a cyclic {} (it contains itself), which has no JSON form",
                type_name(v)
            )));
        }
        if self.open.len() == MAX_DEPTH {
            return Err(Stop::new(format!(
                "nested deeper than {} levels",
                tasker_shared::payload::MAX_DEPTH
            )));
        }
        self.open.push(id);
        Ok(())
    }
}

/// A str as UTF-8 text Postgres can store.
fn text(s: &Bound<'_, PyString>) -> Result<String, Stop> {
    let text = s
        .to_str()
        .map_err(|e| Stop::new(format!("a str that is not valid UTF-8: {e}")))?;
    if text.contains('\0') {
        return Err(Stop::new(
            "contains a NUL character (\\u0000), which Postgres cannot store",
        ));
    }
    Ok(text.to_string())
}

/// A key as a path segment: `.name` when it reads plainly, else quoted.
fn segment(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!(".{key}")
    } else {
        format!("[{}]", serde_json::Value::String(key.to_string()))
    }
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

fn repr(v: &Bound<'_, PyAny>) -> String {
    let r = v
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    r.chars().take(80).collect()
}

/// A typed value from JSON; errors name the field inside `what`.
pub fn from_json<T: DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, NativeError> {
    // The fast path borrows; only a value that fails is walked again to name where.
    if let Ok(v) = T::deserialize(&value) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            NativeError::conversion(format!("{what}: {}", e.inner()))
        } else {
            NativeError::conversion(format!("{what}.{path}: {}", e.inner()))
        }
    })
}

/// A typed value from a Python value (usually a dict of options).
pub fn from_py<T: DeserializeOwned>(
    value: &Bound<'_, PyAny>,
    what: &str,
) -> Result<T, NativeError> {
    from_json(to_json(value, what)?, what)
}

/// JSON as Python: objects become dicts, arrays lists.
pub fn to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any(),
        },
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        J::Object(map) => map_to_py(py, map)?.into_any(),
    })
}

/// Keys longer than this are not worth caching.
const KEY_CACHE_MAX_LEN: usize = 64;
/// Cached keys are kept for the life of the thread; this bounds them.
const KEY_CACHE_LIMIT: usize = 4096;

thread_local! {
    /// The dict keys of step payloads repeat on every step of a template. A cached str
    /// costs a lookup and a reference count instead of an allocation, and carries its
    /// hash, so the dict insert does not compute it again. Per thread: no lock on the hot
    /// path.
    static KEYS: std::cell::RefCell<std::collections::HashMap<String, Py<PyString>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn key<'py>(py: Python<'py>, k: &str) -> Bound<'py, PyString> {
    if k.len() > KEY_CACHE_MAX_LEN {
        return PyString::new(py, k);
    }
    KEYS.with_borrow_mut(|cache| {
        if let Some(s) = cache.get(k) {
            return s.bind(py).clone();
        }
        let s = PyString::intern(py, k);
        if cache.len() < KEY_CACHE_LIMIT {
            cache.insert(k.to_string(), s.clone().unbind());
        }
        s
    })
}

fn map_to_py<'py>(
    py: Python<'py>,
    map: &serde_json::Map<String, serde_json::Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(key(py, k), to_py(py, v)?)?;
    }
    Ok(dict)
}

/// Any serializable Rust value as Python, through JSON so struct fields become str keys.
pub fn to_py_via_json<'py, T: serde::Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_value(value)
        .map_err(|e| NativeError::conversion(format!("serializing a result: {e}")))?;
    to_py(py, &json)
}

/// The dict `poll` returns: one step for a Python handler.
pub fn polled_step<'py>(py: Python<'py>, step: &PolledStep) -> PyResult<Bound<'py, PyDict>> {
    let c = &step.context;
    let d = PyDict::new(py);
    d.set_item(intern!(py, "event_id"), step.event_id.to_string())?;
    d.set_item(intern!(py, "task_uuid"), c.task_uuid.to_string())?;
    d.set_item(intern!(py, "step_uuid"), c.step_uuid.to_string())?;
    d.set_item(intern!(py, "step_name"), &c.step_name)?;
    d.set_item(intern!(py, "namespace"), &c.namespace)?;
    d.set_item(intern!(py, "task_name"), &c.task_name)?;
    d.set_item(intern!(py, "task_version"), &c.task_version)?;
    d.set_item(intern!(py, "attempt"), c.attempt)?;
    d.set_item(intern!(py, "max_attempts"), c.max_attempts)?;
    d.set_item(intern!(py, "handler_callable"), &c.handler_callable)?;
    d.set_item(intern!(py, "initialization"), to_py(py, &c.initialization)?)?;
    d.set_item(intern!(py, "inputs"), to_py(py, &c.inputs)?)?;
    d.set_item(intern!(py, "task_context"), to_py(py, &c.task_context)?)?;
    d.set_item(
        intern!(py, "dependency_results"),
        map_to_py(py, &c.dependency_results)?,
    )?;
    d.set_item(intern!(py, "timeout_seconds"), c.timeout_seconds)?;
    Ok(d)
}

/// A timeout in seconds from Python (int or float): another type is a TypeError; a
/// negative, non-finite or over-long one a ValueError naming `what`.
pub fn seconds(value: &Bound<'_, PyAny>, what: &str) -> Result<Duration, NativeError> {
    if value.cast::<PyBool>().is_ok()
        || (value.cast::<PyInt>().is_err() && value.cast::<PyFloat>().is_err())
    {
        return Err(NativeError::type_error(format!(
            "{what}: expected a number of seconds, got {}",
            type_name(value)
        )));
    }
    let secs: f64 = value
        .extract()
        .map_err(|e| NativeError::value(format!("{what}: {e}")))?;
    if !(0.0..=MAX_TIMEOUT_SECONDS).contains(&secs) {
        return Err(NativeError::value(format!(
            "{what}: expected 0 to {MAX_TIMEOUT_SECONDS} seconds, got {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A count from Python: a non-int is a TypeError; a negative one or one above `max` a
/// ValueError naming `what`.
pub fn count(value: &Bound<'_, PyAny>, what: &str, max: u64) -> Result<u64, NativeError> {
    if value.cast::<PyBool>().is_ok() || value.cast::<PyInt>().is_err() {
        return Err(NativeError::type_error(format!(
            "{what}: expected an int, got {}",
            type_name(value)
        )));
    }
    match value.extract::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(NativeError::value(format!(
            "{what}: expected 0 to {max}, got {}",
            repr(value)
        ))),
    }
}

/// A UUID argument: a str (else TypeError) holding a UUID (else ValueError).
pub fn uuid_arg(value: &Bound<'_, PyAny>, what: &str) -> Result<uuid::Uuid, NativeError> {
    let Ok(s) = value.cast::<PyString>() else {
        return Err(NativeError::type_error(format!(
            "{what}: expected a str, got {}",
            type_name(value)
        )));
    };
    let text = s
        .to_str()
        .map_err(|e| NativeError::value(format!("{what}: {e}")))?;
    uuid::Uuid::parse_str(text)
        .map_err(|e| NativeError::value(format!("{what}: '{text}' is not a UUID: {e}")))
}
