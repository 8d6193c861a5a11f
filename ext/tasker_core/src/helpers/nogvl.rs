//! Running Rust code with Ruby's GVL released, interruptibly.
//!
//! Every blocking wait in the extension goes through [`nogvl`]: other Ruby threads run while
//! it waits, and Ruby's unblocking function (called on Thread#kill, Thread#raise, signals)
//! sets the [`Interrupt`] so the wait returns promptly. The closure runs on the calling
//! thread but without the GVL, so it must not touch Ruby objects; the `Send` bounds keep
//! Ruby values (which are not `Send`) out of it.
//!
//! The main thread's first call starts one more Ruby thread, idle for the life of the
//! process, for the process whose main thread is its only one (see [`keep_signal_thread`]).

use super::runtime::ProcessBound;
use crate::error::NativeError;
use magnus::rb_sys::AsRawValue;
use magnus::value::ReprValue;
use magnus::Ruby;
use std::ffi::c_void;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// The name of the idle thread [`keep_signal_thread`] starts.
const SIGNAL_THREAD_NAME: &str = "tasker-signal";

/// Set when Ruby asks the blocked thread to come back.
#[derive(Default)]
pub struct Interrupt {
    flag: AtomicBool,
    notify: Notify,
}

impl Interrupt {
    /// For blocking loops that check a flag (FfiDispatchChannel::poll).
    pub fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        // notify_one keeps a permit if nobody waits yet, so a trigger is never missed.
        self.notify.notify_one();
    }

    /// Completes once triggered: for async waits.
    pub async fn triggered(&self) {
        if !self.flag.load(Ordering::Acquire) {
            self.notify.notified().await;
        }
    }
}

struct Call<'a, F, R> {
    func: Option<F>,
    result: Option<std::thread::Result<R>>,
    interrupt: &'a Interrupt,
}

unsafe extern "C" fn trampoline<F, R>(data: *mut c_void) -> *mut c_void
where
    F: FnOnce(&Interrupt) -> R,
{
    // SAFETY: `data` is the `Call` that `run` keeps alive for the duration of the call.
    let call = unsafe { &mut *(data as *mut Call<'_, F, R>) };
    if let Some(func) = call.func.take() {
        let interrupt = call.interrupt;
        // A panic must not unwind into Ruby's C frames.
        call.result = Some(catch_unwind(AssertUnwindSafe(|| func(interrupt))));
    }
    std::ptr::null_mut()
}

unsafe extern "C" fn unblock(data: *mut c_void) {
    // SAFETY: `data` is the `Interrupt` that `run` keeps alive for the duration of the call.
    let interrupt = unsafe { &*(data as *const Interrupt) };
    interrupt.trigger();
}

/// What a GVL-free call produced, and whether Ruby has an interrupt (exception, kill) to
/// deliver now that the thread is back.
pub struct Outcome<R> {
    pub value: Option<R>,
    pub pending: Option<magnus::Error>,
}

/// Runs `func` without the GVL. Keeps the value even when an interrupt is pending, for
/// callers that must clean up what the value holds (see `poll`).
pub fn run<F, R>(func: F) -> Result<Outcome<R>, magnus::Error>
where
    F: FnOnce(&Interrupt) -> R + Send,
    R: Send,
{
    keep_signal_thread();
    let interrupt = Interrupt::default();
    let mut call = Call {
        func: Some(func),
        result: None,
        interrupt: &interrupt,
    };
    let call_ptr = &mut call as *mut Call<'_, F, R> as *mut c_void;
    let interrupt_ptr = &interrupt as *const Interrupt as *mut c_void;
    // Ruby checks for interrupts before and after the GVL-free region and may raise (or
    // throw, for Thread#kill) there; protect turns that jump into an Err instead of letting
    // it skip Rust frames. Nothing owned lives in the protected closure.
    // SAFETY: `call` and `interrupt` outlive the call, which returns before this function
    // does; the trampoline and unblocking function only touch them.
    let protected = magnus::rb_sys::protect(|| unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            call_ptr,
            Some(unblock),
            interrupt_ptr,
        );
        rb_sys::Qnil as rb_sys::VALUE
    });
    let value = match call.result {
        Some(Ok(v)) => Some(v),
        Some(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            return Err(NativeError::native(format!("internal error (panic): {what}")).into());
        }
        None => None,
    };
    Ok(Outcome {
        value,
        pending: protected.err(),
    })
}

