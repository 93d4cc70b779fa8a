//! Reading a qcow2 header straight from the file: the backing file (with its declared
//! format), the virtual size, and whether the image keeps its data in an external file.
//!
//! The layout is fixed by the qcow2 specification (`docs/interop/qcow2.txt` in QEMU), all
//! fields big-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `QFI\xfb` |
//! | 4 | 4 | version (2 or 3) |
//! | 8 | 8 | backing file name offset (0: no backing file) |
//! | 16 | 4 | backing file name length |
//! | 20 | 4 | cluster bits |
//! | 24 | 8 | virtual size |
//! | 32 | 4 | encryption method |
//! | 60 | 4 | internal snapshots |
//! | 64 | 8 | snapshot table offset |
//! | 72 | 8 | incompatible features (version 3; bit 2: external data file) |
//! | 100 | 4 | header length (version 3; version 2 headers are 72 bytes) |
//!
//! Header extensions follow the header: type (4 bytes), length (4), data padded to 8
//! bytes, ending with type 0. Type `0xE2792ACA` holds the backing file's format name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"QFI\xfb";
/// qemu refuses longer backing names (BDRV_BACKING_FILE_NAME max is 1023 bytes).
const MAX_BACKING_NAME: u32 = 1023;
/// Header extension: the backing file's format.
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// Incompatible feature bit: the guest data lives in an external data file.
const FEATURE_DATA_FILE: u64 = 1 << 2;
/// How much of the file is read to find the header extensions (qemu writes them right
/// after the header; a backing format beyond this reads as undeclared, which only sends
/// the lock check to qemu-io). Every step reads every layer's header: kept small.
const HEAD_READ: u64 = 4 << 10;

/// The fields of a qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    /// The backing file, resolved against the image's directory as qemu does.
    pub backing: Option<PathBuf>,
    /// The backing file's format as the header declares it (`None`: not declared, qemu
    /// would probe it).
    pub backing_format: Option<String>,
    /// The guest-visible size in bytes.
    pub size: u64,
    /// Whether the image keeps its data in an external data file.
    pub external_data_file: bool,
    /// The format version (2 or 3; others are read as far as the fields go).
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Whether the image is encrypted (a non-zero encryption method).
    pub encrypted: bool,
    /// The incompatible feature bits (version 3; 0 for version 2).
    pub incompatible_features: u64,
    /// How many internal snapshots the snapshot table holds.
    pub snapshot_count: u32,
    /// Where the snapshot table starts (0: none).
    pub snapshot_table_offset: u64,
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The file could not be opened or read.
    Io(String),
    /// The file is not a qcow2 image.
    NotQcow2,
    /// A field is out of range or the backing name is not a plain file name.
    Invalid(String),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Io(e) => f.write_str(e),
            HeaderError::NotQcow2 => f.write_str("it is not a qcow2 image"),
            HeaderError::Invalid(why) => f.write_str(why),
        }
    }
}

/// Reads the header of the qcow2 image at `path`.
pub fn read_header(path: &Path) -> Result<Qcow2Header, HeaderError> {
    let io = |e: std::io::Error| HeaderError::Io(e.to_string());
    let mut file = File::open(path).map_err(io)?;
    let mut head = Vec::new();
    (&mut file)
        .take(HEAD_READ)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.len() < 32 {
        return Err(HeaderError::Io("the file is shorter than a header".into()));
    }
    if head[0..4] != MAGIC {
        return Err(HeaderError::NotQcow2);
    }
    let be32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    };
    let be64 = |at: usize| {
        head.get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    };
    let version = be32(4).unwrap_or(0);
    let offset = be64(8).unwrap_or(0);
    let len = be32(16).unwrap_or(0);
    let size = be64(24).unwrap_or(0);
    let (features, header_len) = if version >= 3 {
        (be64(72).unwrap_or(0), be32(100).unwrap_or(104) as usize)
    } else {
        (0, 72)
    };
    let backing_format = extensions(&head, header_len)
        .find(|(kind, _)| *kind == EXT_BACKING_FORMAT)
        .map(|(_, data)| String::from_utf8_lossy(data).into_owned());
    let mut header = Qcow2Header {
        backing: None,
        backing_format,
        size,
        external_data_file: features & FEATURE_DATA_FILE != 0,
        version,
        cluster_bits: be32(20).unwrap_or(0),
        encrypted: be32(32).unwrap_or(0) != 0,
        incompatible_features: features,
        snapshot_count: be32(60).unwrap_or(0),
        snapshot_table_offset: be64(64).unwrap_or(0),
    };
    if offset == 0 {
        return Ok(header);
    }
    if len == 0 || len > MAX_BACKING_NAME {
        return Err(HeaderError::Invalid(format!(
            "backing file name length {len} is invalid"
        )));
    }
    let mut name = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(&mut name).map_err(io)?;
    let name = String::from_utf8(name)
        .map_err(|_| HeaderError::Invalid("the backing file name is not UTF-8".into()))?;
    // Protocol or json: names would need qemu's own parser.
    if name.starts_with("json:")
        || name
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        return Err(HeaderError::Invalid(format!(
            "backing file '{name}' is not a plain file name"
        )));
    }
    let backing = Path::new(&name);
    header.backing = Some(if backing.is_absolute() {
        backing.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new("/")).join(backing)
    });
    Ok(header)
}

/// The header extensions found in `head` from `at` on, as (type, data), up to the end
/// marker or the end of what was read.
fn extensions(head: &[u8], mut at: usize) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        let kind = u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?);
        let len = u32::from_be_bytes(head.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        if kind == 0 {
            return None;
        }
        let data = head.get(at + 8..at + 8 + len)?;
        at += 8 + len.div_ceil(8) * 8;
        Some((kind, data))
    })
}
