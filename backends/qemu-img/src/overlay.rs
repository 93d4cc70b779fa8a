//! Writing an empty qcow2 overlay in process, byte for byte what `qemu-img create -f qcow2
//! -b BACKING -F qcow2 PATH` writes (qemu 10.0), without starting qemu-img: a snapshot's
//! new overlay is four clusters of metadata, and starting qemu-img to write them took more
//! time than the rest of a command-line snapshot (BENCHMARKS.md, the command line).
//!
//! The layout, with 64 KiB clusters (the qcow2 specification, `docs/interop/qcow2.txt`):
//!
//! | cluster | holds |
//! | --- | --- |
//! | 0 | the version 3 header (112 bytes), the backing format extension (`qcow2`), the feature name table qemu writes, the end of extensions, the backing file name |
//! | 1 | the refcount table: one entry, the refcount block at cluster 2 |
//! | 2 | the refcount block: 16-bit counts, 1 for each cluster in use (0 to 3 + the L1 table's clusters - 1) |
//! | 3… | the L1 table, all zero (no data yet): one entry per 512 MiB of virtual size |
//!
//! Clusters 0 to 2 are written whole, the L1 table to its last entry, as qemu does. What
//! this cannot write the same way is left to qemu-img ([`fits`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// One L1 entry maps one L2 table of CLUSTER / 8 entries, each a cluster.
const BYTES_PER_L1_ENTRY: u64 = CLUSTER * (CLUSTER / 8);
/// 16-bit refcounts (refcount_order 4): one refcount block counts CLUSTER / 2 clusters.
const REFCOUNT_ORDER: u32 = 4;
const HEADER_LENGTH: u32 = 112;
/// qemu's largest L1 table (`QCOW_MAX_L1_SIZE`): a larger disk is refused.
const MAX_L1_BYTES: u64 = 32 << 20;
// One refcount block (cluster 2) counts every cluster of the largest image written here.
const _: () = assert!(3 + MAX_L1_BYTES / CLUSTER <= CLUSTER / 2);
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const EXT_FEATURE_NAMES: u32 = 0x6803_F857;
/// qemu refuses longer backing names.
const MAX_BACKING_NAME: usize = 1023;
/// Longer chains are left to qemu-img (this only bounds a loop through a corrupt chain).
const MAX_CHAIN: usize = 4096;
/// The feature name table qemu 10.0 writes into every image: (type, bit, name), type 0
/// incompatible, 1 compatible, 2 autoclear. Informative only (qemu names unknown features
/// with it), so an older qemu reads the image the same.
const FEATURE_NAMES: [(u8, u8, &str); 8] = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];
const FEATURE_NAME_ENTRY: usize = 48;

/// Whether an overlay of `size` bytes on `backing` can be written here exactly as qemu-img
/// would: a virtual size qemu would keep as is (a whole number of 512-byte sectors, not
/// zero), an L1 table qemu allows (its clusters and the three before it are then counted
/// by the one refcount block), and a backing name qemu accepts.
pub(crate) fn fits(size: u64, backing: &Path) -> bool {
    let name = backing.as_os_str().as_bytes();
    size > 0
        && size.is_multiple_of(512)
        && l1_bytes(size) <= MAX_L1_BYTES
        && !name.is_empty()
        && name.len() <= MAX_BACKING_NAME
        && !name.contains(&0)
}

/// The virtual size of `backing` (a qcow2 image) when its whole chain opens as `qemu-img
/// create -b` would open it, checked from the headers: every file present, qcow2 version 2
/// or 3 with no encryption and no incompatible feature (dirty, corrupt, external data
/// file, unknown: qemu decides those), each backing's format declared qcow2 or raw. `None`
/// sends the caller to qemu-img, whose message then says what is wrong.
pub(crate) fn backing_size(backing: &Path) -> Option<u64> {
    let mut file = backing.to_path_buf();
    let mut size = None;
    for _ in 0..MAX_CHAIN {
        let header = crate::header::read_header(&file).ok()?;
        if !(2..=3).contains(&header.version)
            || header.encrypted
            || header.incompatible_features != 0
        {
            return None;
        }
        size.get_or_insert(header.size);
        let Some(next) = header.backing else {
            return size;
        };
        match header.backing_format.as_deref() {
            Some("qcow2") => file = next,
            Some("raw") => return next.is_file().then_some(size).flatten(),
            _ => return None,
        }
    }
    None
}

/// Bytes of the L1 table of an image of `size` bytes.
fn l1_bytes(size: u64) -> u64 {
    size.div_ceil(BYTES_PER_L1_ENTRY) * 8
}

