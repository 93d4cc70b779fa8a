//! Internal (in-file) qcow2 snapshots via `qemu-img snapshot`.
//!
//! qemu-img accepts duplicate tags (each gets a new id), and `-d`/`-a` act on the first match:
//! callers should key snapshots by a unique tag such as a uuid, never a user-chosen name.

use std::path::Path;

use crate::cmd::Cmd;
use crate::error::{Error, Result};
use crate::info::{InternalSnapshot, info};

/// Records the current content of `path` (this file only, not its backing) as snapshot `tag`.
pub fn snapshot_create(path: &Path, tag: &str) -> Result<()> {
    snapshot_op(path, "-c", tag)
}

/// Reverts the content of `path` to snapshot `tag`; the snapshot itself is kept.
pub fn snapshot_apply(path: &Path, tag: &str) -> Result<()> {
    snapshot_op(path, "-a", tag)
}

/// Deletes snapshot `tag` (the first one, if several share it) and frees its clusters.
pub fn snapshot_delete(path: &Path, tag: &str) -> Result<()> {
    snapshot_op(path, "-d", tag)
}

/// Repairs what an interrupted `qemu-img snapshot -a`/`-d` can leave in `path`:
/// `qemu-img check -r all`.
///
/// Both commands lower reference counts first and set the COPIED flag of the clusters
/// that became unshared afterwards. Measured: SIGKILLed between the two, `qemu-img check`
/// reports every such cluster as an `ERROR OFLAG_COPIED` (exit status 2). No data is
/// wrong — a write to such a cluster copies it first, as if it were still shared — but
/// the image looks corrupt to every tool, and leaked clusters stay allocated. The repair
/// sets exactly those flags and frees the leaks.
pub fn repair_after_interrupted_snapshot_op(path: &Path) -> Result<()> {
    Cmd::qemu_img("check", path)
        .arg("-q")
        .arg("-f")
        .arg("qcow2")
        .arg("-r")
        .arg("all")
        .path(path)
        .run()?;
    Ok(())
}

/// Internal snapshots stored in `path`, in the order `qemu-img info` lists them (the
/// snapshot table's). Read in process (`snapshot_table.rs`) after the lock test `qemu-img
/// info` would make (`Locked` while another process writes the image); qemu-img answers
/// what that cannot read with certainty.
pub fn snapshot_list(path: &Path) -> Result<Vec<InternalSnapshot>> {
    match crate::probe::check_readable(path) {
        Some(Err(locked)) => return Err(locked),
        Some(Ok(())) => {
            if let Some(list) = crate::snapshot_table::list(path) {
                return Ok(list);
            }
        }
        None => {}
    }
    Ok(info(path)?.snapshots)
}

fn snapshot_op(path: &Path, flag: &str, tag: &str) -> Result<()> {
    check_tag(path, tag)?;
    Cmd::qemu_img("snapshot", path)
        .arg("-f")
        .arg("qcow2")
        .arg(flag)
        .arg(tag)
        .path(path)
        .run()?;
    Ok(())
}

/// Refuses tags qemu would not take as a tag: the empty one, and an all-digit one that is
/// also the id of a snapshot in the image. Measured: `snapshot -a 1` applies the snapshot
/// whose *id* is 1 even when another snapshot is tagged "1", while `-d 1` deletes the one
/// tagged "1". An all-digit tag no id equals (libvirt names snapshots by their creation
/// seconds, and tags them so) is taken as a tag; ids are small counters, checked on every
/// call.
pub(crate) fn check_tag(path: &Path, tag: &str) -> Result<()> {
    let reason = if tag.is_empty() {
        "it is empty"
    } else if tag.bytes().all(|b| b.is_ascii_digit())
        && info(path)?.snapshots.iter().any(|s| s.id == tag)
    {
        "qemu-img would take it for the id of another snapshot"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTag {
        image: path.to_path_buf(),
        tag: tag.to_owned(),
        reason,
    })
}
