//! The durable store: one SQLite database (`snaptree.db`, WAL mode) in a state directory,
//! a lock file per domain, and the intent journal; or, for a fleet of hosts, the same
//! tables in PostgreSQL (`postgres/`, docs/fleet.md). Both sit behind [`catalog::Catalog`]
//! (the domains) and [`crate::DomainStore`] (one handle's lock, change check and
//! journal); [`StoreLocation`] picks one from a path or URI.
//!
//! Layout of a state directory (created 0700; every file in it 0600, whatever the umask):
//!
//! ```text
//! $SNAPTREE_STATE_DIR/            (else $XDG_DATA_HOME/snaptree, else ~/.local/share/snaptree)
//!   snaptree.db, snaptree.db-wal, snaptree.db-shm
//!   locks/<domain-uuid>.lock      one per domain, held (flock) while a mutation runs; its
//!                                 first 8 bytes are the domain's change signal
//! ```
//!
//! Several processes and threads may share a state directory. Mutations of one domain are
//! serialized by its lock file; each domain handle remembers the domain's `generation` (a
//! counter bumped by every commit) and notices another handle's commit through the change
//! signal, a counter in a shared mapping of the lock file that every commit makes odd
//! before and even after (one memory load per read; ARCHITECTURE.md, "The change
//! signal"); when the signal moved or is odd it asks SQLite (`PRAGMA data_version`, then
//! the generation).
//!
//! Durability: metadata commits run with `synchronous=NORMAL` (a power loss may lose the
//! last commits, never corrupt); the journal entry written before the first physical step
//! runs with `synchronous=FULL`, so a plan whose steps have started always survives.

pub mod catalog;
mod checkpointer;
mod db;
pub(crate) mod location;
mod lock;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod redact;
mod retention;
mod row_seqs;
mod schema;
pub(crate) mod sqlite;
mod sqlite_catalog;
mod tree_rows;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use location::{STORE_ENV, StoreLocation};
pub use lock::DomainLock;
pub use redact::redact;
pub use schema::{Dialect, MIGRATIONS, SCHEMA_VERSION, render};
pub use sqlite::{SqliteStore, StoredDomain};
pub use sqlite_catalog::SqliteCatalog;

use crate::error::{Error, Result};
pub(crate) use db::Db;

/// The database file in a state directory.
pub const DB_FILE: &str = "snaptree.db";

/// The directory of lock files in a state directory.
pub const LOCK_DIR: &str = "locks";

/// How long a mutation waits for a domain's lock before `BUSY`, unless configured: libvirt's
/// wait for a domain job.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "SNAPTREE_STATE_DIR";

/// Environment variable overriding the lock timeout, in milliseconds.
pub const LOCK_TIMEOUT_ENV: &str = "SNAPTREE_LOCK_TIMEOUT_MS";

/// How long SQLite itself waits for another connection's write transaction. Those last
/// microseconds to milliseconds (plans run outside them), so this only guards against a
/// stuck process.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The default state directory: `$SNAPTREE_STATE_DIR`, else `$XDG_DATA_HOME/snaptree`, else
/// `~/.local/share/snaptree`. Relative `XDG_DATA_HOME` values are ignored, as the XDG
/// specification says.
pub fn default_state_dir() -> Result<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(STATE_DIR_ENV) {
        return Ok(dir);
    }
    if let Some(xdg) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("snaptree"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".local/share/snaptree")),
        None => Err(Error::Storage {
            context: format!(
                "cannot find a state directory: none of {STATE_DIR_ENV}, XDG_DATA_HOME or HOME is set"
            ),
            source: None,
        }),
    }
}

/// The lock timeout from `$SNAPTREE_LOCK_TIMEOUT_MS`, else [`DEFAULT_LOCK_TIMEOUT`].
pub fn lock_timeout_from_env() -> Result<Duration> {
    match std::env::var(LOCK_TIMEOUT_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| {
                Error::InvalidArg(format!(
                    "{LOCK_TIMEOUT_ENV}='{}' is not a number of milliseconds",
                    v.escape_default()
                ))
            }),
        _ => Ok(DEFAULT_LOCK_TIMEOUT),
    }
}

/// Sets exact permission bits, whatever the umask was when the file was created.
fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        Error::storage(
            format!(
                "cannot set the permissions of {} to {mode:o}",
                path.display()
            ),
            e,
        )
    })
}

