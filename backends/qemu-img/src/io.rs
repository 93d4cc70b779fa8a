//! Writing and checking guest data with `qemu-io`, for tests and diagnostics.
//!
//! Requests are split into chunks so that qemu-io never allocates a buffer of the whole range;
//! several `-c` commands in one call run in order, and the call fails if any of them fails.

use std::path::Path;

use crate::cmd::Cmd;
use crate::error::Result;
use crate::export::export_raw;

/// Largest single qemu-io request, which is also the buffer qemu-io allocates.
const CHUNK: u64 = 64 * 1024 * 1024;

/// Text qemu-io prints on stdout (with exit status 1) when `read -P` finds other bytes.
const MISMATCH: &str = "Pattern verification failed";

/// Fills `len` guest bytes of `image` at `offset` with `pattern` (opens it read-write).
pub fn io_write_pattern(image: &Path, pattern: u8, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut cmd = Cmd::qemu_io("write", image).arg("-f").arg("qcow2");
    for (off, n) in chunks(offset, len) {
        cmd = cmd
            .arg("-c")
            .arg(format!("write -q -P {pattern:#04x} {off} {n}"));
    }
    cmd.path(image).run()?;
    Ok(())
}

/// Whether every guest byte of `image` in `offset..offset + len` equals `pattern`.
///
/// Opens the image read-only. `Ok(false)` means qemu-io read the range and found other
/// bytes; failing to open or read (out of range, lock, missing file) is an error.
pub fn io_verify_pattern(image: &Path, pattern: u8, offset: u64, len: u64) -> Result<bool> {
    verify(image, "qcow2", image, pattern, offset, len)
}

/// Like [`io_verify_pattern`], on the content of `image`'s internal snapshot `tag`.
///
/// qemu-io cannot open an internal snapshot (measured: qcow2 rejects `snapshot.name` and
/// `snapshot` options in a `json:` or `--image-opts` spec, and qemu-io has no `-l`), so the
/// snapshot is first exported with `qemu-img convert -l snapshot.name=TAG` to a scratch raw
/// file in `TMPDIR`, which is then read by qemu-io.
pub fn io_verify_snapshot_pattern(
    image: &Path,
    tag: &str,
    pattern: u8,
    offset: u64,
    len: u64,
) -> Result<bool> {
    let scratch = export_raw(image, Some(tag), &mut |_| {})?;
    verify(scratch.path(), "raw", image, pattern, offset, len)
}

fn verify(
    file: &Path,
    format: &str,
    image: &Path,
    pattern: u8,
    offset: u64,
    len: u64,
) -> Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let mut cmd = Cmd::qemu_io("read", image).arg("-r").arg("-f").arg(format);
    for (off, n) in chunks(offset, len) {
        cmd = cmd
            .arg("-c")
            .arg(format!("read -q -P {pattern:#04x} {off} {n}"));
    }
    let cmd = cmd.path(file);
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(true);
    }
    // A mismatch is only a mismatch if nothing else went wrong in any chunk.
    let only_mismatches = out.stderr.trim().is_empty()
        && out
            .stdout
            .lines()
            .all(|l| l.trim().is_empty() || l.contains(MISMATCH))
        && out.stdout.contains(MISMATCH);
    if only_mismatches {
        Ok(false)
    } else {
        Err(cmd.failure(&out))
    }
}

fn chunks(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..len.div_ceil(CHUNK)).map(move |i| {
        let start = i * CHUNK;
        (offset + start, CHUNK.min(len - start))
    })
}
