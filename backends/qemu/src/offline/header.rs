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
//! all big-endian. A test compares the answers with `qemu-img info`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Result, error};

const MAGIC: [u8; 4] = *b"QFI\xfb";
/// qemu refuses longer backing names (BDRV_BACKING_FILE_NAME max is 1023 bytes).
const MAX_BACKING_NAME: u32 = 1023;

/// The fields of a qcow2 header the backend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The backing file, resolved against the image's directory as qemu does.
    pub(crate) backing: Option<PathBuf>,
    /// The guest-visible size in bytes.
    pub(crate) size: u64,
}

/// Reads the header of the qcow2 image at `path`.
pub(crate) fn read(path: &Path) -> Result<Header> {
    let fail = |why: String| {
        error(format!(
            "cannot read the qcow2 header of {}: {why}",
            path.display()
        ))
    };
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut head = [0u8; 32];
    file.read_exact(&mut head)
        .map_err(|e| fail(e.to_string()))?;
    if head[0..4] != MAGIC {
        return Err(fail("it is not a qcow2 image".into()));
    }
    let be64 = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let offset = be64(8);
    let len = u32::from_be_bytes(head[16..20].try_into().expect("4 bytes"));
    let size = be64(24);
    if offset == 0 {
        return Ok(Header {
            backing: None,
            size,
        });
    }
    if len == 0 || len > MAX_BACKING_NAME {
        return Err(fail(format!("backing file name length {len} is invalid")));
    }
    let mut name = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| fail(e.to_string()))?;
    file.read_exact(&mut name)
        .map_err(|e| fail(e.to_string()))?;
    let name =
        String::from_utf8(name).map_err(|_| fail("the backing file name is not UTF-8".into()))?;
    // Protocol or json: names would need qemu's own parser; this backend writes none.
    if name.starts_with("json:")
        || name
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        return Err(fail(format!(
            "backing file '{name}' is not a plain file name"
        )));
    }
    let backing = Path::new(&name);
    let backing = if backing.is_absolute() {
        backing.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new("/")).join(backing)
    };
    Ok(Header {
        backing: Some(backing),
        size,
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
