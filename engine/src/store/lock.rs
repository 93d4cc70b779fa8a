//! The per-domain lock: `locks/<domain-uuid>.lock`, taken with `flock` through
//! [`std::fs::File::try_lock`]. Each handle opens the file once and keeps it open, so taking
//! the lock is one system call. Locks taken through different open files exclude each other
//! whether they are in one process or several, so threads with their own handles are
//! serialized too.
//!
//! The first 8 bytes of the file are the domain's **change signal**, a counter mapped
//! shared into every handle ([`snaptree_mapped_counter`]): a writer makes it odd before a
//! metadata commit and even (a new value) after it, so a reader that finds it even and
//! where it was when it last read the store knows, with one memory load, that nothing was
//! committed since. ARCHITECTURE.md ("The change signal") gives the argument, crashes
//! included; `SqliteStore::changed` is the reader. The next 8 bytes, mapped the same way,
//! hold the process id of the lock's holder (0: none), so that `BUSY` can name it.

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use snaptree_mapped_counter::MappedCounter;
use uuid::Uuid;

use super::{LOCK_DIR, chmod};
use crate::error::{Error, Result};

/// The first pause between attempts; pauses double up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(200);
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// A domain's lock file, open, and whether this handle holds it.
#[derive(Debug)]
pub struct DomainLock {
    file: File,
    path: PathBuf,
    domain: String,
    timeout: Duration,
    held: bool,
    /// The change signal in the file's first 8 bytes.
    signal: MappedCounter,
    /// This process's id, recorded as the holder (read once: `getpid` is a system call; a
    /// handle is not meant to cross a `fork`, whose child shares the parent's lock).
    pid: u64,
}

impl DomainLock {
    /// The lock file of a domain in a state directory.
    pub fn path(state_dir: &Path, domain_uuid: &Uuid) -> PathBuf {
        state_dir.join(LOCK_DIR).join(format!("{domain_uuid}.lock"))
    }

