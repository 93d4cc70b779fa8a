//! What a QEMU process holds open, read from `/proc/PID/fd`: the qcow2 images, and those
//! held under a name that now leads to another file (a node that would reopen the wrong
//! image later).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The qcow2 images process `pid` holds open: the name each was opened by and the inode
/// held.
pub fn open_images(pid: u32) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|fd| {
            let target = std::fs::read_link(&fd).ok()?;
            if !target.to_string_lossy().contains(".qcow2") {
                return None;
            }
            Some((target, std::fs::metadata(&fd).ok()?.ino()))
        })
        .collect()
}

/// The images process `pid` holds under a name that now names another inode, or nothing.
pub fn stale_images(pid: u32) -> Vec<String> {
    open_images(pid)
        .into_iter()
        .filter(|(name, held)| std::fs::metadata(name).map(|m| m.ino()).ok() != Some(*held))
        .map(|(name, _)| name.display().to_string())
        .collect()
}
