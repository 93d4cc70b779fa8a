//! Helpers shared by the live tests: skipping without QEMU, a scratch directory, a rig with
//! two disks, and disk data written through the monitor.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use snaptree_qmp::{Action, NewOverlay};
use snaptree_tests::rig::{self, Rig};
use snaptree_tests::skip;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Size of every test disk.
pub const DISK_SIZE: u64 = 16 * MIB;

/// A scratch directory and a rig in it. Field order matters: the rig (QEMU) goes first.
pub struct Live {
    pub rig: Rig,
    pub dir: tempfile::TempDir,
}

impl Live {
    /// Path of `name` in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `pattern` over `offset..offset + len` of disk `disk` through the device's
    /// backend, as guest writes would, and flushes it so outside readers see it.
    pub fn write(&mut self, disk: usize, pattern: u8, offset: u64, len: u64) {
        let qom = self.rig.disks()[disk].qom_path();
        let qmp = self.rig.qmp();
        qmp.qemu_io(&qom, &format!("write -P {pattern:#04x} {offset} {len}"))
            .unwrap();
        qmp.qemu_io(&qom, "flush").unwrap();
    }

    /// Flushes disk `disk` so that outside readers see what QEMU wrote.
    pub fn flush(&mut self, disk: usize) {
        let qom = self.rig.disks()[disk].qom_path();
        self.rig.qmp().qemu_io(&qom, "flush").unwrap();
    }

    /// Creates an overlay node `node` in file `file` over the image file `backing`.
    pub fn overlay(&mut self, node: &str, file: &str, backing: &Path) -> PathBuf {
        let path = self.path(file);
        let backing = backing.to_string_lossy().into_owned();
        self.rig
            .qmp()
            .create_overlay(
                &NewOverlay {
                    node_name: node,
                    path: &path,
                    size: DISK_SIZE,
                    backing_file: Some(&backing),
                },
                std::time::Duration::from_secs(20),
            )
            .unwrap();
        path
    }

    /// Snapshots `node` with a new overlay `overlay` in file `file`, alone in a transaction.
    pub fn snapshot(&mut self, node: &str, overlay: &str, file: &str, backing: &Path) -> PathBuf {
        let path = self.overlay(overlay, file, backing);
        self.rig
            .qmp()
            .transaction(&[Action::Snapshot {
                node: node.into(),
                overlay: overlay.into(),
            }])
            .unwrap();
        path
    }
}

/// Asserts the guest view of the image file `image` reads `pattern` over the range.
#[track_caller]
pub fn assert_reads(image: &Path, pattern: u8, offset: u64, len: u64) {
    assert!(
        rig::verify_pattern(image, pattern, offset, len).unwrap(),
        "{} should read {pattern:#04x} at {offset}+{len}",
        image.display()
    );
}

/// A running rig with `disks` empty qcow2 disks `vd0`, `vd1`, … (files `disk0.qcow2`, …),
/// or `None` (after saying so; under CI it fails instead) when QEMU is not installed.
pub fn live(disks: usize) -> Option<Live> {
    if !rig::qemu_available() {
        skip::cannot_run(
            "the QMP test",
            "qemu-system-x86_64, qemu-img or qemu-io is not on PATH",
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Rig::builder(dir.path());
    for i in 0..disks {
        let path = dir.path().join(format!("disk{i}.qcow2"));
        rig::create_qcow2(&path, DISK_SIZE).unwrap();
        builder = builder.disk(&format!("vd{i}"), path);
    }
    let rig = builder.start().unwrap();
    Some(Live { rig, dir })
}
