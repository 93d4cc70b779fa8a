//! Which file system a file lives on and how much room it has left: what the QEMU backend
//! reports to the engine so a plan that cannot fit is refused before it runs.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file system as the space check names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSystem {
    /// Its device number (`st_dev`): equal for every file on it.
    pub dev: u64,
    /// Its mount point (the highest directory above the file on the same device), for
    /// messages.
    pub mount: PathBuf,
    /// Bytes an unprivileged writer may still allocate there (`f_bavail * f_frsize`).
    pub free: u64,
}

/// The file system holding `path`, or for a path that does not exist yet, its nearest
/// existing ancestor's.
pub fn file_system(path: &Path) -> Result<FileSystem> {
    let mut at = path.to_path_buf();
    let meta = loop {
        match at.metadata() {
            Ok(m) => break m,
            Err(e) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
                _ => {
                    return Err(Error::Space {
                        path: path.to_path_buf(),
                        source: e,
                    });
                }
            },
        }
    };
    let dev = meta.dev();
    let mut mount = if meta.is_dir() {
        at.clone()
    } else {
        at.parent().map(Path::to_path_buf).unwrap_or(at.clone())
    };
    while let Some(up) = mount.parent() {
        match up.metadata() {
            Ok(m) if m.dev() == dev => mount = up.to_path_buf(),
            _ => break,
        }
    }
    let free = free_bytes(&at).map_err(|source| Error::Space {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(FileSystem { dev, mount, free })
}

/// Bytes allocated to `path` on its file system (`st_blocks * 512`), 0 if it does not exist.
pub fn allocated_on_disk(path: &Path) -> u64 {
    path.symlink_metadata().map_or(0, |m| m.blocks() * 512)
}

/// Whether `file`'s file system is a local one on which removing the name of an open file
/// is a plain unlink: the name is gone at once and the blocks are freed at the last close.
/// Network and FUSE file systems rename such a file to a hidden name instead (`.nfsXXXX`,
/// `.fuse_hiddenXXXX`) or keep it "delete pending" (SMB), so there the name must be removed
/// with no descriptor open. Unknown file systems answer `false`.
#[allow(unsafe_code)]
pub fn unlinks_open_files(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // The `f_type` magic numbers of linux/magic.h.
    const LOCAL: [i64; 7] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // f2fs
        0x2FC1_2FC1, // zfs
        0x794C_7630, // overlayfs (containers): the upper layer's own unlink
    ];
    // SAFETY: `statfs` is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor `file` keeps open for the call and an exclusively borrowed
    // struct the kernel fills in.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    rc == 0 && LOCAL.contains(&kind)
}

#[allow(unsafe_code)]
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `statvfs` is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path that outlives the call and an exclusively borrowed
    // struct the kernel fills in.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_unlinks_open_files_and_procfs_is_not_taken_to() {
        // /dev/shm is a tmpfs on Linux, in containers too.
        let file = tempfile::tempfile_in("/dev/shm").unwrap();
        assert!(
            unlinks_open_files(&file),
            "tmpfs (/dev/shm) is a local file system"
        );
        let proc_file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(
            !unlinks_open_files(&proc_file),
            "procfs is not on the list of local file systems"
        );
    }

    #[test]
    fn a_missing_file_is_on_its_directory_s_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let there = file_system(dir.path()).unwrap();
        let missing = file_system(&dir.path().join("not/yet.qcow2")).unwrap();
        assert_eq!(there.dev, missing.dev);
        assert_eq!(there.mount, missing.mount);
        assert!(dir.path().starts_with(&there.mount));
        // The oracle: `df` output for the same directory, in 1-byte blocks.
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail,target"])
            .arg(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text.lines().nth(1).unwrap();
        let mut cols = line.split_whitespace();
        let avail: u64 = cols.next().unwrap().parse().unwrap();
        let target = cols.next().unwrap();
        assert_eq!(there.mount, Path::new(target));
        // Other tests write concurrently: within 64 MiB.
        assert!(
            there.free.abs_diff(avail) < 64 << 20,
            "{} vs df {avail}",
            there.free
        );
    }
}
