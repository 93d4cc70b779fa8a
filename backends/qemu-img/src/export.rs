//! Exporting the guest view of an image (or of an internal snapshot) to a scratch raw file.
//!
//! qemu-img cannot write raw output to a pipe (it resizes its target), and qemu-io cannot open
//! an internal snapshot, so both the digest and snapshot reads go through a temporary file.

use std::path::Path;

use tempfile::NamedTempFile;

use crate::cmd::Cmd;
use crate::error::{Error, Result};
use crate::internal::check_tag;

/// A sparse raw copy of the guest-visible content of `image`, or of its internal snapshot.
///
/// Lives in the system temporary directory (`TMPDIR`) and takes as much space there as the
/// image holds data; it is deleted when dropped.
pub(crate) fn export_raw(
    image: &Path,
    snapshot: Option<&str>,
    progress: &mut dyn FnMut(f64),
) -> Result<NamedTempFile> {
    let scratch = tempfile::Builder::new()
        .prefix("snaptree-export-")
        .suffix(".raw")
        .tempfile()
        .map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let mut cmd = Cmd::qemu_img("convert", image)
        .arg("-p")
        .arg("-f")
        .arg("qcow2")
        .arg("-O")
        .arg("raw");
    if let Some(tag) = snapshot {
        check_tag(image, tag)?;
        // snapshot.name selects by tag only (never by id); a comma is escaped by doubling it.
        cmd = cmd
            .arg("-l")
            .arg(format!("snapshot.name={}", tag.replace(',', ",,")));
    }
    cmd.path(image)
        .path(scratch.path())
        .run_with_progress(progress)?;
    Ok(scratch)
}
