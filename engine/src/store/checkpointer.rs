//! [`Checkpointer`]: copies a database's write-ahead log into the database on a thread of
//! its own, so that no commit waits for the bulk of it.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log past its limit:
//! that one commit copies the log's pages into the database and syncs both, 7-10 ms for
//! 4000 pages on the disks measured, most of it the two `fsync` calls, whose cost grows
//! with the bytes they flush (BENCHMARKS.md). Here a commit that leaves the log at
//! [`BACKGROUND_FROM`] pages or more only wakes a thread, which runs passive checkpoints
//! through a connection of its own: they block no writer and no reader, and copy what no
//! reader still needs. While commits go on, a passive checkpoint never finishes the log
//! (each pass leaves the frames committed during it), and SQLite starts the log again from
//! its beginning only after a checkpoint that copied all of it. So the thread repeats its
//! passes until at most [`TAIL`] frames are left, and the next commit copies that tail
//! itself: a small copy and two small syncs instead of the whole. The write after it
//! starts the log again. When no commit comes for [`TAIL_WAIT`], the thread copies the
//! tail itself, so that a writer that stopped leaves none to its next commit.
//!
//! One checkpointer serves every connection of a process to one database file (the
//! catalog's and each domain store's share one log): one thread, one extra connection, and
//! whichever connection commits next copies the tail. It lives as long as one of those
//! connections.
//!
//! A commit still runs the whole checkpoint itself once the log reaches [`INLINE_FROM`]
//! pages, so the log stays bounded when the thread cannot keep up, cannot progress (a
//! reader keeps an old snapshot of the log), or could not be started. In a child forked
//! after the thread started, requests go unanswered and commits keep that bound (SQLite
//! does not support using a connection across a fork anyway).
//!
//! Durability does not depend on who checkpoints or when: a commit is complete in the log,
//! a checkpoint only copies it, and SQLite recovers a checkpoint cut short by a crash. The
//! thread is started by the first request, so a command that makes a few changes never
//! starts one, and is stopped, after the pass it may be running, when the last connection
//! closes.

use std::collections::HashMap;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
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

/// At most this many passes a request: when the tail is still long after them (a writer
/// faster than the passes), the next request goes on.
const MAX_PASSES: u32 = 8;

/// How long a tail waits for a commit to copy it before the thread does.
const TAIL_WAIT: Duration = Duration::from_millis(20);

/// How long the thread's checkpoint connection waits for a lock it needs to open the log.
const OPEN_WAIT: Duration = Duration::from_millis(100);

/// The checkpointer of each database file this process has open, by path.
static BY_PATH: Mutex<Option<HashMap<PathBuf, Weak<Checkpointer>>>> = Mutex::new(None);

/// Checkpoints the log of one database file for the connections of this process; see the
/// module documentation. Dropping the last reference stops its thread.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
}

