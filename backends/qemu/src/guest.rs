//! What the test hooks write as "guest data" (`hooks`): the same deterministic writes
//! offline (qemu-io) and live (HMP `qemu-io` inside the running QEMU), and the hex form of
//! their digests. Built only with the `test-hooks` feature.

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
