//! Reading a qcow2 image's internal snapshot table in process: what `qemu-img info` lists
//! as its snapshots, without starting qemu-img (4-5 ms a call, and a step on an
//! internal-mode disk asked two or three times).
//!
//! The header gives the count (offset 60, 4 bytes) and the table's offset (64, 8 bytes).
//! Each entry (`docs/interop/qcow2.txt`, "Snapshots"), big-endian, padded to 8 bytes:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | L1 table offset |
//! | 8 | 4 | L1 table entries |
//! | 12 | 2 | id length |
//! | 14 | 2 | name length |
//! | 16 | 4 | date, seconds |
//! | 20 | 4 | date, nanoseconds |
//! | 24 | 8 | guest clock, nanoseconds |
//! | 32 | 4 | VM state size (32 bits) |
//! | 36 | 4 | extra data length |
//! | 40 | extra | extra data: VM state size (64 bits), disk size, instruction count |
//! | | id length | id |
//! | | name length | name |
//!
//! Whatever is unusual — incompatible features set (a dirty or corrupt image), a table out
//! of bounds or not on a cluster, more extra data than qemu allows, a name that is not
//! UTF-8 — is left to qemu-img ([`list`] answers `None`).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::info::InternalSnapshot;

/// qemu's limits (`QCOW_MAX_SNAPSHOTS`, `QCOW_MAX_SNAPSHOTS_SIZE`).
const MAX_SNAPSHOTS: u32 = 65536;
const MAX_TABLE_BYTES: u64 = 64 << 20;
/// What a version 3 entry's extra data holds at least (VM state size, disk size).
const EXTRA_V3: usize = 16;
/// qemu refuses an entry with more extra data ("Too much extra metadata").
const MAX_EXTRA: usize = 1024;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The internal snapshots of the qcow2 image at `path`, in table order as qemu-img lists
/// them; `None` when this cannot answer with certainty and qemu-img should.
pub(crate) fn list(path: &Path) -> Option<Vec<InternalSnapshot>> {
    let header = crate::header::read_header(path).ok()?;
    if !(2..=3).contains(&header.version) || header.incompatible_features != 0 {
        return None;
    }
    let (count, offset) = (header.snapshot_count, header.snapshot_table_offset);
    if count == 0 {
        return Some(Vec::new());
    }
    // qemu refuses a table that does not start on a cluster.
    if count > MAX_SNAPSHOTS
        || offset == 0
        || !(9..=21).contains(&header.cluster_bits)
        || !offset.is_multiple_of(1 << header.cluster_bits)
    {
        return None;
    }
    let mut file = File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    // Entry by entry: the table is a few hundred bytes, and data clusters may follow it.
    let mut table = BufReader::new(file);
    let mut read = |n: usize, used: &mut u64| -> Option<Vec<u8>> {
        *used += n as u64;
        if *used > MAX_TABLE_BYTES {
            return None;
        }
        let mut buf = vec![0u8; n];
        table.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let mut used = 0u64;
    let mut padding = 0;
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        // The previous entry's padding to 8 bytes (none is needed after the last).
        read(padding, &mut used)?;
        let fixed = read(40, &mut used)?;
        let id_len = u16::from_be_bytes([fixed[12], fixed[13]]) as usize;
        let name_len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
        let date_sec = be32(&fixed, 16);
        let date_nsec = be32(&fixed, 20);
        let small_state = be32(&fixed, 32);
        let extra_len = be32(&fixed, 36) as usize;
        if (header.version == 3 && extra_len < EXTRA_V3) || extra_len > MAX_EXTRA {
            return None;
        }
        let extra = read(extra_len, &mut used)?;
        let vm_state_size = if extra_len >= 8 {
            be64(&extra, 0)
        } else {
            u64::from(small_state)
        };
        let id = String::from_utf8(read(id_len, &mut used)?).ok()?;
        let name = String::from_utf8(read(name_len, &mut used)?).ok()?;
        let entry = 40 + extra_len + id_len + name_len;
        padding = entry.next_multiple_of(8) - entry;
        out.push(InternalSnapshot {
            id,
            name,
            date_sec: u64::from(date_sec),
            date_nsec,
            vm_state_size,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, info, snapshot_create, snapshot_delete};

    /// The table read here against `qemu-img info`'s list, on images qemu-img wrote:
    /// version 3 and version 2 (`compat=0.10`, no extra data), names of every padding,
    /// after deletes (the table rewritten), and empty.
    #[test]
    fn the_table_is_what_qemu_img_info_lists() {
        let dir = tempfile::tempdir().unwrap();
        for compat in ["1.1", "0.10"] {
            let image = dir.path().join(format!("disk-{compat}.qcow2"));
            let out = std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-o"])
                .arg(format!("compat={compat}"))
                .arg(&image)
                .arg("4M")
                .output()
                .unwrap();
            assert!(out.status.success(), "qemu-img create: {out:?}");
            let expect = |what: &str| {
                let listed = info(&image).unwrap().snapshots;
                let read = list(&image).expect("expected the table read in process");
                assert_eq!(read, listed, "expected qemu-img's list ({compat}, {what})");
                read.len()
            };
            assert_eq!(expect("no snapshot"), 0);
            for n in 1..=9 {
                snapshot_create(&image, &"t".repeat(n)).unwrap();
            }
            snapshot_create(&image, "4f1c2b0e-8a7d-4c39-9e51-0d6b2a7c9f13").unwrap();
            assert_eq!(expect("ten snapshots"), 10);
            snapshot_delete(&image, "ttt").unwrap();
            snapshot_delete(&image, "t").unwrap();
            assert_eq!(expect("two deleted"), 8);
        }
    }

    #[test]
    fn what_is_not_a_plain_qcow2_table_is_left_to_qemu_img() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        assert_eq!(list(&raw), None, "expected a raw file left to qemu-img");
        let image = dir.path().join("d.qcow2");
        create(&image, 4 << 20).unwrap();
        snapshot_create(&image, "a").unwrap();
        // The dirty bit (incompatible feature 0) set by hand.
        let mut bytes = std::fs::read(&image).unwrap();
        bytes[79] |= 1;
        std::fs::write(&image, &bytes).unwrap();
        assert_eq!(
            list(&image),
            None,
            "expected a dirty image left to qemu-img"
        );
        // A table beyond the end of the file.
        bytes[79] &= !1;
        let table = bytes[64..72].to_vec();
        bytes[64..72].copy_from_slice(&(1u64 << 40).to_be_bytes());
        std::fs::write(&image, &bytes).unwrap();
        assert_eq!(
            list(&image),
            None,
            "expected a table out of bounds left to qemu-img"
        );
        // A table moved off its cluster by 8 bytes (qemu: "Snapshot table offset invalid").
        let moved = u64::from_be_bytes(table.try_into().unwrap()) + 8;
        bytes[64..72].copy_from_slice(&moved.to_be_bytes());
        std::fs::write(&image, &bytes).unwrap();
        assert_eq!(
            list(&image),
            None,
            "expected a table off its cluster left to qemu-img"
        );
    }
}
