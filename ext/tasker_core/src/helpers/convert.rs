//! Ruby <-> JSON conversions, with errors that name the field that was wrong.

use crate::error::NativeError;
use magnus::rb_sys::AsRawValue;
use magnus::value::{Lazy, Opaque, ReprValue};
use magnus::{
    r_hash::ForEach, Float, Integer, IntoValue, RArray, RHash, RString, Ruby, TryConvert, Value,
};
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::collections::HashMap;
use tasker_worker::ffi::PolledStep;

/// A Ruby value as JSON: nil, true, false, Integer (64-bit), finite Float, String (UTF-8,
/// no NUL), Symbol (as its name), Array and Hash (String or Symbol keys). Anything else (a
/// cycle, nesting deeper than [`MAX_DEPTH`], NaN or Infinity, an object with no JSON form)
/// is refused with a message naming where in `what` it sits, e.g. `result.when`. Walked by
/// hand rather than through serde: that recursion has no bound, so a cyclic Hash would
/// overflow the stack and kill the process.
pub fn to_json(ruby: &Ruby, value: Value, what: &str) -> Result<serde_json::Value, NativeError> {
    let mut walk = Walk {
        ruby,
        open: Vec::new(),
    };
    walk.value(value).map_err(|stop| {
        let mut at = what.to_string();
        for segment in stop.path.iter().rev() {
            at.push_str(segment);
        }
        NativeError::conversion(format!("{at}: {}", stop.reason))
    })
}

/// Deepest nesting accepted: what `tasker_shared::payload` accepts after conversion, plus
/// the Hash that carries the payload (a result's `{"success", "result"}`, a task request).
const MAX_DEPTH: usize = tasker_shared::payload::MAX_DEPTH + 1;

struct Walk<'r> {
    ruby: &'r Ruby,
    /// The Arrays and Hashes being walked, outermost first: one met again is a cycle.
    open: Vec<Value>,
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

impl Walk<'_> {
    fn value(&mut self, v: Value) -> Result<serde_json::Value, Stop> {
        use serde_json::Value as J;
        if v.is_nil() {
            return Ok(J::Null);
        }
        if v.as_raw() == self.ruby.qtrue().as_raw() {
            return Ok(J::Bool(true));
        }
        if v.as_raw() == self.ruby.qfalse().as_raw() {
            return Ok(J::Bool(false));
        }
        if let Some(i) = Integer::from_value(v) {
            return match (i.to_i64(), i.to_u64()) {
                (Ok(n), _) => Ok(J::from(n)),
                (_, Ok(n)) => Ok(J::from(n)),
                _ => Err(Stop::new(format!(
                    "the Integer {v} does not fit in 64 bits, the most a JSON number carries here"
                ))),
            };
        }
        if let Some(f) = Float::from_value(v) {
            let n = f.to_f64();
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
        if let Some(s) = RString::from_value(v) {
            return Ok(J::String(text(s)?));
        }
        if let Some(s) = magnus::Symbol::from_value(v) {
            return s
                .name()
                .map(|n| J::String(n.into_owned()))
                .map_err(|e| Stop::new(format!("a Symbol whose name is not UTF-8: {e}")));
        }
        if let Some(array) = RArray::from_value(v) {
            self.enter(v)?;
            let mut items = Vec::with_capacity(array.len());
            for (i, item) in array.into_iter().enumerate() {
                items.push(self.value(item).map_err(|e| e.at(format!("[{i}]")))?);
            }
            self.open.pop();
            return Ok(J::Array(items));
        }
        if let Some(hash) = RHash::from_value(v) {
            self.enter(v)?;
            let mut map = serde_json::Map::new();
            let mut stopped = None;
            let _ = hash.foreach(|k: Value, item: Value| {
                let key = match key(k) {
                    Ok(key) => key,
                    Err(stop) => {
                        stopped = Some(stop.at(format!("[{}]", k.inspect())));
                        return Ok(ForEach::Stop);
                    }
                };
                match self.value(item) {
                    Ok(item) => {
                        map.insert(key, item);
                        Ok(ForEach::Continue)
                    }
                    Err(stop) => {
                        stopped = Some(stop.at(segment(&key)));
                        Ok(ForEach::Stop)
                    }
                }
            });
            if let Some(stop) = stopped {
                return Err(stop);
            }
            self.open.pop();
            return Ok(J::Object(map));
        }
        Err(Stop::new(format!(
            "a {} is not a JSON value (nil, true, false, Integer, Float, String, Symbol, Array or Hash); convert it first, e.g. with to_s or to_h",
            class_name(v)
        )))
    }

    /// Opens an Array or Hash, refusing one already open (a cycle) or one level too deep.
    fn enter(&mut self, v: Value) -> Result<(), Stop> {
        if self.open.iter().any(|o| o.as_raw() == v.as_raw()) {
            return Err(Stop::new(format!(
                "a cyclic {} (it contains itself), which has no JSON form",
                class_name(v)
            )));
        }
        if self.open.len() == MAX_DEPTH {
            return Err(Stop::new(format!(
                "nested deeper than {} levels",
                tasker_shared::payload::MAX_DEPTH
            )));
        }
        self.open.push(v);
        Ok(())
    }
}

