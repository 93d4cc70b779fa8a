//! The conformance kit's test hooks on real images: content digests through
//! `qemu-img convert`, guest writes through `qemu-io` (in live mode: HMP `qemu-io` inside
//! the running QEMU, and digests read with `-U` after a flush; see `live`).

use sha2::{Digest, Sha256};
use snaptree_engine::{ContentRef, Result, TestHooks};
use snaptree_qemu_img as qi;

use crate::backend::QemuBackend;
use crate::ctx::error;
use crate::disk::Mode;
use crate::header;

/// Size of one guest write.
pub(crate) const GUEST_WRITE: u64 = 64 * 1024;
/// Guest writes land in the first this-many bytes of a disk (or the whole disk if smaller),
/// so that they overlap and shadow each other across layers.
pub(crate) const GUEST_AREA: u64 = 4 * 1024 * 1024;

/// The writes `write_guest(seed)` makes on disk number `disk` of `size` bytes: 2 to 4 pairs
/// of (offset, non-zero pattern byte), each [`GUEST_WRITE`] bytes long.
pub(crate) fn guest_writes(seed: u64, disk: usize, size: u64) -> Vec<(u64, u8)> {
    let slots = (size.min(GUEST_AREA) / GUEST_WRITE).max(1);
    let mut x = seed ^ (disk as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    let n = 2 + next() % 3;
    (0..n)
        .map(|_| ((next() % slots) * GUEST_WRITE, (next() % 255) as u8 + 1))
        .collect()
}

impl TestHooks for QemuBackend {
    /// A digest of every disk's content in order; equal contents give equal digests
    /// however they are layered.
    fn content_digest(&mut self, of: ContentRef) -> Result<String> {
        let disks = self.disks().to_vec();
        if let Some(live) = self.live_now()? {
            return live.content_digest(&disks, of);
        }
        let ctx = self.ctx();
        let mut hasher = Sha256::new();
        hasher.update(b"snaptree-qemu domain content v1\0");
        for d in self.disks() {
            let digest = match (of, d.mode) {
                (ContentRef::Live, _) => {
                    ctx.qemu(|| qi::content_digest(&d.live, None, &mut |_| {}))?
                }
                (ContentRef::Snapshot(u), Mode::External) => {
                    let layer = d.layer(&u);
                    if !layer.exists() {
                        return Err(error(format!(
                            "{}: snapshot {u} has no layer {}",
                            d.describe(),
                            layer.display()
                        )));
                    }
                    ctx.qemu(|| qi::content_digest(&layer, None, &mut |_| {}))?
                }
                (ContentRef::Snapshot(u), Mode::Internal) => {
                    ctx.qemu(|| qi::content_digest(&d.live, Some(&u.to_string()), &mut |_| {}))?
                }
            };
            hasher.update(digest.as_bytes());
            hasher.update(b"\0");
        }
        Ok(hex(&hasher.finalize()))
    }

    /// Writes 2 to 4 chunks of 64 KiB, at offsets and with non-zero pattern bytes derived
    /// from the seed and the disk's position, into the first 4 MiB of every disk's live
    /// state with qemu-io.
    fn write_guest(&mut self, seed: u64) -> Result<()> {
        let disks = self.disks().to_vec();
        if let Some(live) = self.live_now()? {
            return live.write_guest(&disks, seed);
        }
        let ctx = self.ctx();
        for (i, d) in self.disks().iter().enumerate() {
            let size = header::read(&d.live)?.size;
            for (offset, pattern) in guest_writes(seed, i, size) {
                ctx.qemu(|| qi::io_write_pattern(&d.live, pattern, offset, GUEST_WRITE.min(size)))?;
            }
        }
        Ok(())
    }
}

/// Lower-case hexadecimal of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_writes_are_deterministic_distinct_and_in_range() {
        assert_eq!(guest_writes(7, 0, 8 << 20), guest_writes(7, 0, 8 << 20));
        assert_ne!(guest_writes(7, 0, 8 << 20), guest_writes(7, 1, 8 << 20));
        assert_ne!(guest_writes(7, 0, 8 << 20), guest_writes(8, 0, 8 << 20));
        for seed in 0..200 {
            let w = guest_writes(seed, 0, 8 << 20);
            assert!((2..=4).contains(&w.len()));
            assert!(w.iter().all(|(off, pat)| off + GUEST_WRITE <= GUEST_AREA
                && *pat != 0
                && off % GUEST_WRITE == 0));
        }
    }
}
