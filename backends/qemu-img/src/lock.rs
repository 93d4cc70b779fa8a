//! Detecting that another process holds an image.

use std::path::Path;

use crate::cmd::Cmd;
use crate::error::Result;
use crate::probe;

/// Succeeds if `path` can be opened read-write right now, with its backing chain read-only,
/// exactly as a commit, rebase or snapshot operation would open it.
///
/// `qemu-img info` is not enough: it only notices a writer, while a read-only holder (a VM
/// using the file as a backing, `qemu-io -r`) also blocks writing. A lock held on `path` or on
/// one of its backing files gives [`Error::Locked`](crate::Error::Locked) naming that file.
/// The answer is advisory: a process may take the lock right after.
///
/// QEMU's lock bytes are tested in this process (microseconds, see `probe.rs`); where the
/// chain cannot be followed with certainty (formats other than qcow2 and raw, an external
/// data file, locks the file system does not support), [`check_writable_by_qemu_io`]
/// decides.
pub fn check_writable(path: &Path) -> Result<()> {
    match check_writable_in_process(path) {
        Some(answer) => answer,
        None => check_writable_by_qemu_io(path),
    }
}

/// [`check_writable`]'s test of QEMU's lock bytes in this process alone; `None` where only
/// [`check_writable_by_qemu_io`] can answer (so a caller can time the two apart).
pub fn check_writable_in_process(path: &Path) -> Option<Result<()>> {
    probe::check_writable(path)
}

/// [`check_writable`] answered by qemu itself: opens and closes the image with
/// `qemu-io -c quit` (which changes nothing in the file), 5–10 ms for the process.
pub fn check_writable_by_qemu_io(path: &Path) -> Result<()> {
    Cmd::qemu_io("open read-write", path)
        .arg("-f")
        .arg("qcow2")
        .arg("-c")
        .arg("quit")
        .path(path)
        .run()?;
    Ok(())
}
