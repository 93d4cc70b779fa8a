//! The per-domain lock: `locks/<domain-uuid>.lock`, taken with `flock` through
//! [`std::fs::File::try_lock`]. Each handle opens the file once and keeps it open, so taking
//! the lock is one system call. Locks taken through different open files exclude each other
//! whether they are in one process or several, so threads with their own handles are
//! serialized too.

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
        Ok(DomainLock {
            file,
            path,
            domain: name.to_string(),
            timeout,
            held: false,
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
                    self.held = true;
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
                self.held = true;
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
        a.release();
        b.acquire().unwrap();
        assert!(b.is_held());
        drop(b);
        a.acquire().unwrap();
    }
}