/// What the connections' hooks, the thread and the owner share.
struct Shared {
    /// The database file.
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    /// The process that started the thread (0: none started).
    started_by: AtomicU32,
    /// The thread left a tail for the next commit to copy.
    tail_ready: AtomicBool,
    /// Checkpoint passes the thread ran that copied what they could.
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
    thread: Option<JoinHandle<()>>,
    /// Starting the thread failed; commits keep the [`INLINE_FROM`] bound.
    cannot_start: bool,
    /// Tests stand in for a thread that cannot be started.
    #[cfg(test)]
    no_thread: bool,
    /// Tests hold the thread after each pass, before it looks at what is left.
    #[cfg(test)]
    hold_after_pass: bool,
    /// The thread waits there.
    #[cfg(test)]
    held_after_pass: bool,
    /// Tests stretch [`TAIL_WAIT`].
    #[cfg(test)]
    tail_wait: Option<Duration>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checkpointer {
    /// Takes over `conn`'s checkpoints (replacing SQLite's automatic one, which uses the
    /// same hook), with the checkpointer this process has for the database at `path`, or a
    /// new one.
    pub(crate) fn install(
        conn: &mut rusqlite::Connection,
        path: &Path,
    ) -> rusqlite::Result<Arc<Checkpointer>> {
        // SQLite's own full name of the file: a relative path would name another file once
        // the process changed directory.
        let path = conn
            .path()
            .filter(|p| !p.is_empty())
            .map_or_else(|| path.to_owned(), PathBuf::from);
        let checkpointer = {
            let mut by_path = BY_PATH.lock().unwrap_or_else(PoisonError::into_inner);
            let by_path = by_path.get_or_insert_with(HashMap::new);
            by_path.retain(|_, c| c.strong_count() > 0);
            match by_path.get(&path).and_then(Weak::upgrade) {
                Some(c) => c,
                None => {
                    let c = Arc::new(Checkpointer::new(path.clone()));
                    by_path.insert(path, Arc::downgrade(&c));
                    c
                }
            }
        };
        let hook = Arc::clone(&checkpointer.shared);
        conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            // Passive, like SQLite's automatic checkpoint: a busy log is left for a later
            // commit, and this commit has already succeeded.
            if pages >= INLINE_FROM {
                hook.inline.fetch_add(1, Ordering::Relaxed);
                hook.tail_ready.store(false, Ordering::Release);
                let _ = wal.checkpoint();
            } else if hook.tail_ready.swap(false, Ordering::AcqRel) {
                hook.tails.fetch_add(1, Ordering::Relaxed);
                let _ = wal.checkpoint();
            } else if pages >= BACKGROUND_FROM {
                hook.request();
            }
            Ok(())
        }))?;
        Ok(checkpointer)
    }

    fn new(path: PathBuf) -> Checkpointer {
        Checkpointer {
            shared: Arc::new(Shared {
                path,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                started_by: AtomicU32::new(0),
                tail_ready: AtomicBool::new(false),
                background: AtomicU64::new(0),
                tails: AtomicU64::new(0),
                inline: AtomicU64::new(0),
            }),
        }
    }

    /// How many passes the thread ran, how many tails commits copied and how many whole
    /// checkpoints they ran.
    #[cfg(test)]
    fn runs(&self) -> (u64, u64, u64) {
        (
            self.shared.background.load(Ordering::Acquire),
            self.shared.tails.load(Ordering::Acquire),
            self.shared.inline.load(Ordering::Acquire),
        )
    }
}

impl Shared {
    /// Asks the thread for a checkpoint, starting it if none was. Never waits: the state
    /// is busy only for a moment, and the next commit asks again.
    fn request(self: &Arc<Self>) {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if state.requested
            || state.stop
            || state.cannot_start
            || self.tail_ready.load(Ordering::Acquire)
        {
            return;
        }
        if state.thread.is_none() {
            #[cfg(test)]
            if state.no_thread {
                return;
            }
            // Before the start: a fork during it must see a thread that is not its own.
            self.started_by.store(std::process::id(), Ordering::Release);
            let shared = Arc::clone(self);
            match std::thread::Builder::new()
                .name("snaptree-checkpoint".into())
                .spawn(move || shared.run())
            {
                Ok(thread) => state.thread = Some(thread),
                Err(_) => {
                    self.started_by.store(0, Ordering::Release);
                    state.cannot_start = true;
                    return;
                }
            }
        } else if self.started_by.load(Ordering::Acquire) != std::process::id() {
            // A forked child: its copy of the handle names no thread of its own.
            return;
        }
        state.requested = true;
        self.wake.notify_one();
    }

