//! The one boundary every exported function goes through: argument checks, panic
//! catching, the thread-local last error and the typed value returned on failure.
//!
//! Every `extern "C"` body is `boundary::call(NAME, ON_ERROR, |call| { ... })` (or
//! [`call_keeping_error`] for the few functions that must not disturb the last error:
//! the frees and the error getters). The body returns an engine [`Result`]; the boundary
//! records an error's code and full message on failure and clears the last error on
//! success. A panic in the body is caught, recorded as `INTERNAL`, and never unwinds into
//! C.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::panic::{AssertUnwindSafe, catch_unwind};

use snaptree_engine::{Error, ErrorCode, Result, flags};

/// The last error of a thread: its code (0: none) and message.
struct LastError {
    code: c_int,
    message: Option<CString>,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const { RefCell::new(LastError { code: 0, message: None }) };
}

/// Records an error for this thread. A thread being torn down has no last error to keep.
fn record(code: ErrorCode, message: String) {
    // A message cannot carry a NUL through a C string; none should, but show one if it does.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            last.code = code as c_int;
            last.message = Some(message);
        }
    });
}

fn clear() {
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            last.code = 0;
            last.message = None;
        }
    });
}

/// This thread's last error code (0: the last call succeeded).
pub(crate) fn last_code() -> c_int {
    LAST_ERROR
        .try_with(|last| last.try_borrow().map_or(0, |l| l.code))
        .unwrap_or(0)
}

/// This thread's last error message, or NULL. The pointer stays valid until the next call
/// that records or clears the error on this thread (the message is owned by the
/// thread-local slot and replaced, never mutated in place).
pub(crate) fn last_message() -> *const c_char {
    LAST_ERROR
        .try_with(|last| {
            last.try_borrow()
                .ok()
                .and_then(|l| l.message.as_ref().map(|m| m.as_ptr()))
        })
        .ok()
        .flatten()
        .unwrap_or(std::ptr::null())
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

/// What a body can ask of the boundary: argument checks whose messages name the
/// function and the argument.
pub(crate) struct Call {
    func: &'static str,
}

impl Call {
    fn null(&self, name: &str) -> Error {
        Error::InvalidArg(format!("argument '{name}' of {} is NULL", self.func))
    }

    /// Borrows the object behind a handle or argument pointer, refusing NULL.
    ///
    /// # Safety
    /// A non-NULL `ptr` must point to a live `T` that nothing mutates for `'a` (handles:
    /// returned by this library and not yet freed).
    pub(crate) unsafe fn arg<'a, T>(&self, ptr: *const T, name: &str) -> Result<&'a T> {
        // SAFETY: the caller guarantees a non-NULL pointer is valid for 'a; `as_ref`
        // turns NULL into None.
        unsafe { ptr.as_ref() }.ok_or_else(|| self.null(name))
    }

    /// Refuses a NULL pointer the body will write through (an out-parameter or buffer).
    pub(crate) fn out<T>(&self, ptr: *mut T, name: &str) -> Result<*mut T> {
        if ptr.is_null() {
            Err(self.null(name))
        } else {
            Ok(ptr)
        }
    }

    /// Reads a C string argument as UTF-8, refusing NULL and invalid UTF-8.
    ///
    /// # Safety
    /// A non-NULL `ptr` must point to a NUL-terminated string that stays unchanged for `'a`.
    pub(crate) unsafe fn str<'a>(&self, ptr: *const c_char, name: &str) -> Result<&'a str> {
        if ptr.is_null() {
            return Err(self.null(name));
        }
        // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string valid for 'a.
        let text = unsafe { CStr::from_ptr(ptr) };
        text.to_str().map_err(|e| {
            Error::InvalidArg(format!(
                "argument '{name}' of {} is not valid UTF-8 (bad byte at offset {})",
                self.func,
                e.valid_up_to()
            ))
        })
    }

    /// Like [`str`](Call::str), but NULL is allowed and gives None.
    ///
    /// # Safety
    /// As for [`str`](Call::str).
    pub(crate) unsafe fn opt_str<'a>(
        &self,
        ptr: *const c_char,
        name: &str,
    ) -> Result<Option<&'a str>> {
        if ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: forwarded from this function's own contract.
        unsafe { self.str(ptr, name) }.map(Some)
    }

    /// Refuses flag bits outside `known` (the engine's check, naming the function).
    pub(crate) fn flags(&self, flags: c_uint, known: c_uint) -> Result<()> {
        flags::check_known(self.func, flags, known)
    }

    /// A length argument as a usize, refusing a negative one.
    pub(crate) fn len(&self, n: c_int, name: &str) -> Result<usize> {
        usize::try_from(n).map_err(|_| {
            Error::InvalidArg(format!(
                "argument '{name}' of {} is negative ({n})",
                self.func
            ))
        })
    }

    /// A count as the C `int` it is returned as.
    pub(crate) fn count(&self, n: usize) -> Result<c_int> {
        c_int::try_from(n).map_err(|_| {
            Error::Internal(format!(
                "{} cannot return a count of {n} as an int",
                self.func
            ))
        })
    }
}

/// Runs an exported function's body; see the module documentation.
fn run<T>(
    func: &'static str,
    on_error: T,
    keep_error: bool,
    body: impl FnOnce(&Call) -> Result<T>,
) -> T {
    let call = Call { func };
    match catch_unwind(AssertUnwindSafe(|| body(&call))) {
        Ok(Ok(value)) => {
            if !keep_error {
                clear();
            }
            value
        }
        Ok(Err(e)) => {
            record(e.code(), e.full_message());
            on_error
        }
        Err(payload) => {
            record(
                ErrorCode::Internal,
                format!(
                    "internal error: {func} panicked: {}",
                    panic_text(payload.as_ref())
                ),
            );
            on_error
        }
    }
}

/// The boundary of an ordinary exported function: clears the last error on success,
/// records it on failure (and on a caught panic), and returns `on_error` then.
pub(crate) fn call<T>(func: &'static str, on_error: T, body: impl FnOnce(&Call) -> Result<T>) -> T {
    run(func, on_error, false, body)
}

/// The boundary of the frees and the error getters: a success leaves the last error as it
/// was, so C code can free its handles before it reports the error of an earlier call.
pub(crate) fn call_keeping_error<T>(
    func: &'static str,
    on_error: T,
    body: impl FnOnce(&Call) -> Result<T>,
) -> T {
    run(func, on_error, true, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_clears_and_catches_panics() {
        assert_eq!(call("f", -1, |_| Ok(3)), 3);
        assert_eq!(last_code(), 0);
        assert!(last_message().is_null());
        assert_eq!(call("f", -1, |c| c.flags(4, 1).map(|()| 0)), -1);
        assert_eq!(last_code(), ErrorCode::InvalidArg as c_int);
        // SAFETY: last_message returned non-NULL, a live thread-local string.
        let m = unsafe { CStr::from_ptr(last_message()) }
            .to_str()
            .unwrap()
            .to_string();
        assert!(m.contains("0x4"), "{m}");
        // Keeping calls leave it.
        assert_eq!(call_keeping_error("g", 0, |_| Ok(1)), 1);
        assert_eq!(last_code(), ErrorCode::InvalidArg as c_int);
        let r: i32 = call("h", -1, |_| panic!("boom"));
        assert_eq!(r, -1);
        assert_eq!(last_code(), ErrorCode::Internal as c_int);
        // SAFETY: as above.
        let m = unsafe { CStr::from_ptr(last_message()) }
            .to_str()
            .unwrap()
            .to_string();
        assert!(m.contains("h panicked: boom"), "{m}");
    }
}
