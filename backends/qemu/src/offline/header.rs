//! Reading the two header fields the backend needs — the backing file and the virtual size —
//! straight from a qcow2 file.
//!
//! Every step inspects the backing link of every layer to find who depends on whom; one
//! `qemu-img info` per layer would cost 5–30 ms each, the header read costs microseconds.
//! The qcow2 header layout is fixed by the format specification (versions 2 and 3 alike):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `QFI\xfb` |
//! | 4 | 4 | version |
//! | 8 | 8 | backing file name offset (0: no backing file) |
//! | 16 | 4 | backing file name length |
//! | 24 | 8 | virtual size |
//!
//! all big-endian (`snaptree_qemu_img::read_header`). A test compares the answers with
//! `qemu-img info`.

use std::path::{Path, PathBuf};

use snaptree_qemu_img::read_header;

use crate::error::{Result, error};

/// The fields of a qcow2 header the backend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The backing file, resolved against the image's directory as qemu does.
    pub(crate) backing: Option<PathBuf>,
    /// The guest-visible size in bytes.
    pub(crate) size: u64,
}

/// Reads the header of the qcow2 image at `path` (the parser is `snaptree_qemu_img`'s, which
/// the in-process lock check shares).
pub(crate) fn read(path: &Path) -> Result<Header> {
    let h = read_header(path).map_err(|why| {
        error(format!(
            "cannot read the qcow2 header of {}: {why}",
            path.display()
        ))
    })?;
    Ok(Header {
        backing: h.backing,
        size: h.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use snaptree_qemu_img as qi;

    #[test]
    fn agrees_with_qemu_img_info() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let top = dir.path().join("top.qcow2");
        qi::create(&base, 3 << 20).unwrap();
        qi::create_overlay(&top, &base).unwrap();
        assert_eq!(
            read(&base).unwrap(),
            Header {
                backing: None,
                size: 3 << 20
            }
        );
        let h = read(&top).unwrap();
        assert_eq!(
            h.backing.as_deref(),
            qi::info(&top).unwrap().full_backing_filename.as_deref()
        );
        assert_eq!(h.size, 3 << 20);
        // A relative name resolves against the image's directory, as qemu does.
        qi::rebase_unsafe(&top, Some(Path::new("base.qcow2"))).unwrap();
        assert_eq!(read(&top).unwrap().backing, Some(base.clone()));
        qi::rebase_unsafe(&top, None).unwrap();
        assert_eq!(read(&top).unwrap().backing, None);
        std::fs::write(
            &base,
            b"not an image at all, just some text long enough for a header",
        )
        .unwrap();
        assert!(
            read(&base)
                .unwrap_err()
                .to_string()
                .contains("not a qcow2 image")
        );
    }
}
