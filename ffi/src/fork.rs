//! Handles do not cross `fork()`: a child process that forked without `exec` gets a copy of
//! its parent's connections whose state belongs to the parent.
//!
//! What a child could otherwise do with the copy: its SQLite connection shares the parent's
//! file descriptors but not its POSIX locks (they are not inherited), so SQLite in the child
//! could take itself for the database's only user and check the log into the database or
//! remove it under the parent; a backend's threads (the QEMU backend's thread that closes
//! removed layers) do not exist in the child, so waiting for them waits for ever; and a
//! lock the parent's threads held at the fork stays held. SQLite's own rule is the same: a
//! connection must not be used across a fork.
//!
//! So the library counts forks (a `pthread_atfork` handler bumps a counter in the child, a
//! single atomic add), every connection remembers the count it was opened at, and a handle
//! whose connection was opened before a fork refuses every call in the child with an error
//! that says why; freeing it there releases nothing the parent still uses (it is leaked,
//! as an `exec` would). The check is one atomic load a call, no system call.

use std::ffi::c_int;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use snaptree_engine::{Error, Result};

/// How many times this process's ancestors forked to make it, since the library loaded
/// (0 in the process that loaded it).
static FORKS: AtomicU64 = AtomicU64::new(0);

// SAFETY: the C library's function, with its standard signature.
unsafe extern "C" {
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

/// Runs in the child of every `fork()`: async-signal-safe, as a child handler must be.
unsafe extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork handler (once a process: the child inherits it) and returns the
/// current generation, for a connection being opened. Fails if the C library cannot
/// register it, since the guard would then be off.
pub(crate) fn register() -> Result<u64> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    // SAFETY: `in_child` is a function of this library with the handler's signature; the
    // C library's `pthread_atfork` registers it under this library's `__dso_handle` and
    // drops it if the library is unloaded (`dlclose`), so it is never called unmapped. The
    // other handlers may be absent.
    let rc = *REGISTERED.get_or_init(|| unsafe { pthread_atfork(None, None, Some(in_child)) });
    if rc != 0 {
        return Err(Error::Internal(format!(
            "cannot register the fork handler that guards connections (error {rc})"
        )));
    }
    Ok(generation())
}

/// The current generation: how many forks separate this process from the one that loaded
/// the library.
pub(crate) fn generation() -> u64 {
    FORKS.load(Ordering::Relaxed)
}
