//! Image files for the rig's disks, made and checked from outside QEMU with `qemu-img` and
//! `qemu-io` (installed with qemu-utils wherever qemu-system is).

use std::path::Path;
use std::process::Command;

use super::error::{Result, RigError as Error};

/// Creates an empty qcow2 image of `size` bytes at `path`.
pub fn create_qcow2(path: &Path, size: u64) -> Result<()> {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size.to_string()))
    .map(drop)
}

/// True when the guest view of the qcow2 image `path` (its whole backing chain) reads
/// `pattern` in every byte of `offset..offset + len`. Opens the image shared and
/// read-only (`qemu-io -U -r`), so it works while a running QEMU holds it; flush the
/// device first (`Qmp::qemu_io(…, "flush")`) so QEMU's caches are on disk.
pub fn verify_pattern(path: &Path, pattern: u8, offset: u64, len: u64) -> Result<bool> {
    let out = Command::new("qemu-io")
        .args(["-U", "-r", "-f", "qcow2", "-c"])
        .arg(format!("read -q -P {pattern:#04x} {offset} {len}"))
        .arg(path)
        .output()
        .map_err(|e| spawn_error("qemu-io", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // qemu-io reports a mismatch on stdout and exits 1 (field notes); any other failure
    // (unreadable image) is an error, not a "no".
    if stdout.contains("Pattern verification failed") {
        return Ok(false);
    }
    if !out.status.success() {
        return Err(Error::Rig {
            message: format!(
                "qemu-io read of {} failed: {}{}",
                path.display(),
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: None,
        });
    }
    Ok(true)
}

fn run(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .map_err(|e| spawn_error(&format!("{command:?}"), e))?;
    if !out.status.success() {
        return Err(Error::Rig {
            message: format!(
                "{command:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: None,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_error(what: &str, source: std::io::Error) -> Error {
    Error::Rig {
        message: format!("cannot run {what}"),
        source: Some(source),
    }
}