/// A Ruby String as UTF-8 text Postgres can store.
fn text(s: RString) -> Result<String, Stop> {
    let text = s
        .to_string()
        .map_err(|e| Stop::new(format!("a String that is not valid UTF-8: {e}")))?;
    if text.contains('\0') {
        return Err(Stop::new(
            "contains a NUL character (\\u0000), which Postgres cannot store",
        ));
    }
    Ok(text)
}

/// A Hash key: Strings and Symbols only.
fn key(k: Value) -> Result<String, Stop> {
    if let Some(s) = RString::from_value(k) {
        return text(s);
    }
    if let Some(s) = magnus::Symbol::from_value(k) {
        if let Ok(name) = s.name() {
            return Ok(name.into_owned());
        }
    }
    Err(Stop::new(format!(
        "a {} cannot be a JSON object key (use a String or Symbol)",
        class_name(k)
    )))
}

/// A key as a path segment: `.name` when it reads plainly, else quoted.
fn segment(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!(".{key}")
    } else {
        format!("[{}]", serde_json::Value::String(key.to_string()))
    }
}

fn class_name(v: Value) -> String {
    // SAFETY: the value is live on this Ruby thread.
    unsafe { v.classname() }.into_owned()
}

/// A typed value from JSON; errors name the field path inside `what`.
pub fn from_json<T: DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, NativeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            NativeError::conversion(format!("{what}: {}", e.inner()))
        } else {
            NativeError::conversion(format!("{what}.{path}: {}", e.inner()))
        }
    })
}

/// A typed value from a Ruby value (usually a Hash of options).
pub fn from_ruby<T: DeserializeOwned>(
    ruby: &Ruby,
    value: Value,
    what: &str,
) -> Result<T, NativeError> {
    from_json(to_json(ruby, value, what)?, what)
}

/// Hash entries inserted per `rb_hash_bulk_insert` call when building payloads.
const BULK_PAIRS: usize = 16;
/// Strings longer than this are not worth interning.
const KEY_CACHE_MAX_LEN: usize = 64;
/// Interned strings are kept for the life of the process; this bounds them (per thread).
const KEY_CACHE_LIMIT: usize = 4096;

type Interned = HashMap<String, Opaque<RString>, foldhash::fast::RandomState>;

thread_local! {
    /// Frozen, interned Strings for what repeats on every step of a template: payload Hash
    /// keys (a frozen key is stored by Hash#[]= as it is, instead of being copied and looked
    /// up in Ruby's string table each time) and step identifiers (names, namespace,
    /// callable). Per Ruby thread, so the hot path takes no lock.
    static INTERNED: RefCell<Interned> = RefCell::new(Interned::default());
}

pub(super) fn interned(ruby: &Ruby, key: &str) -> RString {
    if key.len() > KEY_CACHE_MAX_LEN {
        return ruby.str_new(key);
    }
    if let Some(k) = INTERNED.with_borrow(|cache| cache.get(key).copied()) {
        return ruby.get_inner(k);
    }
    let k = ruby.str_new(key).to_interned_str();
    INTERNED.with_borrow_mut(|cache| {
        if cache.len() < KEY_CACHE_LIMIT {
            // Registered so it is never collected or moved while the cache refers to it.
            magnus::gc::register_mark_object(k);
            cache.insert(key.to_string(), k.into());
        }
    });
    k
}

