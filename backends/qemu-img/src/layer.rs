//! Creating qcow2 layers and measuring what one layer holds by itself.

use std::path::Path;

use serde::Deserialize;

use crate::cmd::Cmd;
use crate::error::{Error, Result};
use crate::info::parse_json;
use crate::overlay;

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
/// existing `path`, like [`create`]. The file is written in process, byte for byte what
/// `qemu-img create -f qcow2 -b BACKING -F qcow2 PATH` writes (`overlay.rs`), when the
/// backing chain's headers show it would open as qemu-img opens it and the size allows;
/// otherwise by qemu-img, whose message then says what is wrong with the chain.
pub fn create_overlay(path: &Path, backing: &Path) -> Result<()> {
    refuse_existing(path)?;
    let resolved = if backing.is_absolute() {
        backing.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).join(backing)
    };
    match overlay::backing_size(&resolved) {
        Some(size) if overlay::fits(size, backing) => write_overlay(path, backing, size),
        _ => Cmd::qemu_img("create", path)
            .arg("-q")
            .arg("-f")
            .arg("qcow2")
            .arg("-b")
            .path(backing)
            // Mandatory since qemu 6.1, and it stops qemu from probing the backing's format later.
            .arg("-F")
            .arg("qcow2")
            .path(path)
            .run()
            .map(drop),
    }
}

/// Creates an empty overlay whose backing is not opened, for a backing that a running QEMU
/// holds with its write lock, so the guest-visible size must be given: written in process
/// as [`create_overlay`] does, or by `qemu-img create -f qcow2 -u -b BACKING -F qcow2 PATH
/// SIZE` when the size does not allow it.
pub fn create_overlay_unopened(path: &Path, backing: &Path, size_bytes: u64) -> Result<()> {
    refuse_existing(path)?;
    if overlay::fits(size_bytes, backing) {
        return write_overlay(path, backing, size_bytes);
    }
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

fn write_overlay(path: &Path, backing: &Path, size: u64) -> Result<()> {
    overlay::write(path, size, backing).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
            image: path.to_path_buf(),
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source,
        },
    })
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
    start: u64,
    length: u64,
    data: bool,
}

/// Bytes of guest data stored in the file `layer` itself, ignoring its backing chain.
///
/// The layer is opened as `{"driver":"qcow2", "backing": null, …}` so that qemu-img map cannot
/// attribute backing data to it; the lengths of the extents with `data: true` are summed.
/// Clusters written as zeroes (`present`, `zero`, no data) mask the backing but hold no data,
/// so they count 0; an empty overlay gives 0.
///
/// Counted in this process from the qcow2 L1 and L2 tables (see [`count_allocated`]) when the
/// image has no subclusters and no external data file; otherwise by `qemu-img map`
/// ([`allocated_bytes_by_map`]).
pub fn allocated_bytes(layer: &Path) -> Result<u64> {
    match count_allocated(layer) {
        Some(bytes) => Ok(bytes),
        None => allocated_bytes_by_map(layer),
    }
}

/// [`allocated_bytes`] answered by `qemu-img map` (a process, 5–50 ms).
pub fn allocated_bytes_by_map(layer: &Path) -> Result<u64> {
    Ok(map_extents(layer)?
        .iter()
        .filter(|e| e.data)
        .map(|e| e.length)
        .sum())
}

/// `qemu-img map` of the file `layer` alone (its backing ignored).
fn map_extents(layer: &Path) -> Result<Vec<Extent>> {
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
    parse_json(&cmd, &cmd.run()?.stdout)
}

/// Incompatible feature bits this reader cannot count through: external data file (2),
/// extended L2 entries with subclusters (4).
const UNREADABLE_FEATURES: u64 = (1 << 2) | (1 << 4);
/// L2 entry: the cluster is compressed (it holds data).
const L2_COMPRESSED: u64 = 1 << 62;
/// L2 entry: the cluster reads as zeroes (version 3), whatever its offset.
const L2_ZERO: u64 = 1;
/// L2 entry, standard cluster: the host offset bits 9–55.
const L2_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 entry: the L2 table's offset, bits 9–55.
const L1_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;

/// Which guest clusters a qcow2 file holds data for itself, ignoring its backing chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMap {
    /// The file's cluster size in bytes.
    pub cluster: u64,
    /// The image's virtual size in bytes.
    pub size: u64,
    /// The L1 table's length in bytes.
    pub l1_bytes: u64,
    /// The guest clusters (offset / cluster) with data in this file, ascending.
    pub clusters: Vec<u64>,
}

impl ClusterMap {
    /// Guest clusters one L2 table maps.
    pub fn l2_span(&self) -> u64 {
        self.cluster / 8
    }

