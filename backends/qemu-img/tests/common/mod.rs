//! Helpers shared by the integration tests: scratch images and a process holding a lock.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use snaptree_qemu_img as qi;

/// Size of every test image.
pub const SIZE: u64 = 4 * MIB;
/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// A temporary directory with helpers to name images in it.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Absolute path of `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// base ← mid ← top with 0xaa everywhere in base, 0xbb at 1–2 MiB in mid and 0xcc at
    /// 2–3 MiB in top.
    pub fn chain(&self) -> (PathBuf, PathBuf, PathBuf) {
        let (base, mid, top) = (
            self.path("base.qcow2"),
            self.path("mid.qcow2"),
            self.path("top.qcow2"),
        );
        qi::create(&base, SIZE).unwrap();
        qi::io_write_pattern(&base, 0xaa, 0, SIZE).unwrap();
        qi::create_overlay(&mid, &base).unwrap();
        qi::io_write_pattern(&mid, 0xbb, MIB, MIB).unwrap();
        qi::create_overlay(&top, &mid).unwrap();
        qi::io_write_pattern(&top, 0xcc, 2 * MIB, MIB).unwrap();
        (base, mid, top)
    }
}

/// The guest view `Scratch::chain` gives at the top, one pattern per MiB.
pub const CHAIN_VIEW: [u8; 4] = [0xaa, 0xbb, 0xcc, 0xaa];

/// Asserts `image` reads `view[i]` in its i-th MiB.
pub fn assert_view(image: &Path, view: &[u8]) {
    for (i, &pattern) in view.iter().enumerate() {
        assert!(
            qi::io_verify_pattern(image, pattern, i as u64 * MIB, MIB).unwrap(),
            "{} MiB {i} should read {pattern:#04x}",
            image.display()
        );
    }
}

/// The image lock holder the lock tests start.
#[allow(unused_imports)]
pub use snaptree_tests::lock::LockHolder;