/// A Hash's pairs gathered on the stack (where Ruby's GC sees them) and inserted a chunk at
/// a time.
pub(super) struct PairBuffer {
    hash: RHash,
    pairs: [Value; BULK_PAIRS * 2],
    n: usize,
}

impl PairBuffer {
    pub(super) fn new(ruby: &Ruby) -> Self {
        PairBuffer {
            hash: ruby.hash_new(),
            pairs: [ruby.qnil().as_value(); BULK_PAIRS * 2],
            n: 0,
        }
    }

    pub(super) fn push(&mut self, key: Value, value: Value) -> Result<(), magnus::Error> {
        self.pairs[self.n] = key;
        self.pairs[self.n + 1] = value;
        self.n += 2;
        if self.n == self.pairs.len() {
            self.hash.bulk_insert(&self.pairs)?;
            self.n = 0;
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<RHash, magnus::Error> {
        if self.n > 0 {
            self.hash.bulk_insert(&self.pairs[..self.n])?;
        }
        Ok(self.hash)
    }
}

/// A JSON object as a Ruby Hash.
fn map_to_ruby(
    ruby: &Ruby,
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<RHash, magnus::Error> {
    let mut pairs = PairBuffer::new(ruby);
    for (k, v) in map {
        pairs.push(interned(ruby, k).as_value(), payload_to_ruby(ruby, v)?)?;
    }
    pairs.finish()
}

/// A step payload (context, results, initialization) as Ruby, built directly rather than
/// through serde: this runs for every step a handler polls, so it is on the FFI round
/// trip's critical path.
pub fn payload_to_ruby(ruby: &Ruby, value: &serde_json::Value) -> Result<Value, magnus::Error> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => ruby.qnil().as_value(),
        J::Bool(b) => b.into_value_with(ruby),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ruby.integer_from_i64(i).as_value(),
            (None, Some(u)) => ruby.integer_from_u64(u).as_value(),
            _ => ruby
                .float_from_f64(n.as_f64().unwrap_or(f64::NAN))
                .as_value(),
        },
        J::String(s) => ruby.str_new(s).as_value(),
        J::Array(items) => {
            let array = ruby.ary_new_capa(items.len());
            for item in items {
                array.push(payload_to_ruby(ruby, item)?)?;
            }
            array.as_value()
        }
        J::Object(map) => map_to_ruby(ruby, map)?.as_value(),
    })
}