    /// Bytes of guest data these clusters hold (the last one only up to the virtual size).
    pub fn data_bytes(&self) -> u64 {
        self.clusters
            .iter()
            .map(|c| (self.size.saturating_sub(c * self.cluster)).min(self.cluster))
            .sum()
    }
}

/// The guest clusters the qcow2 file `layer` holds data for itself: counted in process from
/// its L1/L2 tables, or by `qemu-img map` (extents rounded out to whole clusters) when the
/// image has subclusters or an external data file.
pub fn allocated_clusters(layer: &Path) -> Result<ClusterMap> {
    if let Some(map) = read_cluster_map(layer) {
        return Ok(map);
    }
    let header = crate::header::read_header(layer).map_err(|e| Error::Failed {
        command: format!("reading the qcow2 header of {}", layer.display()),
        message: e.to_string(),
    })?;
    let cluster = cluster_size(layer)?;
    let mut clusters = Vec::new();
    for e in map_extents(layer)?.into_iter().filter(|e| e.data) {
        let first = e.start / cluster;
        let end = (e.start + e.length).div_ceil(cluster);
        clusters.extend(first..end);
    }
    clusters.sort_unstable();
    clusters.dedup();
    Ok(ClusterMap {
        cluster,
        size: header.size,
        l1_bytes: header.size.div_ceil(cluster * (cluster / 8)) * 8,
        clusters,
    })
}

/// The cluster size the qcow2 header of `path` declares (bytes 20–23: `cluster_bits`).
fn cluster_size(path: &Path) -> Result<u64> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = [0u8; 24];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(io)?;
    let bits = u32::from_be_bytes(head[20..24].try_into().expect("4 bytes"));
    if !(9..=21).contains(&bits) {
        return Err(Error::Failed {
            command: format!("reading the qcow2 header of {}", path.display()),
            message: format!("cluster_bits {bits} is out of range"),
        });
    }
    Ok(1 << bits)
}

fn count_allocated(path: &Path) -> Option<u64> {
    read_cluster_map(path).map(|m| m.data_bytes())
}

/// The guest data a qcow2 file holds itself, counted from its L1 and L2 tables as `qemu-img
/// map` with `backing: null` reports it (qcow2 specification, "Cluster mapping"): a
/// cluster holds data when it is compressed, or has a host offset and is not marked as
/// zeroes; the last cluster counts only up to the virtual size. `None` when the image is
/// not one this reader counts (not qcow2, subclusters, external data file, a table out of
/// the file): the caller asks qemu-img.
fn read_cluster_map(path: &Path) -> Option<ClusterMap> {
    let mut t = Tables::open(path)?;
    let version = t.version;
    let mut clusters_with_data: Vec<u64> = Vec::new();
    t.each_l2(|c, l2, _| {
        let data = if l2 & L2_COMPRESSED != 0 {
            true
        } else {
            l2 & L2_OFFSET != 0 && (version < 3 || l2 & L2_ZERO == 0)
        };
        if data {
            clusters_with_data.push(c);
        }
    })?;
    Some(ClusterMap {
        cluster: t.cluster,
        size: t.size,
        l1_bytes: t.l1_size as u64 * 8,
        clusters: clusters_with_data,
    })
}

/// A qcow2 file opened to read its L1 and L2 tables: the header's geometry, checked (a
/// qcow2 magic, no feature this reader cannot follow, a sane cluster size).
struct Tables {
    file: std::fs::File,
    version: u32,
    cluster: u64,
    size: u64,
    l1_size: usize,
    l1_offset: u64,
    len: u64,
}