    /// Opens (creating, mode 0600) the lock file of domain `name`.
    pub fn open(
        state_dir: &Path,
        domain_uuid: &Uuid,
        name: &str,
        timeout: Duration,
    ) -> Result<DomainLock> {
        let path = DomainLock::path(state_dir, domain_uuid);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                chmod(&path, 0o600)?;
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| {
                    Error::storage(format!("cannot open the lock file {}", path.display()), e)
                })?,
            Err(e) => {
                return Err(Error::storage(
                    format!("cannot create the lock file {}", path.display()),
                    e,
                ));
            }
        };
        let signal = MappedCounter::map(&file).map_err(|e| {
            Error::storage(
                format!("cannot map the change signal of {}", path.display()),
                e,
            )
        })?;
        Ok(DomainLock {
            file,
            path,
            domain: name.to_string(),
            timeout,
            held: false,
            signal,
            pid: u64::from(std::process::id()),
        })
    }

    /// The change signal now: even when no commit is under way; every commit moves it.
    /// One memory load, no system call.
    pub fn change_signal(&self) -> u64 {
        self.signal.load()
    }

    /// Marks a commit as under way: the signal becomes odd (the next odd value). Call it
    /// before the commit can become visible, and [`DomainLock::end_change`] after, both
    /// holding the lock (only lock holders write the signal, so a load and a store do not
    /// race). A holder that dies in between leaves it odd: readers fall back to the store
    /// until the next holder settles it.
    pub fn begin_change(&self) -> Result<()> {
        self.require_held("mark a change")?;
        let s = self.signal.load();
        self.signal
            .store(if s.is_multiple_of(2) { s + 1 } else { s + 2 });
        Ok(())
    }

    /// Marks the commit begun by [`DomainLock::begin_change`] as over, whether it
    /// succeeded or not: the signal becomes even, a value it never had. Returns it.
    pub fn end_change(&self) -> Result<u64> {
        self.require_held("mark a change as over")?;
        let s = self.signal.load();
        let next = if s.is_multiple_of(2) { s + 2 } else { s + 1 };
        self.signal.store(next);
        Ok(next)
    }

    fn require_held(&self, what: &str) -> Result<()> {
        if self.held {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "cannot {what} of domain '{}' without holding its lock",
                self.domain
            )))
        }
    }

    /// Just taken: a signal left odd means the last holder died between marking a commit
    /// and marking it over. That commit is now either wholly in the store or not at all,
    /// and nobody else can commit while we hold the lock, so make the signal even (a new
    /// value: every reader's remembered value is older) and fast reads resume.
    fn settle(&mut self) {
        self.held = true;
        self.signal.store_aux(self.pid);
        let s = self.signal.load();
        if !s.is_multiple_of(2) {
            self.signal.store(s + 1);
        }
    }

    /// Who holds the lock, as the holder recorded it: `process PID (COMMAND)`. None when
    /// no holder is recorded; a holder that died released the lock with its descriptor,
    /// so a waiter that finds it taken finds a live holder (or the moment before a new
    /// holder records itself).
    fn holder(&self) -> Option<String> {
        let pid = self.signal.load_aux();
        if pid == 0 {
            return None;
        }
        let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        Some(match command {
            Some(c) => format!("process {pid} ({c})"),
            None => format!("process {pid}"),
        })
    }

    /// The lock file.
    pub fn file_path(&self) -> &Path {
        &self.path
    }

    /// How long [`DomainLock::acquire`] waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes how long [`DomainLock::acquire`] waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether this handle holds the lock.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Takes the lock, polling with short pauses until the timeout, then `BUSY` naming the
    /// domain. Taking a lock this handle already holds is a bug in the caller.
    pub fn acquire(&mut self) -> Result<()> {
        if self.held {
            return Err(Error::Internal(format!(
                "the lock of domain '{}' is taken twice by one handle",
                self.domain
            )));
        }
        let start = Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            match self.file.try_lock() {
                Ok(()) => {
                    self.settle();
                    return Ok(());
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(Error::storage(
                        format!("cannot lock {}", self.path.display()),
                        e,
                    ));
                }
            }
            let waited = start.elapsed();
            if waited >= self.timeout {
                return Err(Error::Busy {
                    domain: self.domain.clone(),
                    waited_ms: waited.as_millis() as u64,
                    holder: self.holder(),
                });
            }
            std::thread::sleep(pause.min(self.timeout - waited));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Takes the lock if it is free, without waiting: true if taken.
    pub fn try_acquire(&mut self) -> Result<bool> {
        if self.held {
            return Err(Error::Internal(format!(
                "the lock of domain '{}' is taken twice by one handle",
                self.domain
            )));
        }
        match self.file.try_lock() {
            Ok(()) => {
                self.settle();
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(Error::storage(
                format!("cannot lock {}", self.path.display()),
                e,
            )),
        }
    }

    /// Releases the lock if held.
    pub fn release(&mut self) {
        if self.held {
            self.signal.store_aux(0);
            // Unlocking an flock we hold cannot fail short of a bad descriptor; closing the
            // file (on drop) would release it anyway.
            let _ = self.file.unlock();
            self.held = false;
        }
    }
}

impl Drop for DomainLock {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_handles_exclude_each_other_then_busy_names_the_domain() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOCK_DIR)).unwrap();
        let u = Uuid::new_v4();
        let mut a = DomainLock::open(dir.path(), &u, "vm1", Duration::from_millis(30)).unwrap();
        let mut b = DomainLock::open(dir.path(), &u, "vm1", Duration::from_millis(30)).unwrap();
        a.acquire().unwrap();
        let t = Instant::now();
        let err = b.acquire().unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(err.code(), crate::ErrorCode::Busy);
        assert!(err.to_string().contains("'vm1'"), "{err}");
        let me = format!("held by process {} (", std::process::id());
        assert!(err.to_string().contains(&me), "expected '{me}' in: {err}");
        a.release();
        b.acquire().unwrap();
        assert!(b.is_held());
        drop(b);
        a.acquire().unwrap();
    }

    #[test]
    fn the_change_signal_is_odd_during_a_change_and_settled_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOCK_DIR)).unwrap();
        let u = Uuid::new_v4();
        let t = Duration::from_millis(30);
        let mut a = DomainLock::open(dir.path(), &u, "vm1", t).unwrap();
        let mut b = DomainLock::open(dir.path(), &u, "vm1", t).unwrap();
        assert_eq!(b.change_signal(), 0);
        let err = a.begin_change().unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Internal, "{err}");
        a.acquire().unwrap();
        a.begin_change().unwrap();
        assert_eq!(b.change_signal(), 1);
        assert_eq!(a.end_change().unwrap(), 2);
        assert_eq!(b.change_signal(), 2);
        // A holder that dies mid-change (here: releases without ending it).
        a.begin_change().unwrap();
        a.release();
        assert_eq!(b.change_signal(), 3);
        b.acquire().unwrap();
        assert_eq!(
            a.change_signal(),
            4,
            "the next holder settles it, at a new value"
        );
        b.begin_change().unwrap();
        assert_eq!(b.end_change().unwrap(), 6);
    }
}
