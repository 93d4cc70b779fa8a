//! Handles do not cross `fork()`: a child process that forked without `exec` gets a copy of
//! its parent's connections whose state belongs to the parent.
//!
//! What a child could otherwise do with the copy: SQLite keeps, per process, which locks
//! it holds on each database file, and the child inherits that record without the locks
//! themselves (POSIX locks are not inherited), so SQLite in the child — through the copy,
//! or through a new connection to the same database, which shares the record — reads and
//! writes as if it held locks it does not: the parent can then take itself for the only
//! user and reset the shared-memory index under the child. A backend's threads (the QEMU
//! backend's thread that closes removed layers) do not exist in the child, so waiting for
//! them waits for ever. SQLite's own rule is the same: a connection must not be used
//! across a fork.
//!
//! So the library counts forks (a `pthread_atfork` handler bumps a counter in the child, a
//! single atomic add), and every connection remembers the count it was opened at:
//! - every call on a handle whose connection was opened before a fork fails in the child
//!   with an error that says why (one atomic load a call, no system call);
//! - freeing such a handle there releases nothing (it is leaked, as an `exec` would);
//! - opening a connection in the child to a SQLite store the parent had open at the fork
//!   is refused too, since it would share the inherited lock record. The child opens
//!   other stores, a PostgreSQL store, or runs a program with `exec`.
//!
//! Not detected: a child made without the C library's `fork` (a raw `clone`, `_Fork`).
//! Not handled: a fork that lands while another thread holds [`OPEN_STORES`]' lock, or
//! registers the handler, for the few instructions of an open or close (the child's next
//! open then waits for ever).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use std::ffi::c_int;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use snaptree_engine::store::StoreLocation;
use snaptree_engine::{Error, Result};

/// How many forks separate this process from the one that opened the library's first
/// connection (0 in that process).
static FORKS: AtomicU64 = AtomicU64::new(0);

// SAFETY: the C library's function, with its standard signature.
unsafe extern "C" {
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

/// Runs in the child of every `fork()` of the C library: async-signal-safe, as a child
/// handler must be.
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

/// The current generation: how many forks separate this process from the one that opened
/// the first connection.
pub(crate) fn generation() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// The SQLite stores of this process's open connections: the state directory (canonical)
/// and the generation the connection was opened at. In a child, the parent's entries are
/// the stores it must not open.
static OPEN_STORES: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

fn open_stores() -> std::sync::MutexGuard<'static, Vec<(PathBuf, u64)>> {
    OPEN_STORES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state directory of a SQLite store, by the name the registry keeps: canonical, so
/// that two spellings of one directory are one store. None for PostgreSQL, and for a
/// directory that does not exist (no connection can have it open).
pub(crate) fn sqlite_dir(location: &StoreLocation) -> Option<PathBuf> {
    match location {
        StoreLocation::Dir(dir) => dir.canonicalize().ok(),
        StoreLocation::Postgres(_) => None,
    }
}

/// Refuses to open, in a forked child, a SQLite store that the parent had open at the
/// fork: SQLite here would share the parent's lock record for it (see the module).
pub(crate) fn refuse_inherited_store(dir: &Path) -> Result<()> {
    let now = generation();
    if now == 0 {
        return Ok(());
    }
    if open_stores()
        .iter()
        .any(|(open, born)| *born < now && open == dir)
    {
        return Err(Error::OperationInvalid(format!(
            "the store in {} was open in the parent process when this process forked; its \
             SQLite locks belong to the parent, so this process cannot use it safely: run \
             a program with exec to use it",
            dir.display()
        )));
    }
    Ok(())
}

/// Records that a connection opened at generation `born` has the SQLite store in `dir`
/// open, until [`store_closed`].
pub(crate) fn store_opened(dir: PathBuf, born: u64) {
    open_stores().push((dir, born));
}

/// Forgets one record [`store_opened`] made.
pub(crate) fn store_closed(dir: &Path, born: u64) {
    let mut stores = open_stores();
    if let Some(at) = stores.iter().position(|(d, b)| d == dir && *b == born) {
        stores.swap_remove(at);
    }
}
