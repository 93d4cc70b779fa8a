//! Helpers shared by the integration tests: small qcow2 disks in a temporary directory, a
//! domain over them, pattern checks, and a process holding an image lock.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use snaptree_backend_qemu::{QemuBackend, QemuHandle};
use snaptree_engine::{Domain, NoProgress, Uuid};
use snaptree_qemu_img as qi;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Size of every test disk.
pub const SIZE: u64 = 8 * MIB;
/// Size of one pattern write.
pub const CHUNK: u64 = 64 * 1024;

/// A domain's disks in a temporary directory.
pub struct Vm {
    pub dir: tempfile::TempDir,
    pub disks: Vec<PathBuf>,
    pub modes: Vec<&'static str>,
    pub xml: String,
}

impl Vm {
    /// One fresh 8 MiB qcow2 disk per mode (`"external"` or `"internal"`).
    pub fn new(modes: &[&'static str]) -> Vm {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks = create_disks(dir.path(), modes, SIZE);
        let xml = domain_xml(&disks, modes);
        Vm {
            dir,
            disks,
            modes: modes.to_vec(),
            xml,
        }
    }

    /// A backend on the disks, and its handle.
    pub fn backend(&self) -> (QemuBackend, QemuHandle) {
        let b = QemuBackend::open(&self.xml).unwrap();
        let h = b.handle();
        (b, h)
    }

    /// An in-memory engine domain over the disks, and the backend's handle.
    pub fn domain(&self) -> (Domain, QemuHandle) {
        let (b, h) = self.backend();
        (Domain::ephemeral(&self.xml, Box::new(b)).unwrap(), h)
    }

    /// Every file under the directory, with its size and modification time (to show that
    /// a refused step changed nothing).
    pub fn files(&self) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, std::time::SystemTime)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            walk(&e.path(), out);
        } else {
            out.insert(e.path(), (m.len(), m.modified().unwrap()));
        }
    }
}

/// Creates `d<i>.qcow2` disks in `dir`.
pub fn create_disks(dir: &Path, modes: &[&str], size: u64) -> Vec<PathBuf> {
    modes
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let p = dir.join(format!("d{i}.qcow2"));
            qi::create(&p, size).unwrap();
            p
        })
        .collect()
}

/// `<domain type='qemu'>` over the disks.
pub fn domain_xml(disks: &[PathBuf], modes: &[&str]) -> String {
    let mut xml = String::from("<domain type='qemu'><name>vm</name><devices>");
    for (i, (p, m)) in disks.iter().zip(modes).enumerate() {
        xml.push_str(&format!(
            "<disk type='file' device='disk' snapshot='{m}'><source file='{}'/><target dev='vd{}'/></disk>",
            p.display(),
            (b'a' + i as u8) as char
        ));
    }
    xml.push_str("</devices></domain>");
    xml
}

/// Creates a snapshot named `name` through the engine.
pub fn snap(d: &mut Domain, name: &str) -> Uuid {
    d.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .unwrap()
}

/// The uuid of the snapshot named `name`.
pub fn uuid(d: &mut Domain, name: &str) -> Uuid {
    let dom = d.name().to_string();
    d.tree().unwrap().require_name(name, &dom).unwrap().uuid
}

/// Reverts to the snapshot named `name`.
pub fn revert(d: &mut Domain, name: &str) {
    let u = uuid(d, name);
    d.revert(&u, None, &mut NoProgress).unwrap();
}

/// A guest-data layout: per 64 KiB slot (0..16), the pattern byte (absent: untouched).
pub type Layout = BTreeMap<u64, u8>;

/// Writes `pattern` into slot `slot` of every disk (a disk-specific variant of the byte).
pub fn write(vm: &Vm, slot: u64, pattern: u8) {
    for (i, disk) in vm.disks.iter().enumerate() {
        qi::io_write_pattern(disk, per_disk(pattern, i), slot * CHUNK, CHUNK).unwrap();
    }
}

fn per_disk(pattern: u8, disk: usize) -> u8 {
    pattern.wrapping_add(disk as u8 * 0x40)
}

/// Asserts the live state of every disk reads `layout` (untouched slots read 0).
pub fn assert_live(vm: &Vm, layout: &Layout, what: &str) {
    for (i, disk) in vm.disks.iter().enumerate() {
        for slot in 0..16 {
            let want = layout.get(&slot).map_or(0, |p| per_disk(*p, i));
            assert!(
                qi::io_verify_pattern(disk, want, slot * CHUNK, CHUNK).unwrap(),
                "{what}: disk {} slot {slot} should read {want:#04x}",
                disk.display()
            );
        }
    }
}

/// Asserts the internal snapshot `u` of every internal disk reads `layout`.
pub fn assert_internal_snapshot(vm: &Vm, u: Uuid, layout: &Layout, what: &str) {
    for (i, (disk, mode)) in vm.disks.iter().zip(&vm.modes).enumerate() {
        if *mode != "internal" {
            continue;
        }
        for slot in 0..16 {
            let want = layout.get(&slot).map_or(0, |p| per_disk(*p, i));
            assert!(
                qi::io_verify_snapshot_pattern(disk, &u.to_string(), want, slot * CHUNK, CHUNK)
                    .unwrap(),
                "{what}: internal snapshot {u} of {} slot {slot} should read {want:#04x}",
                disk.display()
            );
        }
    }
}

/// Asserts every disk is a standalone image again: no backing, no internal snapshot, and
/// nothing of snaptree beside it.
pub fn assert_standalone(vm: &Vm) {
    for disk in &vm.disks {
        let info = qi::info(disk).unwrap();
        assert_eq!(
            info.backing_filename,
            None,
            "{} still has a backing file",
            disk.display()
        );
        assert!(
            info.snapshots.is_empty(),
            "{} still has internal snapshots",
            disk.display()
        );
    }
    let names: Vec<String> = std::fs::read_dir(vm.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut want: Vec<String> = (0..vm.disks.len()).map(|i| format!("d{i}.qcow2")).collect();
    let mut got = names;
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "expected only the disks themselves in the directory"
    );
}

/// The image lock holder the lock tests start.
#[allow(unused_imports)]
pub use snaptree_tests::lock::LockHolder;
