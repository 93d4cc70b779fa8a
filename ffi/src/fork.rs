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
//! - opening a connection in the child to a SQLite database file an ancestor had open at
//!   the fork is refused too, since it would share the inherited lock record. Files are
//!   told apart as SQLite does, by device and inode, so a symbolic link, a bind mount or a
//!   hard link to the file is the same file. The child opens other stores, a PostgreSQL
//!   store, or runs a program with `exec`.
//!
//! A connection's registry entry ([`StoreRecord`]) is made before SQLite opens an existing
//! file and goes only after every SQLite connection the handle made is closed, so a fork
//! from another thread during an open or a close still sees it.
//!
//! The handlers are registered as the library is loaded, and they hold the registry's
//! gate across the fork, so a fork from another thread never copies a registration or the
//! registry half done.
//!
//! Not detected: a child made without the C library's `fork` (a raw `clone`, `_Fork`), and
//! one forked during the open that creates a new store, between SQLite's creation of the
//! file and its entry. Not handled: a fork while another thread holds one of the other
//! process-wide locks an open takes — SQLite's own (it holds one during every open and
//! close), the checkpointer's table of databases (`engine/src/store/checkpointer.rs`), the
//! plugin host's table of loaded libraries (held across `dlopen`): the child's next open,
//! or plugin load, then waits for ever. That is the hang, not a loss of data; a child that
//! runs a program with `exec` has none of it.

use std::ffi::c_int;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

use snaptree_engine::store::{DB_FILE, StoreLocation};
use snaptree_engine::{Error, Result};

/// How many forks separate this process from the one that loaded the library (0 in that
/// process).
static FORKS: AtomicU64 = AtomicU64::new(0);

// SAFETY: the C library's function, with its standard signature.
unsafe extern "C" {
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

/// Closed while a thread reads or changes [`OPEN_STORES`], and by the fork handlers from
/// just before a fork until just after it, so that no fork copies the registry half
/// changed or locked (a spin lock: its holders hold it for a few instructions).
static GATE: AtomicBool = AtomicBool::new(false);

fn close_gate() {
    while GATE
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn open_gate() {
    GATE.store(false, Ordering::Release);
}

/// Runs in the forking thread just before a `fork()` of the C library.
unsafe extern "C" fn before_fork() {
    close_gate();
}

/// Runs in the parent just after the fork.
unsafe extern "C" fn after_fork_in_parent() {
    open_gate();
}

/// Runs in the child just after the fork: async-signal-safe, as a child handler must be
/// (two atomic operations).
unsafe extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    open_gate();
}

/// What `pthread_atfork` returned for the library's handlers (0: registered); -1 until the
/// registration ran.
static REGISTERED: AtomicI32 = AtomicI32::new(-1);

/// Registers the fork handlers, once.
extern "C" fn register_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are functions of this library with the handlers'
        // signature; the C library's `pthread_atfork` (linked from libc_nonshared)
        // registers them under this library's `__dso_handle` and drops them if the library
        // is unloaded (`dlclose`), so they are never called unmapped.
        let rc = unsafe {
            pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(in_child),
            )
        };
        REGISTERED.store(rc, Ordering::Release);
    });
}

/// Registers the handlers as the library is loaded, before any thread of the program can
/// call it: a registration run by the first open could be copied half done by a fork from
/// another thread, leaving the child's first open waiting for ever.
// SAFETY: `.init_array` holds pointers to functions the loader calls with no arguments it
// needs, which `register_handlers` ignores; it is `extern "C"` and does not unwind.
#[unsafe(link_section = ".init_array")]
#[used]
static REGISTER_AT_LOAD: extern "C" fn() = register_handlers;

/// The current generation, for a connection being opened; registers the handlers if the
/// loader did not (a program linking the static library without its constructors). Fails
/// if the C library could not register them, since the guard would then be off.
pub(crate) fn register() -> Result<u64> {
    if REGISTERED.load(Ordering::Acquire) == -1 {
        register_handlers();
    }
    match REGISTERED.load(Ordering::Acquire) {
        0 => Ok(generation()),
        rc => Err(Error::Internal(format!(
            "cannot register the fork handlers that guard connections (error {rc})"
        ))),
    }
}

/// The current generation: how many forks separate this process from the one that loaded
/// the library.
pub(crate) fn generation() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// A database file's identity, by which SQLite keys its per-process lock record: the
/// same file by any path (a symbolic link, a bind mount, a hard link) is the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
        let meta = std::fs::metadata(path)?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// How many database files' entries [`OPEN_STORES`] holds at most: open connections of one
/// process (each holds one entry, two for the moment of its open).
const MAX_OPEN_STORES: usize = 1024;

/// One entry: a database file and the generation its connection was opened at.
type Entry = (FileId, u64);

/// The SQLite database files this process's connections have open (or are opening), each
/// with the generation the connection was opened at. In a child, the entries of an older
/// generation are the files it must not open. A fixed table: nothing is allocated or freed
/// with the gate closed, since an allocator that locks itself in a fork handler of its
/// own (jemalloc, tcmalloc) would then wait for the gate while the fork waits for it.
static OPEN_STORES: Mutex<[Option<Entry>; MAX_OPEN_STORES]> = Mutex::new([None; MAX_OPEN_STORES]);

/// [`OPEN_STORES`] with the gate closed: a fork waits until it is dropped.
struct Registry {
    /// Dropped first (fields drop in order), then the gate opens.
    stores: MutexGuard<'static, [Option<Entry>; MAX_OPEN_STORES]>,
    _gate: Gate,
}

/// Opens the gate when dropped.
struct Gate;

impl Drop for Gate {
    fn drop(&mut self) {
        open_gate();
    }
}

