//! Creating qcow2 layers and measuring what one layer holds by itself.

use std::path::Path;

use serde::Deserialize;

use crate::cmd::Cmd;
use crate::error::{Error, Result};
use crate::info::parse_json;

/// Creates an empty qcow2 image of `size_bytes` at `path`.
///
/// Refuses an existing path: `qemu-img create` would silently replace it, and here it could be
/// a disk holding guest data.
pub fn create(path: &Path, size_bytes: u64) -> Result<()> {
    refuse_existing(path)?;
    Cmd::qemu_img("create", path)
        .arg("-q")
        .arg("-f")
        .arg("qcow2")
        .path(path)
        .arg(size_bytes.to_string())
        .run()?;
    Ok(())
}

/// Creates an empty qcow2 overlay at `path` on top of the qcow2 image `backing`.
///
/// `backing` is stored in the header as given (qemu resolves a relative one against the
/// overlay's directory, not the current one); the virtual size is the backing's. Refuses an
/// existing `path`, like [`create`].
pub fn create_overlay(path: &Path, backing: &Path) -> Result<()> {
    refuse_existing(path)?;
    Cmd::qemu_img("create", path)
        .arg("-q")
        .arg("-f")
        .arg("qcow2")
        .arg("-b")
        .path(backing)
        // Mandatory since qemu 6.1, and it stops qemu from probing the backing's format later.
        .arg("-F")
        .arg("qcow2")
        .path(path)
        .run()?;
    Ok(())
}

/// `qemu-img create -f qcow2 -u -b BACKING -F qcow2 PATH SIZE`: an empty overlay whose
/// backing is not opened (`-u`), for a backing that a running QEMU holds with its write
/// lock. The guest-visible size must therefore be given.
pub fn create_overlay_unopened(path: &Path, backing: &Path, size_bytes: u64) -> Result<()> {
    refuse_existing(path)?;
    Cmd::qemu_img("create", path)
        .arg("-q")
        .arg("-f")
        .arg("qcow2")
        .arg("-u")
        .arg("-b")
        .path(backing)
        .arg("-F")
        .arg("qcow2")
        .path(path)
        .arg(size_bytes.to_string())
        .run()?;
    Ok(())
}

fn refuse_existing(path: &Path) -> Result<()> {
    // symlink_metadata so that a dangling symlink also counts as taken.
    if path.symlink_metadata().is_ok() {
        return Err(Error::AlreadyExists {
            image: path.to_path_buf(),
        });
    }
    Ok(())
}

/// One extent of `qemu-img map --output=json`.
#[derive(Deserialize)]
struct Extent {
    length: u64,
    data: bool,
}

/// Bytes of guest data stored in the file `layer` itself, ignoring its backing chain.
///
/// The layer is opened as `{"driver":"qcow2", "backing": null, …}` so that qemu-img map cannot
/// attribute backing data to it; the lengths of the extents with `data: true` are summed.
/// Clusters written as zeroes (`present`, `zero`, no data) mask the backing but hold no data,
/// so they count 0; an empty overlay gives 0.
pub fn allocated_bytes(layer: &Path) -> Result<u64> {
    let filename = layer.to_str().ok_or_else(|| Error::NonUtf8Path {
        image: layer.to_path_buf(),
    })?;
    let spec = serde_json::json!({
        "driver": "qcow2",
        "file": { "driver": "file", "filename": filename },
        "backing": null,
    });
    // Shared (`-U`): an estimate, also of a live image a running QEMU holds.
    let cmd = Cmd::qemu_img("map", layer)
        .arg("-U")
        .arg("--output=json")
        .arg(format!("json:{spec}"));
    let extents: Vec<Extent> = parse_json(&cmd, &cmd.run()?.stdout)?;
    Ok(extents.iter().filter(|e| e.data).map(|e| e.length).sum())
}
