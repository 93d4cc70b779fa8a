//! [`Checkpointer`]: copies a connection's write-ahead log into the database on a thread of
//! its own, so that no commit waits for the bulk of it.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log past its limit:
//! that one commit copies the log's pages into the database and syncs both, 7-10 ms for
//! 4000 pages on the disks measured, most of it the two `fsync` calls, whose cost grows
//! with the bytes they flush (BENCHMARKS.md). Here a commit that leaves the log at
//! [`BACKGROUND_FROM`] pages or more only wakes a thread, which runs passive checkpoints
//! through a connection of its own: they block no writer and no reader, and copy what no
//! reader still needs. While commits go on, a passive checkpoint never finishes the log (each
//! pass leaves the frames committed during it), and SQLite starts the log again from its
//! beginning only after a checkpoint that copied all of it. So the thread repeats its passes
//! until at most [`TAIL`] frames are left, and the next commit copies that tail itself: a
//! small copy and two small syncs instead of the whole. The write after it starts the log
//! again.
//!
//! A commit still runs the whole checkpoint itself once the log reaches [`INLINE_FROM`]
//! pages, so the log stays bounded when the thread cannot keep up or could not be started.
//! (A forked child has no thread; one that goes on using its parent's connection, which
//! SQLite does not support, starts its own.)
//!
//! Durability does not depend on who checkpoints or when: a commit is complete in the log,
//! a checkpoint only copies it, and SQLite recovers a checkpoint cut short by a crash. The
//! thread is started by the first request, so a command that makes a few changes never
//! starts one, and is stopped, after the pass it may be running, when its connection closes.

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::hooks::Wal;

/// A commit that leaves this many pages or more in the log wakes the thread (8 MiB of log
/// with 2 KiB pages; SQLite's own default is 1000).
pub(crate) const BACKGROUND_FROM: c_int = 4000;

/// A commit that leaves this many pages or more in the log checkpoints it itself.
pub(crate) const INLINE_FROM: c_int = 4 * BACKGROUND_FROM;

/// The thread stops its passes when at most this many frames are left for a commit to copy
/// (about 100 creates' worth).
const TAIL: c_int = 300;

/// At most this many passes a request: a reader that keeps an old snapshot of the log, or a
/// writer faster than the passes, leaves the rest to the next request.
const MAX_PASSES: u32 = 8;

/// How long the thread's checkpoint connection waits for a lock it needs to open the log.
const OPEN_WAIT: Duration = Duration::from_millis(100);

/// Checkpoints the log of one connection's database; see the module documentation. Dropping
/// it stops its thread.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
}

/// What the connection's hook, the thread and the owner share.
struct Shared {
    /// The database file.
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    /// The thread left a tail for the next commit to copy.
    tail_ready: AtomicBool,
    /// Checkpoint passes the thread ran.
    background: AtomicU64,
    /// Tails commits copied.
    tails: AtomicU64,
    /// Whole checkpoints commits ran at [`INLINE_FROM`].
    inline: AtomicU64,
}

/// What the thread is asked to do, and the thread itself.
#[derive(Default)]
struct State {
    requested: bool,
    stop: bool,
    /// The thread, with the process that started it.
    thread: Option<(u32, JoinHandle<()>)>,
    /// Tests stand in for a thread that cannot be started.
    #[cfg(test)]
    no_thread: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checkpointer {
    /// Takes over `conn`'s checkpoints (replacing SQLite's automatic one, which uses the
    /// same hook) for the database at `path`.
    pub(crate) fn install(conn: &mut rusqlite::Connection, path: &Path) -> rusqlite::Result<Self> {
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            tail_ready: AtomicBool::new(false),
            background: AtomicU64::new(0),
            tails: AtomicU64::new(0),
            inline: AtomicU64::new(0),
        });
        let hook = Arc::clone(&shared);
        conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            // Passive, like SQLite's automatic checkpoint: a busy log is left for a later
            // commit, and this commit has already succeeded.
            if pages >= INLINE_FROM {
                hook.inline.fetch_add(1, Ordering::Relaxed);
                hook.tail_ready.store(false, Ordering::Relaxed);
                let _ = wal.checkpoint();
            } else if hook.tail_ready.swap(false, Ordering::Relaxed) {
                hook.tails.fetch_add(1, Ordering::Relaxed);
                let _ = wal.checkpoint();
            } else if pages >= BACKGROUND_FROM {
                Shared::request(&hook);
            }
            Ok(())
        }))?;
        Ok(Checkpointer { shared })
    }

    /// How many passes the thread ran, how many tails commits copied and how many whole
    /// checkpoints they ran.
    #[cfg(test)]
    fn runs(&self) -> (u64, u64, u64) {
        (
            self.shared.background.load(Ordering::Relaxed),
            self.shared.tails.load(Ordering::Relaxed),
            self.shared.inline.load(Ordering::Relaxed),
        )
    }
}