fn be32(h: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(h[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(h: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(h[at..at + 8].try_into().expect("8 bytes"))
}

impl Tables {
    fn open(path: &Path) -> Option<Tables> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let mut head = [0u8; 80];
        file.read_exact(&mut head[..72]).ok()?;
        if head[0..4] != *b"QFI\xfb" {
            return None;
        }
        let version = be32(&head, 4);
        if version >= 3 {
            file.read_exact(&mut head[72..80]).ok()?;
            if be64(&head, 72) & UNREADABLE_FEATURES != 0 {
                return None;
            }
        }
        let cluster_bits = be32(&head, 20);
        if !(9..=21).contains(&cluster_bits) {
            return None;
        }
        let len = file.metadata().ok()?.len();
        Some(Tables {
            file,
            version,
            cluster: 1u64 << cluster_bits,
            size: be64(&head, 24),
            l1_size: be32(&head, 36) as usize,
            l1_offset: be64(&head, 40),
            len,
        })
    }

    /// `entries` big-endian 64-bit entries at `at`; `None` past the end of the file.
    fn read(&mut self, at: u64, entries: usize) -> Option<Vec<u64>> {
        use std::io::{Read, Seek, SeekFrom};
        let bytes = entries.checked_mul(8)?;
        if at.checked_add(bytes as u64)? > self.len {
            return None;
        }
        let mut raw = vec![0u8; bytes];
        self.file.seek(SeekFrom::Start(at)).ok()?;
        self.file.read_exact(&mut raw).ok()?;
        Some(raw.chunks_exact(8).map(|c| be64(c, 0)).collect())
    }

    /// Calls `f(guest cluster, L2 entry, the entry's offset in the file)` for every entry
    /// of every allocated L2 table.
    fn each_l2(&mut self, mut f: impl FnMut(u64, u64, u64)) -> Option<()> {
        let l2_entries = (self.cluster / 8) as usize;
        for (i, l1) in self
            .read(self.l1_offset, self.l1_size)?
            .into_iter()
            .enumerate()
        {
            let l2_offset = l1 & L1_OFFSET;
            if l2_offset == 0 {
                continue;
            }
            for (j, l2) in self.read(l2_offset, l2_entries)?.into_iter().enumerate() {
                f((i * l2_entries + j) as u64, l2, l2_offset + 8 * j as u64);
            }
        }
        Some(())
    }
}

/// The guest clusters whose L2 entry in the qcow2 file `path` is set at all (data, or
/// zeroes that mask the backing file): what the file itself decides. `None` when the image
/// is not one this reader handles (subclusters, external data file, tables out of the
/// file).
pub fn mapped_entries(path: &Path) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    walk_l2(path, false, |c, entry| {
        if entry != 0 {
            out.push(c);
        }
    })?;
    Some(out)
}

/// Gives back the space a half-done safe rebase took, once its backing link points back at
/// the old backing file: every L2 entry of `path` set now but not in `before` (what
/// [`mapped_entries`] read before the rebase) is cleared, so the cluster reads through to
/// the backing file again, and `qemu-img check -r leaks` frees the host clusters. Safe
/// because a safe rebase only writes, into a cluster the file did not map, the data the old
/// backing chain shows there: the file reads the same. Each entry is cleared by one aligned
/// 8-byte write, so a crash part-way leaves some clusters still copied (correct data) and
/// some leaked host clusters (wasted space, never wrong data). Returns the entries cleared.
pub fn release_copied_clusters(path: &Path, before: &[u64]) -> Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let keep: std::collections::BTreeSet<u64> = before.iter().copied().collect();
    let mut offsets: Vec<u64> = Vec::new();
    // Offsets mode: called only for set entries, with the entry's place in the file.
    walk_l2(path, true, |c, at| {
        if !keep.contains(&c) {
            offsets.push(at);
        }
    })
    .ok_or_else(|| unreadable(path))?;
    if offsets.is_empty() {
        return Ok(0);
    }
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    for at in &offsets {
        f.seek(SeekFrom::Start(*at)).map_err(io)?;
        f.write_all(&[0u8; 8]).map_err(io)?;
    }
    f.sync_all().map_err(io)?;
    drop(f);
    Cmd::qemu_img("check", path)
        .arg("-q")
        .arg("-r")
        .arg("leaks")
        .arg("-f")
        .arg("qcow2")
        .path(path)
        .run()?;
    // Host clusters past the last one in use (those the rebase had taken at the end) are
    // still allocated in the host file: cut them off. Nothing refers to bytes past the
    // image end offset qemu reports, by its definition.
    let cmd = Cmd::qemu_img("check", path)
        .arg("--output=json")
        .arg("-f")
        .arg("qcow2")
        .path(path);
    let report: CheckReport = parse_json(&cmd, &cmd.run()?.stdout)?;
    if let Some(end) = report.image_end_offset {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        if f.metadata().map_err(io)?.len() > end {
            f.set_len(end).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
    }
    Ok(offsets.len() as u64)
}

/// The part of `qemu-img check --output=json` read here.
#[derive(Deserialize)]
struct CheckReport {
    #[serde(rename = "image-end-offset")]
    image_end_offset: Option<u64>,
}

fn unreadable(path: &Path) -> Error {
    Error::Failed {
        command: format!("reading the L1/L2 tables of {}", path.display()),
        message: "the image has subclusters, an external data file or tables out of the file"
            .into(),
    }
}

/// Calls `f(guest cluster, value)` for every entry of every allocated L2 table of a qcow2
/// file, where value is the entry itself; with `offsets`, only for the entries that are set,
/// and value is the entry's offset in the file.
fn walk_l2(path: &Path, offsets: bool, mut f: impl FnMut(u64, u64)) -> Option<()> {
    Tables::open(path)?.each_l2(|c, l2, at| {
        if !offsets {
            f(c, l2);
        } else if l2 != 0 {
            f(c, at);
        }
    })
}