/// The whole file of an empty overlay of `size` bytes on `backing` (a qcow2 image), as
/// qemu-img writes it, zeros included. The caller checked [`fits`].
fn image(size: u64, backing: &Path) -> Vec<u8> {
    let name = backing.as_os_str().as_bytes();
    let l1_entries = size.div_ceil(BYTES_PER_L1_ENTRY);
    let l1_clusters = l1_bytes(size).div_ceil(CLUSTER);
    let l1_offset = 3 * CLUSTER;

    // The header, its extensions, then the backing name.
    let mut head = vec![0u8; HEADER_LENGTH as usize];
    push_extension(&mut head, EXT_BACKING_FORMAT, b"qcow2");
    let mut names = Vec::with_capacity(FEATURE_NAMES.len() * FEATURE_NAME_ENTRY);
    for (kind, bit, name) in FEATURE_NAMES {
        let mut entry = [0u8; FEATURE_NAME_ENTRY];
        entry[0] = kind;
        entry[1] = bit;
        entry[2..2 + name.len()].copy_from_slice(name.as_bytes());
        names.extend_from_slice(&entry);
    }
    push_extension(&mut head, EXT_FEATURE_NAMES, &names);
    head.extend_from_slice(&[0u8; 8]); // end of extensions
    let name_at = head.len() as u64;
    head.extend_from_slice(name);

    let mut put32 = |at: usize, v: u32| head[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put32(0, u32::from_be_bytes(*b"QFI\xfb"));
    put32(4, 3); // version
    put32(16, name.len() as u32);
    put32(20, CLUSTER_BITS);
    put32(36, l1_entries as u32);
    put32(56, 1); // refcount table clusters
    put32(96, REFCOUNT_ORDER);
    put32(100, HEADER_LENGTH);
    let mut put64 = |at: usize, v: u64| head[at..at + 8].copy_from_slice(&v.to_be_bytes());
    put64(8, name_at);
    put64(24, size);
    put64(40, l1_offset);
    put64(48, CLUSTER); // the refcount table, at cluster 1
    // Everything else in the header is zero: no encryption, no internal snapshot, no
    // incompatible, compatible or autoclear feature, zlib compression.

    // The refcount table's one entry: the refcount block, at cluster 2, which counts
    // clusters 0 to 3 + the L1 table's - 1 once each. The L1 table is all zero.
    let mut file = vec![0u8; (l1_offset + l1_bytes(size)) as usize];
    file[..head.len()].copy_from_slice(&head);
    let table = CLUSTER as usize;
    file[table..table + 8].copy_from_slice(&(2 * CLUSTER).to_be_bytes());
    let block = 2 * CLUSTER as usize;
    for count in file[block..block + 2 * (3 + l1_clusters) as usize].chunks_exact_mut(2) {
        count.copy_from_slice(&1u16.to_be_bytes());
    }
    file
}

fn push_extension(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
}

/// Writes the overlay to `path`, which must not exist (`O_EXCL`: a dangling symlink counts
/// as existing too), with mode 0644 less the umask, as qemu-img creates files. Every byte
/// is written, zeros included, as qemu-img does: its metadata clusters are then allocated,
/// so that later writes into them (the L1 table, the refcounts) need no new space — the
/// space estimates count on it, and an undo on a full file system must not fail there.
/// Not flushed: the caller syncs what it renames into place. A failed write removes the
/// file.
pub(crate) fn write(path: &Path, size: u64, backing: &Path) -> std::io::Result<()> {
    let bytes = image(size, backing);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    let written = file.write_all(&bytes);
    if written.is_err() {
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer alone (no fallback to qemu-img can hide in this), against qemu-img -u.
    #[test]
    fn the_image_is_what_qemu_img_writes() {
        let dir = tempfile::tempdir().unwrap();
        for size in [4 << 20, 1 << 30, (1 << 30) + 512, 5 << 40] {
            for backing in ["/vm/base.qcow2", "base.qcow2", "a b/é.qcow2"] {
                let theirs = dir.path().join(format!("theirs-{size}.qcow2"));
                let _ = std::fs::remove_file(&theirs);
                let out = std::process::Command::new("qemu-img")
                    .args([
                        "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "qcow2",
                    ])
                    .arg(&theirs)
                    .arg(size.to_string())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "qemu-img create: {out:?}");
                assert!(fits(size, Path::new(backing)));
                assert!(
                    image(size, Path::new(backing)) == std::fs::read(&theirs).unwrap(),
                    "expected qemu-img's bytes for size {size}, backing {backing}"
                );
            }
        }
    }

    #[test]
    fn sizes_and_names_it_cannot_write_as_qemu_does_are_left_to_qemu_img() {
        let b = Path::new("/vm/base.qcow2");
        assert!(fits(1 << 30, b), "expected 1 GiB to fit");
        assert!(!fits(0, b), "expected an empty disk to be left to qemu-img");
        assert!(
            !fits((1 << 30) + 1, b),
            "expected a partial sector to be left"
        );
        let most = MAX_L1_BYTES / 8 * BYTES_PER_L1_ENTRY;
        assert!(fits(most, b), "expected the largest L1 qemu allows to fit");
        assert!(
            !fits(most + 512, b),
            "expected a larger disk to be left to qemu-img"
        );
        assert!(
            !fits(1 << 30, Path::new("")),
            "expected an empty name to be left"
        );
        let long = "a".repeat(MAX_BACKING_NAME + 1);
        assert!(
            !fits(1 << 30, Path::new(&long)),
            "expected a long name to be left"
        );
    }
}