impl Shared {
    /// Asks the thread for a checkpoint, starting it if this process has none. When it
    /// cannot be started, the commit at [`INLINE_FROM`] pages does the work.
    fn request(this: &Arc<Shared>) {
        let mut state = lock(&this.state);
        if state.stop || this.tail_ready.load(Ordering::Relaxed) {
            return;
        }
        let pid = std::process::id();
        if state
            .thread
            .as_ref()
            .is_none_or(|(started_by, _)| *started_by != pid)
        {
            #[cfg(test)]
            if state.no_thread {
                return;
            }
            let shared = Arc::clone(this);
            match std::thread::Builder::new()
                .name("snaptree-checkpoint".into())
                .spawn(move || shared.run())
            {
                // A forked child's copy of the parent's handle names no thread of its own:
                // it is forgotten, never joined.
                Ok(thread) => {
                    if let Some(old) = state.thread.replace((pid, thread)) {
                        std::mem::forget(old);
                    }
                }
                Err(_) => return,
            }
        }
        state.requested = true;
        this.wake.notify_one();
    }

    /// The thread: passive checkpoints until the tail is short, per request, until stopped.
    fn run(&self) {
        let mut conn = None;
        loop {
            {
                let mut state = lock(&self.state);
                while !state.requested && !state.stop {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.stop {
                    return;
                }
                state.requested = false;
            }
            if conn.is_none() {
                conn = checkpoint_connection(&self.path).ok();
            }
            // An error (busy: another process is checkpointing) leaves the log to the next
            // request; nothing it holds is lost.
            if let Some(conn) = &conn
                && self.passes(conn).is_ok()
            {
                // The commits made during the passes asked again; the tail answers them.
                // Under the lock, so that no request slips in after this: a pass running
                // beside the commit that copies the tail would make that copy busy, and
                // the log would not start again.
                let mut state = lock(&self.state);
                state.requested = false;
                self.tail_ready.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Passive checkpoints until at most [`TAIL`] frames are left, or a pass copies
    /// nothing more (a reader keeps the rest), or [`MAX_PASSES`] passes.
    fn passes(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        let mut copied = -1;
        for _ in 0..MAX_PASSES {
            let (log, done) = checkpoint(conn, "PASSIVE")?;
            self.background.fetch_add(1, Ordering::Relaxed);
            if done <= copied {
                break;
            }
            copied = done;
            // The frames committed during the pass.
            let (log_now, _) = checkpoint(conn, "NOOP")?;
            if log_now.max(log) - done <= TAIL {
                break;
            }
        }
        Ok(())
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)`: the frames in the log and how many of them are in
/// the database.
fn checkpoint(conn: &rusqlite::Connection, mode: &str) -> rusqlite::Result<(c_int, c_int)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// The thread's own connection: syncs as the store's connections do, and its close
/// neither checkpoints nor deletes the log (store/db.rs).
fn checkpoint_connection(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(OPEN_WAIT)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.execute_batch("PRAGMA synchronous=NORMAL")?;
    Ok(conn)
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let thread = {
            let mut state = lock(&self.shared.state);
            state.stop = true;
            state.thread.take()
        };
        self.shared.wake.notify_all();
        if let Some((started_by, thread)) = thread {
            if started_by == std::process::id() {
                let _ = thread.join();
            } else {
                std::mem::forget(thread);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Db;
    use crate::store::open_db;

    /// A database in a new directory, which lives as long as the first value.
    fn fresh_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("db.sqlite")).unwrap();
        (dir, db)
    }

    /// Commits of about one page each until the log holds `pages` pages or more.
    fn fill_log(db: &rusqlite::Connection, pages: c_int) {
        db.execute_batch("CREATE TABLE IF NOT EXISTS t (x BLOB)")
            .unwrap();
        let mut insert = db.prepare("INSERT INTO t VALUES (zeroblob(1500))").unwrap();
        loop {
            insert.execute([]).unwrap();
            if log_pages(db) >= pages {
                return;
            }
        }
    }

    fn log_pages(db: &rusqlite::Connection) -> c_int {
        db.query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| r.get(1))
            .unwrap()
    }

    /// Writes once and checks that the write started the log again, after `what`.
    fn assert_next_write_restarts(db: &rusqlite::Connection, what: &str) {
        db.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        let pages = log_pages(db);
        assert!(
            pages < 10,
            "expected the log restarted after {what}, it has {pages} pages"
        );
    }

    /// Waits up to 30 s for the thread to leave a tail.
    fn wait_for_the_tail(db: &Db) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !db.checkpointer().shared.tail_ready.load(Ordering::Relaxed) {
            assert!(
                std::time::Instant::now() < deadline,
                "expected the thread to checkpoint a log of {} pages within 30 s",
                log_pages(db)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_commit_past_the_limit_leaves_the_bulk_to_the_thread_and_copies_the_tail() {
        let (_dir, db) = fresh_db();
        fill_log(&db, BACKGROUND_FROM);
        wait_for_the_tail(&db);
        let (passes, tails, inline) = db.checkpointer().runs();
        assert!(passes >= 1, "expected the thread to run a pass");
        assert_eq!(
            (tails, inline),
            (0, 0),
            "expected no commit to checkpoint before the thread's passes ended"
        );
        db.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        assert_eq!(
            db.checkpointer().runs().1,
            1,
            "expected the next commit to copy the tail"
        );
        // The write after it starts the log again from its beginning.
        assert_next_write_restarts(&db, "the tail");
        assert_eq!(
            db.checkpointer().runs().2,
            0,
            "expected no whole checkpoint in a commit"
        );
    }

    #[test]
    fn commits_that_go_on_during_the_passes_leave_the_tail_to_copy() {
        let (_dir, db) = fresh_db();
        fill_log(&db, BACKGROUND_FROM);
        // Commits go on while the thread runs its passes: each asks for a checkpoint. The
        // first commit after the passes copies the tail.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut during = 0;
        while db.checkpointer().runs().1 == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "expected a commit to copy a tail within 30 s"
            );
            db.execute_batch("INSERT INTO t VALUES (zeroblob(1500))")
                .unwrap();
            during += 1;
        }
        let (passes, _, inline) = db.checkpointer().runs();
        assert_next_write_restarts(
            &db,
            &format!(
                "the tail ({during} commits during {passes} passes, {inline} whole \
                 checkpoints in commits)"
            ),
        );
    }

    #[test]
    fn without_a_thread_a_commit_checkpoints_at_the_hard_limit() {
        let (_dir, db) = fresh_db();
        lock(&db.checkpointer().shared.state).no_thread = true;
        fill_log(&db, INLINE_FROM);
        let (passes, tails, inline) = db.checkpointer().runs();
        assert_eq!((passes, tails), (0, 0), "expected no thread to run");
        assert_eq!(
            inline, 1,
            "expected the commit that reached {INLINE_FROM} pages to checkpoint"
        );
        assert_next_write_restarts(&db, "the commit's checkpoint");
    }

    #[test]
    fn closing_the_connection_stops_the_thread() {
        let (_dir, db) = fresh_db();
        fill_log(&db, BACKGROUND_FROM);
        wait_for_the_tail(&db);
        let shared = Arc::downgrade(&db.checkpointer().shared);
        assert!(
            lock(&shared.upgrade().unwrap().state).thread.is_some(),
            "expected a thread started"
        );
        drop(db);
        assert!(
            shared.upgrade().is_none(),
            "expected the thread ended and the hook dropped once the connection closed"
        );
    }
}
