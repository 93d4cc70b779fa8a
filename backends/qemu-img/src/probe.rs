//! Checking QEMU's image locks in this process, without starting `qemu-io`.
//!
//! QEMU (2.10 and later) marks what each process does with an image by open-file-description
//! locks (`F_OFD_SETLK`) on single bytes of the file (`block/file-posix.c`):
//!
//! - a shared lock on byte `100 + b` while it holds permission bit `b`;
//! - a shared lock on byte `200 + b` while it does *not* share permission bit `b` with others.
//!
//! The bits are `CONSISTENT_READ` (0), `WRITE` (1), `WRITE_UNCHANGED` (2), `RESIZE` (3) and,
//! before QEMU 7.1, `GRAPH_MOD` (4). Another opener conflicts when it wants a permission
//! someone does not share, or does not share a permission someone holds; QEMU tests that with
//! `F_OFD_GETLK` for an exclusive lock on each of those bytes, and so does this module.
//!
//! What is tested is what `qemu-io -f qcow2 -c quit IMAGE` (read-write, backing chain
//! read-only) would need:
//!
//! - the image itself: it wants `CONSISTENT_READ`, `WRITE` and `RESIZE` and shares only
//!   `CONSISTENT_READ` and `WRITE_UNCHANGED` (a format driver never lets others write or
//!   resize the file under its metadata): bytes 200, 201, 203 and 101, 103, 104;
//! - each backing file: it wants `CONSISTENT_READ` and shares everything but `WRITE` and
//!   `RESIZE`: bytes 200 and 101, 103.
//!
//! The chain is followed through the qcow2 headers. Where it cannot be followed with
//! certainty — a backing file of undeclared or other format than qcow2 and raw, an external
//! data file, a file that cannot be opened, locks the file system does not support — the
//! answer is `None` and the caller asks `qemu-io`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::header::read_header;

/// QEMU's lock bytes a read-write opener of an image tests on the image.
const TOP_BYTES: [i64; 6] = [200, 201, 203, 101, 103, 104];
/// QEMU's lock bytes a read-only opener of a backing file tests on it.
const BACKING_BYTES: [i64; 3] = [200, 101, 103];
/// Longer chains are left to qemu-io (qemu's own limit is far larger; this only bounds a
/// loop through a corrupt chain).
const MAX_CHAIN: usize = 4096;

/// Whether `path` (a qcow2 image) could be opened read-write with its backing chain
/// read-only right now: `Some(Ok)` yes, `Some(Err(Locked))` no, naming the held file;
/// `None` when this cannot be decided here.
pub(crate) fn check_writable(path: &Path) -> Option<Result<(), Error>> {
    let mut file: PathBuf = path.to_path_buf();
    let mut format = "qcow2".to_string();
    for depth in 0..MAX_CHAIN {
        let bytes: &[i64] = if depth == 0 {
            &TOP_BYTES
        } else {
            &BACKING_BYTES
        };
        if let Some(byte) = held(&file, bytes)? {
            return Some(Err(Error::Locked {
                image: file.clone(),
                message: format!(
                    "Failed to get \"write\" lock: another process holds {} (QEMU lock byte {byte})",
                    file.display()
                ),
            }));
        }
        match format.as_str() {
            "raw" => return Some(Ok(())),
            "qcow2" => {}
            _ => return None,
        }
        let header = read_header(&file).ok()?;
        if header.external_data_file {
            return None;
        }
        match header.backing {
            None => return Some(Ok(())),
            Some(backing) => {
                format = header.backing_format?;
                file = backing;
            }
        }
    }
    None
}

/// Whether `path` alone (not its backing) could be opened read-only right now, as `qemu-img
/// info` opens it: `Some(Err(Locked))` while another process writes or resizes it, or does
/// not let others read it consistently; `None` when this cannot be tested here.
pub(crate) fn check_readable(path: &Path) -> Option<Result<(), Error>> {
    Some(match held(path, &BACKING_BYTES)? {
        None => Ok(()),
        Some(byte) => Err(Error::Locked {
            image: path.to_path_buf(),
            message: format!(
                "Failed to get shared \"write\" lock: another process holds {} (QEMU lock byte {byte})",
                path.display()
            ),
        }),
    })
}

/// The first of `bytes` another open file description holds a lock on; `None` inside when
/// none does, `None` outside when the file cannot be tested.
fn held(file: &Path, bytes: &[i64]) -> Option<Option<i64>> {
    let f = File::open(file).ok()?;
    for &byte in bytes {
        if lock_would_conflict(&f, byte)? {
            return Some(Some(byte));
        }
    }
    Some(None)
}

/// Whether an exclusive lock on `byte` of `file` would conflict with another open file
/// description's lock (`F_OFD_GETLK`); `None` when the test itself fails.
fn lock_would_conflict(file: &File, byte: i64) -> Option<bool> {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte;
    lock.l_len = 1;
    // l_pid must be 0 for the OFD commands (it is, zeroed above).
    // SAFETY: the descriptor is open for the lifetime of `file`, and `lock` is a valid,
    // exclusively borrowed `flock` the kernel writes the answer into.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return None;
    }
    Some(lock.l_type != libc::F_UNLCK as libc::c_short)
}
