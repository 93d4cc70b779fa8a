//! A digest of the guest-visible content of an image, independent of how it is layered.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cmd::Cmd;
use crate::error::{Error, Result};
use crate::export::export_raw;
use crate::info::parse_json;

/// Granularity at which all-zero data is skipped.
const BLOCK: u64 = 64 * 1024;

/// Domain separation, and a version to bump if the scheme below ever changes.
const DOMAIN: &[u8] = b"snaptree-qemu-img content v1\0";

/// Hex SHA-256 digest of the bytes a guest would read from `image` (through its whole backing
/// chain), or from its internal snapshot tagged `internal_snapshot`.
///
/// Two images with the same virtual size and the same bytes get the same digest, however they
/// are layered or allocated: the content is exported with `qemu-img convert -O raw` to a sparse
/// scratch file (see below), then hashed as the virtual size followed by the index and bytes of
/// every 64 KiB block that is not entirely zero. Holes of the scratch file (found with
/// `qemu-img map`) are never read, so the cost follows the data, not the virtual size. The
/// digest is therefore not the SHA-256 of the raw disk.
///
/// The image is opened with qemu's usual shared lock: digesting an image another process is
/// writing would give a meaningless answer, so that fails with
/// [`Error::Locked`](crate::Error::Locked). The scratch file lives in `TMPDIR` and needs as much
/// space as the image holds data. `progress` follows the export (up to 0.9), then the hashing.
pub fn content_digest(
    image: &Path,
    internal_snapshot: Option<&str>,
    progress: &mut dyn FnMut(f64),
) -> Result<String> {
    let scratch = export_raw(image, internal_snapshot, &mut |f| progress(f * 0.9))?;
    let digest = hash_sparse_raw(scratch.path())?;
    progress(1.0);
    Ok(digest)
}

#[derive(Deserialize)]
struct Extent {
    start: u64,
    length: u64,
    data: bool,
}

fn hash_sparse_raw(raw: &Path) -> Result<String> {
    let io_err = |source| Error::Io {
        path: raw.to_path_buf(),
        source,
    };
    let cmd = Cmd::qemu_img("map", raw)
        .arg("-f")
        .arg("raw")
        .arg("--output=json")
        .path(raw);
    let extents: Vec<Extent> = parse_json(&cmd, &cmd.run()?.stdout)?;

    let mut file = File::open(raw).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(size.to_le_bytes());

    let mut buf = vec![0u8; BLOCK as usize];
    // Extents are sorted and disjoint, but two of them may share a boundary block.
    let mut next_block = 0u64;
    for extent in extents.iter().filter(|e| e.data && e.length > 0) {
        let first = (extent.start / BLOCK).max(next_block);
        let end = (extent.start + extent.length).min(size).div_ceil(BLOCK);
        for index in first..end {
            let offset = index * BLOCK;
            let len = BLOCK.min(size - offset) as usize;
            file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
            file.read_exact(&mut buf[..len]).map_err(io_err)?;
            if buf[..len].iter().any(|&b| b != 0) {
                hasher.update(index.to_le_bytes());
                hasher.update(&buf[..len]);
            }
        }
        next_block = next_block.max(end);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
