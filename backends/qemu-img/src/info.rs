//! Reading image metadata through `qemu-img info --output=json`, and QEMU's `ImageInfo`
//! itself: the one definition of what both `qemu-img info` and QMP's `query-block` report
//! about an image (the QMP client uses it too).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cmd::Cmd;
use crate::error::{Error, Result};

/// Metadata of one qcow2 image file (QEMU's `ImageInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct ImageInfo {
    /// The file name as qemu opened it.
    pub filename: String,
    /// The image format (`qcow2` for images made by this crate).
    pub format: String,
    /// Size of the guest-visible disk in bytes.
    pub virtual_size: u64,
    /// Bytes the file occupies on the host, when qemu can tell.
    #[serde(default)]
    pub actual_size: Option<u64>,
    /// The backing file name exactly as stored in the header (may be relative).
    #[serde(default)]
    pub backing_filename: Option<String>,
    /// The backing file name resolved against the image's directory.
    #[serde(default)]
    pub full_backing_filename: Option<PathBuf>,
    /// The backing file's format as stored in the header.
    #[serde(default, rename = "backing-filename-format")]
    pub backing_format: Option<String>,
    /// Internal snapshots stored in this file, in qemu's order (by id).
    #[serde(default)]
    pub snapshots: Vec<InternalSnapshot>,
    /// Whether the image was not closed cleanly (only meaningful with lazy refcounts).
    #[serde(default, rename = "dirty-flag")]
    pub dirty: bool,
    /// The backing image, when the chain is reported nested (QMP's `query-block`).
    #[serde(default)]
    pub backing_image: Option<Box<ImageInfo>>,
}

/// One internal snapshot of an image (QEMU's `SnapshotInfo`), as qemu-img lists it and
/// `query-block` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct InternalSnapshot {
    /// qemu's numeric id, unique within the file.
    pub id: String,
    /// The tag; qemu does not enforce uniqueness.
    pub name: String,
    /// Creation time, seconds since the Unix epoch.
    pub date_sec: u64,
    /// Sub-second part of the creation time.
    #[serde(default)]
    pub date_nsec: u32,
    /// Size of the saved VM state (0 for disk-only snapshots, and on every disk but the
    /// one `snapshot-save` stored the VM state on).
    #[serde(default)]
    pub vm_state_size: u64,
}

/// Metadata of `path`, taking qemu's usual shared lock.
///
/// Fails with [`Error::Locked`] while another process writes the image, so a caller never
/// trusts a header that is being rewritten under it. `qemu-img info` does not open the backing
/// file, so a lock on the backing does not matter here.
pub fn info(path: &Path) -> Result<ImageInfo> {
    let cmd = Cmd::qemu_img("info", path)
        .arg("-f")
        .arg("qcow2")
        .arg("--output=json")
        .path(path);
    parse_json(&cmd, &cmd.run()?.stdout)
}

/// Metadata of `path` even while another process (e.g. a running VM) writes it (`-U`).
///
/// For display only: the header may change under qemu-img while it reads, so the answer can be
/// stale or, rarely, a failure; never base a modification of the chain on it.
pub fn info_force_share(path: &Path) -> Result<ImageInfo> {
    let cmd = Cmd::qemu_img("info", path)
        .arg("-U")
        .arg("-f")
        .arg("qcow2")
        .arg("--output=json")
        .path(path);
    parse_json(&cmd, &cmd.run()?.stdout)
}

/// Metadata of `path` and of every backing file below it, top first.
///
/// Opens the whole chain, so a lock on any member fails with [`Error::Locked`].
pub fn backing_chain(path: &Path) -> Result<Vec<ImageInfo>> {
    let cmd = Cmd::qemu_img("info", path)
        .arg("-f")
        .arg("qcow2")
        .arg("--backing-chain")
        .arg("--output=json")
        .path(path);
    parse_json(&cmd, &cmd.run()?.stdout)
}

/// Decodes the JSON that `cmd` printed.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(cmd: &Cmd, stdout: &str) -> Result<T> {
    serde_json::from_str(stdout).map_err(|source| Error::Parse {
        command: cmd.label().to_owned(),
        source,
    })
}