/// Whether this process has its idle thread (made in it, not inherited through a fork, where
/// threads do not follow). Only touched with the GVL held.
static SIGNAL_THREAD: Mutex<Option<ProcessBound<()>>> = Mutex::new(None);

/// Ruby 3.1 runs a GVL-free call made by a process's only thread (its main thread) beside a
/// helper thread it starts before the call and kills after it, so that a signal reaches the
/// call's unblocking function: about 50 us a call, more than a call that waits for nothing
/// costs, in every single-threaded script that creates or waits for tasks. One helper of
/// ours, started once and asleep for the life of the process, stands in for those: with it
/// the process is never single-threaded, as a threaded one (Puma, a worker) never is, and
/// signals reach the main thread's calls the way they reach any thread's. It sleeps the way
/// Ruby's deadlock check counts as dead, so it never hides a deadlock of the program's own
/// threads; it ends if killed or woken with an exception.
fn keep_signal_thread() {
    let Ok(ruby) = Ruby::get() else { return };
    if ruby.thread_current().as_raw() != ruby.thread_main().as_raw() {
        return;
    }
    let mut started = SIGNAL_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    if started.as_ref().is_some_and(ProcessBound::in_owner_process) {
        return;
    }
    // Starting a thread may raise (ThreadError when the system has none to give): protect
    // keeps that jump out of Rust frames. Either way this process does not try again; without
    // the thread, Ruby starts its own around each call, as it always did.
    let _ = magnus::rb_sys::protect(|| {
        let thread = ruby.thread_create_from_fn(|ruby| -> Result<(), magnus::Error> {
            loop {
                ruby.thread_sleep_deadly()?;
            }
        });
        // Naming it is a courtesy to whoever lists threads; a failure changes nothing else.
        let _ = thread.funcall::<_, _, magnus::Value>("name=", (SIGNAL_THREAD_NAME,));
        let _ = thread.funcall::<_, _, magnus::Value>("report_on_exception=", (false,));
        ruby.qnil().as_raw()
    });
    *started = Some(ProcessBound::new(()));
}

/// Runs `func` without the GVL; a pending Ruby interrupt wins over the value.
pub fn nogvl<F, R>(func: F) -> Result<R, magnus::Error>
where
    F: FnOnce(&Interrupt) -> R + Send,
    R: Send,
{
    let outcome = run(func)?;
    if let Some(pending) = outcome.pending {
        return Err(pending);
    }
    outcome
        .value
        .ok_or_else(|| NativeError::native("GVL-free call returned without running").into())
}

/// How an interruptible wait ended.
pub enum Waited<T> {
    Done(T),
    TimedOut,
    Interrupted,
}

/// Drives `fut` on the runtime with the GVL released, until it finishes, `timeout` passes,
/// or Ruby interrupts the thread (the future is then dropped).
pub fn wait<F>(
    runtime: &Runtime,
    timeout: Duration,
    fut: F,
) -> Result<Waited<F::Output>, magnus::Error>
where
    F: Future + Send,
    F::Output: Send,
{
    nogvl(|interrupt| {
        runtime.block_on(async {
            tokio::select! {
                biased;
                _ = interrupt.triggered() => Waited::Interrupted,
                r = tokio::time::timeout(timeout, fut) => match r {
                    Ok(v) => Waited::Done(v),
                    Err(_) => Waited::TimedOut,
                },
            }
        })
    })
}

/// [`wait`] for work that must finish: a timeout or interrupt is an error naming `what`.
pub fn block_on<F, T>(
    runtime: &Runtime,
    timeout: Duration,
    what: &str,
    fut: F,
) -> Result<T, magnus::Error>
where
    F: Future<Output = Result<T, NativeError>> + Send,
    T: Send,
{
    match wait(runtime, timeout, fut)? {
        Waited::Done(r) => r.map_err(Into::into),
        Waited::TimedOut => Err(NativeError::timeout(format!(
            "{what} did not finish within {} s",
            timeout.as_secs_f64()
        ))
        .into()),
        Waited::Interrupted => {
            Err(NativeError::interrupted(format!("{what} was interrupted")).into())
        }
    }
}
