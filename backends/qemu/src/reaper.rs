//! Gives a removed layer's blocks back to the file system off the caller's path.
//!
//! Removing a layer of tens of MiB is the slowest file-system call a step makes: the kernel
//! frees every extent inside the `unlink`, and on a file system mounted with `discard` it
//! also waits for the device to trim them (measured here: 5–6 ms for 16 MiB, against 1 ms
//! for everything else a delete does to the disk). The backend instead opens the file,
//! removes its name (so the step's result on the directory is exactly what an `unlink`
//! gives, durable with the step's directory sync) and hands the open file to this reaper,
//! whose thread closes it: the last close is where the kernel frees the blocks. Only on
//! local file systems (`snaptree_qemu_img::unlinks_open_files`): network and FUSE file systems keep
//! an open file's name under a hidden one until the last close, which a scan would take for
//! a stray, so there the name is removed with no descriptor open, as before.
//!
//! Nothing can read the data any more once the name is gone, and a crash closes the file as
//! the process dies (the file system frees an unlinked inode left open at its next mount),
//! so the deferral changes when space comes back, never what the disk holds.
//! [`Reaper::settle`] waits for every handed file to be closed: the backend calls it before
//! it reads the free space of a file system, before every step and when it is dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// At most this many files wait to be closed; past it the caller closes its file itself, so
/// a step freeing hundreds of layers does not hold hundreds of descriptors.
const MAX_WAITING: usize = 64;

/// How often a waiting [`Reaper::settle`] checks that the thread is still there.
const LIVENESS_CHECK: Duration = Duration::from_millis(200);

/// The thread ends after this long with nothing to close, so a process holding many
/// domains open (a daemon) does not keep an idle thread for each; the next file starts one.
const IDLE_EXIT: Duration = Duration::from_secs(2);

/// The files waiting to be closed and the thread's state, under one lock.
#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<File>,
    /// The thread is closing a file it took off `waiting`.
    closing: bool,
    /// A thread was started and has not ended on its own (idle or stopped).
    running: bool,
    /// The reaper is being dropped: the thread closes what waits and ends.
    stop: bool,
}

#[derive(Debug, Default)]
struct Inner {
    queue: Mutex<Queue>,
    changed: Condvar,
    /// Test hook: how long the thread waits before each close, so that a test can see who
    /// waits for it.
    #[cfg(feature = "test-hooks")]
    delay: Mutex<Duration>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One backend's thread that closes the files of removed layers.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    inner: Arc<Inner>,
    /// The latest thread started (the lock order is the queue's first, then this).
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reaper {
    /// Closes `file` (whose name is already gone) on the reaper's thread. Returns whether it
    /// did take the file; `false` (too many waiting, or no thread can start) means it was
    /// closed here, after the queue's lock was released, freeing the blocks at once as an
    /// `unlink` would have.
    pub(crate) fn take(&self, file: File) -> bool {
        let mut queue = self.inner.lock();
        if queue.waiting.len() >= MAX_WAITING {
            return false;
        }
        if !queue.running {
            // Started under the queue's lock: the thread cannot end between this check and
            // the push below, nor a second one start.
            let inner = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("snaptree-free".into())
                .spawn(move || close_until_idle(&inner));
            match spawned {
                Ok(thread) => *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread),
                Err(_) => return false,
            }
            queue.running = true;
        }
        queue.waiting.push_back(file);
        drop(queue);
        self.inner.changed.notify_all();
        true
    }

    /// Waits until every file handed over is closed: their blocks are free.
    pub(crate) fn settle(&self) {
        let mut queue = self.inner.lock();
        while !queue.waiting.is_empty() || queue.closing {
            let (relocked, wait) = self
                .inner
                .changed
                .wait_timeout(queue, LIVENESS_CHECK)
                .unwrap_or_else(|p| p.into_inner());
            queue = relocked;
            // Checked at every wake-up, not only on a timeout: other callers' notifications
            // could otherwise keep a dead thread from ever being noticed.
            if (wait.timed_out() || !queue.waiting.is_empty()) && !self.thread_alive() {
                // The thread is gone (only a panic in a close could end it with files
                // waiting): close them here rather than wait for ever.
                queue.waiting.clear();
                queue.closing = false;
                queue.running = false;
            }
        }
    }

    /// Test hook: makes the thread wait `delay` before each close.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn delay_closes(&self, delay: Duration) {
        *self.inner.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// Whether the latest thread started is still alive.
    fn thread_alive(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.changed.notify_all();
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            // The thread closes what is waiting before it ends; a panic in it (none is
            // expected from closing files) has already dropped them.
            let _ = thread.join();
        }
    }
}