    /// Waits for a request; false when asked to stop.
    fn next_request(&self) -> bool {
        let mut state = lock(&self.state);
        while !state.requested && !state.stop {
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.requested = false;
        !state.stop
    }

    /// The thread: passes until the tail is short, per request, until stopped.
    fn run(&self) {
        let mut conn = None;
        while self.next_request() {
            if conn.is_none() {
                conn = checkpoint_connection(&self.path).ok();
            }
            let Some(conn) = &conn else { continue };
            let passes = self.passes(conn);
            if passes == Passes::Unfinished {
                continue;
            }
            // The commits made during the passes asked again; the copy answers them. Under
            // the lock, so that no request slips in after this: a pass running beside the
            // commit that copies the tail would make that copy busy, and the log would not
            // start again.
            let left_tail = passes == Passes::LeftTail;
            {
                let mut state = lock(&self.state);
                state.requested = false;
                self.tail_ready.store(left_tail, Ordering::Release);
            }
            // A writer that stopped leaves the tail to whatever commit comes next, a large
            // delete perhaps, which would pay for it: with no commit for a while, the
            // thread copies it itself (with no writer, all of it).
            if left_tail
                && self.idle(TAIL_WAIT)
                && self.tail_ready.swap(false, Ordering::AcqRel)
                && checkpoint(conn, "PASSIVE").is_some()
            {
                self.background.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Waits for `wait` (tests may stretch it); false when asked to stop.
    fn idle(&self, wait: Duration) -> bool {
        let state = lock(&self.state);
        #[cfg(test)]
        let wait = state.tail_wait.unwrap_or(wait);
        let (state, _) = self
            .wake
            .wait_timeout_while(state, wait, |s| !s.stop)
            .unwrap_or_else(PoisonError::into_inner);
        !state.stop
    }

    /// Passive checkpoints until at most [`TAIL`] frames are left, or a pass copies
    /// nothing more (a reader keeps the rest, or another connection is checkpointing), or
    /// [`MAX_PASSES`] passes, or a stop.
    fn passes(&self, conn: &rusqlite::Connection) -> Passes {
        // How much of the log was in the database before the pass.
        let mut before = None;
        for _ in 0..MAX_PASSES {
            if lock(&self.state).stop {
                return Passes::Unfinished;
            }
            let Some((log, done)) = checkpoint(conn, "PASSIVE") else {
                return Passes::Unfinished;
            };
            self.background.fetch_add(1, Ordering::Release);
            #[cfg(test)]
            self.hold_after_pass();
            if done < log && before == Some(done) {
                return Passes::Unfinished;
            }
            // What is left now: the frames committed during the pass, or all of a log that
            // a commit started again since (then the counts are the new log's).
            let Some((log_now, done_now)) = checkpoint(conn, "NOOP") else {
                return Passes::Unfinished;
            };
            let left = log_now - done_now;
            if left == 0 {
                return Passes::Complete;
            }
            if left <= TAIL {
                return Passes::LeftTail;
            }
            before = Some(done_now);
        }
        Passes::Unfinished
    }

    /// Waits while a test holds the thread after a pass, saying so.
    #[cfg(test)]
    fn hold_after_pass(&self) {
        let mut state = lock(&self.state);
        while state.hold_after_pass && !state.stop {
            state.held_after_pass = true;
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.held_after_pass = false;
    }
}

/// How the thread's passes over a log ended.
#[derive(Debug, PartialEq, Eq)]
enum Passes {
    /// Every frame is in the database: the next write starts the log again.
    Complete,
    /// At most [`TAIL`] frames are left, for the next commit to copy.
    LeftTail,
    /// More is left (a reader, another checkpointer, a fast writer or a stop): a later
    /// request goes on.
    Unfinished,
}

/// Runs `PRAGMA wal_checkpoint(mode)`: the frames in the log and how many of them are in
/// the database, or None when it could not run (busy: another connection is
/// checkpointing; or an error).
fn checkpoint(conn: &rusqlite::Connection, mode: &str) -> Option<(c_int, c_int)> {
    let (busy, log, done): (c_int, c_int, c_int) = conn
        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .ok()?;
    (busy == 0 && log >= 0 && done >= 0).then_some((log, done))
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
        let started_by = self.shared.started_by.load(Ordering::Acquire);
        if started_by != 0 && started_by != std::process::id() {
            // A forked child: no thread to stop, and the state may have been locked by the
            // parent's thread at the fork.
            return;
        }
        let thread = {
            let mut state = lock(&self.shared.state);
            state.stop = true;
            state.thread.take()
        };
        self.shared.wake.notify_all();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Db;
    use crate::store::open_db;

    /// A database in a new directory, which lives as long as the first value. Its tails
    /// wait for a commit (an hour rather than [`TAIL_WAIT`]), however slow the machine.
    fn fresh_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("db.sqlite")).unwrap();
        lock(&db.checkpointer().shared.state).tail_wait = Some(Duration::from_secs(3600));
        (dir, db)
    }

    /// Commits of about one page each until the log holds `pages` pages or more.
    fn fill_log(db: &rusqlite::Connection, pages: c_int) {
        db.execute_batch("CREATE TABLE IF NOT EXISTS t (x BLOB)")
            .unwrap();
        let mut insert = db.prepare("INSERT INTO t VALUES (zeroblob(1500))").unwrap();
        // A page or more a commit: a log that never gets there was started again.
        for _ in 0..pages {
            insert.execute([]).unwrap();
            if log(db).0 >= pages {
                return;
            }
        }
        panic!("expected the log to reach {pages} pages, it was started again on the way");
    }

    /// The pages in the log, and how many of them are in the database.
    fn log(db: &rusqlite::Connection) -> (c_int, c_int) {
        checkpoint(db, "NOOP").expect("the log's size")
    }

    /// Writes once and checks that the write started the log again, after `what`.
    fn assert_next_write_restarts(db: &rusqlite::Connection, what: &str) {
        db.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        let (pages, _) = log(db);
        assert!(
            pages < 10,
            "expected the log restarted after {what}, it has {pages} pages"
        );
    }

    /// Waits up to 30 s for `done`.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "expected {what} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fills the log past the limit and holds the thread after its first pass.
    fn hold_after_the_first_pass(db: &Db) {
        let shared = &db.checkpointer().shared;
        lock(&shared.state).hold_after_pass = true;
        fill_log(db, BACKGROUND_FROM);
        wait_for("the thread's first pass", || {
            lock(&shared.state).held_after_pass
        });
    }

    /// Fills the log past the limit and has the thread's first pass leave a tail: it is
    /// held after the pass while 50 more commits are made.
    fn leave_a_tail(db: &Db) {
        let shared = &db.checkpointer().shared;
        hold_after_the_first_pass(db);
        for _ in 0..50 {
            db.execute_batch("INSERT INTO t VALUES (zeroblob(1500))")
                .unwrap();
        }
        lock(&shared.state).hold_after_pass = false;
        shared.wake.notify_all();
    }

    /// Waits for the whole log to be copied with no commit's help, and checks that the
    /// next write starts it again.
    fn assert_the_thread_copied_everything(db: &Db, passes: u64, what: &str) {
        // The count moves once the pass has let go of the log, which a write needs to start
        // it again.
        wait_for("the thread to copy the whole log", || {
            let (pages, copied) = log(db);
            pages == copied && db.checkpointer().runs().0 >= passes
        });
        let (passes, tails, inline) = db.checkpointer().runs();
        assert_eq!(
            (tails, inline),
            (0, 0),
            "expected no commit to copy anything after {passes} passes"
        );
        assert_next_write_restarts(db, what);
        assert_eq!(
            db.checkpointer().runs().1,
            0,
            "expected no tail left for that write to copy"
        );
    }

    /// Waits for the thread to leave a tail for a commit.
    fn wait_for_the_tail(db: &Db) {
        wait_for("the thread to leave a tail", || {
            db.checkpointer().shared.tail_ready.load(Ordering::Acquire)
        });
    }

    #[test]
    fn a_commit_past_the_limit_leaves_the_bulk_to_the_thread_and_copies_the_tail() {
        let (_dir, db) = fresh_db();
        leave_a_tail(&db);
        wait_for_the_tail(&db);
        let (passes, tails, inline) = db.checkpointer().runs();
        assert!(passes >= 1, "expected the thread to run a pass");
        assert_eq!(
            (tails, inline),
            (0, 0),
            "expected no commit to checkpoint before the thread's passes ended"
        );
        let (pages, copied) = log(&db);
        assert!(
            0 < pages - copied && pages - copied <= TAIL,
            "expected the thread to leave at most {TAIL} of {pages} pages, it left {}",
            pages - copied
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
    fn commits_made_during_a_pass_are_copied_by_the_next() {
        let (_dir, db) = fresh_db();
        let shared = &db.checkpointer().shared;
        hold_after_the_first_pass(&db);
        // More than a tail's worth of frames after those the first pass copied.
        for _ in 0..400 {
            db.execute_batch("INSERT INTO t VALUES (zeroblob(1500))")
                .unwrap();
        }
        let (pages, copied) = log(&db);
        assert!(
            pages - copied > TAIL,
            "expected more than {TAIL} pages left after the first pass, {} are",
            pages - copied
        );
        lock(&shared.state).hold_after_pass = false;
        shared.wake.notify_all();
        assert_the_thread_copied_everything(&db, 2, "the second pass");
    }

    #[test]
    fn the_connections_to_one_file_share_a_checkpointer_and_any_copies_the_tail() {
        let (dir, db) = fresh_db();
        let other = open_db(&dir.path().join("db.sqlite")).unwrap();
        let elsewhere = open_db(&dir.path().join("other.sqlite")).unwrap();
        assert!(
            std::ptr::eq(db.checkpointer(), other.checkpointer()),
            "expected one checkpointer for one file"
        );
        assert!(
            !std::ptr::eq(db.checkpointer(), elsewhere.checkpointer()),
            "expected another file to have its own"
        );
        leave_a_tail(&db);
        wait_for_the_tail(&db);
        other.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        assert_eq!(
            other.checkpointer().runs().1,
            1,
            "expected the other connection's commit to copy the tail"
        );
        assert_next_write_restarts(&db, "the other connection's tail");
        drop(db);
        assert!(
            lock(&other.checkpointer().shared.state).thread.is_some(),
            "expected the thread kept while a connection to the file is open"
        );
    }

    #[test]
    fn a_writer_that_stops_leaves_no_tail_to_its_next_commit() {
        let (_dir, db) = fresh_db();
        lock(&db.checkpointer().shared.state).tail_wait = None;
        leave_a_tail(&db);
        // The pass that left the tail, and the thread's copy of it.
        assert_the_thread_copied_everything(&db, 2, "the thread's own copy of the tail");
    }

    #[test]
    fn without_a_thread_a_commit_checkpoints_at_the_hard_limit() {
        let (_dir, db) = fresh_db();
        lock(&db.checkpointer().shared.state).no_thread = true;
        // Well past where SQLite's own checkpoint would have run, none yet.
        fill_log(&db, 2 * BACKGROUND_FROM);
        assert_eq!(
            db.checkpointer().runs().2,
            0,
            "expected no whole checkpoint below {INLINE_FROM} pages"
        );
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
    fn a_thread_that_cannot_keep_up_leaves_the_bound_to_a_commit() {
        let (_dir, db) = fresh_db();
        // The thread never gets past its first pass.
        hold_after_the_first_pass(&db);
        fill_log(&db, INLINE_FROM);
        assert_eq!(
            db.checkpointer().runs(),
            (1, 0, 1),
            "expected one pass, no tail and the commit that reached {INLINE_FROM} pages \
             to checkpoint (passes, tails, whole checkpoints)"
        );
        assert_next_write_restarts(&db, "the commit's checkpoint");
    }

    #[test]
    fn every_log_that_passes_the_limit_gets_its_passes() {
        let (_dir, db) = fresh_db();
        for round in 1..=3 {
            fill_log(&db, BACKGROUND_FROM);
            // With no commit after it, the thread's pass copies everything; the next
            // round's first write starts the log again.
            assert_the_thread_copied_everything(&db, round, &format!("round {round}"));
        }
    }

    #[test]
    fn a_file_no_connection_uses_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone.sqlite");
        drop(open_db(&gone).unwrap());
        let _other = open_db(&dir.path().join("other.sqlite")).unwrap();
        let by_path = BY_PATH.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            !by_path.as_ref().is_some_and(|m| m
                .keys()
                .any(|p| p.ends_with("gone.sqlite") && p.starts_with(dir.path()))),
            "expected the closed file's checkpointer forgotten"
        );
    }

    #[test]
    fn closing_the_last_connection_stops_the_thread() {
        let (_dir, db) = fresh_db();
        leave_a_tail(&db);
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
