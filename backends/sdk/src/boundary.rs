//! The one boundary between the host's C calls and the safe trait: flags, NULL checks,
//! panics, the error struct and out-parameters are all handled here.

use std::any::Any;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use snaptree_abi as abi;
use snaptree_abi::convert::uuid_from_abi;
use snaptree_engine::{Progress, Uuid};

use crate::{PluginError, PluginResult, SnaptreeBackend};

/// The flags this SDK understands: ABI 1.0 defines none.
const KNOWN_FLAGS: c_uint = 0;

/// An open domain as the host holds it: the backend, and whether it panicked.
pub(crate) struct Slot<B> {
    pub(crate) backend: B,
    /// Set once a call panicked: the backend's state may be half changed, so every later
    /// call but close is refused.
    pub(crate) poisoned: bool,
}

/// Runs one call from the host: refuses unknown flags, catches panics, and on failure
/// writes the error struct. Returns the ABI's 0 or -1.
pub(crate) fn call<B: SnaptreeBackend>(
    flags: c_uint,
    err: *mut abi::snaptree_backend_error,
    f: impl FnOnce() -> PluginResult<()>,
) -> c_int {
    let result = if flags & !KNOWN_FLAGS != 0 {
        Err(PluginError::invalid_arg(format!(
            "unknown flag bits {:#x}",
            flags & !KNOWN_FLAGS
        )))
    } else {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(panicked::<B>(panic.as_ref())))
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            write_error(err, &e);
            -1
        }
    }
}

/// Like [`call`] on an open domain: checks the handle and poisons it when `f` panics.
pub(crate) fn with_domain<B: SnaptreeBackend>(
    handle: *mut c_void,
    flags: c_uint,
    err: *mut abi::snaptree_backend_error,
    f: impl FnOnce(&mut B) -> PluginResult<()>,
) -> c_int {
    call::<B>(flags, err, || {
        if handle.is_null() {
            return Err(PluginError::invalid_arg("the domain handle is NULL"));
        }
        // SAFETY: a non-NULL handle is one open_domain made from `Box<Slot<B>>` and not yet
        // closed, and the host never calls on one handle concurrently.
        let slot = unsafe { &mut *handle.cast::<Slot<B>>() };
        if slot.poisoned {
            return Err(PluginError::backend(format!(
                "backend '{}' panicked earlier on this domain; close and reopen it",
                name::<B>()
            )));
        }
        match catch_unwind(AssertUnwindSafe(|| f(&mut slot.backend))) {
            Ok(result) => result,
            Err(panic) => {
                slot.poisoned = true;
                Err(panicked::<B>(panic.as_ref()))
            }
        }
    })
}

pub(crate) fn name<B: SnaptreeBackend>() -> String {
    B::NAME.to_string_lossy().into_owned()
}

fn panicked<B: SnaptreeBackend>(panic: &(dyn Any + Send)) -> PluginError {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    PluginError::backend(format!("backend '{}' panicked: {what}", name::<B>()))
}

/// Writes an error into the host's struct, truncated at a character boundary to fit.
pub(crate) fn write_error(err: *mut abi::snaptree_backend_error, e: &PluginError) {
    // SAFETY: the host passes NULL or a valid, exclusive error struct for the call.
    let Some(err) = (unsafe { err.as_mut() }) else {
        return;
    };
    let max = err.message.len() - 1;
    let text = e.message();
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    err.code = e.code() as i32;
    for (dst, src) in err.message.iter_mut().zip(text[..end].bytes()) {
        *dst = src as c_char;
    }
    err.message[end] = 0;
}

/// An out-parameter, checked for NULL.
pub(crate) fn out<'a, T>(ptr: *mut T, what: &str) -> PluginResult<&'a mut T> {
    // SAFETY: the host passes NULL or a valid, exclusive pointer for the call.
    unsafe { ptr.as_mut() }
        .ok_or_else(|| PluginError::invalid_arg(format!("the {what} out-parameter is NULL")))
}

/// A required uuid argument.
pub(crate) fn uuid(ptr: *const abi::snaptree_uuid, what: &str) -> PluginResult<Uuid> {
    opt_uuid(ptr).ok_or_else(|| PluginError::invalid_arg(format!("the {what} uuid is NULL")))
}

/// An optional uuid argument (NULL: none).
pub(crate) fn opt_uuid(ptr: *const abi::snaptree_uuid) -> Option<Uuid> {
    // SAFETY: the host passes NULL or a valid uuid for the call.
    unsafe { ptr.as_ref() }.map(uuid_from_abi)
}

/// A required NUL-terminated string argument, as UTF-8 (invalid bytes replaced).
pub(crate) fn string(ptr: *const c_char, what: &str) -> PluginResult<String> {
    if ptr.is_null() {
        return Err(PluginError::invalid_arg(format!("the {what} is NULL")));
    }
    // SAFETY: the host passes a valid NUL-terminated string for the call.
    Ok(unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned())
}

/// The host's progress callback as the engine's [`Progress`].
pub(crate) struct HostProgress {
    pub(crate) callback: abi::snaptree_progress_fn,
    pub(crate) ctx: *mut c_void,
}

impl Progress for HostProgress {
    fn report(&mut self, fraction: f64) -> bool {
        match self.callback {
            // SAFETY: the host's callback and context are valid for the call in progress.
            Some(f) => unsafe { f(self.ctx, fraction) != 0 },
            None => true,
        }
    }
}