fn open_stores() -> Registry {
    close_gate();
    let gate = Gate;
    Registry {
        stores: OPEN_STORES.lock().unwrap_or_else(PoisonError::into_inner),
        _gate: gate,
    }
}

impl Registry {
    /// Whether a connection of an older generation than `born` had the file `id` open.
    fn inherited(&self, id: FileId, born: u64) -> bool {
        self.stores
            .iter()
            .flatten()
            .any(|(open, b)| *open == id && *b < born)
    }
}

/// The refusal of a database file an ancestor had open at the fork.
fn inherited_store(db: &Path) -> Error {
    Error::OperationInvalid(format!(
        "the store {} was open in the parent process when this process forked; its SQLite \
         locks belong to that process, so this one cannot use it safely: run a program with \
         exec to use it",
        db.display()
    ))
}

/// One entry of [`OPEN_STORES`], removed when dropped. A connection keeps its record as
/// its last field, so that the record goes only after every SQLite connection of the store
/// it made is closed.
#[derive(Debug)]
pub(crate) struct StoreRecord {
    slot: usize,
}

impl StoreRecord {
    /// Records `id` for a connection of generation `born`, unless an older generation had
    /// it open (`db` names it in that refusal).
    fn new(id: FileId, born: u64, db: &Path) -> Result<StoreRecord> {
        let mut stores = open_stores();
        if stores.inherited(id, born) {
            return Err(inherited_store(db));
        }
        let slot = stores
            .stores
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "cannot open more than {} connections at once in one process",
                    MAX_OPEN_STORES / 2
                ))
            })?;
        stores.stores[slot] = Some((id, born));
        Ok(StoreRecord { slot })
    }
}

impl Drop for StoreRecord {
    fn drop(&mut self) {
        open_stores().stores[self.slot] = None;
    }
}

/// A connection about to be opened: the fork generation, and the record of its database
/// file when that exists already (so that a fork during the open sees it). Kept until the
/// connection is built, and dropped after it when that fails, so that no SQLite connection
/// is ever open without an entry.
#[derive(Debug)]
pub(crate) struct Opening {
    /// The generation the connection is opened at.
    pub(crate) born: u64,
    /// Whether the store is SQLite (a state directory), whose file is recorded.
    sqlite: bool,
    /// Held for its drop.
    _record: Option<StoreRecord>,
}

/// Before a connection to `location` is opened: registers the fork handlers, refuses, in a
/// forked child, a SQLite database file an ancestor had open at the fork (SQLite here
/// would share its lock record: see the module), and records the file.
pub(crate) fn before_open(location: &StoreLocation) -> Result<Opening> {
    let born = register()?;
    let StoreLocation::Dir(dir) = location else {
        return Ok(Opening {
            born,
            sqlite: false,
            _record: None,
        });
    };
    let db = dir.join(DB_FILE);
    let record = match FileId::of(&db) {
        Ok(id) => Some(StoreRecord::new(id, born, &db)?),
        // A new store, or one SQLite will fail to open: `after_open` records (and checks)
        // the file it did open.
        Err(_) => None,
    };
    Ok(Opening {
        born,
        sqlite: true,
        _record: record,
    })
}

/// After the connection is open: the record of the database file `db` it opened, checked
/// again (the path may have come to name another file since `before_open`), for the
/// connection to keep (None for PostgreSQL). Fails if the file cannot be identified,
/// rather than leave an open store unrecorded.
pub(crate) fn after_open(opening: &Opening, db: &Path) -> Result<Option<StoreRecord>> {
    if !opening.sqlite {
        return Ok(None);
    }
    let id = FileId::of(db).map_err(|e| {
        Error::Internal(format!(
            "cannot identify the database file {} that was just opened: {e}",
            db.display()
        ))
    })?;
    StoreRecord::new(id, opening.born, db).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handlers_are_registered_when_the_library_is_loaded() {
        // No test of this crate's library opens a connection (which would register them
        // through `register` too): only the loader's call of `REGISTER_AT_LOAD` can have.
        assert_eq!(
            REGISTERED.load(Ordering::Acquire),
            0,
            "expected the fork handlers to be registered by the library's constructor"
        );
    }

    #[test]
    fn a_record_is_in_the_registry_exactly_while_it_lives() {
        let id = FileId {
            dev: u64::MAX,
            ino: 7,
        };
        let gate_open = || !GATE.load(Ordering::Acquire);
        let count = || {
            open_stores()
                .stores
                .iter()
                .flatten()
                .filter(|e| e.0 == id)
                .count()
        };
        let db = Path::new("/nowhere/snaptree.db");
        let first = StoreRecord::new(id, 0, db).unwrap();
        assert!(gate_open(), "expected the gate open after a record is made");
        let second = StoreRecord::new(id, 0, db).unwrap();
        assert_eq!(count(), 2, "expected one entry per live record");
        drop(first);
        assert!(
            gate_open(),
            "expected the gate open after a record is dropped"
        );
        assert_eq!(
            count(),
            1,
            "expected a dropped record's entry gone, the other's kept"
        );
        drop(second);
        assert_eq!(
            count(),
            0,
            "expected no entry once both records are dropped"
        );
    }

    #[test]
    fn a_file_an_older_generation_has_open_is_refused() {
        let id = FileId {
            dev: u64::MAX,
            ino: 8,
        };
        let db = Path::new("/nowhere/snaptree.db");
        let parents = StoreRecord::new(id, 0, db).unwrap();
        let refused = StoreRecord::new(id, 1, db).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("was open in the parent process"),
            "expected the refusal of an inherited file, got: {refused}"
        );
        assert!(
            StoreRecord::new(id, 0, db).is_ok(),
            "expected the same generation allowed"
        );
        drop(parents);
    }
}