/// The thread: closes files as they come, one at a time; ends when stopped with none
/// waiting, or after [`IDLE_EXIT`] with none.
fn close_until_idle(inner: &Inner) {
    let mut queue = inner.lock();
    loop {
        if let Some(file) = queue.waiting.pop_front() {
            queue.closing = true;
            drop(queue);
            #[cfg(feature = "test-hooks")]
            std::thread::sleep(*inner.delay.lock().unwrap_or_else(|p| p.into_inner()));
            drop(file);
            queue = inner.lock();
            queue.closing = false;
            inner.changed.notify_all();
            continue;
        }
        if queue.stop {
            queue.running = false;
            return;
        }
        let (relocked, wait) = inner
            .changed
            .wait_timeout(queue, IDLE_EXIT)
            .unwrap_or_else(|p| p.into_inner());
        queue = relocked;
        if wait.timed_out() && queue.waiting.is_empty() {
            queue.running = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use snaptree_tests::holds_removed;

    use super::*;

    /// A temporary directory by the name the kernel shows in `/proc/self/fd`.
    fn canonical_tempdir() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        (dir, path)
    }

    /// A file at `dir/name` with some data, open, its name already removed.
    fn removed_open(dir: &std::path::Path, name: &str) -> (File, std::path::PathBuf) {
        let path = dir.join(name);
        std::fs::write(&path, vec![7u8; 64 * 1024]).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (file, path)
    }

    #[test]
    fn a_handed_file_is_closed_by_settle_and_by_drop() {
        let (_dir, dir) = canonical_tempdir();
        let reaper = Reaper::default();
        for round in 0..2 {
            let (file, path) = removed_open(&dir, &format!("layer-{round}.qcow2"));
            assert!(
                holds_removed(&path),
                "the open file keeps the removed {}",
                path.display()
            );
            assert!(reaper.take(file), "the reaper takes {}", path.display());
            reaper.settle();
            assert!(
                !holds_removed(&path),
                "after settle no descriptor of {} is left open",
                path.display()
            );
        }
        let (file, path) = removed_open(&dir, "last.qcow2");
        assert!(reaper.take(file), "the reaper takes {}", path.display());
        drop(reaper);
        assert!(
            !holds_removed(&path),
            "dropping the reaper closes what it held"
        );
    }

    #[test]
    fn past_the_limit_the_caller_closes_its_file_and_settle_closes_what_no_thread_will() {
        let (_dir, dir) = canonical_tempdir();
        let reaper = Reaper::default();
        // Files queued with no thread started: as if the thread had died with them waiting.
        let mut queued = Vec::new();
        for i in 0..MAX_WAITING {
            let (file, path) = removed_open(&dir, &format!("queued-{i}"));
            reaper.inner.lock().waiting.push_back(file);
            queued.push(path);
        }
        let (file, over) = removed_open(&dir, "declined");
        assert!(
            !reaper.take(file),
            "with {MAX_WAITING} files waiting the reaper declines another"
        );
        assert!(!holds_removed(&over), "a declined file is closed at once");
        assert!(
            queued.iter().all(|p| holds_removed(p)),
            "declining started no thread: the queued files are still open"
        );
        reaper.settle();
        assert!(
            !queued.iter().any(|p| holds_removed(p)),
            "settle closed the files no thread was left to close"
        );
    }

    #[test]
    fn an_idle_thread_ends_and_the_next_file_starts_another() {
        let (_dir, dir) = canonical_tempdir();
        let reaper = Reaper::default();
        let (file, first) = removed_open(&dir, "first");
        assert!(reaper.take(file), "the reaper takes the first file");
        reaper.settle();
        assert!(!holds_removed(&first), "the first file is closed");
        let deadline = std::time::Instant::now() + IDLE_EXIT * 5;
        while reaper.inner.lock().running {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread ends within {:?} of idling",
                IDLE_EXIT * 5
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (file, second) = removed_open(&dir, "second");
        assert!(reaper.take(file), "the next file is taken");
        // A new thread idles 2 s before it may end: alive now unless none was started (then
        // settle's own fallback would close the file and hide it).
        assert!(reaper.thread_alive(), "the next file started a new thread");
        reaper.settle();
        assert!(
            !holds_removed(&second),
            "the new thread closed the second file"
        );
    }
}