/// Creates `dir` (and its parents) if missing; a directory created here is 0700.
fn ensure_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(|e| {
            Error::storage(
                format!("cannot create the directory {}", parent.display()),
                e,
            )
        })?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => chmod(dir, 0o700),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::storage(
            format!("cannot create the state directory {}", dir.display()),
            e,
        )),
    }
}

/// Creates `path` empty with mode 0600 if missing (so SQLite, which gives its -wal and -shm
/// files the database file's mode, makes them 0600 too).
pub(crate) fn ensure_private_file(path: &Path) -> Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            chmod(path, 0o600)?;
            // Make the new file's existence durable: the first plan journaled in it must
            // not vanish with its directory entry in a power loss. Once per state directory.
            let synced = file.sync_all().and_then(|()| match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
                _ => Ok(()),
            });
            synced.map_err(|e| Error::storage(format!("cannot sync {}", path.display()), e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::storage(
            format!("cannot create {}", path.display()),
            e,
        )),
    }
}

/// Prepares a state directory: the directory, `locks/` and the database file.
pub(crate) fn prepare_state_dir(dir: &Path) -> Result<()> {
    ensure_private_dir(dir)?;
    ensure_private_dir(&dir.join(LOCK_DIR))?;
    ensure_private_file(&dir.join(DB_FILE))
}

/// A storage error about `path`.
pub(crate) fn db_error(what: impl std::fmt::Display, path: &Path, e: rusqlite::Error) -> Error {
    Error::storage(format!("{what} in {}", path.display()), e)
}

/// The page size of a new database, bytes. Every commit appends each page it changed to
/// the write-ahead log, and every checkpoint syncs the log before copying it; a create
/// changes about 150 bytes on two pages, so with SQLite's 4 KiB pages the log's writes and
/// syncs were most of a create (BENCHMARKS.md: 21.6-22.0 -> 17.1-17.5 us a create at
/// 100,000). Not 1 KiB, which was faster still (14.4-16.1 us): a row larger than about
/// 230 bytes (a description of 100-odd characters) leaves a 1 KiB page for an overflow
/// page of its own, which made such rows take 1,148 bytes on disk instead of 340 and
/// their creates and loads slower than with 4 KiB pages. With 2 KiB a row keeps up to
/// about 490 bytes in its page.
pub const PAGE_SIZE: u32 = 2048;

/// Opens a connection to the database of a prepared state directory, with the pragmas
/// every connection needs. The schema is not touched.
pub(crate) fn open_db(path: &Path) -> Result<Db> {
    let db = rusqlite::Connection::open(path)
        .map_err(|e| db_error("cannot open the metadata database", path, e))?;
    let setup = || -> rusqlite::Result<String> {
        db.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        // Closing is `Db`'s: no checkpoint and no deleted log on close (store/db.rs).
        db.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        db.set_prepared_statement_cache_capacity(64);
        // For a new database (an existing one keeps its page size: SQLite ignores this once
        // the file has content; changing it needs a VACUUM outside WAL mode).
        db.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE}"))?;
        let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        // Checkpoints are `Db`'s, on a thread (store/checkpointer.rs), which replaces
        // SQLite's automatic checkpoint. After a checkpoint the log file is cut back to
        // 32 MiB at most. A page cache of up to 16 MiB (SQLite's default is 2) keeps the
        // indexes of ~100,000 snapshots in memory: deleting a subtree of that size re-read
        // index pages from the OS for every row (4.7 -> 3.0 us a snapshot); it only grows
        // as pages are used.
        db.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; \
             PRAGMA journal_size_limit=33554432; \
             PRAGMA cache_size=-16384;",
        )?;
        Ok(mode)
    };
    let mode = setup().map_err(|e| db_error("cannot set up the metadata database", path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage {
            context: format!(
                "{} cannot use write-ahead logging (journal mode is '{mode}')",
                path.display()
            ),
            source: None,
        });
    }
    // SQLite creates -wal and -shm with the database file's mode; make sure anyway.
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if let Ok(meta) = fs::metadata(&side)
            && meta.permissions().mode() & 0o777 != 0o600
        {
            chmod(&side, 0o600)?;
        }
    }
    Db::new(db, path).map_err(|e| db_error("cannot set up the metadata database", path, e))
}

/// Opens the database of `dir` (preparing the directory first) and brings its schema to
/// [`SCHEMA_VERSION`].
pub(crate) fn open_and_migrate(dir: &Path) -> Result<Db> {
    prepare_state_dir(dir)?;
    let path = dir.join(DB_FILE);
    let mut db = open_db(&path)?;
    schema::migrate(&mut db, &path)?;
    Ok(db)
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