/// The longest timeout a call takes from Ruby: a day. Longer ones would overflow the
/// deadline arithmetic they feed, and nothing here should wait longer.
pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// A timeout in seconds from Ruby (Integer or Float): another class is a TypeError; a
/// negative, non-finite or over-long one an ArgumentError naming `what`.
pub fn seconds(value: Value, what: &str) -> Result<std::time::Duration, NativeError> {
    if Integer::from_value(value).is_none() && Float::from_value(value).is_none() {
        return Err(NativeError::type_error(format!(
            "{what}: expected a number of seconds, got {}",
            class_name(value)
        )));
    }
    let secs =
        f64::try_convert(value).map_err(|e| NativeError::argument(format!("{what}: {e}")))?;
    if !(0.0..=MAX_TIMEOUT_SECONDS).contains(&secs) {
        return Err(NativeError::argument(format!(
            "{what}: expected 0 to {MAX_TIMEOUT_SECONDS} seconds, got {value}"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A count from Ruby: a non-Integer is a TypeError; a negative one or one above `max` an
/// ArgumentError naming `what`.
pub fn count(value: Value, what: &str, max: u64) -> Result<u64, NativeError> {
    let Some(n) = Integer::from_value(value) else {
        return Err(NativeError::type_error(format!(
            "{what}: expected an Integer, got {}",
            class_name(value)
        )));
    };
    match n.to_u64() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(NativeError::argument(format!(
            "{what}: expected 0 to {max}, got {value}"
        ))),
    }
}

pub fn uuid(value: &str, what: &str) -> Result<uuid::Uuid, NativeError> {
    uuid::Uuid::parse_str(value)
        .map_err(|e| NativeError::conversion(format!("{what}: '{value}' is not a UUID: {e}")))
}

/// A task id argument: a String (else TypeError) holding a UUID (else ArgumentError).
pub fn uuid_arg(value: Value, what: &str) -> Result<uuid::Uuid, NativeError> {
    let Some(text) = RString::from_value(value) else {
        return Err(NativeError::type_error(format!(
            "{what}: expected a String, got {}",
            class_name(value)
        )));
    };
    let text = text
        .to_string()
        .map_err(|e| NativeError::argument(format!("{what}: {e}")))?;
    uuid::Uuid::parse_str(&text)
        .map_err(|e| NativeError::argument(format!("{what}: '{text}' is not a UUID: {e}")))
}

/// Frozen Hash keys, made once: Hash#[]= stores a frozen String key without copying it.
macro_rules! keys {
    ($($name:ident = $text:literal),+ $(,)?) => {
        $(static $name: Lazy<RString> = Lazy::new(|ruby| {
            let s = ruby.str_new($text);
            s.freeze();
            s
        });)+
        /// Creates every key up front, while the extension loads.
        pub fn init_keys(ruby: &Ruby) {
            $(Lazy::force(&$name, ruby);)+
        }
    };
}

keys! {
    K_EVENT_ID = "event_id",
    K_TASK_UUID = "task_uuid",
    K_STEP_UUID = "step_uuid",
    K_STEP_NAME = "step_name",
    K_NAMESPACE = "namespace",
    K_TASK_NAME = "task_name",
    K_TASK_VERSION = "task_version",
    K_ATTEMPT = "attempt",
    K_MAX_ATTEMPTS = "max_attempts",
    K_HANDLER_CALLABLE = "handler_callable",
    K_INITIALIZATION = "initialization",
    K_INPUTS = "inputs",
    K_TASK_CONTEXT = "task_context",
    K_DEPENDENCY_RESULTS = "dependency_results",
    K_TIMEOUT_SECONDS = "timeout_seconds",
}

fn uuid_str(ruby: &Ruby, id: &uuid::Uuid) -> RString {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    ruby.str_new(id.hyphenated().encode_lower(&mut buf))
}

/// The Hash `poll` returns: one step for a Ruby handler.
pub fn polled_step(ruby: &Ruby, step: &PolledStep) -> Result<RHash, magnus::Error> {
    let c = &step.context;
    // Gathered on the stack (where Ruby's GC sees them) and inserted with one call.
    let pairs = [
        ruby.get_inner(&K_EVENT_ID).as_value(),
        uuid_str(ruby, &step.event_id).as_value(),
        ruby.get_inner(&K_TASK_UUID).as_value(),
        uuid_str(ruby, &c.task_uuid).as_value(),
        ruby.get_inner(&K_STEP_UUID).as_value(),
        uuid_str(ruby, &c.step_uuid).as_value(),
        ruby.get_inner(&K_STEP_NAME).as_value(),
        interned(ruby, &c.step_name).as_value(),
        ruby.get_inner(&K_NAMESPACE).as_value(),
        interned(ruby, &c.namespace).as_value(),
        ruby.get_inner(&K_TASK_NAME).as_value(),
        interned(ruby, &c.task_name).as_value(),
        ruby.get_inner(&K_TASK_VERSION).as_value(),
        interned(ruby, &c.task_version).as_value(),
        ruby.get_inner(&K_ATTEMPT).as_value(),
        c.attempt.into_value_with(ruby),
        ruby.get_inner(&K_MAX_ATTEMPTS).as_value(),
        c.max_attempts.into_value_with(ruby),
        ruby.get_inner(&K_HANDLER_CALLABLE).as_value(),
        interned(ruby, &c.handler_callable).as_value(),
        ruby.get_inner(&K_INITIALIZATION).as_value(),
        payload_to_ruby(ruby, &c.initialization)?,
        ruby.get_inner(&K_INPUTS).as_value(),
        payload_to_ruby(ruby, &c.inputs)?,
        ruby.get_inner(&K_TASK_CONTEXT).as_value(),
        payload_to_ruby(ruby, &c.task_context)?,
        ruby.get_inner(&K_DEPENDENCY_RESULTS).as_value(),
        map_to_ruby(ruby, &c.dependency_results)?.as_value(),
        ruby.get_inner(&K_TIMEOUT_SECONDS).as_value(),
        c.timeout_seconds.into_value_with(ruby),
    ];
    let h = ruby.hash_new();
    h.bulk_insert(&pairs)?;
    Ok(h)
}
