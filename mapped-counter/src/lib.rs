//! [`MappedCounter`]: a 64-bit counter at offset 0 of a file, mapped shared into every
//! process that opens it, so that reading it is one memory load (no system call) and
//! writing it is one atomic store that every other process sees at once. A second word at
//! offset 8, the *aux* word, is shared the same way for what a user keeps beside the
//! counter (the domain lock: its holder's process id).
//!
//! Why a crate of its own: mapping a file needs `mmap` and a raw pointer, which is
//! `unsafe`; the engine is `#![forbid(unsafe_code)]`. The unsafe code lives here, small
//! and reviewable, behind a safe interface: the mapping is created once, never moved,
//! and unmapped on drop; every access is an atomic operation on an aligned `u64`.
//!
//! The one hazard of a shared file mapping: if the file is shrunk below 16 bytes by
//! someone else while mapped, a read of a word past the end gets `SIGBUS`. [`MappedCounter::map`]
//! grows a shorter file and nothing in snaptree ever shrinks one; the file is private to
//! the state directory's owner (mode 0600).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bytes the counter occupies at the start of the file.
pub const COUNTER_LEN: u64 = 8;

/// The bytes mapped: the counter and the aux word.
pub const MAPPED_LEN: u64 = 16;

/// A `u64` at offset 0 of a file, mapped `MAP_SHARED`: every process that maps the same
/// file sees the same counter.
#[derive(Debug)]
pub struct MappedCounter {
    /// The start of the mapping (page aligned, so aligned for `AtomicU64`).
    word: NonNull<AtomicU64>,
    /// The length mapped.
    len: usize,
}

// SAFETY: the mapping is only ever accessed through `&AtomicU64` (atomic operations), which
// is safe to share and send between threads; the pointer is not tied to a thread.
unsafe impl Send for MappedCounter {}
// SAFETY: as above: all access goes through atomics.
unsafe impl Sync for MappedCounter {}

impl MappedCounter {
    /// Maps the counter and the aux word of `file` (open for reading and writing), first
    /// growing the file to [`MAPPED_LEN`] bytes if it is shorter (new bytes read as zero,
    /// so a new file's words are 0; an 8-byte file of an older version keeps its counter).
    pub fn map(file: &File) -> io::Result<MappedCounter> {
        if file.metadata()?.len() < MAPPED_LEN {
            // Growing only: two processes doing this at once both leave zero bytes, and a
            // word another process already wrote is past the old length only if the file
            // was already long enough.
            file.set_len(MAPPED_LEN)?;
        }
        let len = MAPPED_LEN as usize;
        // SAFETY: a fresh shared mapping of `len` bytes of an open file descriptor at
        // offset 0; the kernel chooses the address (NULL hint), so no existing memory is
        // touched. The result is checked for MAP_FAILED below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let word = NonNull::new(addr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(MappedCounter { word, len })
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: `word` points at the start of a live mapping of at least 16 bytes (it is
        // unmapped only in drop, which takes `&mut self`), page aligned, hence aligned for
        // AtomicU64; it is only accessed atomically, here and in every other process.
        unsafe { self.word.as_ref() }
    }

    fn aux(&self) -> &AtomicU64 {
        // SAFETY: the second of the two aligned words of the live mapping (16 bytes,
        // see `word`); only ever accessed atomically.
        unsafe { self.word.add(1).as_ref() }
    }

    /// The counter now (sequentially consistent: ordered with every other atomic access
    /// of this thread, before the reads that follow it).
    pub fn load(&self) -> u64 {
        self.word().load(Ordering::SeqCst)
    }

    /// Sets the counter (sequentially consistent: visible to every process before any
    /// memory write or system call this thread makes after it).
    pub fn store(&self, value: u64) {
        self.word().store(value, Ordering::SeqCst);
    }

    /// The aux word now.
    pub fn load_aux(&self) -> u64 {
        self.aux().load(Ordering::SeqCst)
    }

    /// Sets the aux word.
    pub fn store_aux(&self, value: u64) {
        self.aux().store(value, Ordering::SeqCst);
    }
}

impl Drop for MappedCounter {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference to it outlives
        // `&self` borrows, which cannot exist during drop.
        unsafe {
            libc::munmap(self.word.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn a_new_file_reads_zero_and_two_mappings_share_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let a = MappedCounter::map(&open(&path)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAPPED_LEN);
        assert_eq!(a.load(), 0);
        assert_eq!(a.load_aux(), 0);
        let b = MappedCounter::map(&open(&path)).unwrap();
        a.store(41);
        assert_eq!(b.load(), 41);
        b.store(42);
        assert_eq!(a.load(), 42);
        a.store_aux(7);
        assert_eq!(b.load_aux(), 7);
        assert_eq!(b.load(), 42, "the aux word is not the counter");
        drop(a);
        // The values are in the file, for the next process that maps it.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(u64::from_ne_bytes(bytes[..8].try_into().unwrap()), 42);
        assert_eq!(u64::from_ne_bytes(bytes[8..16].try_into().unwrap()), 7);
    }

    #[test]
    fn an_older_eight_byte_file_grows_and_keeps_its_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        std::fs::write(&path, 9u64.to_ne_bytes()).unwrap();
        let c = MappedCounter::map(&open(&path)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAPPED_LEN);
        assert_eq!((c.load(), c.load_aux()), (9, 0));
    }

    #[test]
    fn a_longer_file_keeps_its_length_and_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut bytes = 7u64.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&3u64.to_ne_bytes());
        bytes.extend_from_slice(b"tail");
        std::fs::write(&path, &bytes).unwrap();
        let c = MappedCounter::map(&open(&path)).unwrap();
        assert_eq!((c.load(), c.load_aux()), (7, 3));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 20);
    }
}
