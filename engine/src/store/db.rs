//! [`Db`]: one SQLite connection to a state directory's database, and what closing it does.
//!
//! SQLite, by default, has the last connection to close copy the write-ahead log into the
//! database and delete the log (syncing the log, the database and, when the next process
//! creates the log again, its directory): five of the eight `fsync` calls a command-line
//! snapshot used to make, each 0.3-3 ms on the disks measured (BENCHMARKS.md). Instead, a
//! connection here closes without that checkpoint and leaves the log in place: what it
//! committed is made durable by one `fsync` of the log (the commits of `synchronous=NORMAL`
//! are complete in the log but not yet on disk, which is what the checkpoint on close used
//! to settle), and the log is copied into the database only once it has grown past
//! [`CHECKPOINT_ON_CLOSE_FROM`], so that the next opener, which must read the log's valid
//! frames to rebuild its index, reads little. While a connection is open, its log is
//! checkpointed on a thread of its own (store/checkpointer.rs).
//!
//! A consequence to know: between commands the database file alone does not hold every
//! commit; the `-wal` file beside it is part of the store (copy the state directory, not
//! one file; SQLite's own tools read both).

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpointer::Checkpointer;

/// A log this large (256 KiB: the commits of about thirty command-line operations) is
/// copied into the database and cut back to nothing when a connection closes. The next
/// process to open the database reads and checksums the whole log to rebuild its index
/// (0.3 ms for 800 KiB here, on every command), against a fold of about two syncs every
/// thirty commands (BENCHMARKS.md, the command line). It was 1 MiB.
pub(crate) const CHECKPOINT_ON_CLOSE_FROM: u64 = 256 << 10;

/// How long a closing connection waits for other connections before it leaves the log's
/// checkpoint to a later close.
const CLOSE_CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A connection to a state directory's database that closes as the module says.
pub(crate) struct Db {
    conn: Option<rusqlite::Connection>,
    wal: PathBuf,
    /// Released before the connection closes (the last connection to the file stops its
    /// thread).
    checkpointer: Option<Arc<Checkpointer>>,
}

impl Db {
    /// Wraps a connection to `path` on which `SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE` is set,
    /// and hands its checkpoints to the process's [`Checkpointer`] for the file.
    pub(crate) fn new(mut conn: rusqlite::Connection, path: &Path) -> rusqlite::Result<Db> {
        let checkpointer = Checkpointer::install(&mut conn, path)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Db {
            conn: Some(conn),
            wal: PathBuf::from(wal),
            checkpointer: Some(checkpointer),
        })
    }

    /// The connection's checkpointer.
    #[cfg(test)]
    pub(crate) fn checkpointer(&self) -> &Checkpointer {
        self.checkpointer
            .as_ref()
            .expect("a checkpointer until the drop")
    }
}

impl Deref for Db {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        // Only `drop` takes the connection out.
        self.conn.as_ref().expect("an open connection")
    }
}

impl DerefMut for Db {
    fn deref_mut(&mut self) -> &mut rusqlite::Connection {
        self.conn.as_mut().expect("an open connection")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // The thread first, so that the checkpoint below has the log to itself.
        drop(self.checkpointer.take());
        let Some(conn) = self.conn.take() else {
            return;
        };
        let large = std::fs::metadata(&self.wal).is_ok_and(|m| m.len() >= CHECKPOINT_ON_CLOSE_FROM);
        if large {
            // Copies the log into the database, syncs both and truncates the log. Busy
            // (another process reading an old snapshot of the log, or writing) only means
            // a later close does it, so a close waits briefly rather than the 30 s an
            // operation would; the log stays valid either way.
            let _ = conn.busy_timeout(CLOSE_CHECKPOINT_WAIT);
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        drop(conn);
        // Errors cannot be reported from a drop, and none loses a commit: the log's frames
        // stay valid, and the next commit's or checkpoint's sync covers them.
        if let Ok(log) = File::open(&self.wal) {
            let _ = log.sync_all();
        }
    }
}
